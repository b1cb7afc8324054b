#!/bin/sh
# Join to Ready, 5 times: a fresh `skiff agent` with the K10 token against a loopback
# `skiff server --disable-agent`, timed from the agent's start until kubectl sees its node
# Ready (polled every 50 ms). Needs root, containerd and kubectl; see BENCHMARKS.md.
set -e
SKIFF=${SKIFF:-./target/release/skiff}
D=$(mktemp -d /tmp/sjb.XXXX)
$SKIFF server --disable-agent --data-dir $D/srv --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
  --https-listen-port 36999 -o $D/admin.yaml 2>$D/server.log &
SRV=$!
until [ -s $D/srv/server/token ] && KUBECONFIG=$D/admin.yaml kubectl get --raw /readyz >/dev/null 2>&1; do sleep 0.1; done
for i in 1 2 3 4 5; do
  start=$(date +%s%N)
  $SKIFF agent --server https://127.0.0.1:36999 --token "$(cat $D/srv/server/token)" --data-dir $D/a$i \
    --node-name bench-$i --node-ip 127.0.0.1 --kubelet-arg port=$((36000 + i)) 2>$D/a$i.log &
  A=$!
  until [ "$(KUBECONFIG=$D/admin.yaml kubectl get node bench-$i -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; do sleep 0.05; done
  echo "join $i to Ready: $(( ($(date +%s%N) - start) / 1000000 )) ms"
  kill $A; wait $A || true
done
kill $SRV; wait $SRV || true
rm -rf $D

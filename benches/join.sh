#!/bin/sh
# Join to Ready, 5 times, between network-namespace hosts on a LAN of the script's own (a
# namespace holding only a bridge; one veth per host; no route anywhere else): a fresh
# `skiff agent` with the K10 token on its own host against `skiff server --disable-agent` on
# another, timed from the agent's start until kubectl sees its node Ready (polled every 50 ms).
# Needs root, containerd, kubectl and iproute2; see BENCHMARKS.md.
set -e
SKIFF=$(realpath "${SKIFF:-./target/release/skiff}")
D=$(mktemp -d /tmp/sjb.XXXX)
P=sjb$$
LAN=$P-lan
cleanup() {
  [ -n "$SRV" ] && kill $SRV 2>/dev/null && wait $SRV 2>/dev/null
  for h in srv a1 a2 a3 a4 a5; do ip netns del $P-$h 2>/dev/null || true; done
  ip netns del $LAN 2>/dev/null || true
  rm -rf $D
}
trap cleanup EXIT INT TERM
ip netns add $LAN
ip -n $LAN link add br0 type bridge
ip -n $LAN link set br0 up
host() { # host NAME INDEX: a namespace with 172.30.250.INDEX/24 on the LAN
  ip netns add $P-$1
  ip -n $P-$1 link set lo up
  ip -n $P-$1 link add eth0 type veth peer name p$2 netns $LAN
  ip -n $LAN link set p$2 master br0 up
  ip -n $P-$1 addr add 172.30.250.$2/24 dev eth0
  ip -n $P-$1 link set eth0 up
}
host srv 1
# nsenter execs the program, so $! is skiff's own pid.
setsid nsenter --net=/var/run/netns/$P-srv $SKIFF server --disable-agent --data-dir $D/srv --advertise-address 172.30.250.1 \
  -o $D/admin.yaml >/dev/null 2>$D/server.log &
SRV=$!
k() { nsenter --net=/var/run/netns/$P-srv kubectl --kubeconfig $D/admin.yaml "$@"; }
until [ -s $D/srv/server/token ] && k get --raw /readyz >/dev/null 2>&1; do sleep 0.1; done
for i in 1 2 3 4 5; do
  host a$i $((i + 1))
  start=$(date +%s%N)
  setsid nsenter --net=/var/run/netns/$P-a$i $SKIFF agent --server https://172.30.250.1:6443 --token "$(cat $D/srv/server/token)" \
    --data-dir $D/a$i --node-name bench-$i --node-ip 172.30.250.$((i + 1)) >/dev/null 2>$D/a$i.log &
  A=$!
  until [ "$(k get node bench-$i -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; do sleep 0.05; done
  echo "join $i to Ready: $(( ($(date +%s%N) - start) / 1000000 )) ms"
  # Stopped with SIGTERM, and SIGKILL if it has not exited 10 s later.
  kill $A
  for _ in $(seq 100); do kill -0 $A 2>/dev/null || break; sleep 0.1; done
  if kill -0 $A 2>/dev/null; then echo "agent $i ignored SIGTERM for 10 s; killed" >&2; kill -9 $A; fi
  wait $A 2>/dev/null || true
done

#!/bin/sh
# Installs skiff from a binary already on this box (no download) as a systemd service.
#
#   sudo INSTALL_SKIFF_BIN=./skiff-arm64 ./install.sh                      # a server
#   sudo SKIFF_URL=https://server:6443 SKIFF_TOKEN=K10... \
#        INSTALL_SKIFF_BIN=./skiff-arm64 ./install.sh                      # an agent that joins
#
# Run again with a new binary to upgrade in place: the binary is replaced and the service
# restarted; running pods are not touched.
#
# Environment:
#   INSTALL_SKIFF_BIN          the skiff binary to install (required)
#   INSTALL_SKIFF_EXEC         subcommand and flags (default: "server", or "agent" when SKIFF_URL
#                              is set); flags alone mean the default subcommand with them
#   INSTALL_SKIFF_BIN_DIR      where the binary and scripts go (default /usr/local/bin)
#   INSTALL_SKIFF_SYSTEMD_DIR  where the unit and its environment file go (default /etc/systemd/system)
#   INSTALL_SKIFF_SKIP_ENABLE  "true": do not enable the unit (and do not start it)
#   INSTALL_SKIFF_SKIP_START   "true": do not start the unit
#   INSTALL_SKIFF_IMAGES       a folder of image tarballs copied to <data-dir>/agent/images/
#   INSTALL_SKIFF_SKIP_CHECKS  "true": install even where `skiff check-config` fails
#   SKIFF_*                    every other SKIFF_ variable goes to the unit's environment file
#                              (mode 0600: it may hold the token)
set -eu

info() { printf '[INFO]  %s\n' "$*"; }
warn() { printf '[WARN]  %s\n' "$*" >&2; }
fatal() {
    printf '[ERROR] %s\n' "$*" >&2
    exit 1
}

BIN_DIR=${INSTALL_SKIFF_BIN_DIR:-/usr/local/bin}
SYSTEMD_DIR=${INSTALL_SKIFF_SYSTEMD_DIR:-/etc/systemd/system}
DATA_DIR=${SKIFF_DATA_DIR:-/var/lib/skiff}
KUBECTL_HINT="kubectl is not installed here; install it (Debian: apt-get install kubectl, or copy a kubectl binary into /usr/local/bin) or use the kubeconfig from a workstation"

# --- what to install ---------------------------------------------------------------------------

check_box() {
    [ "$(id -u)" -eq 0 ] || fatal "run as root (sudo): the installer writes to $BIN_DIR and $SYSTEMD_DIR"
    [ -d /run/systemd/system ] || fatal "systemd is not running on this box: skiff's installer needs it (run 'skiff server' by hand instead)"
    [ -n "${INSTALL_SKIFF_BIN:-}" ] || fatal "INSTALL_SKIFF_BIN is not set: name the skiff binary to install (this installer never downloads)"
    [ -f "$INSTALL_SKIFF_BIN" ] || fatal "INSTALL_SKIFF_BIN=$INSTALL_SKIFF_BIN: no such file"
    chmod 0755 "$INSTALL_SKIFF_BIN" 2>/dev/null || true
    VERSION=$("$INSTALL_SKIFF_BIN" --version 2>/dev/null) ||
        fatal "INSTALL_SKIFF_BIN=$INSTALL_SKIFF_BIN does not run on this box ($(uname -m)): is it the binary for this architecture?"
    info "installing $VERSION"
}

# Sets CMD (server or agent) and the positional parameters to the flags of INSTALL_SKIFF_EXEC.
pick_command() {
    if [ -n "${SKIFF_URL:-}" ]; then
        CMD=agent
    else
        CMD=server
    fi
    set -f
    # shellcheck disable=SC2086 # word splitting of the flags is the point
    set -- ${INSTALL_SKIFF_EXEC:-}
    set +f
    case "${1:-}" in
        server | agent)
            CMD=$1
            shift
            ;;
        -*|"") ;;
        *) fatal "INSTALL_SKIFF_EXEC=${INSTALL_SKIFF_EXEC}: the subcommand must be server or agent" ;;
    esac
    if [ "$CMD" = agent ]; then
        [ -n "${SKIFF_URL:-}" ] || fatal "an agent needs SKIFF_URL (the server, https://HOST:6443) and SKIFF_TOKEN"
        [ -n "${SKIFF_TOKEN:-}" ] || fatal "SKIFF_URL is set but SKIFF_TOKEN is not: an agent joins with the server's token (on the server: cat $DATA_DIR/server/token)"
        UNIT=skiff-agent
    else
        UNIT=skiff
    fi
    EXEC_FLAGS=""
    for arg in "$@"; do
        EXEC_FLAGS="$EXEC_FLAGS $(quote_for_systemd "$arg")"
    done
}

# One argument as systemd's ExecStart reads it: bare when plain, else double-quoted.
quote_for_systemd() {
    case "$1" in
        *[!A-Za-z0-9_./:=,@+-]* | "")
            printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
            ;;
        *) printf '%s' "$1" ;;
    esac
}

# --- checks ------------------------------------------------------------------------------------

check_config() {
    if "$INSTALL_SKIFF_BIN" check-config >/tmp/skiff-check-config.$$ 2>&1; then
        rm -f /tmp/skiff-check-config.$$
        return
    fi
    grep -E '^(FAIL|fail)' /tmp/skiff-check-config.$$ >&2 || cat /tmp/skiff-check-config.$$ >&2
    rm -f /tmp/skiff-check-config.$$
    if [ "${INSTALL_SKIFF_SKIP_CHECKS:-}" = true ]; then
        warn "skiff check-config failed; installing anyway (INSTALL_SKIFF_SKIP_CHECKS=true)"
    else
        fatal "this box cannot run skiff yet (skiff check-config above); fix the failures and run the installer again"
    fi
}

# --- files -------------------------------------------------------------------------------------

install_binary() {
    mkdir -p "$BIN_DIR"
    # A new name then a rename: a running skiff keeps its old file, and no one ever sees half a
    # binary.
    cp "$INSTALL_SKIFF_BIN" "$BIN_DIR/.skiff.new"
    chmod 0755 "$BIN_DIR/.skiff.new"
    mv -f "$BIN_DIR/.skiff.new" "$BIN_DIR/skiff"
    info "binary: $BIN_DIR/skiff"
}

install_images() {
    [ -n "${INSTALL_SKIFF_IMAGES:-}" ] || return 0
    [ -d "$INSTALL_SKIFF_IMAGES" ] || fatal "INSTALL_SKIFF_IMAGES=$INSTALL_SKIFF_IMAGES: not a directory"
    mkdir -p "$DATA_DIR/agent/images"
    count=0
    for f in "$INSTALL_SKIFF_IMAGES"/*; do
        [ -f "$f" ] || continue
        cp "$f" "$DATA_DIR/agent/images/"
        count=$((count + 1))
    done
    info "images: $count archive(s) copied to $DATA_DIR/agent/images/"
}

# The SKIFF_ variables of this environment, as systemd reads an EnvironmentFile.
write_env_file() {
    env_file="$SYSTEMD_DIR/$UNIT.service.env"
    umask 077
    : >"$env_file.new"
    chmod 0600 "$env_file.new"
    env | grep -E '^SKIFF_[A-Za-z0-9_]*=' | sort | while IFS= read -r line; do
        name=${line%%=*}
        value=${line#*=}
        printf "%s='%s'\n" "$name" "$(printf '%s' "$value" | sed "s/'/'\\\\''/g")"
    done >>"$env_file.new"
    mv -f "$env_file.new" "$env_file"
    umask 022
    info "environment: $env_file (mode 0600)"
}

write_unit() {
    if [ "$CMD" = server ]; then
        headline="# skiff server: the control plane and, unless --disable-agent, a node on the same box."
        what=server
    else
        headline="# skiff agent: a node that joins a server (SKIFF_URL and SKIFF_TOKEN in the environment file)."
        what=agent
    fi
    cat >"$SYSTEMD_DIR/$UNIT.service" <<EOF
$headline
# Flags go on ExecStart or into /etc/skiff/config.yaml; SKIFF_* variables (e.g. SKIFF_TOKEN)
# into the environment file, which holds secrets and is therefore mode 0600.
[Unit]
Description=skiff - lightweight Kubernetes ($what)
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-$SYSTEMD_DIR/$UNIT.service.env
# Pods' containers belong to their shims, not to skiff: a restart or an upgrade of skiff
# leaves them running.
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=$BIN_DIR/skiff $CMD$EXEC_FLAGS
EOF
    info "unit: $SYSTEMD_DIR/$UNIT.service"
}

write_killall() {
    cat >"$BIN_DIR/skiff-killall.sh" <<EOF
#!/bin/sh
# Stops skiff and everything it runs: its units, every pod's containers (their shims), the pods'
# mounts and network namespaces, its bridge and the packet-filter rules its pods' networking
# added. Files stay; skiff-uninstall.sh removes those.
set -u
[ "\$(id -u)" -eq 0 ] || exec sudo "\$0" "\$@"
DATA_DIR=\${SKIFF_DATA_DIR:-$DATA_DIR}
for unit in skiff skiff-agent; do
    systemctl stop "\$unit" 2>/dev/null || true
done
EOF
    cat >>"$BIN_DIR/skiff-killall.sh" <<'EOF'
SOCK="$DATA_DIR/agent/containerd/containerd.sock"

# Processes whose command line names skiff's containerd socket: the shims, and anything of
# skiff's still alive (containerd itself dies with skiff).
pids_of_skiff() {
    for dir in /proc/[0-9]*; do
        cmd=$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null) || continue
        case "$cmd" in
            *"$SOCK"* | *"$DATA_DIR/agent/containerd/config.toml"*) echo "${dir#/proc/}" ;;
        esac
    done
}
pids=$(pids_of_skiff)
if [ -n "$pids" ]; then
    # Killing a shim stops its containers with it (they are in its process tree's cgroups).
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
fi
# Container processes left behind by the killed shims: everything in the pods' cgroups. A
# process of another PID namespace shows as 0 there, and kill(0) would hit this script's own
# process group: only real PIDs are signalled.
find /sys/fs/cgroup -path '*kubepods*' -name cgroup.procs 2>/dev/null | while IFS= read -r procs; do
    while IFS= read -r pid; do
        [ "$pid" -gt 1 ] 2>/dev/null && kill -9 "$pid" 2>/dev/null
    done <"$procs"
done

# Mounts under the data dir, deepest first: pod volumes, container root filesystems, shm, and
# the pods' network namespaces (skiff's containerd keeps them in its state dir).
unmount_under() {
    awk -v p="$1" '$2 == p || index($2, p "/") == 1 { print $2 }' /proc/self/mounts | sort -r |
        while IFS= read -r m; do umount -l "$m" 2>/dev/null || true; done
}
unmount_under "$DATA_DIR"

# The results the CNI plugins cached for skiff's pods (a network delete would have removed
# them): those of its network, and the loopback ones of the same sandboxes.
for f in /var/lib/cni/results/skiff-*; do
    [ -e "$f" ] || continue
    id=${f#/var/lib/cni/results/skiff-}
    id=${id%-*}
    rm -f "$f" "/var/lib/cni/results/cni-loopback-$id-lo"
done
rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true

# The pods' bridge (its veths go with the namespaces), the overlay's VXLAN device and the
# routes to other nodes' pods (marked with protocol 83).
ip link delete skiff0 2>/dev/null || true
ip link delete skiff.1 2>/dev/null || true
ip route flush proto 83 2>/dev/null || true

# The cluster DNS address the agent put on the loopback interface (it notes which).
if [ -f "$DATA_DIR/agent/cluster-dns-address" ]; then
    ip addr del "$(cat "$DATA_DIR/agent/cluster-dns-address")" dev lo 2>/dev/null || true
fi

# nftables tables that skiff owns.
if command -v nft >/dev/null 2>&1; then
    for family in ip ip6 inet; do
        nft delete table "$family" skiff 2>/dev/null || true
        nft delete table "$family" skiff-overlay 2>/dev/null || true
    done
fi

# Rules the CNI plugins added for skiff's pods carry the network's name ("skiff") in a comment;
# they go, with the per-pod chains they jump to, and so do the service proxy's SKIFF- chains
# (its iptables backend) and its jumps into them. Shared chains of the plugins go when nothing
# else uses them.
clean_iptables() {
    save=$1
    restore=$2
    command -v "$save" >/dev/null 2>&1 || return 0
    "$save" 2>/dev/null | awk '
        function target(line,   n, i, w) {
            n = split(line, w, " ")
            for (i = 1; i < n; i++) if (w[i] == "-j" || w[i] == "-g") return w[i + 1]
            return ""
        }
        { lines[NR] = $0 }
        /^-A / && /name: \\"skiff\\"/ { mine[NR] = 1; t = target($0); if (t ~ /^CNI-(DN-)?[0-9a-f]+$/) dead[t] = 1 }
        # The iptables backend of the service proxy: its SKIFF- chains and the jumps into them.
        /^-A SKIFF-/ || /^-A .*--comment "skiff service proxy"/ { mine[NR] = 1 }
        END {
            # Rules inside dead chains go too.
            for (i = 1; i <= NR; i++) { split(lines[i], w, " "); if (w[1] == "-A" && (w[2] in dead)) mine[i] = 1 }
            # Count what is left in the shared host-port chains.
            for (i = 1; i <= NR; i++) {
                if (i in mine) continue
                split(lines[i], w, " ")
                if (w[1] == "-A" && w[2] == "CNI-HOSTPORT-DNAT") used = 1
            }
            if (!used) {
                shared["CNI-HOSTPORT-DNAT"] = 1; shared["CNI-HOSTPORT-SETMARK"] = 1; shared["CNI-HOSTPORT-MASQ"] = 1
            }
            for (i = 1; i <= NR; i++) {
                if (i in mine) continue
                line = lines[i]
                split(line, w, " ")
                if (w[1] == "-A" && (w[2] in shared)) continue
                if (w[1] == "-A" && (target(line) in shared)) continue
                if (substr(w[1], 1, 1) == ":") { c = substr(w[1], 2); if ((c in dead) || (c in shared) || c ~ /^SKIFF-/) continue }
                print line
            }
        }' | "$restore" 2>/dev/null || true
}
clean_iptables iptables-save iptables-restore
clean_iptables ip6tables-save ip6tables-restore
# The iptables front end on nftables made tables for those rules; the ones now without a
# single rule go too.
if command -v nft >/dev/null 2>&1; then
    nft list tables 2>/dev/null | while read -r _ family table; do
        case "$table" in filter | nat | mangle | raw | security) ;; *) continue ;; esac
        if ! nft list table "$family" "$table" 2>/dev/null | grep -qvE '^[[:space:]]*(table |chain |type |policy |}|$)'; then
            nft delete table "$family" "$table" 2>/dev/null || true
        fi
    done
fi
exit 0
EOF
    chmod 0755 "$BIN_DIR/skiff-killall.sh"
}

write_uninstall() {
    uninstall="$BIN_DIR/$UNIT-uninstall.sh"
    cat >"$uninstall" <<EOF
#!/bin/sh
# Removes skiff from this box: stops it and its pods (skiff-killall.sh), then deletes its data,
# configuration, unit, environment file, binary and these scripts.
set -u
[ "\$(id -u)" -eq 0 ] || exec sudo "\$0" "\$@"
SKIFF_DATA_DIR=$DATA_DIR "$BIN_DIR/skiff-killall.sh"
systemctl disable $UNIT >/dev/null 2>&1 || true
rm -f "$SYSTEMD_DIR/$UNIT.service" "$SYSTEMD_DIR/$UNIT.service.env"
systemctl daemon-reload 2>/dev/null || true
systemctl reset-failed $UNIT 2>/dev/null || true
rm -rf "$DATA_DIR" /etc/skiff
rm -f "$BIN_DIR/skiff" "$BIN_DIR/skiff-killall.sh" "\$0"
EOF
    chmod 0755 "$uninstall"
    info "uninstall: $uninstall"
}

# --- start -------------------------------------------------------------------------------------

start_unit() {
    systemctl daemon-reload
    if [ "${INSTALL_SKIFF_SKIP_ENABLE:-}" = true ]; then
        info "not enabled or started (INSTALL_SKIFF_SKIP_ENABLE=true)"
        return 1
    fi
    systemctl enable "$UNIT" >/dev/null 2>&1 || fatal "systemctl enable $UNIT failed"
    if [ "${INSTALL_SKIFF_SKIP_START:-}" = true ]; then
        info "enabled, not started (INSTALL_SKIFF_SKIP_START=true)"
        return 1
    fi
    # Restart also upgrades: KillMode=process leaves the pods' containers alone.
    systemctl --no-block restart "$UNIT"
    # The unit is active once skiff says READY: the API serves (server) or the node is
    # registered (agent).
    waited=0
    while :; do
        state=$(systemctl is-active "$UNIT" 2>/dev/null) || true
        [ "$state" = active ] && break
        if [ "$state" = failed ] || [ "$waited" -ge 180 ]; then
            journalctl -u "$UNIT" -n 20 --no-pager >&2 2>/dev/null || true
            fatal "$UNIT did not become ready (state: $state); see: journalctl -u $UNIT"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    info "$UNIT is running"
    return 0
}

print_next_steps() {
    if [ "$CMD" = server ]; then
        kubeconfig=${SKIFF_KUBECONFIG_OUTPUT:-/etc/skiff/skiff.yaml}
        echo
        echo "skiff is running. The admin kubeconfig is $kubeconfig:"
        echo "    sudo skiff kubectl get nodes"
        echo "    sudo KUBECONFIG=$kubeconfig kubectl get nodes"
        echo "To join another box as an agent, install there with:"
        echo "    SKIFF_URL=https://<this box>:6443 SKIFF_TOKEN=\$(sudo cat $DATA_DIR/server/token)"
        command -v kubectl >/dev/null 2>&1 || echo "Note: $KUBECTL_HINT"
    else
        echo
        echo "skiff agent is running and has joined $SKIFF_URL; see it with 'kubectl get nodes' on the server."
    fi
    echo "Logs: journalctl -u $UNIT    Uninstall: $BIN_DIR/$UNIT-uninstall.sh"
}

main() {
    check_box
    pick_command
    check_config
    install_binary
    install_images
    write_env_file
    write_unit
    write_killall
    write_uninstall
    if start_unit; then
        print_next_steps
    fi
}

# packaging/deb.sh sources this file for write_killall, so the Debian package ships the same
# skiff-killall.sh as an install with this script.
if [ "${INSTALL_SKIFF_AS_LIBRARY:-}" != true ]; then
    main
fi

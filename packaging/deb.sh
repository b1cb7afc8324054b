#!/bin/sh
# Builds the Debian package of a skiff binary:
#
#   packaging/deb.sh BINARY ARCH OUT_DIR [RUNNER]
#
# ARCH is Debian's name (amd64, arm64, armhf); RUNNER runs BINARY when this machine cannot
# (qemu-aarch64-static, qemu-arm-static): the binary itself renders its manual pages and tells
# its version. Writes OUT_DIR/skiff_<version>_<ARCH>.deb with
#
#   /usr/bin/skiff, /usr/bin/skiff-killall.sh          the binary; the script that stops it all
#   /lib/systemd/system/skiff.service, skiff-agent.service
#   /etc/skiff/config.yaml                             an example (every key commented out)
#   /usr/share/man/man1/skiff*.1.gz                    from the command line's own definition
#
# On the first install the server unit is enabled and started, as Debian services are (or the
# agent unit, when /etc/default/skiff-agent exists already: a box prepared to join). An upgrade
# restarts what runs (pods keep running); removal stops skiff and its pods and removes what
# their networking added; purge also deletes /var/lib/skiff and /etc/skiff.
set -eu

[ $# -ge 3 ] || { echo "usage: packaging/deb.sh BINARY ARCH OUT_DIR [RUNNER]" >&2; exit 2; }
BINARY=$1
ARCH=$2
OUT=$3
RUNNER=${4:-}
case "$ARCH" in
    amd64 | arm64 | armhf) ;;
    *) echo "deb.sh: unknown architecture '$ARCH' (expected amd64, arm64 or armhf)" >&2; exit 2 ;;
esac
[ -f "$BINARY" ] || { echo "deb.sh: $BINARY: no such file" >&2; exit 1; }
command -v dpkg-deb >/dev/null 2>&1 || { echo "deb.sh: dpkg-deb not found (apt-get install dpkg)" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")

# shellcheck disable=SC2086 # RUNNER is empty or one word
PKG_VERSION=$($RUNNER "$BINARY" --version | awk '{print $2}')
case "$PKG_VERSION" in
    [0-9]*) ;;
    *) echo "deb.sh: $BINARY --version did not print a version" >&2; exit 1 ;;
esac

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
PKG=$STAGE/pkg
mkdir -p "$PKG/DEBIAN" "$PKG/usr/bin" "$PKG/lib/systemd/system" "$PKG/etc/skiff" \
    "$PKG/usr/share/man/man1" "$PKG/usr/share/doc/skiff"

install -m 0755 "$BINARY" "$PKG/usr/bin/skiff"

# The same skiff-killall.sh as the installer writes, for the package's paths.
(
    INSTALL_SKIFF_AS_LIBRARY=true
    # shellcheck source=packaging/install.sh
    . "$HERE/install.sh"
    BIN_DIR=$PKG/usr/bin
    DATA_DIR=/var/lib/skiff
    write_killall
)

# The units of the repository, with the package's binary path.
for unit in skiff.service skiff-agent.service; do
    sed 's|/usr/local/bin/skiff |/usr/bin/skiff |' "$REPO/systemd/$unit" >"$PKG/lib/systemd/system/$unit"
    chmod 0644 "$PKG/lib/systemd/system/$unit"
done

cat >"$PKG/etc/skiff/config.yaml" <<'EOF'
# skiff's configuration: every key is the long name of a flag of `skiff server` (or of
# `skiff agent`, for the skiff-agent unit), and a flag on the command line wins over the file.
# See `man skiff-server` and `man skiff-agent`. Examples:
#
# node-name: pi-kitchen
# advertise-address: 192.168.1.20
# tls-san:
#   - skiff.example.org
# write-kubeconfig-mode: "0640"
# disable-controller: [cronjob]
# kubelet-arg:
#   - eviction-hard=memory.available<100Mi
EOF
chmod 0644 "$PKG/etc/skiff/config.yaml"

# shellcheck disable=SC2086
$RUNNER "$BINARY" man "$STAGE/man"
for page in "$STAGE"/man/*.1; do
    name=${page##*/}
    gzip -9n <"$page" >"$PKG/usr/share/man/man1/$name.gz"
done
chmod 0644 "$PKG"/usr/share/man/man1/*

cat >"$PKG/usr/share/doc/skiff/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: skiff

Files: *
License: Apache-2.0
 On Debian systems the full text of the license is in
 /usr/share/common-licenses/Apache-2.0.
EOF
chmod 0644 "$PKG/usr/share/doc/skiff/copyright"

SIZE_KB=$(du -sk "$PKG" | awk '{print $1}')
cat >"$PKG/DEBIAN/control" <<EOF
Package: skiff
Version: $PKG_VERSION
Architecture: $ARCH
Maintainer: skiff developers <skiff@localhost>
Installed-Size: $SIZE_KB
Depends: containerd, runc, containernetworking-plugins, nftables
Recommends: iptables, kmod
Suggests: conntrack
Section: admin
Priority: optional
Description: single-binary Kubernetes distribution for edge boxes
 skiff runs a whole Kubernetes control plane (API server, store, scheduler,
 controllers) and a node in one process, on a Raspberry Pi or any ARM or x86
 Linux box; other boxes join it as worker nodes with the skiff-agent unit.
 Use it with stock kubectl and existing YAML.
EOF

echo /etc/skiff/config.yaml >"$PKG/DEBIAN/conffiles"

cat >"$PKG/DEBIAN/postinst" <<'EOF'
#!/bin/sh
# First install: enable and start the server (or the agent, on a box prepared to join with
# /etc/default/skiff-agent). Upgrade: restart what runs; KillMode=process leaves the pods alone.
set -e
if [ "$1" = configure ]; then
    if [ -z "${2:-}" ]; then
        unit=skiff.service
        [ -f /etc/default/skiff-agent ] && unit=skiff-agent.service
        systemctl enable "$unit" >/dev/null 2>&1 || true
        if [ -d /run/systemd/system ]; then
            systemctl daemon-reload || true
            systemctl --no-block start "$unit" || true
        fi
    elif [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        systemctl --no-block try-restart skiff.service skiff-agent.service || true
    fi
fi
exit 0
EOF

cat >"$PKG/DEBIAN/prerm" <<'EOF'
#!/bin/sh
# Removal (not an upgrade): stop skiff, its pods and what their networking added.
set -e
case "$1" in
    remove | deconfigure)
        /usr/bin/skiff-killall.sh || true
        systemctl disable skiff.service skiff-agent.service >/dev/null 2>&1 || true
        ;;
esac
exit 0
EOF

cat >"$PKG/DEBIAN/postrm" <<'EOF'
#!/bin/sh
# Purge: skiff's state (the store, certificates, images, pods' files) and its generated
# configuration (the admin kubeconfig) go too.
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    systemctl reset-failed skiff.service skiff-agent.service >/dev/null 2>&1 || true
fi
if [ "$1" = purge ]; then
    rm -rf /var/lib/skiff /etc/skiff
fi
exit 0
EOF
chmod 0755 "$PKG/DEBIAN/postinst" "$PKG/DEBIAN/prerm" "$PKG/DEBIAN/postrm"

mkdir -p "$OUT"
DEB=$OUT/skiff_${PKG_VERSION}_$ARCH.deb
dpkg-deb --root-owner-group -Zxz --build "$PKG" "$DEB" >/dev/null
echo "deb.sh: $DEB: $(wc -c <"$DEB") bytes"

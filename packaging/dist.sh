#!/bin/sh
# Builds skiff for edge boxes: static, stripped musl binaries for amd64, arm64 (64-bit
# Raspberry Pi OS and other ARMv8 boards) and armhf (32-bit, ARMv7 hard-float), smoke-runs each
# (the ARM ones under qemu-user), packages each as a .deb (packaging/deb.sh) and writes
# dist/sha256sum.txt:
#
#   dist/skiff-<arch>  dist/skiff_<version>_<arch>.deb  dist/sha256sum.txt
#
#   packaging/dist.sh [--profile NAME] [--no-smoke] [--no-deb] [amd64|arm64|armhf]...
#
# With no architecture named, all three. --profile picks the cargo profile: dist (the default)
# is what ships and must stay within 30 MiB; CI uses `smoke`, an unoptimised build that proves
# in a few minutes that the target builds and its API answers, and is not held to the size
# limit. Needs, on Debian:
#   apt-get install gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf musl-tools qemu-user-static file dpkg
#   dpkg --add-architecture arm64 && dpkg --add-architecture armhf && apt-get update
#   apt-get install musl-dev:arm64 musl-dev:armhf
#   rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl
#   rustup toolchain install 1.93.0 --profile minimal --target armv7-unknown-linux-musleabihf
# The armv7 musl standard library is not published for every Rust release; ARMV7_TOOLCHAIN
# names the toolchain that has it (default 1.93.0).
set -eu
cd "$(dirname "$0")/.."

PROFILE=dist
SMOKE=true
DEB=true
ARCHES=""
while [ $# -gt 0 ]; do
    case "$1" in
        --profile)
            [ $# -ge 2 ] || { echo "dist.sh: --profile needs a value" >&2; exit 2; }
            PROFILE=$2
            shift 2
            ;;
        --no-smoke) SMOKE=false; shift ;;
        --no-deb) DEB=false; shift ;;
        amd64 | arm64 | armhf) ARCHES="$ARCHES $1"; shift ;;
        *) echo "dist.sh: unknown argument '$1' (expected --profile NAME, --no-smoke, --no-deb, amd64, arm64 or armhf)" >&2; exit 2 ;;
    esac
done
[ -n "$ARCHES" ] || ARCHES="amd64 arm64 armhf"
MAX_BYTES=$((30 * 1024 * 1024))
OVERSIZE=""
OUT=dist
mkdir -p "$OUT"

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "dist.sh: $1 not found; $2" >&2; exit 1; }
}

# Sets TARGET, LINKER, CC_MUSL, QEMU, FILE_MACHINE and TOOLCHAIN for an architecture.
describe() {
    TOOLCHAIN=""
    case "$1" in
        amd64)
            TARGET=x86_64-unknown-linux-musl
            LINKER=gcc
            CC_MUSL=x86_64-linux-musl-gcc
            QEMU=""
            FILE_MACHINE="x86-64"
            ;;
        arm64)
            TARGET=aarch64-unknown-linux-musl
            LINKER=aarch64-linux-gnu-gcc
            CC_MUSL=aarch64-linux-musl-gcc
            QEMU=qemu-aarch64-static
            FILE_MACHINE="ARM aarch64"
            ;;
        armhf)
            TARGET=armv7-unknown-linux-musleabihf
            LINKER=arm-linux-gnueabihf-gcc
            CC_MUSL=arm-linux-musleabihf-gcc
            QEMU=qemu-arm-static
            FILE_MACHINE="ARM, EABI5"
            TOOLCHAIN="+${ARMV7_TOOLCHAIN:-1.93.0}"
            ;;
    esac
}

build() {
    describe "$1"
    need "$LINKER" "install the cross compiler (see the top of packaging/dist.sh)"
    need "$CC_MUSL" "install musl-dev for this architecture (see the top of packaging/dist.sh)"
    upper=$(echo "$TARGET" | tr 'a-z-' 'A-Z_')
    lower=$(echo "$TARGET" | tr '-' '_')
    start=$(date +%s)
    # The C in dependencies (ring, mimalloc) is compiled against musl's headers, not glibc's:
    # on 32-bit ARM the two disagree on the size of off_t and time_t.
    # A non-PIE static executable: nothing to relocate at start, and `file` says "statically
    # linked".
    # shellcheck disable=SC2086 # TOOLCHAIN is empty or one word
    env "CARGO_TARGET_${upper}_LINKER=$LINKER" \
        "CARGO_TARGET_${upper}_RUSTFLAGS=-C target-feature=+crt-static -C relocation-model=static" \
        "CC_${lower}=$CC_MUSL" "AR_${lower}=ar" \
        cargo $TOOLCHAIN build --locked --profile "$PROFILE" --target "$TARGET" --bin skiff
    dir=$PROFILE
    bin="target/$TARGET/$dir/skiff"
    cp "$bin" "$OUT/skiff-$1"
    size=$(wc -c <"$OUT/skiff-$1")
    echo "dist.sh: $OUT/skiff-$1: $size bytes, built in $(($(date +%s) - start)) s"
    description=$(file -b "$OUT/skiff-$1")
    case "$description" in
        *"$FILE_MACHINE"*"statically linked"*) ;;
        *) echo "dist.sh: $OUT/skiff-$1 is not a static $FILE_MACHINE binary: $description" >&2; exit 1 ;;
    esac
    case "$description" in
        *"not stripped"*) echo "dist.sh: $OUT/skiff-$1 is not stripped" >&2; exit 1 ;;
    esac
    # Over the limit fails the run, after the other architectures are built and checked too.
    if [ "$PROFILE" = dist ] && [ "$size" -gt "$MAX_BYTES" ]; then
        echo "dist.sh: $OUT/skiff-$1 is $size bytes, over the 30 MiB limit" >&2
        OVERSIZE="$OVERSIZE $1"
    fi
}

# Runs the binary (under qemu-user for ARM): --version, then a server without a node whose API
# answers kubectl.
smoke() {
    describe "$1"
    bin="$OUT/skiff-$1"
    if [ -n "$QEMU" ]; then
        need "$QEMU" "install qemu-user-static"
        run="$QEMU $bin"
    else
        run="$bin"
    fi
    $run --version
    need kubectl "the smoke test drives the API with kubectl"
    tmp=$(mktemp -d)
    port=$((20000 + $$ % 20000))
    # shellcheck disable=SC2086 # $run is a command and its first argument
    $run server --disable-agent --data-dir "$tmp/data" --write-kubeconfig "$tmp/kubeconfig" \
        --https-listen-port "$port" --bind-address 127.0.0.1 >"$tmp/log" 2>&1 &
    pid=$!
    ok=false
    i=0
    while [ $i -lt 300 ]; do
        if [ -f "$tmp/kubeconfig" ] && kubectl --kubeconfig "$tmp/kubeconfig" get namespaces >"$tmp/out" 2>&1 &&
            grep -q '^kube-system ' "$tmp/out"; then
            ok=true
            break
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
        i=$((i + 1))
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ "$ok" != true ]; then
        echo "dist.sh: smoke test of $bin failed: the API did not answer kubectl get namespaces" >&2
        tail -20 "$tmp/log" >&2
        rm -rf "$tmp"
        exit 1
    fi
    echo "dist.sh: $bin answers kubectl ($(grep -c . "$tmp/out") lines of namespaces) after ${i} s"
    rm -rf "$tmp"
}

need cargo "install Rust with rustup"
need file "apt-get install file"
for arch in $ARCHES; do
    build "$arch"
    if [ "$SMOKE" = true ]; then
        smoke "$arch"
    fi
    if [ "$DEB" = true ]; then
        packaging/deb.sh "$OUT/skiff-$arch" "$arch" "$OUT" "$QEMU"
    fi
done
(
    cd "$OUT"
    for f in skiff-* skiff_*.deb; do
        if [ -f "$f" ]; then sha256sum "$f"; fi
    done >sha256sum.txt
)
echo "dist.sh: wrote $OUT/sha256sum.txt"
if [ -n "$OVERSIZE" ]; then
    echo "dist.sh: over the 30 MiB limit:$OVERSIZE" >&2
    exit 1
fi

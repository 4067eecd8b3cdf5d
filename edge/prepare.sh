#!/usr/bin/env bash
# Prepare, once, what the edge proof runs in, cached outside the checkout (EDGE_CACHE, default
# ~/.cache/estella/edge):
#   debian packages  qemu-user-static, binfmt-support, debootstrap (apt-get)
#   rootfs/          Debian bookworm arm64 minbase with python3 and python3-venv
#   wheelhouse/      aarch64 cp311 wheels fetched on the host, and estella's wheel from the checkout
#   rootfs/opt/estella/{tflite,onnx,tflite-runtime}   the three device virtualenvs
#   rootfs/opt/estella/c-runtime/estella-c   the C runtime, cross-built from the checkout with
#                    gcc-aarch64-linux-gnu against the rootfs (libc6-dev, libcjson-dev, libssl-dev
#                    installed there) and the tflite venv's aarch64 libLiteRt.so
# Each step is skipped when its stamp says it is done: a new estella wheel is reinstalled into the
# venvs (seconds) without redoing debootstrap or the dependencies.
#   edge/prepare.sh [CHECKOUT]        (run as root; EDGE_HOST_PYTHON: the host's python with pip)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CHECKOUT=$(cd "${1:-$HERE/..}" && pwd)
CACHE=${EDGE_CACHE:-$HOME/.cache/estella/edge}
ROOTFS=$CACHE/rootfs
MIRROR=${EDGE_MIRROR:-http://deb.debian.org/debian}
HOST_PYTHON=${EDGE_HOST_PYTHON:-python3.11}
source "$HERE/mounts.sh"
trap unmount_all EXIT
trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 129' HUP  # so that the EXIT trap runs on them too

[ "$(id -u)" = 0 ] || { echo "edge/prepare.sh: needs root (apt-get, debootstrap, chroot, mount)" >&2; exit 2; }
lock_cache "$CACHE"
unmount_under "$ROOTFS"  # left by a run that was killed (SIGKILL skips traps)
T0=$SECONDS
step() { echo "edge: $* (+$((SECONDS - T0)) s)"; }

# 1. Debian's packages.
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null \
        || ! command -v update-binfmts >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    step "apt-get install qemu-user-static binfmt-support debootstrap gcc-aarch64-linux-gnu"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static binfmt-support debootstrap \
        gcc-aarch64-linux-gnu make
fi
enable_binfmt

# 2. The root filesystem, built aside and renamed when complete; a half-built one is unmounted, then removed.
if [ ! -e "$CACHE/rootfs.done" ]; then
    step "debootstrap bookworm arm64 minbase"
    unmount_under "$ROOTFS.tmp"
    rm -rf "$ROOTFS.tmp"
    trap 'unmount_under "$ROOTFS.tmp"; unmount_all' EXIT
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv bookworm "$ROOTFS.tmp" "$MIRROR"
    unmount_under "$ROOTFS.tmp"
    trap unmount_all EXIT
    unmount_under "$ROOTFS"
    rm -rf "$ROOTFS"
    mv "$ROOTFS.tmp" "$ROOTFS"
    touch "$CACHE/rootfs.done"
fi
step "rootfs ready: $(QEMU_CPU=cortex-a72 chroot "$ROOTFS" python3 --version)"

# 3. estella's wheel from the checkout. Its key is the hash of the wheel's RECORD (the hashes of the
#    files inside), which, unlike the zip's bytes, does not change when nothing changed.
WHEELS=$CACHE/wheelhouse
rm -rf "$WHEELS/estella.tmp"
mkdir -p "$WHEELS/estella.tmp" "$WHEELS/deps"
"$HOST_PYTHON" -m pip wheel -q --no-deps -w "$WHEELS/estella.tmp" "$CHECKOUT"
ESTELLA_WHEEL=$(ls "$WHEELS"/estella.tmp/estella-*.whl)
wheel_file() {  # wheel_file WHEEL NAME: print the dist-info file NAME of the wheel (no unzip needed)
    "$HOST_PYTHON" -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1])
print(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/" + sys.argv[2]))).decode())' "$@"
}
ESTELLA_KEY=$(wheel_file "$ESTELLA_WHEEL" RECORD | sha256sum | cut -c1-16)
rm -rf "$WHEELS/estella"
mv "$WHEELS/estella.tmp" "$WHEELS/estella"
ESTELLA_WHEEL=$WHEELS/estella/$(basename "$ESTELLA_WHEEL")
step "estella wheel $(basename "$ESTELLA_WHEEL") key $ESTELLA_KEY"

# 4. The dependencies' aarch64 wheels, fetched on the host. Every manylinux tag is listed: pip
#    does not infer the older ones from --platform, and tflite-runtime 2.14's aarch64 wheel is
#    manylinux_2_34 (bookworm has glibc 2.36).
TFLITE_RUNTIME_REQS=${TFLITE_RUNTIME_REQS:-numpy>=1.26,<2 tflite-runtime==2.14.0}
REQUIRES=$(wheel_file "$ESTELLA_WHEEL" METADATA | grep '^Requires-Dist:' || true)
DEPS_KEY=$(printf '%s\n%s\n' "$REQUIRES" "$TFLITE_RUNTIME_REQS" | sha256sum | cut -c1-16)
if [ "$(cat "$WHEELS/deps.key" 2>/dev/null)" != "$DEPS_KEY" ]; then
    step "pip download aarch64 cp311 wheels"
    platforms=()
    for tag in manylinux2014_aarch64 manylinux_2_17_aarch64 manylinux_2_27_aarch64 manylinux_2_28_aarch64 \
               manylinux_2_34_aarch64 manylinux_2_36_aarch64; do
        platforms+=(--platform "$tag")
    done
    download() {
        "$HOST_PYTHON" -m pip download -q --only-binary=:all: "${platforms[@]}" --python-version 3.11 \
            --implementation cp --abi cp311 -d "$WHEELS/deps" "$@"
    }
    download "$ESTELLA_WHEEL[tflite,onnx]"
    rm -f "$WHEELS"/deps/estella-*.whl
    # shellcheck disable=SC2086  # the requirements are words
    download $TFLITE_RUNTIME_REQS
    echo "$DEPS_KEY" > "$WHEELS/deps.key"
fi

# 5. The three device virtualenvs, made inside the chroot by the device's own python and pip, from
#    the wheelhouse only (--no-index). A venv is remade when its dependencies change; estella alone is
#    reinstalled when its wheel changes.
mount_chroot "$ROOTFS"
mkdir -p "$ROOTFS/mnt/wheelhouse" "$ROOTFS/opt/estella"
mount_tracked "$ROOTFS/mnt/wheelhouse" --bind -o ro "$WHEELS"
in_chroot() { QEMU_CPU=cortex-a72 chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root QEMU_CPU=cortex-a72 "$@"; }
PIP_FLAGS="-q --disable-pip-version-check --no-index --find-links /mnt/wheelhouse/deps --find-links /mnt/wheelhouse/estella"
WHEEL_IN_CHROOT=/mnt/wheelhouse/estella/$(basename "$ESTELLA_WHEEL")
for venv in tflite onnx tflite-runtime; do
    dir=$ROOTFS/opt/estella/$venv
    case $venv in
        # numpy<2 and tflite-runtime, then estella's base dependencies (threadpoolctl), none of its extras.
        tflite-runtime) spec="$TFLITE_RUNTIME_REQS $WHEEL_IN_CHROOT" ;;
        *) spec="$WHEEL_IN_CHROOT[$venv]" ;;
    esac
    key="$DEPS_KEY $venv $spec"
    if [ "$(cat "$dir/.deps-key" 2>/dev/null)" != "$key" ]; then
        step "venv $venv: create and install $spec"
        rm -rf "$dir"
        in_chroot python3 -m venv "/opt/estella/$venv"
        # shellcheck disable=SC2086  # the requirements are words
        in_chroot "/opt/estella/$venv/bin/pip" install $PIP_FLAGS $spec
        echo "$key" > "$dir/.deps-key"
        echo "$ESTELLA_KEY" > "$dir/.estella-key"
    fi
    if [ "$(cat "$dir/.estella-key" 2>/dev/null)" != "$ESTELLA_KEY" ]; then
        step "venv $venv: install estella $ESTELLA_KEY"
        # shellcheck disable=SC2086
        in_chroot "/opt/estella/$venv/bin/pip" install $PIP_FLAGS --no-deps --force-reinstall "$WHEEL_IN_CHROOT"
        echo "$ESTELLA_KEY" > "$dir/.estella-key"
    fi
done

# 6. The C runtime: its build dependencies installed in the rootfs by the device's own apt (the rootfs is
#    then the cross-compiler's sysroot, so estella-c links the libraries the device has), then
#    estella-c cross-built from the checkout (seconds) and installed beside the venvs.
C_PACKAGES="libc6-dev libcjson-dev libssl-dev"
if [ "$(cat "$CACHE/c-sysroot.done" 2>/dev/null)" != "$C_PACKAGES" ]; then
    step "apt-get install $C_PACKAGES in the rootfs"
    in_chroot apt-get update -q
    in_chroot env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $C_PACKAGES
    in_chroot apt-get clean
    echo "$C_PACKAGES" > "$CACHE/c-sysroot.done"
fi
unmount_chroot
LITERT_IN_CHROOT=/opt/estella/tflite/lib/python3.11/site-packages/ai_edge_litert
rm -rf "$CACHE/c-runtime.build"
make -s -C "$CHECKOUT/runtime/c" CC=aarch64-linux-gnu-gcc AR=aarch64-linux-gnu-ar SYSROOT="$ROOTFS" \
    BUILD="$CACHE/c-runtime.build" LITERT_DIR="$ROOTFS$LITERT_IN_CHROOT" LITERT_RPATH="$LITERT_IN_CHROOT"
mkdir -p "$ROOTFS/opt/estella/c-runtime"
cp "$CACHE/c-runtime.build/estella-c" "$ROOTFS/opt/estella/c-runtime/estella-c"
step "estella-c cross-built: $(du -b "$ROOTFS/opt/estella/c-runtime/estella-c" | cut -f1) bytes"
step "prepared in $CACHE"

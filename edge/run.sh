#!/usr/bin/env bash
# Run the parity check on the emulated devices: for each CPU model, each device virtualenv runs
# edge/device_parity.py on the fixture in the chroot, under qemu-user with QEMU_CPU set.
#   edge/run.sh FIXTURE_DIR OUT_DIR [CPU...]      (run as root, after edge/prepare.sh)
# Writes OUT_DIR/<cpu>/<venv>/<backend>-<precision>.json (the device's JSON) and .log (its stderr),
# OUT_DIR/<cpu>/c-runtime.json and .log (estella-c against the Python runtime, edge/device_c_runtime.py),
# OUT_DIR/sizes.tsv (installed sizes), OUT_DIR/rows.tsv (what ran) and OUT_DIR/system.tsv;
# edge/report.py turns them into EDGE.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] || { echo "usage: edge/run.sh FIXTURE_DIR OUT_DIR [CPU...]" >&2; exit 2; }
FIXTURE=$(realpath "$1")
OUT=$(realpath -m "$2")
shift 2
CPUS=("$@")
[ ${#CPUS[@]} -gt 0 ] || CPUS=(cortex-a72 cortex-a76)
CACHE=${EDGE_CACHE:-$HOME/.cache/estella/edge}
ROOTFS=$CACHE/rootfs
source "$HERE/mounts.sh"
trap unmount_all EXIT
trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 129' HUP  # so that the EXIT trap runs on them too

[ "$(id -u)" = 0 ] || { echo "edge/run.sh: needs root (chroot, mount)" >&2; exit 2; }
[ -e "$CACHE/rootfs.done" ] || { echo "edge/run.sh: no root filesystem in $CACHE: run edge/prepare.sh" >&2; exit 2; }
[ -e "$FIXTURE/reference.npz" ] || { echo "edge/run.sh: $FIXTURE has no reference.npz" >&2; exit 2; }
lock_cache "$CACHE"
unmount_under "$ROOTFS"  # left by a run that was killed (SIGKILL skips traps)

# venv -> the rows it holds: each interpreter at both precisions, and numpy, which every venv has.
declare -A ROWS=(
    [tflite]="tflite:float32 tflite:int8 numpy:float32"
    [onnx]="onnx:float32 onnx:int8 numpy:float32"
    [tflite-runtime]="tflite:float32 tflite:int8 numpy:float32"
)
VENVS=(tflite onnx tflite-runtime)

rm -rf "$OUT"
mkdir -p "$OUT"
for venv in "${VENVS[@]}"; do
    printf '%s\t%s\n' "$venv" "$(du -sb "$ROOTFS/opt/estella/$venv" | cut -f1)" >> "$OUT/sizes.tsv"
done
printf 'rootfs\t%s\n' "$(du -sb "$ROOTFS" | cut -f1)" >> "$OUT/sizes.tsv"  # nothing is mounted in it now
{
    printf 'qemu\t%s\n' "$(qemu-aarch64-static --version | head -1)"
    printf 'debian\t%s\n' "$(cat "$ROOTFS/etc/debian_version")"
} > "$OUT/system.tsv"

enable_binfmt
mkdir -p "$ROOTFS/mnt/fixture" "$ROOTFS/mnt/edge"
for cpu in "${CPUS[@]}"; do
    mkdir -p "$OUT/$cpu"
    write_cpuinfo "$cpu" "$OUT/$cpu/cpuinfo"
    mount_chroot "$ROOTFS" "$OUT/$cpu/cpuinfo"
    mount_tracked "$ROOTFS/mnt/fixture" --bind -o ro "$FIXTURE"
    mount_tracked "$ROOTFS/mnt/edge" --bind -o ro "$HERE"
    for venv in "${VENVS[@]}"; do
        mkdir -p "$OUT/$cpu/$venv"
        # One process per row, so that a crash (SIGSEGV) is that row's failure and no other's.
        for row in ${ROWS[$venv]}; do
            echo "edge: $cpu $venv $row"
            printf '%s\t%s\t%s\n' "$cpu" "$venv" "$row" >> "$OUT/rows.tsv"
            # QEMU_CPU reaches each aarch64 process through its environment: set for chroot's /usr/bin/env
            # (an aarch64 program too) and again for python, since env -i clears it. qemu's default `max`
            # CPU has SVE, which no Pi has.
            QEMU_CPU=$cpu chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root QEMU_CPU="$cpu" \
                "/opt/estella/$venv/bin/python" /mnt/edge/device_parity.py /mnt/fixture "$row" \
                > "$OUT/$cpu/$venv/${row/:/-}.json" 2> "$OUT/$cpu/$venv/${row/:/-}.log" \
                || echo "edge: $cpu $venv $row: the device script exited $? (see $OUT/$cpu/$venv/${row/:/-}.log)" >&2
        done
    done
    # The C runtime, cross-built by prepare.sh, against the tflite venv's Python runtime on the same CPU.
    # LiteRT's compiled model runs on XNNPACK only, whose CPU detection reads /sys (as on a real board);
    # the interpreter rows above run without it (their XNNPACK delegate fails and TFLite's own kernels run).
    echo "edge: $cpu estella-c"
    mount_tracked "$ROOTFS/sys" -t sysfs sysfs
    QEMU_CPU=$cpu chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root QEMU_CPU="$cpu" \
        /opt/estella/tflite/bin/python /mnt/edge/device_c_runtime.py /mnt/fixture/export /opt/estella/c-runtime/estella-c \
        > "$OUT/$cpu/c-runtime.json" 2> "$OUT/$cpu/c-runtime.log" \
        || echo "edge: $cpu estella-c: the device script exited $? (see $OUT/$cpu/c-runtime.log)" >&2
    unmount_chroot
done

# Mount helpers shared by prepare.sh and run.sh (sourced). Every mount made here is undone by
# unmount_all, which the callers run from an EXIT trap: a root filesystem is never deleted while
# /proc or /dev is bind-mounted into it (rm -rf would follow into the host's /dev).

MOUNTED=()  # what this process mounted, in order

mount_tracked() {  # mount_tracked TARGET MOUNT-ARGS...
    local target=$1; shift
    mount "$@" "$target"
    MOUNTED+=("$target")
}

BINFMT_MOUNTED=""  # set when this process mounted binfmt_misc, which outlives the chroot mounts

unmount_chroot() {  # what mount_tracked mounted, last first
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTED[i]}" 2>/dev/null || umount -l "${MOUNTED[i]}" || true
    done
    MOUNTED=()
}

unmount_all() {  # the EXIT trap: the chroot's mounts, then binfmt_misc if it was not mounted before
    unmount_chroot
    if [ -n "$BINFMT_MOUNTED" ]; then
        umount /proc/sys/fs/binfmt_misc || true
        BINFMT_MOUNTED=""
    fi
}

# Anything still mounted under a directory (a crashed earlier run, debootstrap's own /proc), deepest first.
unmount_under() {
    local dir m
    dir=$(realpath -m "$1")
    for m in $(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m"
    done
}

# qemu-user runs aarch64 binaries through binfmt_misc: pip and venv start subprocesses, so one
# `qemu-aarch64-static -L` call is not enough. The kernel has binfmt_misc but it is not mounted here.
enable_binfmt() {
    if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
        BINFMT_MOUNTED=1
    fi
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        echo "edge: binfmt_misc has no qemu-aarch64 entry (is qemu-user-static installed?)" >&2
        return 1
    fi
}

# The chroot's /proc, /dev and the per-CPU /proc/cpuinfo. qemu 7.2 shows the host's x86 cpuinfo to
# the guest, and LiteRT's ruy then dereferences NULL in Interpreter() (tensorflow issue 75815):
# an ARM cpuinfo of the emulated core is bind-mounted over it.
mount_chroot() {  # mount_chroot ROOTFS [CPUINFO-FILE]
    local root=$1 cpuinfo=${2:-}
    mount_tracked "$root/proc" -t proc proc
    mount_tracked "$root/dev" --bind /dev
    if [ -n "$cpuinfo" ]; then
        mount_tracked "$root/proc/cpuinfo" --bind "$cpuinfo"
    fi
}

# An ARM /proc/cpuinfo for one emulated core, as a Raspberry Pi's kernel writes it, one block per
# host core (the threads qemu can run). Only the cores this proof emulates are known.
write_cpuinfo() {  # write_cpuinfo CPU FILE
    local cpu=$1 file=$2 features variant part revision model i
    case $cpu in
        cortex-a72) features="fp asimd evtstrm crc32 cpuid"; variant=0x0; part=0xd08; revision=3
                    model="Raspberry Pi 4 Model B (emulated)" ;;
        cortex-a76) features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
                    variant=0x4; part=0xd0b; revision=1; model="Raspberry Pi 5 Model B (emulated)" ;;
        *) echo "edge: no cpuinfo for CPU $cpu; known: cortex-a72 cortex-a76" >&2; return 2 ;;
    esac
    : > "$file"
    for ((i = 0; i < $(nproc); i++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
            "$i" "$features" "$variant" "$part" "$revision" >> "$file"
    done
    printf 'Model\t\t: %s\n' "$model" >> "$file"
}

# One preparation or run at a time per cache: two would mount over each other's chroot.
lock_cache() {  # lock_cache CACHE
    mkdir -p "$1"
    exec 9>"$1/.lock"
    flock 9
}

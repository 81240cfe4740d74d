#!/usr/bin/env bash
# Proof that allx-edge runs on a Raspberry Pi's arm64 Python: Debian Bookworm arm64 under qemu-user.
#
# Usage (as root, on an x86-64 Debian host):  benchmarks/pi-emulated/run.sh MODEL IMAGES_DIR
#   MODEL       an int8 .tflite from `allx convert` (copied alone: it carries its labels and statistics) or its folder
#   IMAGES_DIR  a folder of images; up to ALLX_PI_IMAGES (default 24) are picked, spread over it
# Environment: ALLX_PI_CACHE (rootfs cache, default ~/.cache/allx/pi-rootfs), ALLX_PI_OUT (results,
#   default ~/.cache/allx/pi-proof), ALLX_HOST_VENV (x86 venv with allx[edge], default REPO/.venv),
#   ALLX_DEBIAN_MIRROR (default: the Debian mirror of this host's apt sources).
#
# Steps: 1 qemu-user + binfmt, 2 cached Bookworm arm64 rootfs, 3 venv with the project's wheel [edge],
# 4 allx-edge info / classify --json / bench under QEMU_CPU=cortex-a72 (Pi 4) and cortex-a76 (Pi 5),
# predictions compared bit for bit with the x86 host, 5 (on exit, always) mounts undone, binfmt restored.
# Exit 0 only when every step held; the last line says so. Emulated timings mean nothing.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${ALLX_PI_CACHE:-$HOME/.cache/allx/pi-rootfs}
ROOTFS=$CACHE/bookworm-arm64
OUT=${ALLX_PI_OUT:-$HOME/.cache/allx/pi-proof}
HOST_VENV=${ALLX_HOST_VENV:-$REPO/.venv}
MAX_IMAGES=${ALLX_PI_IMAGES:-24}
CORES=(cortex-a72 cortex-a76)
GUEST=/opt/allx-proof            # model, images and helper scripts inside the rootfs
GUEST_VENV=/opt/allx-venv
BINFMT=/proc/sys/fs/binfmt_misc
ENTRY=$BINFMT/qemu-aarch64
PROXY_ENV=()                     # the host's proxy variables, passed into the chroot
MOUNTS=()                        # mount points made by this script, undone in reverse order
BINFMT_WAS_MOUNTED=unknown
ENTRY_BEFORE=unknown             # absent | enabled | disabled
WORK=""
METADATA=unknown                 # where x86 allx-edge found the model's manifest: embedded | model.json | none
STARTED=$SECONDS
CHROOT=$(PATH=/usr/sbin:/sbin:$PATH command -v chroot)   # env -i below drops root's sbin PATH

say() { printf '==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
elapsed() { printf '%dm%02ds' $(( (SECONDS - $1) / 60 )) $(( (SECONDS - $1) % 60 )); }
host_py() { "$HOST_VENV/bin/python" "$@"; }

# Run a command inside the rootfs with a clean environment (plus the host's proxy settings).
guest() {
    local core=$1; shift
    env -i HOME=/root LANG=C.UTF-8 TERM=dumb PATH="$GUEST_VENV/bin:/usr/local/bin:/usr/bin:/bin" \
        QEMU_CPU="$core" PYTHONDONTWRITEBYTECODE=1 "${PROXY_ENV[@]}" "$CHROOT" "$ROOTFS" "$@"
}

# guest_mount TARGET MOUNT_ARGS...: mount onto TARGET and remember it for the undo step.
guest_mount() {
    local target=$1; shift
    mount "$@" "$target" || fail "could not mount $target"
    MOUNTS+=("$target")
}

entry_state() {
    if [[ ! -e $ENTRY ]]; then echo absent; elif head -n1 "$ENTRY" | grep -qx enabled; then echo enabled; else echo disabled; fi
}

# Step 5, also run by the EXIT trap: undo the mounts (in reverse order), then restore binfmt. Idempotent.
undo_changes() {
    local i
    for (( i = ${#MOUNTS[@]} - 1; i >= 0; i-- )); do
        umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" || echo "warning: could not unmount ${MOUNTS[i]}" >&2
    done
    MOUNTS=()
    if [[ -e $ENTRY ]]; then
        case $ENTRY_BEFORE in
            absent) echo -1 > "$ENTRY" ;;
            disabled) echo 0 > "$ENTRY" ;;
        esac
    fi
    if [[ $BINFMT_WAS_MOUNTED == no ]] && mountpoint -q "$BINFMT"; then
        umount "$BINFMT" || echo "warning: could not unmount $BINFMT" >&2
    fi
}

cleanup() {
    local status=$?
    undo_changes
    if [[ -n $WORK ]]; then rm -rf "$WORK"; fi
    exit "$status"
}

step_undo() {
    say "[5/5] undo the chroot mounts, leave binfmt as found"
    undo_changes
    ! findmnt -rn -o TARGET | grep -qF "$ROOTFS/" || fail "mounts are left under $ROOTFS"
    if [[ $BINFMT_WAS_MOUNTED == no ]]; then
        ! mountpoint -q "$BINFMT" || fail "binfmt_misc is still mounted, expected unmounted as before"
    else
        [[ $(entry_state) == "$ENTRY_BEFORE" ]] || fail "qemu-aarch64 is $(entry_state), expected $ENTRY_BEFORE as before"
    fi
    say "    no mounts left under $ROOTFS; binfmt_misc mounted: $BINFMT_WAS_MOUNTED, qemu-aarch64: $ENTRY_BEFORE (as found)"
}

# Anything still mounted under a path (e.g. a debootstrap killed half-way), deepest first.
unmount_under() {
    local target
    { findmnt -rn -o TARGET | grep -F "$1/" || true; } | sort -r | while read -r target; do umount -l "$target"; done
}

check_arguments() {
    [[ $# -eq 2 ]] || { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
    MODEL=$(realpath -e "$1" 2>/dev/null) || fail "got model $1, expected an existing .tflite file or folder"
    IMAGES=$(realpath -e "$2" 2>/dev/null) || fail "got images $2, expected an existing folder"
    [[ -d $IMAGES ]] || fail "got images $2, expected a folder"
    [[ $(id -u) -eq 0 ]] || fail "got user $(id -un), expected root (chroot, mount and binfmt need it)"
    [[ $(uname -m) == x86_64 ]] || fail "got machine $(uname -m), expected x86_64"
    [[ -x $HOST_VENV/bin/allx-edge ]] || fail "got no $HOST_VENV/bin/allx-edge, expected the project's venv (ALLX_HOST_VENV)"
}

step_qemu() {
    say "[1/5] qemu-user-static, binfmt-support, debootstrap; qemu-aarch64 in binfmt_misc"
    local packages=(qemu-user-static binfmt-support debootstrap)
    if ! dpkg-query -W -f='${Status}\n' "${packages[@]}" 2>/dev/null | grep -c 'install ok installed' | grep -qx 3; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    fi
    if mountpoint -q "$BINFMT"; then BINFMT_WAS_MOUNTED=yes; else
        BINFMT_WAS_MOUNTED=no
        mount -t binfmt_misc binfmt_misc "$BINFMT" || fail "could not mount binfmt_misc on $BINFMT"
    fi
    ENTRY_BEFORE=$(entry_state)
    case $ENTRY_BEFORE in
        absent) update-binfmts --enable qemu-aarch64 ;;
        disabled) echo 1 > "$ENTRY" ;;
    esac
    [[ $(entry_state) == enabled ]] || fail "qemu-aarch64 is $(entry_state) in $BINFMT, expected enabled"
    say "    binfmt_misc was mounted: $BINFMT_WAS_MOUNTED; qemu-aarch64 was: $ENTRY_BEFORE (restored on exit)"
}

step_rootfs() {
    say "[2/5] Debian Bookworm arm64 rootfs (cached in $ROOTFS)"
    if [[ -f $ROOTFS/.allx-complete ]]; then say "    reusing the cached rootfs"; return; fi
    local mirror=${ALLX_DEBIAN_MIRROR:-$(host_py "$HERE/pi_setup.py" mirror /etc/apt/sources.list /etc/apt/sources.list.d/*)}
    local partial=$ROOTFS.partial start=$SECONDS
    mkdir -p "$CACHE"
    unmount_under "$partial"
    rm -rf --one-file-system "$partial"
    say "    debootstrap from $mirror (a few minutes)"
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$partial" "$mirror" > "$WORK/debootstrap.log" 2>&1 \
        || { tail -n 20 "$WORK/debootstrap.log" >&2; unmount_under "$partial"; fail "debootstrap failed"; }
    unmount_under "$partial"
    touch "$partial/.allx-complete"
    mv "$partial" "$ROOTFS"
    say "    built in $(elapsed "$start")"
}

mount_guest_filesystems() {
    unmount_under "$ROOTFS"
    guest_mount "$ROOTFS/proc" -t proc proc
    guest_mount "$ROOTFS/sys" --bind /sys
    mount -o remount,bind,ro "$ROOTFS/sys" || fail "could not make $ROOTFS/sys read-only"
    guest_mount "$ROOTFS/dev" --bind /dev
    # qemu-user shows the guest the host's x86 /proc/cpuinfo, on which LiteRT's CPU detection crashes:
    # cover it with an ARM one, rewritten in place (same inode) for each emulated core.
    : > "$WORK/cpuinfo"
    guest_mount "$ROOTFS/proc/cpuinfo" --bind "$WORK/cpuinfo"
}

use_core() {
    host_py "$HERE/pi_setup.py" cpuinfo "$1" --cpus "$(grep -c ^processor /proc/cpuinfo)" > "$WORK/cpuinfo"
}

step_venv() {
    say "[3/5] host CA bundle and pip settings into the rootfs; venv with the project's wheel [edge]"
    local start=$SECONDS cert wheel
    mount_guest_filesystems
    use_core "${CORES[0]}"
    cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
    for cert in /etc/ssl/certs/ca-certificates.crt "${PIP_CERT:-}" "$(host_py -m pip config get global.cert 2>/dev/null || true)"; do
        if [[ -n $cert && -f $cert ]]; then install -D -m 0644 "$cert" "$ROOTFS$cert"; fi
    done
    host_py -m pip config list 2>/dev/null | host_py "$HERE/pi_setup.py" pip-conf --root "$ROOTFS" > "$WORK/pip.conf"
    install -m 0644 "$WORK/pip.conf" "$ROOTFS/etc/pip.conf"
    grep '^# dropped' "$WORK/pip.conf" | sed 's/^/    /' || true
    PROXY_ENV=()
    for var in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
        if [[ -n ${!var:-} ]]; then PROXY_ENV+=("$var=${!var}"); fi
    done
    # Build from a copy of the work tree (tracked and new files, not ignored ones): an in-place build
    # would leave build/ in the repository, and a stale build/lib can carry deleted modules into the wheel.
    # (Files deleted from the work tree but still in the index are skipped.)
    mkdir -p "$WORK/src"
    git -C "$REPO" ls-files -z --cached --others --exclude-standard | (cd "$REPO" && xargs -0 cp --parents -t "$WORK/src" 2>/dev/null || true)
    host_py -m pip wheel --quiet --no-deps -w "$WORK/wheel" "$WORK/src" || fail "could not build the project's wheel"
    wheel=$(basename "$(ls "$WORK"/wheel/allx-*.whl)")
    rm -rf --one-file-system "${ROOTFS:?}$GUEST" "${ROOTFS:?}$GUEST_VENV"
    install -D -m 0644 "$WORK/wheel/$wheel" "$ROOTFS$GUEST/wheel/$wheel"
    cp "$HERE/pi_setup.py" "$HERE/probe_outputs.py" "$ROOTFS$GUEST/"
    guest "${CORES[0]}" python3 -m venv "$GUEST_VENV"
    say "    pip install $wheel[edge] in the emulated rootfs (slow: every step is emulated)"
    guest "${CORES[0]}" pip install --quiet "$GUEST/wheel/$wheel[edge]" || fail "pip install of $wheel[edge] failed in the rootfs"
    say "    rootfs: $(guest "${CORES[0]}" python3 -V), $(guest "${CORES[0]}" uname -m)"
    guest "${CORES[0]}" python "$GUEST/pi_setup.py" wheel-tags ai-edge-litert numpy pillow opencv-python-headless allx \
        | tee "$OUT/wheels.txt" | sed 's/^/    /'
    say "    venv ready in $(elapsed "$start")"
}

pick_images() {
    # The same files, in the same order, on both sides: host paths under IMAGES, guest under GUEST/images.
    host_py "$HERE/pi_setup.py" pick-images "$IMAGES" --count "$MAX_IMAGES" > "$OUT/images.txt"
    [[ -s $OUT/images.txt ]] || fail "got no images in $IMAGES, expected at least one image file"
    HOST_IMAGES=() GUEST_IMAGES=()
    while IFS= read -r rel; do
        HOST_IMAGES+=("$IMAGES/$rel") GUEST_IMAGES+=("$GUEST/images/$rel")
    done < "$OUT/images.txt"
}

stage_inputs() {
    local rel
    while IFS= read -r rel; do
        install -D -m 0644 "$IMAGES/$rel" "$ROOTFS$GUEST/images/$rel"
    done < "$OUT/images.txt"
    if [[ -d $MODEL ]]; then
        cp -a "$MODEL" "$ROOTFS$GUEST/model"; GUEST_MODEL=$GUEST/model
    else
        # The file alone, as a technician copies it: its labels, manifest and statistics are embedded.
        # Only a model without any allx metadata (x86 found none either) gets the labels.txt beside it.
        install -D -m 0644 "$MODEL" "$ROOTFS$GUEST/model/$(basename "$MODEL")"
        if [[ $METADATA == none && -f $(dirname "$MODEL")/labels.txt ]]; then cp "$(dirname "$MODEL")/labels.txt" "$ROOTFS$GUEST/model/"; fi
        GUEST_MODEL=$GUEST/model/$(basename "$MODEL")
    fi
}

# Before any system change, so a bad model or image folder fails in seconds.
run_host_reference() {
    local log=$OUT/x86.log
    pick_images
    say "x86 reference (host venv, $(host_py -V)): allx-edge classify --json and probe_outputs.py on ${#HOST_IMAGES[@]} images"
    run_logged "$log" "$OUT/x86.info.json" "$HOST_VENV/bin/allx-edge" info "$MODEL" --json || fail "x86 allx-edge info failed"
    METADATA=$(host_py -c 'import json, sys; print(json.load(sys.stdin).get("metadata", "none"))' < "$OUT/x86.info.json")
    if [[ -f $MODEL && $METADATA == model.json ]]; then
        fail "$MODEL carries no embedded allx metadata (x86 reads the model.json beside it), so a copy of the file alone would run without it: convert it again with this allx, or pass its folder"
    fi
    say "    model metadata: $METADATA"
    run_logged "$log" "$OUT/x86.classify.jsonl" "$HOST_VENV/bin/allx-edge" classify "${HOST_IMAGES[@]}" --model "$MODEL" --json \
        || fail "x86 allx-edge classify failed"
    run_logged "$log" "$OUT/x86.probe.jsonl" host_py "$HERE/probe_outputs.py" "$MODEL" "${HOST_IMAGES[@]}" \
        || fail "x86 probe_outputs.py failed"
}

# run_logged LOG OUT CMD...: stdout into OUT, stderr appended to LOG; on failure show the LOG's tail.
run_logged() {
    local log=$1 out=$2; shift 2
    "$@" > "$out" 2>> "$log" && return 0
    tail -n 15 "$log" | sed 's/^/      | /' >&2
    return 1
}

check_core() {
    local core=$1 start=$SECONDS part log=$OUT/$1.log
    say "    --- QEMU_CPU=$core ---"
    use_core "$core"
    part=$(guest "$core" grep -m1 'CPU part' /proc/cpuinfo | awk '{print $NF}')
    say "    guest /proc/cpuinfo: CPU part $part; python sees machine $(guest "$core" python -c 'import platform; print(platform.machine())')"
    say "    guest CPU features (AT_HWCAP): $(guest "$core" python "$GUEST/pi_setup.py" hwcaps)"
    run_logged "$log" "$OUT/$core.info.txt" guest "$core" allx-edge info "$GUEST_MODEL" || fail "$core: allx-edge info failed"
    sed -n '1,12p' "$OUT/$core.info.txt" | sed 's/^/      /'
    if [[ $METADATA == embedded ]]; then
        grep -q '^metadata  embedded' "$OUT/$core.info.txt" || fail "$core: allx-edge info does not see the metadata embedded in the model"
    fi
    run_logged "$log" "$OUT/$core.classify.jsonl" guest "$core" allx-edge classify "${GUEST_IMAGES[@]}" --model "$GUEST_MODEL" --json \
        || fail "$core: allx-edge classify failed"
    run_logged "$log" "$OUT/$core.bench.txt" guest "$core" allx-edge bench --model "$GUEST_MODEL" --runs 3 \
        || fail "$core: allx-edge bench failed"
    say "    bench --runs 3 ran: see $OUT/$core.bench.txt (timings under emulation are meaningless)"
    run_logged "$log" "$OUT/$core.probe.jsonl" guest "$core" python "$GUEST/probe_outputs.py" "$GUEST_MODEL" "${GUEST_IMAGES[@]}" \
        || fail "$core: probe_outputs.py failed"
    compare "classify --json" "$OUT/x86.classify.jsonl" "$OUT/$core.classify.jsonl" || fail "$core: classify predictions differ from x86"
    compare "pixels + raw float32 probabilities" "$OUT/x86.probe.jsonl" "$OUT/$core.probe.jsonl" || fail "$core: raw outputs differ from x86"
    say "    $core done in $(elapsed "$start")"
}

compare() {
    local what=$1
    say "    x86 vs arm64, $what:"
    host_py "$HERE/compare_predictions.py" "$2" "$3" --roots "$IMAGES" "$GUEST/images" | sed 's/^/      /'
    return "${PIPESTATUS[0]}"
}

step_check() {
    say "[4/5] allx-edge info / classify --json / bench --runs 3 on emulated Pi 4 and Pi 5 cores"
    stage_inputs
    local core
    for core in "${CORES[@]}"; do check_core "$core"; done
}

main() {
    check_arguments "$@"
    trap cleanup EXIT
    trap 'echo "FAIL: run.sh line $LINENO: $BASH_COMMAND" >&2' ERR
    trap 'echo "FAIL: interrupted" >&2; exit 130' INT TERM
    WORK=$(mktemp -d)
    mkdir -p "$OUT" "$CACHE"
    exec 9> "$CACHE/.lock"
    flock -n 9 || fail "another run.sh is using $CACHE"
    rm -f "$OUT"/x86.* "$OUT"/cortex-a7?.* "$OUT/images.txt" "$OUT/wheels.txt"
    run_host_reference
    step_qemu
    step_rootfs
    step_venv
    step_check
    step_undo
    say "results in $OUT"
    echo "PASS: allx-edge info/classify/bench ran on emulated arm64 (${CORES[*]}) in Debian Bookworm;" \
         "predictions bit-identical to x86 on ${#HOST_IMAGES[@]} images; total $(elapsed "$STARTED")" \
         "(emulated timings are meaningless)"
}

main "$@"

#!/usr/bin/env bash
# Measures `meetbox install` (the USB installer: check the stick against its seal, write, read
# back) against `meetbox flash` of the same build onto the same kind of target, and against the
# target's own sequential write speed for the same amount of data (dd, O_DIRECT, 16 MiB requests).
#
# Usage: tests/bench/install.sh OUT/NAME.img.zst KEY.pub
#   The build is written to a loop-backed "stick" with meetbox flash first; the target is a
#   loop device one GiB larger than the image, both with direct I/O on their backing files, so the
#   disk under WORK is measured, not the page cache (default WORK: a temporary directory).
# Environment: MEETBOX (default target/release/meetbox), REPEAT (runs per command, default 3),
#   WORK, DROP_CACHES=0 to keep the page cache between runs. Needs root (loop devices).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
meetbox=${MEETBOX:-$repo/target/release/meetbox}
[[ $# -eq 2 ]] || { echo "usage: $0 OUT/NAME.img.zst KEY.pub" >&2; exit 2; }
image=$1 pubkey=$2
[[ -x $meetbox ]] || { echo "meetbox not found: cargo build --release, or set MEETBOX" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "needs root for loop devices" >&2; exit 2; }
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
loops=()
cleanup() { for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done; [[ -n ${WORK:-} ]] || rm -rf "$work"; }
trap cleanup EXIT

bmap=${image%.zst}; bmap=${bmap%.img}.img.bmap
size=$(sed -n 's:.*<ImageSize> *\([0-9]*\) *</ImageSize>.*:\1:p' "$bmap")
mapped=$(( $(sed -n 's:.*<MappedBlocksCount> *\([0-9]*\) *</MappedBlocksCount>.*:\1:p' "$bmap") * 4096 ))
truncate -s "$size" "$work/stick.img"
truncate -s $((size + (1 << 30))) "$work/target.img"
stick=$(losetup --direct-io=on --find --show "$work/stick.img"); loops+=("$stick")
target=$(losetup --direct-io=on --find --show "$work/target.img"); loops+=("$target")
echo "==> writing the stick $stick with meetbox flash" >&2
"$meetbox" flash "$image" "$stick" --yes --pubkey "$pubkey" >/dev/null 2>&1

drop() { sync; [[ ${DROP_CACHES:-1} == 1 ]] && echo 3 > /proc/sys/vm/drop_caches || true; }
# run LABEL COMMAND...: median wall time of REPEAT runs
run() {
    local label=$1; shift
    local times=()
    for _ in $(seq "${REPEAT:-3}"); do
        drop
        local start end
        start=$(date +%s.%N)
        "$@" >/dev/null 2>&1
        end=$(date +%s.%N)
        times+=("$(echo "$end - $start" | bc)")
    done
    local median
    median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (${#times[@]} + 1) / 2 ))p")
    echo "$label $median ${times[*]}"
}
echo "image: $((size >> 20)) MiB, $((mapped >> 20)) MiB mapped; stick $stick, target $target" >&2
install=$(run meetbox-install "$meetbox" install "$stick" "$target" --yes --pubkey "$pubkey")
flash=$(run meetbox-flash "$meetbox" flash "$image" "$target" --yes --pubkey "$pubkey")
dd=$(run dd-sequential dd if=/dev/zero of="$target" bs=16M count=$((mapped / (16 << 20))) oflag=direct)
printf '%-16s %8s %9s  %s\n' tool seconds "vs flash" runs
base=$(echo "$flash" | awk '{print $2}')
for line in "$install" "$flash" "$dd"; do
    set -- $line
    label=$1 median=$2; shift 2
    printf '%-16s %8.2f %9.2f  %s\n' "$label" "$median" "$(echo "$median / $base" | bc -l)" "$*"
done

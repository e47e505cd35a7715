#!/usr/bin/env bash
# Measures the cost of compressing in independent zstd frames: size and time of
# `meetbox compress` (the build's compression) at several frame sizes against one
# multithreaded frame, then at several levels in the build's frame size, on one
# raw image, so the choice of level and frame size shows.
#
# Usage: tests/bench/compress.sh [RAW.img]
#   Without an argument it compresses the synthetic image of synthetic-image.sh.
# Environment:
#   MEETBOX   meetbox binary (default: meetbox on PATH, else target/release/meetbox)
#   LEVEL     zstd level (default 12, as meetbox build)
#   FRAMES    frame sizes in MiB to try (default "8 16 32 64")
#   LEVELS    levels to try in 32 MiB frames (default "3 6 9 12 15 19")
#   WORK      scratch directory (default: a new temporary directory, removed at exit)
# Last, the zstd command at the same level on every core, for the ratio against the tool a user
# would otherwise run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
meetbox=${MEETBOX:-$(command -v meetbox || echo "$repo/target/release/meetbox")}
[[ -x $meetbox ]] || { echo "meetbox binary not found: build with cargo build --release or set MEETBOX" >&2; exit 2; }
own_work=
if [[ -n ${WORK:-} ]]; then
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d)
    own_work=1
fi
trap '[[ -n $own_work ]] && rm -rf "$WORK"; true' EXIT
raw=${1:-}
if [[ -z $raw ]]; then
    raw=$WORK/synthetic.img
    bash "$repo/tests/bench/synthetic-image.sh" "$raw"
fi
level=${LEVEL:-12}
echo "raw image: $raw ($(($(stat -c %s "$raw") >> 20)) MiB, $(($(du -k "$raw" | cut -f1) >> 10)) MiB allocated), level $level, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-14s %14s %9s %10s  %s\n' framing "bytes" "vs one" seconds frames
one=
for framing in single ${FRAMES:-8 16 32 64}; do
    if [[ $framing == single ]]; then
        args=(--single-frame)
    else
        args=(--frame-mib "$framing")
    fi
    json=$("$meetbox" compress --level "$level" "${args[@]}" "$raw" "$WORK/out.zst" 2>/dev/null)
    read -r size seconds frames < <(python3 -c 'import json, sys; j = json.loads(sys.argv[1]); print(j["compressed_size"], j["seconds"], j["frames"])' "$json")
    one=${one:-$size}
    label=$framing
    [[ $framing == single ]] && label="one frame" || label="$framing MiB frames"
    printf '%-14s %14d %8.2f%% %10.1f  %s\n' "$label" "$size" "$(echo "($size - $one) * 100 / $one" | bc -l)" "$seconds" "$frames"
    rm -f "$WORK/out.zst"
done
echo
printf '%-14s %14s %10s\n' level "bytes" seconds
at_build=
for try in ${LEVELS:-3 6 9 12 15 19}; do
    json=$("$meetbox" compress --level "$try" --frame-mib 32 "$raw" "$WORK/out.zst" 2>/dev/null)
    read -r size seconds < <(python3 -c 'import json, sys; j = json.loads(sys.argv[1]); print(j["compressed_size"], j["seconds"])' "$json")
    [[ $try == "$level" ]] && at_build=$size
    printf '%-14s %14d %10.1f\n' "level $try" "$size" "$seconds"
    rm -f "$WORK/out.zst"
done
[[ -n $at_build ]] && echo "(level $level, the build's, gave $at_build bytes)"
# The tool a user would otherwise pick: the zstd command on every core, same level, one stream.
if command -v zstd >/dev/null; then
    start=$(date +%s.%N)
    zstd -q -f -T"$(nproc)" -"$level" "$raw" -o "$WORK/out.zst"
    end=$(date +%s.%N)
    size=$(stat -c %s "$WORK/out.zst")
    rm -f "$WORK/out.zst"
    printf 'zstd -T%d -%d: %d bytes in %.1f s\n' "$(nproc)" "$level" "$size" "$(echo "$end - $start" | bc -l)"
fi

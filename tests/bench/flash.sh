#!/usr/bin/env bash
# Measures `meetbox flash` against `bmaptool copy` and `zstdcat | dd` on one image
# and one target: wall time, ratio to bmaptool, bytes written (from the kernel's
# per-process write accounting, via /usr/bin/time's %O).
#
# Usage: tests/bench/flash.sh [OUT/NAME.img.zst KEY.pub]
#   Without arguments it builds a synthetic image of a realistic shape (see
#   synthetic-image.sh: 4 GiB with a GPT and about 1.2 GiB of compressible data
#   in scattered ranges), or takes the raw image RAW, compresses it with
#   `meetbox compress` (the build's compression), and lays it out in the build's
#   artifact layout, signed with a throwaway minisign key.
# Environment:
#   RAW       raw image to use instead of the synthetic one (kept)
#   LEVEL     zstd level (default 12, as meetbox build)
#   FORMAT=single  one zstd frame, as images built before the frames
#   MEETBOX   meetbox binary (default: meetbox on PATH, else target/release/meetbox)
#   WORK      scratch directory (default: a new temporary directory, removed at exit)
#   LOOP=0    skip the loop device target
#   DROP_CACHES=0  keep the page cache between runs (default: drop it, needs root)
#   REPEAT    runs per tool; the median is reported (default 3)
# Needs: bmap-tools, zstd, gdisk, minisign, python3, GNU time; root for loop devices.
# Synthetic images are signed with the minisign CLI in meetbox's format: the
# manifest, SHA256SUMS and trusted comments match what `meetbox build` writes.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
meetbox=${MEETBOX:-$(command -v meetbox || echo "$repo/target/release/meetbox")}
[[ -x $meetbox ]] || { echo "meetbox binary not found: build with cargo build --release or set MEETBOX" >&2; exit 2; }
for tool in bmaptool zstd zstdcat sgdisk minisign python3 /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install bmap-tools zstd gdisk minisign python3 time)" >&2; exit 2; }
done

own_work=
loopdev=
if [[ -n ${WORK:-} ]]; then
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d)
    own_work=1
fi
cleanup() {
    [[ -n $loopdev ]] && losetup -d "$loopdev" 2>/dev/null
    [[ -n $own_work ]] && rm -rf "$WORK"
    return 0
}
trap cleanup EXIT

synthesize() {
    local name=bench out=$WORK/out
    mkdir -p "$out"
    local raw=${RAW:-$WORK/$name.img}
    [[ -n ${RAW:-} ]] || bash "$repo/tests/bench/synthetic-image.sh" "$raw"
    echo "==> Compressing, mapping, describing and signing" >&2
    # As `meetbox build` compresses: independent frames and a seek table (or, with
    # FORMAT=single, one frame as images built before the frames).
    local framing=()
    [[ ${FORMAT:-frames} == single ]] && framing=(--single-frame)
    local compressed
    compressed=$("$meetbox" compress --level "${LEVEL:-12}" "${framing[@]}" "$raw" "$out/$name.img.zst")
    bmaptool create -o "$out/$name.img.bmap" "$raw"
    # The manifest and trusted comments as `meetbox build` writes them (see
    # builder/src/manifest.rs and signing.rs), signed here with the minisign CLI.
    local version raw_sha zst_sha
    version=$("$meetbox" --version | awk '{ print $2 }')
    raw_sha=$(sha256sum "$raw" | cut -d' ' -f1)
    zst_sha=$(sha256sum "$out/$name.img.zst" | cut -d' ' -f1)
    python3 - "$raw" "$name" "$version" "$raw_sha" "$zst_sha" "$(stat -c %s "$out/$name.img.zst")" \
        "$compressed" > "$out/$name.manifest.json" <<'PY'
import json, struct, sys, uuid
raw, name, version, raw_sha, zst_sha, zst_size, compressed = sys.argv[1:]
frames = json.loads(compressed)["frame_list"]
with open(raw, "rb") as f:
    f.seek(512); header = f.read(92)
    entries_lba, count, size = struct.unpack_from("<QII", header, 72)
    f.seek(entries_lba * 512); table = f.read(count * size)
    f.seek(0, 2); raw_size = f.tell()
parts = []
for i in range(count):
    e = table[i * size:(i + 1) * size]
    if e[:16] == bytes(16):
        continue
    first, last = struct.unpack_from("<QQ", e, 32)
    parts.append({
        "number": i + 1,
        "name": e[56:128].decode("utf-16-le").rstrip("\0"),
        "type_guid": str(uuid.UUID(bytes_le=e[:16])),
        "partition_guid": str(uuid.UUID(bytes_le=e[16:32])),
        "first_lba": first, "last_lba": last, "size_bytes": (last - first + 1) * 512,
        "filesystem": "vfat" if i == 0 else "ext4", "filesystem_uuid": "",
    })
print(json.dumps({
    "format": 1, "name": name, "meetbox_version": version, "base": "synthetic",
    "profile": {"name": "flash-benchmark"}, "packages": [],
    "disk": {"size_bytes": raw_size, "disk_guid": str(uuid.UUID(bytes_le=header[56:72])),
             "sector_size": 512, "partitions": parts},
    "image": {"raw_size_bytes": raw_size, "raw_sha256": raw_sha,
              "compressed_file": name + ".img.zst", "compressed_size_bytes": int(zst_size),
              "compressed_sha256": zst_sha, "bmap_file": name + ".img.bmap",
              **({"frames": frames} if frames else {})},
    "source_date_epoch": 1700000000,
}, indent=2))
PY
    (cd "$out" && sha256sum "$name.img.zst" "$name.img.bmap" "$name.manifest.json" > SHA256SUMS)
    local sums_sha
    sums_sha=$(sha256sum "$out/SHA256SUMS" | cut -d' ' -f1)
    minisign -GW -p "$WORK/bench.pub" -s "$WORK/bench.key" >/dev/null
    minisign -S -s "$WORK/bench.key" -m "$out/$name.img.zst" \
        -t "meetbox $version file:$name.img.zst sha256:$zst_sha raw-sha256:$raw_sha" >/dev/null
    minisign -S -s "$WORK/bench.key" -m "$out/SHA256SUMS" \
        -t "meetbox $version file:SHA256SUMS sha256:$sums_sha" >/dev/null
    [[ -n ${RAW:-} ]] || rm -f "$raw"
    image=$out/$name.img.zst
    pubkey=$WORK/bench.pub
}

if [[ $# -ge 2 ]]; then
    image=$1
    pubkey=$2
else
    synthesize
fi
bmap=${image%.zst}
bmap=${bmap%.img}.img.bmap
image_size=$(sed -n 's:.*<ImageSize> *\([0-9]*\) *</ImageSize>.*:\1:p' "$bmap")
mapped=$(sed -n 's:.*<MappedBlocksCount> *\([0-9]*\) *</MappedBlocksCount>.*:\1:p' "$bmap")
echo "image: $image ($((image_size >> 20)) MiB, $((mapped * 4096 >> 20)) MiB mapped, $(($(stat -c %s "$image") >> 20)) MiB compressed)" >&2

drop_caches() {
    sync
    if [[ ${DROP_CACHES:-1} == 1 && -w /proc/sys/vm/drop_caches ]]; then
        echo 3 > /proc/sys/vm/drop_caches
    fi
}

# measure LABEL TARGET FRESH COMMAND...: runs COMMAND $REPEAT times (FRESH resets
# the target before each run) and prints "LABEL median_seconds bytes_written".
measure() {
    local label=$1 target=$2 fresh=$3
    shift 3
    local stats=$WORK/time.txt times=() seconds blocks
    for _ in $(seq "${REPEAT:-3}"); do
        $fresh
        drop_caches
        /usr/bin/time -o "$stats" -f "%e %O" "$@" >"$WORK/$label.log" 2>&1 || {
            echo "$label failed:" >&2
            cat "$WORK/$label.log" >&2
            exit 1
        }
        read -r seconds blocks < "$stats"
        times+=("$seconds")
    done
    seconds=$(printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    # meetbox's own account of its last run: frames decompressed, phase times.
    grep -E "decompressing|one zstd frame|verify:|write:|read back:" "$WORK/$label.log" | sed "s/^ */  $label: /" >&2 || true
    echo "$label $seconds $((blocks * 512)) ${times[*]}"
}

run_all() {
    local target=$1 fresh=$2
    measure "meetbox-flash" "$target" "$fresh" "$meetbox" flash "$image" "$target" --pubkey "$pubkey" --yes
    measure "bmaptool-copy" "$target" "$fresh" bmaptool copy --bmap "$bmap" "$image" "$target"
    measure "zstdcat-dd" "$target" "$fresh" sh -c "zstdcat -q '$image' | dd of='$target' bs=4M iflag=fullblock oflag=direct conv=fsync status=none"
}

report() {
    local kind=$1
    awk -v kind="$kind" '
        { t[$1] = $2; b[$1] = $3; order[NR] = $1; r[$1] = ""; for (f = 4; f <= NF; f++) r[$1] = r[$1] " " $f }
        END {
            printf "\n%s target (median of runs)\n%-14s %9s %9s %12s  runs\n", kind, "tool", "seconds", "vs bmap", "MiB written"
            for (i = 1; i <= NR; i++) {
                n = order[i]
                printf "%-14s %9.2f %9.2f %12.1f %s\n", n, t[n], t[n] / t["bmaptool-copy"], b[n] / 1048576, r[n]
            }
        }'
}

file_target=$WORK/target.raw
fresh_file() { rm -f "$file_target"; truncate -s "$image_size" "$file_target"; }
run_all "$file_target" fresh_file | tee "$WORK/file.txt" >&2
report file < "$WORK/file.txt"
rm -f "$file_target"

if [[ ${LOOP:-1} == 1 ]]; then
    backing=$WORK/loop-backing.raw
    truncate -s $((image_size + (64 << 20))) "$backing"
    if loopdev=$(losetup --find --show "$backing" 2>/dev/null); then
        no_reset() { :; }
        run_all "$loopdev" no_reset | tee "$WORK/loop.txt" >&2
        report "loop device ($loopdev)" < "$WORK/loop.txt"
        losetup -d "$loopdev"
        loopdev=
    else
        echo "loop device target skipped: losetup failed (needs root)" >&2
    fi
    rm -f "$backing"
fi

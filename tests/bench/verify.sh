#!/usr/bin/env bash
# Times `meetbox verify` (one pass: both signatures, SHA256SUMS, manifest, decompressed
# SHA-256) against the reference tools doing less: `zstd -dc | sha256sum` plus
# `minisign -V` (which reads the image a second time). Prints both times and the ratio.
#
# Usage: tests/bench/verify.sh [NAME.img.zst KEY.pub]
#   Without arguments it builds a synthetic signed build of BENCH_SIZE_MIB (default 1024)
#   MiB: mostly zeros with 1/8 random data, compressed with zstd, mapped with bmaptool,
#   and signed by the reference minisign with meetbox's trusted comments (so the run
#   also shows that meetbox accepts what the reference CLI signs).
# Environment: MEETBOX (the meetbox binary; default `meetbox` on PATH, else
#   target/release/meetbox), BENCH_RUNS (default 3), BENCH_SIZE_MIB, BENCH_DIR (build
#   the synthetic image there and keep it, instead of a temporary directory).
# Uses hyperfine when installed, else bash's `time`.
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/../.." && pwd)
runs=${BENCH_RUNS:-3}
size_mib=${BENCH_SIZE_MIB:-1024}

if [[ -n ${MEETBOX:-} ]]; then
    meetbox=$MEETBOX
elif command -v meetbox >/dev/null; then
    meetbox=$(command -v meetbox)
else
    meetbox=$repo_root/target/release/meetbox
fi
[[ -x $meetbox ]] || { echo "error: no meetbox binary at $meetbox: run cargo build --release or set MEETBOX" >&2; exit 2; }
for tool in zstd sha256sum minisign; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 2; }
done

# Writes a signed synthetic build into $1 and prints "IMAGE PUBKEY".
make_synthetic_build() {
    local dir=$1 name=meetbox-bench
    command -v bmaptool >/dev/null || { echo "error: bmaptool is not installed" >&2; exit 2; }
    local raw=$dir/$name.img
    truncate -s "${size_mib}M" "$raw"
    local stretch=$((size_mib / 64)) offset
    for offset in $(seq 0 $((size_mib / 8)) $((size_mib - stretch))); do
        dd if=/dev/urandom of="$raw" bs=1M count="$stretch" seek="$offset" conv=notrunc status=none
    done
    zstd -q -T0 -3 "$raw" -o "$dir/$name.img.zst"
    bmaptool -q create "$raw" -o "$dir/$name.img.bmap"
    local raw_sha raw_size zst_sha zst_size
    raw_sha=$(sha256sum "$raw" | cut -d' ' -f1)
    raw_size=$(stat -c %s "$raw")
    zst_sha=$(sha256sum "$dir/$name.img.zst" | cut -d' ' -f1)
    zst_size=$(stat -c %s "$dir/$name.img.zst")
    rm -f "$raw"
    cat >"$dir/$name.manifest.json" <<JSON
{
  "format": 1,
  "name": "$name",
  "meetbox_version": "bench",
  "base": "synthetic",
  "profile": {},
  "packages": [],
  "disk": { "size_bytes": $raw_size, "disk_guid": "00000000-0000-0000-0000-000000000001",
            "sector_size": 512, "partitions": [] },
  "image": { "raw_size_bytes": $raw_size, "raw_sha256": "$raw_sha",
             "compressed_file": "$name.img.zst", "compressed_size_bytes": $zst_size,
             "compressed_sha256": "$zst_sha", "bmap_file": "$name.img.bmap" },
  "source_date_epoch": 0
}
JSON
    minisign -G -W -p "$dir/bench.pub" -s "$dir/bench.key" >/dev/null
    minisign -S -s "$dir/bench.key" -m "$dir/$name.img.zst" \
        -t "meetbox bench file:$name.img.zst sha256:$zst_sha raw-sha256:$raw_sha" >/dev/null
    (cd "$dir" && sha256sum "$name.img.zst" "$name.img.bmap" "$name.manifest.json" >SHA256SUMS)
    minisign -S -s "$dir/bench.key" -m "$dir/SHA256SUMS" \
        -t "meetbox bench file:SHA256SUMS sha256:$(sha256sum "$dir/SHA256SUMS" | cut -d' ' -f1)" >/dev/null
    echo "$dir/$name.img.zst $dir/bench.pub"
}

if [[ $# -eq 2 ]]; then
    image=$1 pubkey=$2
elif [[ $# -eq 0 ]]; then
    if [[ -n ${BENCH_DIR:-} ]]; then
        work=$BENCH_DIR
        mkdir -p "$work"
    else
        work=$(mktemp -d)
        trap 'rm -rf "$work"' EXIT
    fi
    echo "building a synthetic ${size_mib} MiB signed build in $work ..." >&2
    read -r image pubkey < <(make_synthetic_build "$work")
else
    echo "usage: $0 [NAME.img.zst KEY.pub]" >&2
    exit 2
fi

raw_size=$(zstd -lv "$image" 2>/dev/null | awk '/Decompressed Size/ {print $3, $4}')
echo "image: $image ($(du -h "$image" | cut -f1) compressed, ${raw_size:-unknown} raw); $(nproc) cores" >&2
"$meetbox" verify "$image" --pubkey "$pubkey" >/dev/null 2>&1 \
    || { echo "error: meetbox verify rejects $image: run it by hand to see why" >&2; exit 1; }

ours="$meetbox verify $image --pubkey $pubkey"
reference="zstd -dc $image | sha256sum && minisign -Vm $image -p $pubkey"
# coreutils' sha256sum may lack the CPU's SHA instructions; OpenSSL uses them.
openssl_reference="zstd -dc $image | openssl dgst -sha256 && minisign -Vm $image -p $pubkey"

if command -v hyperfine >/dev/null; then
    csv=$(mktemp)
    extra=()
    if command -v openssl >/dev/null; then
        extra=(--command-name "zstd -dc | openssl sha256 + minisign -V" "$openssl_reference >/dev/null 2>&1")
    fi
    hyperfine --style basic --warmup 1 --runs "$runs" --export-csv "$csv" \
        --command-name "meetbox verify" "$ours >/dev/null 2>&1" \
        --command-name "zstd -dc | sha256sum + minisign -V" "$reference >/dev/null 2>&1" \
        "${extra[@]}" >&2
    ours_s=$(awk -F, 'NR==2 {print $2}' "$csv")
    reference_s=$(awk -F, 'NR==3 {print $2}' "$csv")
    openssl_s=$(awk -F, 'NR==4 {print $2}' "$csv")
    rm -f "$csv"
else
    mean_seconds() {
        local total_ns=0 run start
        for run in $(seq "$runs"); do
            start=$(date +%s%N)
            bash -c "$1" >/dev/null 2>&1
            total_ns=$((total_ns + $(date +%s%N) - start))
        done
        awk -v ns="$total_ns" -v runs="$runs" 'BEGIN { print ns / runs / 1e9 }'
    }
    ours_s=$(mean_seconds "$ours")
    reference_s=$(mean_seconds "$reference")
    openssl_s=""
    if command -v openssl >/dev/null; then
        openssl_s=$(mean_seconds "$openssl_reference")
    fi
fi
awk -v ours="$ours_s" -v ref="$reference_s" -v ossl="$openssl_s" 'BEGIN {
    printf "meetbox verify:                              %.2f s\n", ours
    printf "zstd -dc | sha256sum + minisign -V:          %.2f s\n", ref
    printf "ratio (meetbox / reference):                 %.2f\n", ours / ref
    if (ossl != "") {
        printf "zstd -dc | openssl sha256 + minisign -V:     %.2f s\n", ossl
        printf "ratio (meetbox / openssl reference):         %.2f\n", ours / ossl
    }
}'

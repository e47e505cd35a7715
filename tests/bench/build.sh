#!/usr/bin/env bash
# Measures `meetbox build` of the test profile: cold (empty root file system
# cache, so mmdebstrap runs) and warm (cached root file system), plus the raw
# and compressed image sizes. Run as root from the source tree:
#   bash tests/bench/build.sh [ubuntu-24.04|debian-12]
set -euo pipefail
cd "$(dirname "$0")/../.."
base=${1:-ubuntu-24.04}
work=$(mktemp -d /var/tmp/meetbox-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cargo build --release -q -p meetbox
meetbox=target/release/meetbox
$meetbox keygen --out "$work/key" --unencrypted >/dev/null 2>&1

run() { # label, out dir
  local start end
  start=$(date +%s.%N)
  $meetbox build --profile test --base "$base" --out "$work/$2" --key "$work/key.key" \
    --cache-dir "$work/cache" > "$work/$2.log" 2>&1 || { cat "$work/$2.log"; exit 1; }
  end=$(date +%s.%N)
  printf '%-6s build: %6.1f s\n' "$1" "$(echo "$end - $start" | bc)"
}
run cold out1
run warm out2
manifest="$work/out2/meetbox-test-$base.manifest.json"
python3 - "$manifest" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["image"]
print(f"raw image:        {m['raw_size_bytes'] / 2**30:.2f} GiB")
print(f"compressed image: {m['compressed_size_bytes'] / 2**20:.0f} MiB")
PY
grep -E "mmdebstrap took|mapped|compress:" "$work/out1.log" | sed 's/^ */  cold: /'
cmp -s "$work/out1/meetbox-test-$base.img.zst" "$work/out2/meetbox-test-$base.img.zst" \
  && echo "cold and warm images are byte-identical" || echo "cold and warm images DIFFER"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(. /etc/os-release; echo "$PRETTY_NAME")"

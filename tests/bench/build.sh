#!/usr/bin/env bash
# Measures `meetbox build` of a profile (default: test) in one run, on the same machine and network:
#   cold          empty caches: mmdebstrap runs, every frame is compressed
#   mmdebstrap    mmdebstrap alone with the same packages, suite and components (what a user would
#                 otherwise run to get a root file system), for the cold build's ratio
#   warm          the same inputs again: cached root file system and frames
#   warm-changed  one input changed (another bandwidth profile: tuning.toml and profile.toml)
# then the image sizes, where the warm builds' time went, and whether cold and warm are identical.
# Run as root from the source tree:
#   bash tests/bench/build.sh [ubuntu-24.04|debian-12] [PROFILE]
set -euo pipefail
cd "$(dirname "$0")/../.."
base=${1:-ubuntu-24.04}
profile=${2:-test}
work=$(mktemp -d /var/tmp/meetbox-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cargo build --release -q -p meetbox
meetbox=target/release/meetbox
# The image's programs, compiled before the clock starts with the flags `meetbox build` uses: the
# cold build is then the image pipeline alone, as mmdebstrap compiles nothing either. (Should the
# flags drift apart, the cold build compiles again and its ratio only gets worse.)
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -q -p meetbox -p meetbox-firstboot \
  --target x86_64-unknown-linux-gnu
$meetbox keygen --out "$work/key" --unencrypted >/dev/null 2>&1

seconds() { echo "$2 - $1" | bc; }
run() { # label, out dir, extra build arguments...
  local label=$1 out=$2 start end
  shift 2
  start=$(date +%s.%N)
  $meetbox build --profile "$profile" --base "$base" --out "$work/$out" --key "$work/key.key" \
    --cache-dir "$work/cache" "$@" > "$work/$out.log" 2>&1 || { cat "$work/$out.log"; exit 1; }
  end=$(date +%s.%N)
  printf '%-13s %7.1f s\n' "$label" "$(seconds "$start" "$end")"
  eval "time_$out=$(seconds "$start" "$end")"
}
run cold out1
# mmdebstrap alone: the recipe's packages, as the cache recorded them, without Meetbox's hooks.
meta=$(ls "$work"/cache/rootfs/*/meta.json)
read -r suite components packages < <(python3 - "$meta" <<'PY'
import json, sys
recipe = json.load(open(sys.argv[1]))["recipe"]
suites = {"ubuntu-24.04": "noble", "debian-12": "bookworm"}
print(suites[recipe["base"]], ",".join(recipe["components"]), ",".join(recipe["packages"]))
PY
)
# The archive key `meetbox build` pins, so a Debian host without ubuntu-keyring can check Ubuntu.
case $base in
  ubuntu-*) keyring=builder/keys/ubuntu-archive.gpg ;;
  debian-12) keyring=builder/keys/debian-12-archive.gpg ;;
esac
start=$(date +%s.%N)
mmdebstrap --mode=root --variant=minbase --format=tar --components="$components" --keyring="$keyring" \
  --include="$packages" "$suite" "$work/alone.tar" > "$work/alone.log" 2>&1 || { cat "$work/alone.log"; exit 1; }
end=$(date +%s.%N)
alone=$(seconds "$start" "$end")
printf '%-13s %7.1f s\n' mmdebstrap "$alone"
rm -f "$work/alone.tar"
run warm out2
run warm-changed out3 --bandwidth fibre-250-250

printf 'cold build / mmdebstrap alone: %.2f\n' "$(echo "$time_out1 / $alone" | bc -l)"
python3 - "$work" <<'PY'
import glob, json, sys
work = sys.argv[1]
for out in ("out1", "out3"):
    m = json.load(open(glob.glob(f"{work}/{out}/*.manifest.json")[0]))["image"]
    print(f"{out}: raw {m['raw_size_bytes'] / 2**30:.2f} GiB, compressed {m['compressed_size_bytes'] / 1e6:.1f} MB "
          f"({m['compressed_size_bytes'] / 2**20:.1f} MiB), {len(m['frames'])} frames")
PY
for out in out1 out2 out3; do
  echo "$out:"
  grep -E "mmdebstrap took|frame cache:|^ *[0-9.]+ s +|where the time went" "$work/$out.log" | sed 's/^ */  /'
done
image=$(cd "$work/out1" && ls ./*.img.zst)
cmp -s "$work/out1/$image" "$work/out2/$image" \
  && echo "cold and warm images are byte-identical" || echo "cold and warm images DIFFER"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(. /etc/os-release; echo "$PRETTY_NAME"), load $(cut -d' ' -f1-3 /proc/loadavg)"

#!/usr/bin/env bash
# For a maintainer on a machine that reaches Jitsi's apt repository (the project's own machines do
# not: see docs/jitsi.md §3). Builds the `default` profile from Jitsi's real repository, with SSH
# turned on for this check only, sets it up unattended in a Secure Boot VM, and checks what the
# package-shaped tests cannot: that jicofo and the videobridge run, and are healthy together.
#
#   bash tests/maintainer/jitsi-real-repository.sh [WORK_DIR]
#
# Needs root (the build) and the packages tests/run installs. Exit 0: the check passed.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-$(mktemp -d /tmp/meetbox-jitsi-check.XXXXXX)}
mkdir -p "$work"
echo "==> working in $work"

# The default profile, with SSH on so the check can look inside the box.
sed 's/^ssh = false/ssh = true/; s/^name = "meetbox"/name = "meetbox-jitsi-check"/' profiles/default.toml \
  > "$work/default-ssh.toml"
grep -q '^ssh = true' "$work/default-ssh.toml" || { echo "profiles/default.toml changed shape" >&2; exit 2; }

echo "==> building the default profile from Jitsi's repository"
cargo run --release -q -p meetbox -- keygen --out "$work/check" --unencrypted >/dev/null 2>&1 || true
cargo run --release -q -p meetbox -- build --profile "$work/default-ssh.toml" --out "$work/out" \
  --key "$work/check.key" --base ubuntu-24.04
image=$(ls "$work"/out/*.img.zst)

echo "==> preparing a disk with an answers file (self-signed certificate, the check's SSH key)"
rm -f "$work/owner" "$work/owner.pub"
ssh-keygen -q -t ed25519 -N '' -f "$work/owner"
zstd -q -d -f "$image" -o "$work/disk.img"
truncate -s 16G "$work/disk.img"
esp_start=$(sfdisk -J "$work/disk.img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][0]["start"])')
umask 077
cat > "$work/meetbox-setup.toml" <<ANSWERS
domain = "meet.meetbox.test"
admin_password = "maintainer check $(date +%s)"
tls = "self-signed"
ssh_authorized_keys = ["$(cat "$work/owner.pub")"]
ANSWERS
mcopy -o -i "$work/disk.img@@$((esp_start * 512))" "$work/meetbox-setup.toml" ::meetbox-setup.toml

echo "==> booting; setup runs unattended"
ssh_port=2222
cargo run --release -q -p meetbox -- run "$work/disk.img" --forward "$ssh_port:22" \
  --serial-log "$work/serial.log" --memory-mb 4096 &
vm=$!
trap 'kill $vm 2>/dev/null || true' EXIT
for _ in $(seq 1 360); do
  grep -q "Setup is complete" "$work/serial.log" 2>/dev/null && break
  sleep 5
done
grep -q "Setup is complete" "$work/serial.log" || { echo "setup did not complete: see $work/serial.log" >&2; exit 1; }

guest() {
  ssh -i "$work/owner" -p "$ssh_port" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o ConnectTimeout=10 root@127.0.0.1 "$@"
}
echo "==> checking jicofo and the videobridge inside the box"
for _ in $(seq 1 60); do
  if guest 'systemctl is-active jicofo.service jitsi-videobridge2.service' >/dev/null 2>&1 \
     && guest 'curl -fsS http://127.0.0.1:8888/about/health && curl -fsS http://127.0.0.1:8080/about/health' >/dev/null 2>&1; then
    echo "jicofo and the videobridge are active and healthy: the check passed"
    exit 0
  fi
  sleep 10
done
guest 'systemctl status --no-pager jicofo.service jitsi-videobridge2.service' || true
echo "jicofo or the videobridge is not healthy after 10 minutes" >&2
exit 1

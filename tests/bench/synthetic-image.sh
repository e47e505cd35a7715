#!/usr/bin/env bash
# Writes a synthetic raw disk image of a realistic shape to OUT.img: 4 GiB with a
# GPT (ESP + root) and about 1.2 GiB of compressible data (files from /usr) in
# scattered ranges, laid out like ext4. Sparse where there is no data. The content
# depends on the files under /usr, so compare sizes only within one machine.
# Used by flash.sh and compress.sh. Needs sgdisk and python3.
set -euo pipefail
raw=${1:?usage: synthetic-image.sh OUT.img}
echo "==> Synthesizing a 4 GiB image with ~1.2 GiB of data in $raw" >&2
rm -f "$raw"
truncate -s 4G "$raw"
sgdisk -q -n 1:2048:+256M -t 1:ef00 -n 2:0:0 -t 2:8304 "$raw"
# Data from /usr (binaries, libraries, text: compresses about like a root file
# system), laid out like ext4: files packed in extents with gaps, plus metadata
# blocks at every 128 MiB block group.
python3 - "$raw" <<'PY'
import os, random, sys, tarfile, io
random.seed(42)
MIB = 1 << 20
def sources():
    for top in ("/usr/lib", "/usr/share", "/usr/bin"):
        for root, _, files in os.walk(top):
            for f in files:
                p = os.path.join(root, f)
                if os.path.isfile(p) and not os.path.islink(p):
                    yield p
def stream():
    while True:
        for p in sources():
            try:
                with open(p, "rb") as fh:
                    while chunk := fh.read(4 * MIB):
                        yield chunk
            except OSError:
                pass
data = stream()
pending = b""
def take(n):
    global pending
    while len(pending) < n:
        pending += next(data)
    out, pending = pending[:n], pending[n:]
    return out
with open(sys.argv[1], "r+b") as img:
    # ESP: 40 MiB of files after 1 MiB of FAT.
    img.seek(MIB); img.write(take(MIB))
    img.seek(2 * MIB); img.write(take(40 * MIB))
    root = 257 * MIB
    size = 4096 * MIB
    # Block group metadata every 128 MiB.
    for group in range(root, size - 64 * MIB, 128 * MIB):
        img.seek(group); img.write(take(random.choice((4096, 64 * 1024, 1 * MIB))))
    # Files: about 1.15 GiB in extents of 64 KiB to 24 MiB with gaps.
    pos, written = root + 2 * MIB, 0
    while written < 1180 * MIB:
        extent = random.choice((64 * 1024, 256 * 1024, MIB, 4 * MIB, 12 * MIB, 24 * MIB))
        img.seek(pos); img.write(take(extent))
        written += extent
        pos += extent + random.choice((0, 4096, 128 * 1024, 2 * MIB, 16 * MIB))
PY
sgdisk -q -v "$raw" >/dev/null

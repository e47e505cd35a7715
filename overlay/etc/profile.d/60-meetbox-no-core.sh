# Meetbox hardening (docs/hardening.md): no core dumps from login shells either (Lynis KRNL-5820);
# limits.d and fs.suid_dumpable already forbid them for services and set-uid programs.
ulimit -c 0

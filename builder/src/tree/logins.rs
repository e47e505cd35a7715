//! Logins: PAM, login.defs, su and the per-shell umask, set to what CIS asks (section 5) on a box
//! where nobody logs in with a password. Root is locked, the system accounts have none, and SSH
//! (off by default) takes keys only. The rules therefore cost nothing, and they stand ready should
//! a password ever be set: quality, history, lockout after failures, ageing, no empty passwords,
//! and su for nobody.
//!
//! Run by mmdebstrap inside the new root, because `pam-auth-update` must write `/etc/pam.d`. The
//! profiles it reads stay in `/usr/share/pam-configs`, so a later upgrade of PAM regenerates the
//! same stacks. Ubuntu's `unix` profile allows empty passwords (`nullok`), so it is diverted
//! (`dpkg-divert`): an upgrade puts the package's new version beside it, not over it.

/// Where the package's own `unix` PAM profile is kept after the divert.
pub const DIVERTED_UNIX_PROFILE: &str = "/usr/share/meetbox/pam-configs/unix.distrib";

/// The hook, with the root as `$1`; [`hook`] fills in the divert path.
const LOGINS_HOOK: &str = r#"set -e
root="$1"

# Password quality (CIS 5.3.3.2), for any password a later owner might set.
cat > "$root/etc/security/pwquality.conf" <<'EOF'
# Written by meetbox build (docs/hardening.md): no password logs in on this box; should one
# ever be set, it must be long and mixed.
minlen = 14
minclass = 4
dcredit = -1
ucredit = -1
lcredit = -1
ocredit = -1
difok = 2
maxrepeat = 3
maxsequence = 3
dictcheck = 1
enforcing = 1
enforce_for_root
EOF

# Lockout after failed attempts (CIS 5.3.3.1), root included: four, the value SSG's CIS profiles
# refine the benchmark's "5 or fewer" to.
cat > "$root/etc/security/faillock.conf" <<'EOF'
# Written by meetbox build (docs/hardening.md).
deny = 4
unlock_time = 900
even_deny_root
root_unlock_time = 60
EOF

# Password history (CIS 5.3.3.3).
cat > "$root/etc/security/pwhistory.conf" <<'EOF'
# Written by meetbox build (docs/hardening.md).
remember = 24
enforce_for_root
EOF

profiles="$root/usr/share/pam-configs"
cat > "$profiles/meetbox-faillock" <<'EOF'
Name: Meetbox: lock an account after failed passwords (pam_faillock)
Default: yes
Priority: 0
Auth-Type: Primary
Auth:
	[default=die]	pam_faillock.so authfail
EOF
cat > "$profiles/meetbox-faillock-notify" <<'EOF'
Name: Meetbox: refuse a locked account, count from the last success (pam_faillock)
Default: yes
Priority: 1024
Auth-Type: Primary
Auth:
	requisite	pam_faillock.so preauth
Account-Type: Primary
Account:
	required	pam_faillock.so
EOF
# After pwquality (priority 1024), whose new password it checks (use_authtok).
cat > "$profiles/meetbox-pwhistory" <<'EOF'
Name: Meetbox: refuse a recently used password (pam_pwhistory)
Default: yes
Priority: 1023
Password-Type: Primary
Password:
	requisite	pam_pwhistory.so remember=24 enforce_for_root try_first_pass use_authtok
EOF

# No empty passwords (CIS 5.3.3.4): the package's unix profile, without nullok.
diverted="DIVERTED_UNIX_PROFILE"
mkdir -p "$root${diverted%/*}"
chroot "$root" dpkg-divert --quiet --local --rename --divert "$diverted" \
    --add /usr/share/pam-configs/unix
sed 's/[[:space:]]nullok\b//' "$root$diverted" > "$profiles/unix"
chroot "$root" env DEBIAN_FRONTEND=noninteractive pam-auth-update --force --enable \
    unix pwquality meetbox-faillock meetbox-faillock-notify meetbox-pwhistory
# --force kept the old stacks as *.pam-old, nullok and all: they go. The stacks' comments explain
# nullok; only the rules count.
rm -f "$root"/etc/pam.d/common-*.pam-old
if grep -hv '^[[:space:]]*#' "$root"/etc/pam.d/common-* | grep -q nullok; then
    echo "PAM still allows empty passwords" >&2; exit 1
fi

# su for the members of an empty group only (CIS 5.2.7).
chroot "$root" groupadd --system sugroup
sed -i '/^auth[[:space:]]\+sufficient[[:space:]]\+pam_rootok.so/a auth       required   pam_wheel.so use_uid group=sugroup' \
    "$root/etc/pam.d/su"
grep -q '^auth[[:space:]]\+required[[:space:]]\+pam_wheel.so use_uid group=sugroup' "$root/etc/pam.d/su"

# Password ageing for accounts made later (CIS 5.4.1); existing accounts keep theirs, so root's
# locked entry never expires and key logins go on working.
sed -i -e 's/^PASS_MAX_DAYS[[:space:]].*/PASS_MAX_DAYS\t365/' \
       -e 's/^PASS_MIN_DAYS[[:space:]].*/PASS_MIN_DAYS\t1/' \
       -e 's/^PASS_WARN_AGE[[:space:]].*/PASS_WARN_AGE\t7/' \
       -e 's/^UMASK[[:space:]].*/UMASK\t\t027/' "$root/etc/login.defs"
# Hashing rounds for SHA-512, should the method ever change from yescrypt (Lynis AUTH-9230).
printf '\n# Written by meetbox build (docs/hardening.md).\nSHA_CRYPT_MIN_ROUNDS\t65536\nSHA_CRYPT_MAX_ROUNDS\t65536\n' \
    >> "$root/etc/login.defs"
sed -i 's/^#\?[[:space:]]*INACTIVE=.*/INACTIVE=30/' "$root/etc/default/useradd"
grep -q '^INACTIVE=30$' "$root/etc/default/useradd" || echo 'INACTIVE=30' >> "$root/etc/default/useradd"

# New files private to their group in every shell, not only in logins (CIS 5.4.3.3).
for rc in etc/bash.bashrc etc/profile; do
    printf '\n# Written by meetbox build (docs/hardening.md).\numask 027\n' >> "$root/$rc"
done
"#;

/// The hook as mmdebstrap runs it (the divert path filled in).
pub fn hook() -> String {
    LOGINS_HOOK.replace(
        "\"DIVERTED_UNIX_PROFILE\"",
        &format!("\"{DIVERTED_UNIX_PROFILE}\""),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_names_the_divert_and_enables_every_profile() {
        let hook = hook();
        assert!(hook.contains(&format!("diverted=\"{DIVERTED_UNIX_PROFILE}\"")));
        assert!(!hook.contains("DIVERTED_UNIX_PROFILE"));
        for profile in [
            "meetbox-faillock",
            "meetbox-faillock-notify",
            "meetbox-pwhistory",
        ] {
            assert!(
                hook.contains(&format!("$profiles/{profile}\"")),
                "{profile}"
            );
            assert!(
                hook.contains(&format!(" {profile}")),
                "{profile} not enabled"
            );
        }
        // pam-auth-update orders by priority, highest first: pwhistory takes the password that
        // pwquality (1024) asked for, and unix (256) comes last.
        let pwhistory = &hook[hook.find("$profiles/meetbox-pwhistory").unwrap()..];
        assert!(pwhistory.contains("Priority: 1023"));
    }

    #[test]
    fn the_diverted_profile_lies_outside_pam_configs() {
        // pam-auth-update reads every file in /usr/share/pam-configs: a copy there would add a
        // second pam_unix line to every stack.
        assert!(!DIVERTED_UNIX_PROFILE.starts_with("/usr/share/pam-configs/"));
    }

    /// The sed that drops nullok, run by the real sed on the shape of Ubuntu's profile line.
    #[test]
    fn nullok_is_dropped_and_nothing_else() {
        let line = "\t[success=end default=ignore]\tpam_unix.so nullok try_first_pass\n";
        let output = std::process::Command::new("sed")
            .arg(r"s/[[:space:]]nullok\b//")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(line.as_bytes())?;
                child.wait_with_output()
            })
            .expect("sed runs");
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            "\t[success=end default=ignore]\tpam_unix.so try_first_pass\n"
        );
    }
}

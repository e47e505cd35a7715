//! The boot menu's superuser lines in `/boot/grub/grub.cfg`. `meetbox build` writes the file with
//! [`SUPERUSER_MARKER`] where they belong and every entry `--unrestricted`; first boot puts this
//! device's superuser under the marker, and a factory reset takes it out again, back to the
//! image's text. The lines sit in grub.cfg itself, not in a sourced file: that is where GRUB and
//! the scanners (CIS 1.4.1) read them.

use anyhow::{bail, Result};

/// The line of grub.cfg that the superuser lines follow (the contract with `meetbox build`).
pub const SUPERUSER_MARKER: &str =
    "# The boot menu's superuser, this device's own (written by meetbox-firstboot):";

/// The lines for GRUB's superuser `root` with PBKDF2 `record` (secrets::boot_menu).
fn superuser_lines(record: &str) -> String {
    format!("set superusers=\"root\"\npassword_pbkdf2 root {record}\n")
}

/// `grub_cfg` with the superuser of `record` under the marker, replacing any earlier one.
pub fn with_superuser(grub_cfg: &str, record: &str) -> Result<String> {
    let image_text = without_superuser(grub_cfg)?;
    let (before, after) = split_at_marker(&image_text)?;
    Ok(format!(
        "{before}{SUPERUSER_MARKER}\n{}{after}",
        superuser_lines(record)
    ))
}

/// `grub_cfg` as the image ships it: the marker and no superuser.
pub fn without_superuser(grub_cfg: &str) -> Result<String> {
    let (before, after) = split_at_marker(grub_cfg)?;
    let after: String = after
        .split_inclusive('\n')
        .skip_while(|line| {
            line.starts_with("set superusers=") || line.starts_with("password_pbkdf2 ")
        })
        .collect();
    Ok(format!("{before}{SUPERUSER_MARKER}\n{after}"))
}

/// The text before the marker line and after it.
fn split_at_marker(grub_cfg: &str) -> Result<(&str, &str)> {
    let Some(at) = grub_cfg.find(&format!("{SUPERUSER_MARKER}\n")) else {
        bail!(
            "the boot menu (grub.cfg) has no place for its superuser: it was not written by \
             meetbox build; reinstall the image"
        );
    };
    Ok((
        &grub_cfg[..at],
        &grub_cfg[at + SUPERUSER_MARKER.len() + 1..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_cfg() -> String {
        format!(
            "set timeout=1\n{SUPERUSER_MARKER}\nmenuentry 'Meetbox' --unrestricted {{\n    linux /vmlinuz\n}}\n"
        )
    }

    #[test]
    fn the_superuser_goes_under_the_marker_and_a_reset_restores_the_image_s_text() {
        let image = image_cfg();
        let set = with_superuser(&image, "grub.pbkdf2.sha512.10000.AA.BB").unwrap();
        assert_eq!(
            set,
            format!(
                "set timeout=1\n{SUPERUSER_MARKER}\nset superusers=\"root\"\n\
                 password_pbkdf2 root grub.pbkdf2.sha512.10000.AA.BB\n\
                 menuentry 'Meetbox' --unrestricted {{\n    linux /vmlinuz\n}}\n"
            )
        );
        assert_eq!(without_superuser(&set).unwrap(), image);
        assert_eq!(without_superuser(&image).unwrap(), image);
    }

    #[test]
    fn a_second_setup_replaces_the_first_superuser() {
        let first = with_superuser(&image_cfg(), "grub.pbkdf2.sha512.10000.AA.BB").unwrap();
        let second = with_superuser(&first, "grub.pbkdf2.sha512.10000.CC.DD").unwrap();
        assert_eq!(second.matches("password_pbkdf2").count(), 1);
        assert!(second.contains("CC.DD") && !second.contains("AA.BB"));
    }

    #[test]
    fn a_boot_menu_without_the_marker_is_refused_with_the_fix() {
        let error = with_superuser("menuentry 'x' {\n}\n", "r").unwrap_err();
        assert!(error.to_string().contains("reinstall the image"), "{error}");
    }
}

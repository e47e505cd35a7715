//! What counts as boot output on a screen the agent owns: systemd's status lines and kernel
//! messages. One rule for every screen the tests read, whether a terminal emulator rendered the
//! serial console (the appliance tests) or tmux did (`meetbox run` in tests/image.rs).

/// Text of systemd's status lines: none may be on screen while the agent shows it.
const SYSTEMD_OUTPUT: &[&str] = &[
    "[  OK  ]",
    "[FAILED]",
    "A start job is running",
    "Reached target",
    "Started ",
    "Stopped ",
    "Finished ",
    "Mounting ",
    "Mounted ",
    "Listening on",
    "systemd[",
];

/// Whether a rendered screen line is the boot's, not the agent's: a systemd status line, or a
/// kernel message (`[    4.123456] ...`).
pub fn is_boot_output(row: &str) -> bool {
    let row = row.trim_start();
    let kernel_message = row.strip_prefix('[').is_some_and(|rest| {
        rest.trim_start()
            .split(']')
            .next()
            .is_some_and(|stamp| stamp.contains('.') && stamp.parse::<f64>().is_ok())
    });
    kernel_message || SYSTEMD_OUTPUT.iter().any(|noise| row.contains(noise))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_and_kernel_lines_are_boot_output_and_the_agents_are_not() {
        assert!(is_boot_output("[  OK  ] Started systemd-journald.service"));
        assert!(is_boot_output("[    4.123456] EXT4-fs (vda2): mounted"));
        assert!(is_boot_output("[12345.5] usb 1-1: new device"));
        assert!(!is_boot_output("Meetbox first-boot setup"));
        assert!(!is_boot_output(
            "[1] Domain name (for example meet.example.org)"
        ));
        assert!(!is_boot_output("  Press Enter to start the setup"));
    }
}

//! Network namespaces a test makes: "the box" and a client joined by a veth pair, each end with
//! the addresses the test names, deleted (with the pair) when dropped.

use std::process::Command;

pub struct Namespaces {
    pub server: String,
    pub client: String,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

pub fn ip(args: &[&str]) {
    let out = super::run(Command::new("ip").args(args));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `program` run inside the namespace `ns`.
pub fn in_ns(ns: &str, program: &str) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns, program]);
    command
}

/// Two namespaces named after `tag` (a few letters: interface names are short), joined by a veth
/// pair; addresses are given with their prefix length ("10.77.0.1/24", "fd00::1/64").
pub fn link(tag: &str, server_addresses: &[&str], client_addresses: &[&str]) -> Namespaces {
    let id = std::process::id();
    let spaces = Namespaces {
        server: format!("mb{tag}-box-{id}"),
        client: format!("mb{tag}-cli-{id}"),
    };
    let (box_end, client_end) = (format!("{tag}b{id}"), format!("{tag}c{id}"));
    ip(&["netns", "add", &spaces.server]);
    ip(&["netns", "add", &spaces.client]);
    ip(&[
        "link",
        "add",
        &box_end,
        "type",
        "veth",
        "peer",
        "name",
        &client_end,
    ]);
    for (ns, end, addresses) in [
        (&spaces.server, &box_end, server_addresses),
        (&spaces.client, &client_end, client_addresses),
    ] {
        ip(&["link", "set", end, "netns", ns]);
        for address in addresses.iter() {
            let mut args = vec!["-n", ns.as_str(), "addr", "add", address, "dev", end];
            if address.contains(':') {
                // No duplicate-address wait: the test uses the address at once.
                args.push("nodad");
            }
            ip(&args);
        }
        ip(&["-n", ns, "link", "set", end, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    spaces
}

/// curl inside `ns` with `args` (TLS unchecked, 4 s at most): its exit code and the HTTP status
/// ("000" when nothing answered).
pub fn http_status(ns: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = super::run(
        in_ns(ns, "curl")
            .args([
                "-sk",
                "--max-time",
                "4",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(args),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

//! `meetbox run`: try an image in a Secure Boot VM before flashing it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::host::progress;
use crate::profile::ByteSize;
use crate::vm::qemu::{self, Accel, Vm, VmSpec};

/// Boot an image in QEMU with UEFI Secure Boot (OVMF, Microsoft keys enrolled).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    meetbox run out/meetbox-ubuntu-24.04.img.zst\n      \
    serial console here (Ctrl-A X quits); https://127.0.0.1:8443/ reaches the guest\n  \
    meetbox run out/x.img.zst --serial-socket console.sock --serial-log boot.log\n      \
    console on a socket (socat - UNIX-CONNECT:console.sock), also logged\n  \
    meetbox run out/x.img.zst --disk-size 16GiB --serial-log boot.log \\\n      \
    --expect 'Secure boot enabled' --expect 'Meetbox first-boot setup' --timeout 600\n      \
    unattended smoke test: exit 0 once both texts appeared, then power off\n  \
    ip tuntap add dev mbtap0 mode tap && meetbox run out/x.img.zst --tap mbtap0\n      \
    a second card on a host tap device: scan the box as the LAN would\n  \
    meetbox run out/x.img.zst --capture traffic.pcap\n      \
    record what the box sends and receives (open with tcpdump -r or Wireshark)\n  \
    meetbox run out/x.img.zst --usb-stick --internal-disk 16GiB\n      \
    the image as a USB stick in a computer with an empty SSD: try the installer")]
pub struct RunArgs {
    /// The compressed image (NAME.img.zst) or a raw disk image (NAME.img).
    pub image: PathBuf,
    /// Size of the virtual disk; larger than the image shows the root growing.
    #[arg(long, value_parser = parse_size)]
    pub disk_size: Option<ByteSize>,
    /// Keep the virtual disk at this path (default: a temporary file).
    #[arg(long)]
    pub disk: Option<PathBuf>,
    /// Attach the image as a removable USB stick, as an owner boots a mini-PC from one.
    #[arg(long)]
    pub usb_stick: bool,
    /// Add an empty internal disk of this size (repeatable), e.g. to install onto from the stick.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub internal_disk: Vec<ByteSize>,
    /// Attach a raw disk image as a USB stick with files (repeatable), e.g. a FAT image holding a
    /// backup to restore at the box's screen.
    #[arg(long, value_name = "IMAGE")]
    pub data_stick: Vec<PathBuf>,
    /// Host port on 127.0.0.1 forwarded to the guest's port 80.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Host port on 127.0.0.1 forwarded to the guest's port 443.
    #[arg(long, default_value_t = 8443)]
    pub https_port: u16,
    /// Host port on 127.0.0.1 forwarded to the guest's web admin (its port 8443): the guest sees
    /// QEMU's private address, as a computer on the owner's network.
    #[arg(long, default_value_t = 9443)]
    pub admin_port: u16,
    /// Extra forward HOST:GUEST (TCP, host side on 127.0.0.1), repeatable.
    #[arg(long, value_parser = parse_forward)]
    pub forward: Vec<(u16, u16)>,
    /// Extra UDP forward HOST:GUEST (host side on 127.0.0.1), e.g. 3478:3478 for TURN; repeatable.
    #[arg(long, value_parser = parse_forward)]
    pub forward_udp: Vec<(u16, u16)>,
    #[arg(long, default_value_t = 2048)]
    pub memory_mb: u32,
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,
    /// Write the serial console to this file instead of the terminal.
    #[arg(long)]
    pub serial_log: Option<PathBuf>,
    /// Serve the serial console on this Unix socket instead of the terminal, to read it and type
    /// into it from another program (e.g. `socat - UNIX-CONNECT:PATH`); --serial-log still logs it.
    #[arg(long)]
    pub serial_socket: Option<PathBuf>,
    /// Unattended: wait for this text on the serial console (repeatable), then power off.
    #[arg(long, requires = "serial_log")]
    pub expect: Vec<String>,
    /// Seconds to wait for the --expect texts.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Also attach a second network card to this existing tap device (made with
    /// `ip tuntap add dev NAME mode tap`), to reach the guest as a LAN neighbour would.
    #[arg(long, value_name = "IFNAME")]
    pub tap: Option<String>,
    /// Record every frame of the guest's user network (the forwards, DNS, updates, ACME) in this
    /// pcap file, to see whom the box contacts.
    #[arg(long, value_name = "PCAP")]
    pub capture: Option<PathBuf>,
}

fn parse_size(text: &str) -> std::result::Result<ByteSize, String> {
    text.parse()
}

fn parse_forward(text: &str) -> std::result::Result<(u16, u16), String> {
    let (host, guest) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}`: write HOST:GUEST, e.g. 2222:22"))?;
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("`{p}` is not a port number"))
    };
    Ok((port(host)?, port(guest)?))
}

/// Sparse empty disks of these sizes in `dir`, each with a serial number.
fn empty_disks(dir: &std::path::Path, sizes: &[ByteSize]) -> Result<Vec<(PathBuf, String)>> {
    sizes
        .iter()
        .enumerate()
        .map(|(index, size)| {
            let path = dir.join(format!("internal{index}.img"));
            std::fs::File::create(&path)
                .and_then(|file| file.set_len(size.0))
                .with_context(|| format!("cannot create the internal disk {}", path.display()))?;
            Ok((path, format!("MEETBOX-RUN-{index}")))
        })
        .collect()
}

pub fn run(args: &RunArgs) -> Result<()> {
    qemu::check_host()?;
    let work = tempfile::Builder::new()
        .prefix("meetbox-run-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let min_size = args.disk_size.map(|s| s.0).unwrap_or(0);
    let disk = match &args.disk {
        Some(path) => path.clone(),
        None => work.path().join("disk.img"),
    };
    let is_zst = args.image.extension().is_some_and(|ext| ext == "zst");
    if is_zst {
        progress::step(format!("Preparing virtual disk {}", disk.display()));
        qemu::decompress_sparse(&args.image, &disk, min_size)?;
    } else {
        if args.disk.is_some() || min_size > 0 {
            bail!("--disk and --disk-size need a .img.zst image (a raw image is booted in place)");
        }
    }
    let disk = if is_zst { disk } else { args.image.clone() };
    let vars = work.path().join("OVMF_VARS.fd");
    qemu::fresh_vars(&vars)?;
    let accel = qemu::resolve_accel(args.accel);
    let mut forwards = vec![
        (args.http_port, 80),
        (args.https_port, 443),
        (args.admin_port, meetbox_firstboot::layout::ADMIN_PORT),
    ];
    forwards.extend(args.forward.iter().copied());
    let internal_disks = empty_disks(work.path(), &args.internal_disk)?;
    let spec = VmSpec {
        disk,
        disk_as_usb_stick: args.usb_stick,
        internal_disks,
        data_sticks: args.data_stick.clone(),
        vars,
        memory_mb: args.memory_mb,
        cpus: args.cpus,
        accel,
        forwards: forwards.clone(),
        udp_forwards: args.forward_udp.clone(),
        serial_log: args.serial_log.clone(),
        serial_socket: args.serial_socket.clone(),
        qmp_socket: Some(work.path().join("qmp.sock")),
        tap: args.tap.clone(),
        capture: args.capture.clone(),
    };
    progress::step(format!(
        "Booting with Secure Boot ({}), forwarding {}",
        match accel {
            Accel::Kvm => "KVM",
            _ => "software emulation: expect about a minute to boot",
        },
        forwards
            .iter()
            .map(|(h, g)| format!("127.0.0.1:{h} -> {g}"))
            .chain(
                args.forward_udp
                    .iter()
                    .map(|(h, g)| format!("127.0.0.1:{h} -> {g}/udp"))
            )
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if args.expect.is_empty() {
        match (&args.serial_socket, &args.serial_log) {
            (Some(socket), _) => progress::detail(format!(
                "serial console on {} (e.g. socat - UNIX-CONNECT:{0}); Ctrl-C stops QEMU",
                socket.display()
            )),
            (None, None) => progress::detail("serial console follows; Ctrl-A X quits QEMU"),
            (None, Some(_)) => {}
        }
        let status = Vm::start(spec, true)?.wait()?;
        if !status.success() {
            bail!("QEMU exited with {status}");
        }
        return Ok(());
    }
    let mut vm = Vm::start(spec, false)?;
    vm.wait_for_serial(&args.expect, Duration::from_secs(args.timeout))?;
    progress::step("Powering the VM off");
    if !vm.power_off(Duration::from_secs(30))? {
        progress::detail("the guest did not power off within 30 s; stopped it");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_parse() {
        assert_eq!(parse_forward("2222:22").unwrap(), (2222, 22));
        assert!(parse_forward("2222").unwrap_err().contains("HOST:GUEST"));
        assert!(parse_forward("x:22").is_err());
    }
}

//! Boots an image in QEMU with OVMF Secure Boot and Microsoft's keys enrolled, as
//! on a stock mini-PC: serial console on the terminal (or a log file, or a Unix
//! socket to type into), guest ports forwarded from 127.0.0.1 only.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::host::progress;

/// Where Debian and Ubuntu install OVMF's 4 MiB Secure Boot build and the variable
/// store with Microsoft's keys enrolled.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

/// How the guest is accelerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM when it works with SMM (needed by Secure Boot), else software emulation.
    Auto,
    Kvm,
    Tcg,
}

/// One virtual machine run.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub disk: PathBuf,
    /// Attach `disk` as a removable USB stick (xHCI, usb-storage) instead of a virtio disk: the
    /// image then starts as a live session and offers its installer.
    pub disk_as_usb_stick: bool,
    /// Internal disks beside it (virtio, each path with its serial number), booted after `disk`.
    pub internal_disks: Vec<(PathBuf, String)>,
    /// USB sticks with files on them (raw images, not booted), e.g. a backup the box's own screen
    /// restores.
    pub data_sticks: Vec<PathBuf>,
    pub vars: PathBuf,
    pub memory_mb: u32,
    pub cpus: u32,
    pub accel: Accel,
    /// TCP (host port on 127.0.0.1, guest port)
    pub forwards: Vec<(u16, u16)>,
    /// UDP (host port on 127.0.0.1, guest port), e.g. TURN on 3478.
    pub udp_forwards: Vec<(u16, u16)>,
    /// Serial console to this file instead of the terminal.
    pub serial_log: Option<PathBuf>,
    /// Serial console on this Unix socket (QEMU listens; a client reads and types),
    /// still copied to `serial_log` when both are set.
    pub serial_socket: Option<PathBuf>,
    /// QMP control socket, used to power the guest down cleanly.
    pub qmp_socket: Option<PathBuf>,
    /// A second network card on this existing host tap device: the guest as a
    /// neighbour on a local link, reachable on all its ports the way a LAN sees
    /// it (user networking only carries the forwarded ports, and answers them itself).
    pub tap: Option<String>,
    /// Every frame the guest sends or receives on its user network, written to this pcap file
    /// (QEMU's filter-dump): what the box contacts, read with tcpdump or Wireshark.
    pub capture: Option<PathBuf>,
}

/// QEMU's id of the USB stick device (`VmSpec::disk_as_usb_stick`), for [`Vm::pull_out_usb_stick`].
pub const USB_STICK_DEVICE: &str = "usbstick";

/// MAC address of the second card (`tap`), in QEMU's locally administered range.
pub const TAP_MAC: &str = "52:54:00:6d:62:01";

impl VmSpec {
    /// The QEMU command line (pure, so it is tested without QEMU).
    pub fn args(&self) -> Vec<String> {
        let accel = match self.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg | Accel::Auto => "tcg",
        };
        let mut args = vec![
            "-machine".to_string(),
            format!("q35,smm=on,accel={accel}"),
            "-global".into(),
            "driver=cfi.pflash01,property=secure,value=on".into(),
            "-m".into(),
            self.memory_mb.to_string(),
            "-smp".into(),
            self.cpus.to_string(),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=1,file={}", self.vars.display()),
            "-netdev".into(),
            self.netdev(),
            "-device".into(),
            "virtio-net-pci,netdev=n0".into(),
            "-device".into(),
            "virtio-rng-pci".into(),
            "-display".into(),
            "none".into(),
        ];
        args.extend(self.disk_args());
        match (&self.serial_socket, &self.serial_log) {
            (Some(socket), log) => {
                let mut chardev = format!(
                    "socket,id=serial0,path={},server=on,wait=off",
                    socket.display()
                );
                if let Some(log) = log {
                    chardev.push_str(&format!(",logfile={},logappend=off", log.display()));
                }
                args.extend(["-chardev".into(), chardev]);
                args.extend(["-serial".into(), "chardev:serial0".into()]);
                args.extend(["-monitor".into(), "none".into()]);
            }
            (None, Some(path)) => {
                args.push("-serial".into());
                args.push(format!("file:{}", path.display()));
                args.push("-monitor".into());
                args.push("none".into());
            }
            (None, None) => {
                args.push("-serial".into());
                args.push("mon:stdio".into());
            }
        }
        if let Some(pcap) = &self.capture {
            args.push("-object".into());
            args.push(format!(
                "filter-dump,id=capture0,netdev=n0,file={}",
                pcap.display()
            ));
        }
        if let Some(tap) = &self.tap {
            args.push("-netdev".into());
            args.push(format!("tap,id=n1,ifname={tap},script=no,downscript=no"));
            args.push("-device".into());
            args.push(format!("virtio-net-pci,netdev=n1,mac={TAP_MAC}"));
        }
        if let Some(socket) = &self.qmp_socket {
            args.push("-qmp".into());
            args.push(format!("unix:{},server=on,wait=off", socket.display()));
        }
        args
    }

    /// The boot disk first (a virtio disk, or a USB stick on xHCI), then the internal disks, then
    /// the data sticks.
    fn disk_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.disk_as_usb_stick || !self.data_sticks.is_empty() {
            args.extend(["-device".into(), "qemu-xhci,id=xhci".into()]);
        }
        if self.disk_as_usb_stick {
            args.extend([
                "-drive".into(),
                format!("if=none,id=stick,format=raw,file={}", self.disk.display()),
                "-device".into(),
                format!("usb-storage,id={USB_STICK_DEVICE},bus=xhci.0,drive=stick,removable=on,bootindex=0"),
            ]);
        } else {
            args.extend([
                "-drive".into(),
                format!("file={},format=raw,if=virtio", self.disk.display()),
            ]);
        }
        for (index, (path, serial)) in self.internal_disks.iter().enumerate() {
            args.extend([
                "-drive".into(),
                format!(
                    "if=none,id=internal{index},format=raw,file={}",
                    path.display()
                ),
                "-device".into(),
                format!(
                    "virtio-blk-pci,drive=internal{index},serial={serial},bootindex={}",
                    index + 1
                ),
            ]);
        }
        for (index, path) in self.data_sticks.iter().enumerate() {
            args.extend([
                "-drive".into(),
                format!(
                    "if=none,id=datastick{index},format=raw,file={}",
                    path.display()
                ),
                "-device".into(),
                format!("usb-storage,bus=xhci.0,drive=datastick{index},removable=on"),
            ]);
        }
        args
    }

    fn netdev(&self) -> String {
        let mut netdev = "user,id=n0".to_string();
        for (host, guest) in &self.forwards {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        for (host, guest) in &self.udp_forwards {
            netdev.push_str(&format!(",hostfwd=udp:127.0.0.1:{host}-:{guest}"));
        }
        netdev
    }
}

/// Checks that QEMU and OVMF are installed, naming the packages when not.
pub fn check_host() -> Result<()> {
    let mut missing = Vec::new();
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        missing.push("qemu-system-x86");
    }
    if !Path::new(OVMF_CODE).is_file() || !Path::new(OVMF_VARS_MS).is_file() {
        missing.push("ovmf");
    }
    if !missing.is_empty() {
        bail!(
            "booting an image needs QEMU and OVMF: install them with `apt-get install {}`",
            missing.join(" ")
        );
    }
    Ok(())
}

/// Resolves `Accel::Auto`: KVM only if it starts a Secure Boot capable (SMM) machine.
pub fn resolve_accel(accel: Accel) -> Accel {
    if accel != Accel::Auto {
        return accel;
    }
    let probe = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "q35,smm=on,accel=kvm",
            "-display",
            "none",
            "-nodefaults",
            "-m",
            "64",
            "-S",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = probe else {
        return Accel::Tcg;
    };
    std::thread::sleep(Duration::from_millis(1500));
    let still_running = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    if still_running {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
}

/// Copies the Microsoft-keys variable store for one VM (the firmware writes to it).
pub fn fresh_vars(dest: &Path) -> Result<()> {
    fs::copy(OVMF_VARS_MS, dest).with_context(|| {
        format!(
            "cannot copy {OVMF_VARS_MS} to {}: install the `ovmf` package",
            dest.display()
        )
    })?;
    Ok(())
}

/// Decompresses a `.img.zst` into a sparse raw file (all-zero blocks become holes)
/// of at least `min_size` bytes, so the guest can see a disk larger than the image.
pub fn decompress_sparse(image_zst: &Path, raw: &Path, min_size: u64) -> Result<u64> {
    let input =
        File::open(image_zst).with_context(|| format!("cannot open {}", image_zst.display()))?;
    let mut decoder = zstd::stream::read::Decoder::new(input)
        .with_context(|| format!("{} is not a zstd file", image_zst.display()))?;
    let mut out = File::create(raw).with_context(|| format!("cannot create {}", raw.display()))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut written: u64 = 0;
    let mut progress = progress::Progress::bytes("decompress", 0);
    loop {
        let n = read_full(&mut decoder, &mut buffer)?;
        if n == 0 {
            break;
        }
        for block in buffer[..n].chunks(4096) {
            if block.iter().all(|&b| b == 0) {
                out.seek(SeekFrom::Current(block.len() as i64))?;
            } else {
                out.write_all(block)?;
            }
        }
        written += n as u64;
        progress.inc(n as u64);
    }
    progress.finish();
    out.set_len(written.max(min_size))?;
    out.sync_all()?;
    Ok(written)
}

fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// A running guest.
pub struct Vm {
    child: Child,
    spec: VmSpec,
}

impl Vm {
    pub fn start(spec: VmSpec, inherit_terminal: bool) -> Result<Vm> {
        check_host()?;
        let mut command = Command::new("qemu-system-x86_64");
        command.args(spec.args());
        if !inherit_terminal {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
        }
        let child = command.spawn().context("cannot start qemu-system-x86_64")?;
        Ok(Vm { child, spec })
    }

    /// Waits until every text in `expected` has appeared in the serial log, or
    /// fails after `timeout` naming what was not seen.
    pub fn wait_for_serial(&mut self, expected: &[String], timeout: Duration) -> Result<()> {
        let log = self
            .spec
            .serial_log
            .clone()
            .context("waiting for console text needs a serial log file")?;
        let started = Instant::now();
        let mut seen = vec![false; expected.len()];
        let mut offset = 0usize;
        let mut text = String::new();
        loop {
            if let Ok(bytes) = fs::read(&log) {
                if bytes.len() > offset {
                    text.push_str(&String::from_utf8_lossy(&bytes[offset..]));
                    offset = bytes.len();
                }
            }
            for (index, wanted) in expected.iter().enumerate() {
                if !seen[index] && text.contains(wanted.as_str()) {
                    seen[index] = true;
                    progress::detail(format!(
                        "console: \"{wanted}\" after {:.0} s",
                        started.elapsed().as_secs_f64()
                    ));
                }
            }
            if seen.iter().all(|s| *s) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the VM stopped ({status}) before the console showed: {}{}",
                    missing(expected, &seen),
                    self.stderr_tail()
                );
            }
            if started.elapsed() > timeout {
                bail!(
                    "after {} s the console had not shown: {} (serial log: {})",
                    timeout.as_secs(),
                    missing(expected, &seen),
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Saves what the guest's screen shows (its VGA console: tty1 on a real box) as a PNG; needs the
    /// QMP socket.
    pub fn screendump(&self, png: &Path) -> Result<()> {
        let socket = self
            .spec
            .qmp_socket
            .as_ref()
            .context("a screen dump needs the VM's QMP socket (VmSpec::qmp_socket)")?;
        let path = png
            .to_str()
            .filter(|p| !p.contains(['"', '\\']))
            .context("the screen dump's path must be plain UTF-8")?;
        qmp_execute(
            socket,
            &format!(
                "{{\"execute\":\"screendump\",\"arguments\":{{\"filename\":\"{path}\",\"format\":\"png\"}}}}"
            ),
        )
    }

    /// Pulls the USB stick out of the running guest (QMP `device_del`), as an owner does.
    pub fn pull_out_usb_stick(&self) -> Result<()> {
        let socket = self
            .spec
            .qmp_socket
            .as_ref()
            .context("pulling out the stick needs the VM's QMP socket")?;
        qmp_execute(
            socket,
            &format!(
                "{{\"execute\":\"device_del\",\"arguments\":{{\"id\":\"{USB_STICK_DEVICE}\"}}}}"
            ),
        )
    }

    /// Asks the guest to power off (ACPI power button over QMP) and waits; kills it
    /// after `timeout`. Returns whether it shut down by itself.
    pub fn power_off(&mut self, timeout: Duration) -> Result<bool> {
        if let Some(socket) = &self.spec.qmp_socket {
            if let Err(err) = qmp_command(socket, "system_powerdown") {
                progress::detail(format!("QMP power-down failed: {err:#}"));
            }
        }
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self.child.try_wait()?.is_some() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Ok(false)
    }

    /// Waits for the guest to exit (interactive runs).
    pub fn wait(mut self) -> Result<std::process::ExitStatus> {
        Ok(self.child.wait()?)
    }

    fn stderr_tail(&mut self) -> String {
        let Some(stderr) = self.child.stderr.as_mut() else {
            return String::new();
        };
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        if text.trim().is_empty() {
            String::new()
        } else {
            format!("\nqemu said: {}", text.trim())
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn missing(expected: &[String], seen: &[bool]) -> String {
    expected
        .iter()
        .zip(seen)
        .filter(|(_, s)| !**s)
        .map(|(e, _)| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Presses the reset button of the guest whose QMP socket is `qmp_socket` (QMP `system_reset`).
pub fn press_reset(qmp_socket: &Path) -> Result<()> {
    qmp_command(qmp_socket, "system_reset")
}

/// Sends one QMP command without arguments (after the capabilities handshake).
fn qmp_command(socket: &Path, command: &str) -> Result<()> {
    qmp_execute(socket, &format!("{{\"execute\":\"{command}\"}}"))
}

/// Sends one QMP request, given as its JSON object (after the capabilities handshake).
fn qmp_execute(socket: &Path, request: &str) -> Result<()> {
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("cannot connect to QMP socket {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line)?; // greeting
    writer.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
    line.clear();
    reader.read_line(&mut line)?;
    writer.write_all(format!("{request}\n").as_bytes())?;
    line.clear();
    reader.read_line(&mut line)?;
    if line.contains("\"error\"") {
        bail!("QMP {request} failed: {}", line.trim());
    }
    Ok(())
}

#[cfg(test)]
#[path = "qemu_tests.rs"]
mod tests;

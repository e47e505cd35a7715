//! `meetbox install`: copy the image from the USB stick the box started from onto an internal
//! disk. The box's first-boot agent runs it (the offer on the console is the agent's); it is the
//! same engine as `meetbox flash`, reading a disk instead of a compressed build.
//!
//! Order of events: check the seal on the stick's ESP with the image's public key, check every
//! byte of the stick against the seal (nothing is written before this passes), refuse unsafe
//! disks, then write with the partition table last, read everything back, and move the backup
//! partition table to the end of the larger disk.

pub mod stick;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Result};
use meetbox_firstboot::install::seal::{DiskChoice, DiskList};
use meetbox_firstboot::layout::IMAGE_SIGNING_KEY;

use crate::flash::device::{self, refusals, DiskFacts};
use crate::flash::writer::{FlashJob, Input, TargetFile};
use crate::flash::{self, INTERRUPTED};
use crate::host::progress;

/// Install the image from the USB stick it runs from onto an internal disk.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
    meetbox install --list /dev/sda          the disks, and why any cannot take the image (JSON)\n  \
    meetbox install --check /dev/sda         check the stick against its signed seal\n  \
    meetbox install /dev/sda /dev/nvme0n1    check the stick, then install onto the NVMe disk\n\n\
    The box runs this itself when it starts from a USB stick (docs/guide.md). Nothing is written\n\
    before every byte of the stick matches the image's signed seal; the partition table goes\n\
    last and every range is read back, so a failure leaves a disk that does not boot.")]
pub struct InstallArgs {
    /// The USB stick holding the image (written by meetbox flash or any image writer).
    pub stick: PathBuf,
    /// The disk to install onto (e.g. /dev/nvme0n1), or a file to write the raw image to.
    #[arg(required_unless_present_any = ["list", "check"])]
    pub disk: Option<PathBuf>,
    /// The public key the image is signed with (the image carries its own).
    #[arg(long, value_name = "KEY.pub", default_value = IMAGE_SIGNING_KEY)]
    pub pubkey: PathBuf,
    /// Do not ask before erasing the disk (the box's agent asked already).
    #[arg(long)]
    pub yes: bool,
    /// Print every disk as JSON, with the reasons any cannot take the image.
    #[arg(long, conflicts_with_all = ["disk", "check"])]
    pub list: bool,
    /// Only check the stick against its seal.
    #[arg(long, conflicts_with = "disk")]
    pub check: bool,
}

/// Runs `meetbox install`.
pub fn run(args: &InstallArgs) -> Result<()> {
    let started = Instant::now();
    let source = TargetFile::open_for_reading(&args.stick)?;
    let sealed = stick::read_seal(&source, &args.pubkey)?;
    if args.list {
        let list = disk_list(&args.stick, sealed.seal.image_size)?;
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    progress::step(format!(
        "Checking {} against the signed seal of {}",
        args.stick.display(),
        sealed.seal.name
    ));
    let guard = flash::InterruptGuard::install();
    let map = stick::check(&source, &sealed, &INTERRUPTED)?;
    drop(guard);
    progress::detail(format!(
        "every byte matches the image signed by {} (key id {})",
        args.pubkey.display(),
        sealed.key_id
    ));
    let Some(disk) = &args.disk else {
        return Ok(());
    };
    ensure!(
        !same_device(&args.stick, disk),
        "{} is the stick itself: give the internal disk to install onto",
        disk.display()
    );
    let target = flash::open_target(disk, sealed.seal.image_size, args.yes)?;
    progress::step(format!(
        "Installing {} from {} onto {}",
        sealed.seal.name,
        args.stick.display(),
        disk.display()
    ));
    let job = FlashJob {
        input: Input::Disk(&source),
        map: &map,
        stop: &INTERRUPTED,
        corrupt_after_write: None,
    };
    flash::write_and_finish(&job, &target)?;
    progress::step(format!(
        "Installed onto {} in {:.0} s",
        disk.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Whether two paths name the same block device (or file).
fn same_device(a: &Path, b: &Path) -> bool {
    let id = |path: &Path| {
        std::fs::metadata(path).ok().map(|meta| {
            if std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
                (0, meta.rdev())
            } else {
                (meta.dev(), meta.ino())
            }
        })
    };
    matches!((id(a), id(b)), (Some(x), Some(y)) if x == y)
}

/// Every disk of the computer, and why any cannot take an image of `image_size` bytes.
fn disk_list(stick: &Path, image_size: u64) -> Result<DiskList> {
    let stick_name = std::fs::canonicalize(stick)
        .ok()
        .and_then(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()));
    let disks = device::list_disks()?
        .into_iter()
        .filter(|disk| !is_virtual(&disk.name))
        .map(|disk| choice(&disk, image_size, stick_name.as_deref()))
        .collect();
    Ok(DiskList { image_size, disks })
}

/// Block devices that are no disk of the computer.
fn is_virtual(name: &str) -> bool {
    ["loop", "ram", "zram", "sr", "dm-", "md", "nbd", "fd"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// One disk as the installer's offer shows it: the stick and other removable disks are never
/// offered, nor any disk `meetbox flash` would refuse.
fn choice(disk: &DiskFacts, image_size: u64, stick: Option<&str>) -> DiskChoice {
    let refusals = if Some(disk.name.as_str()) == stick {
        vec!["it is the USB stick this box started from".to_string()]
    } else if disk.removable || disk.transport == "usb" {
        vec!["it is removable or on USB, not an internal disk".to_string()]
    } else {
        refusals(disk, Some(image_size))
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    DiskChoice {
        device: format!("/dev/{}", disk.name),
        model: disk.model.clone(),
        serial: disk.serial.clone(),
        size_bytes: disk.size_bytes,
        transport: disk.transport.clone(),
        refusals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, gb: u64, transport: &str, removable: bool) -> DiskFacts {
        DiskFacts {
            name: name.into(),
            size_bytes: gb << 30,
            read_only: false,
            removable,
            logical_block_size: 512,
            model: Some("Disk".into()),
            serial: Some(format!("SN-{name}")),
            transport: transport.into(),
            partition_of: None,
            uses: Vec::new(),
            holders: Vec::new(),
        }
    }

    #[test]
    fn the_stick_removable_disks_and_small_disks_are_not_offered() {
        let image = 3 << 30;
        let stick = choice(&disk("sda", 8, "usb", true), image, Some("sda"));
        assert_eq!(
            stick.refusals,
            ["it is the USB stick this box started from"]
        );
        let other_stick = choice(&disk("sdb", 64, "usb", false), image, Some("sda"));
        assert_eq!(
            other_stick.refusals,
            ["it is removable or on USB, not an internal disk"]
        );
        let card = choice(&disk("mmcblk0", 64, "mmc", true), image, Some("sda"));
        assert!(!card.offered());
        let small = choice(&disk("vda", 1, "virtio", false), image, Some("sda"));
        assert!(
            small.refusals[0].contains("too small"),
            "{:?}",
            small.refusals
        );
        let big = choice(&disk("nvme0n1", 512, "nvme", false), image, Some("sda"));
        assert!(big.offered(), "{:?}", big.refusals);
        assert_eq!(big.device, "/dev/nvme0n1");
        assert_eq!(big.serial.as_deref(), Some("SN-nvme0n1"));
    }

    #[test]
    fn virtual_block_devices_are_no_disks() {
        for name in ["loop0", "ram1", "zram0", "sr0", "dm-2", "md127", "nbd0"] {
            assert!(is_virtual(name), "{name}");
        }
        for name in ["sda", "nvme0n1", "vda", "mmcblk0"] {
            assert!(!is_virtual(name), "{name}");
        }
    }
}

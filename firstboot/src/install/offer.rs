//! The installer's screen and choices, as pure functions: what the owner sees, what they may type,
//! and what an answers file's `[install]` section selects.

use serde::Deserialize;

use crate::install::seal::{DiskChoice, DiskList};

/// The word that confirms erasing a disk: typed, so no stray Enter erases anything.
pub const CONFIRM_WORD: &str = "ERASE";

/// What the owner chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Install(DiskChoice),
    RunFromStick,
}

/// The answers file's `[install]` section, for an unattended install:
///
/// ```toml
/// [install]
/// onto = "internal"   # the one internal disk that can take the image; or its serial, or /dev/NAME;
///                     # or "stick" to run from the USB stick
/// erase = true        # required to install: the typed confirmation's equivalent
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallAnswer {
    pub onto: String,
    #[serde(default)]
    pub erase: bool,
}

/// Sizes as people read them on a disk's label (decimal units).
pub fn label_size(bytes: u64) -> String {
    let gb = bytes as f64 / 1e9;
    if gb >= 1000.0 {
        format!("{:.1} TB", gb / 1000.0)
    } else if gb >= 10.0 {
        format!("{gb:.0} GB")
    } else {
        format!("{gb:.1} GB")
    }
}

/// One line naming a disk the way its owner recognises it.
pub fn describe(disk: &DiskChoice) -> String {
    let model = disk
        .model
        .clone()
        .unwrap_or_else(|| format!("{} disk", disk.transport));
    format!(
        "{}: {}, {}, serial {}",
        disk.device,
        model,
        label_size(disk.size_bytes),
        disk.serial.as_deref().unwrap_or("(none)")
    )
}

/// The disks that may be offered, in the order shown.
pub fn offered(list: &DiskList) -> Vec<&DiskChoice> {
    list.disks.iter().filter(|d| d.offered()).collect()
}

/// The offer screen: a numbered choice for each disk that can take the image, then running from
/// the stick; below, every disk not offered with its reason.
pub fn screen(list: &DiskList, stick: &str) -> String {
    let mut text = format!(
        "This box started from the USB stick /dev/{stick}. Meetbox can install itself onto an\n\
         internal disk of this computer; the stick stays as it is.\n\n"
    );
    let disks = offered(list);
    for (index, disk) in disks.iter().enumerate() {
        text.push_str(&format!(
            "  {}) Install onto {}\n",
            index + 1,
            describe(disk)
        ));
    }
    text.push_str(&format!(
        "  {}) Run from this USB stick instead (the stick becomes the box's disk)\n",
        disks.len() + 1
    ));
    let refused: Vec<&DiskChoice> = list.disks.iter().filter(|d| !d.offered()).collect();
    if !refused.is_empty() {
        text.push_str("\nNot offered:\n");
        for disk in refused {
            text.push_str(&format!(
                "  {}: {}\n",
                disk.device,
                disk.refusals.join("; ")
            ));
        }
    }
    if disks.is_empty() {
        text.push_str(&format!(
            "\nNo internal disk can take the image ({} needed). Free or add one, then start\n\
             from the stick again, or run from the stick.\n",
            label_size(list.image_size)
        ));
    }
    text
}

/// Reads the number typed at the offer.
pub fn parse_number(input: &str, list: &DiskList) -> Result<Choice, String> {
    let disks = offered(list);
    let count = disks.len() + 1;
    let number: usize = input
        .trim()
        .parse()
        .map_err(|_| format!("Type a number from 1 to {count}."))?;
    match number {
        n if (1..=disks.len()).contains(&n) => Ok(Choice::Install(disks[n - 1].clone())),
        n if n == count => Ok(Choice::RunFromStick),
        _ => Err(format!("Type a number from 1 to {count}.")),
    }
}

/// The question that must be answered with [`CONFIRM_WORD`] before a disk is erased.
pub fn confirmation_prompt(disk: &DiskChoice) -> String {
    format!(
        "Everything on {} will be erased.\nType {CONFIRM_WORD} to install, or press Enter to go back",
        describe(disk)
    )
}

pub fn confirmed(input: &str) -> bool {
    input.trim() == CONFIRM_WORD
}

/// The choice an answers file makes, or why it cannot be followed.
pub fn resolve(answer: &InstallAnswer, list: &DiskList) -> Result<Choice, String> {
    let onto = answer.onto.trim();
    if onto == "stick" {
        return Ok(Choice::RunFromStick);
    }
    if !answer.erase {
        return Err(format!(
            "[install] onto = \"{onto}\" erases that disk: add erase = true to confirm it"
        ));
    }
    let disks = offered(list);
    let disk = if onto == "internal" {
        match disks.as_slice() {
            [one] => *one,
            [] => {
                return Err(format!(
                "[install] onto = \"internal\": no internal disk can take the image ({} needed)",
                label_size(list.image_size)
            ))
            }
            several => {
                let names: Vec<String> = several.iter().map(|d| describe(d)).collect();
                return Err(format!(
                    "[install] onto = \"internal\": several disks could take the image; name one \
                     by its serial or /dev name:\n  {}",
                    names.join("\n  ")
                ));
            }
        }
    } else {
        let wanted = |d: &DiskChoice| {
            d.device == onto
                || d.device.strip_prefix("/dev/") == Some(onto)
                || d.serial.as_deref() == Some(onto)
        };
        match list.disks.iter().find(|d| wanted(d)) {
            Some(disk) if disk.offered() => disk,
            Some(disk) => {
                return Err(format!(
                    "[install] onto = \"{onto}\": {} cannot take the image: {}",
                    disk.device,
                    disk.refusals.join("; ")
                ))
            }
            None => {
                return Err(format!(
                    "[install] onto = \"{onto}\": no such disk; write \"internal\", \"stick\", a \
                     serial number or a /dev name"
                ))
            }
        }
    };
    Ok(Choice::Install(disk.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(device: &str, serial: &str, gb: u64, refusals: &[&str]) -> DiskChoice {
        DiskChoice {
            device: device.into(),
            model: Some("QEMU HARDDISK".into()),
            serial: Some(serial.into()),
            size_bytes: gb * 1_000_000_000,
            transport: "virtio".into(),
            refusals: refusals.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn list() -> DiskList {
        DiskList {
            image_size: 3 << 30,
            disks: vec![
                disk(
                    "/dev/sda",
                    "STICK",
                    8,
                    &["it is the USB stick this box started from"],
                ),
                disk("/dev/vda", "SMALL", 1, &["it is too small"]),
                disk("/dev/vdb", "BIG", 8, &[]),
            ],
        }
    }

    #[test]
    fn the_screen_offers_only_disks_that_can_take_the_image() {
        let text = screen(&list(), "sda");
        assert!(text.contains("  1) Install onto /dev/vdb: QEMU HARDDISK, 8.0 GB, serial BIG\n"));
        assert!(text.contains("  2) Run from this USB stick instead"));
        assert!(
            text.contains("Not offered:\n  /dev/sda: it is the USB stick this box started from\n")
        );
        assert!(text.contains("  /dev/vda: it is too small\n"));
        assert!(!text.contains("Install onto /dev/sda"));
        assert!(!text.contains("Install onto /dev/vda"));
    }

    #[test]
    fn numbers_pick_a_disk_or_the_stick() {
        let list = list();
        assert_eq!(
            parse_number(" 1 ", &list),
            Ok(Choice::Install(list.disks[2].clone()))
        );
        assert_eq!(parse_number("2", &list), Ok(Choice::RunFromStick));
        for bad in ["0", "3", "", "vdb"] {
            assert_eq!(
                parse_number(bad, &list),
                Err("Type a number from 1 to 2.".into()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn only_the_typed_word_confirms() {
        assert!(confirmed("ERASE\n"));
        for no in ["", "yes", "erase", "y"] {
            assert!(!confirmed(no), "{no:?}");
        }
    }

    #[test]
    fn answers_pick_the_only_internal_disk_a_serial_or_the_stick() {
        let list = list();
        let answer = |onto: &str, erase| InstallAnswer {
            onto: onto.into(),
            erase,
        };
        let big = Ok(Choice::Install(list.disks[2].clone()));
        assert_eq!(resolve(&answer("internal", true), &list), big);
        assert_eq!(resolve(&answer("BIG", true), &list), big);
        assert_eq!(resolve(&answer("/dev/vdb", true), &list), big);
        assert_eq!(resolve(&answer("vdb", true), &list), big);
        assert_eq!(
            resolve(&answer("stick", false), &list),
            Ok(Choice::RunFromStick)
        );
        let err = resolve(&answer("internal", false), &list).unwrap_err();
        assert!(err.contains("add erase = true"), "{err}");
        let err = resolve(&answer("SMALL", true), &list).unwrap_err();
        assert!(
            err.contains("/dev/vda cannot take the image: it is too small"),
            "{err}"
        );
        let err = resolve(&answer("sdz", true), &list).unwrap_err();
        assert!(err.contains("no such disk"), "{err}");

        let mut two = list.clone();
        two.disks.push(disk("/dev/nvme0n1", "NVME", 500, &[]));
        let err = resolve(&answer("internal", true), &two).unwrap_err();
        assert!(
            err.contains("several disks") && err.contains("serial NVME"),
            "{err}"
        );
    }

    #[test]
    fn a_disk_without_a_model_name_is_named_by_its_bus() {
        let mut plain = disk("/dev/vdb", "BIG", 8, &[]);
        plain.model = None;
        assert_eq!(
            describe(&plain),
            "/dev/vdb: virtio disk, 8.0 GB, serial BIG"
        );
    }

    #[test]
    fn sizes_read_like_disk_labels() {
        assert_eq!(label_size(512_110_190_592), "512 GB");
        assert_eq!(label_size(8_000_000_000), "8.0 GB");
        assert_eq!(label_size(2_000_398_934_016), "2.0 TB");
    }
}

//! The USB installer on the box. Started from a USB stick on a computer with an internal disk, the
//! image runs as a live session (the initramfs's live-stick script keeps the stick read-only and
//! records [`layout::LIVE_STICK`]), and before any first-boot question the agent offers to install
//! onto an internal disk, or to run from the stick as an ordinary box.
//!
//! The checking and writing are `meetbox install`, the image's own copy of the `meetbox` tool: the
//! same engine, guards and read-back as `meetbox flash`. This module asks, and runs it.

pub mod offer;
pub mod seal;

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::apply::Root;
use crate::ask::{answers, console};
use crate::layout;
use offer::{Choice, InstallAnswer};
use seal::DiskList;

/// The stick this session started from (its kernel disk name), when this is a live session.
pub fn live_stick(root: &Root) -> Option<String> {
    let name = root.read_to_string(layout::LIVE_STICK).ok()?;
    let name = name.trim();
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| name.to_string())
}

/// The answers file's `[install]` section, if the stick's ESP has an answers file with one. Only
/// that section is read here; the rest is setup's, checked after the install.
pub fn answer_from_esp(root: &Root) -> Result<Option<InstallAnswer>> {
    #[derive(Deserialize)]
    struct InstallSection {
        install: Option<InstallAnswer>,
    }
    let Some(path) = answers::on_esp(root)? else {
        return Ok(None);
    };
    let text = answers::read_text(&path)?;
    let section: InstallSection = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "the [install] section of {} is not valid: {}\nIt takes onto = \"internal\" (or a \
             disk's serial, or /dev/NAME, or \"stick\") and erase = true.",
            layout::ESP_ANSWERS,
            e.message()
        )
    })?;
    Ok(section.install)
}

/// Offers the install and carries out the choice; returns only on failure, or when the box is
/// restarting. With an `answer`, asks nothing.
pub fn run(root: &Root, stick: &str, answer: Option<InstallAnswer>) -> Result<()> {
    loop {
        let list = disk_list(stick)?;
        let choice = match &answer {
            Some(answer) => offer::resolve(answer, &list).map_err(anyhow::Error::msg)?,
            None => ask(&list, stick)?,
        };
        let disk = match choice {
            Choice::RunFromStick => {
                keep_on_stick(root)?;
                println!(
                    "\nThe box will run from this USB stick. It restarts now and then asks the \
                     setup questions; leave the stick in."
                );
                return restart();
            }
            Choice::Install(disk) => disk,
        };
        println!("\nInstalling onto {}", offer::describe(&disk));
        let status = Command::new(layout::INSTALLER_BINARY)
            .args(["install", "--yes"])
            .arg(format!("/dev/{stick}"))
            .arg(&disk.device)
            .status()
            .with_context(|| format!("cannot start {}", layout::INSTALLER_BINARY))?;
        if status.success() {
            println!(
                "\nMeetbox is installed on {}.\n\n\
                 Remove the USB stick now. The box restarts from the internal disk as soon as \
                 the stick is out, and sets itself up there.\n\
                 The stick still holds its answers file, if you wrote one: delete it, or write \
                 the image to the stick again, before you lend the stick to anyone.",
                disk.device
            );
            wait_until_gone(stick);
            println!("The stick is out: restarting from {}.", disk.device);
            return restart_now();
        }
        if answer.is_some() {
            bail!(
                "the installation onto {} failed (the reason is above); the disk has no partition \
                 table and will not boot. Start from the stick again to retry",
                disk.device
            );
        }
        println!(
            "\nThe installation did not finish (the reason is above). {} has no partition table \
             and will not boot half an image. Press Enter to return to the choices.",
            disk.device
        );
        console::wait_for_enter(Duration::MAX);
    }
}

/// Every disk and whether it can take the image, from `meetbox install --list`.
fn disk_list(stick: &str) -> Result<DiskList> {
    let output = Command::new(layout::INSTALLER_BINARY)
        .args(["install", "--list"])
        .arg(format!("/dev/{stick}"))
        .output()
        .with_context(|| format!("cannot start {}", layout::INSTALLER_BINARY))?;
    if !output.status.success() {
        bail!(
            "cannot list the disks: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    serde_json::from_slice(&output.stdout).context("cannot read the list of disks")
}

/// Shows the offer and reads a choice, then the typed confirmation for a disk.
fn ask(list: &DiskList, stick: &str) -> Result<Choice> {
    loop {
        println!("\n{}", offer::screen(list, stick));
        let count = offer::offered(list).len() + 1;
        let input = console::read_answer(&format!("Choose 1-{count}: "))?;
        let choice = match offer::parse_number(&input, list) {
            Ok(choice) => choice,
            Err(problem) => {
                println!("{problem}");
                continue;
            }
        };
        let Choice::Install(disk) = &choice else {
            return Ok(choice);
        };
        if offer::confirmed(&console::read_answer(&format!(
            "{}: ",
            offer::confirmation_prompt(disk)
        ))?) {
            return Ok(choice);
        }
        println!("Nothing was erased.");
    }
}

/// Marks the stick's own root so the next start is an ordinary boot from it: the live-stick script
/// sees the mark and lets the root grow. The only write this agent makes to the stick.
fn keep_on_stick(root: &Root) -> Result<()> {
    let lower = root.path(layout::LIVE_LOWER);
    let remount = |mode: &str| {
        Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&lower)
            .status()
            .with_context(|| format!("cannot remount {}", lower.display()))
            .and_then(|status| {
                anyhow::ensure!(
                    status.success(),
                    "mount -o remount,{mode} {} failed",
                    lower.display()
                );
                Ok(())
            })
    };
    remount("rw")?;
    let mark = lower.join(layout::RUN_FROM_THIS_DISK.trim_start_matches('/'));
    let written = std::fs::write(
        &mark,
        "Written by meetbox-firstboot: the owner chose to run the box from this disk.\n",
    )
    .with_context(|| format!("cannot write {}", mark.display()));
    let _ = Command::new("sync").status();
    remount("ro")?;
    written
}

/// Waits until the kernel no longer has the stick: the owner pulled it out. Restarting only then
/// makes the firmware start the internal disk, not the stick again (both hold the same image, with
/// the same file system ids).
fn wait_until_gone(stick: &str) {
    let sysfs = format!("/sys/block/{stick}");
    while std::path::Path::new(&sysfs).exists() {
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Restarts at once, without stopping services: the session's root was the stick, which is gone,
/// and nothing of the session is kept (the internal disk was flushed and read back).
fn restart_now() -> Result<()> {
    // SAFETY: sync and reboot take no pointers; reboot only returns on failure.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    Err(std::io::Error::last_os_error()).context("cannot restart")
}

fn restart() -> Result<()> {
    let status = Command::new("systemctl")
        .arg("reboot")
        .status()
        .context("cannot run systemctl reboot")?;
    anyhow::ensure!(status.success(), "systemctl reboot failed");
    Ok(())
}

//! Meetbox image builder: profile in, signed bootable disk image out.
//!
//! One module per concept; pure functions for layout and rendering, side effects
//! (processes, files, devices) at the edges. See docs/architecture.md.

pub mod artifacts;
pub mod atomic_file;
pub mod blockmap;
pub mod build;
pub mod checksums;
pub mod compress;
pub mod disk;
pub mod esp;
pub mod ext4;
pub mod flash;
pub mod hardening;
pub mod hosttools;
pub mod inspect;
pub mod jitsi;
pub mod keygen;
pub mod keyring;
pub mod keys;
pub mod layout;
pub mod manifest;
pub mod pool;
pub mod profile;
pub mod progress;
pub mod qemu;
pub mod rootfs;
pub mod run;
pub mod seek_table;
pub mod signing;
pub mod sizing;
#[cfg(test)]
mod test_tools;
pub mod tree;
pub mod verify;

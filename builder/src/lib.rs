//! Meetbox image builder: profile in, signed bootable disk image out.
//!
//! One module per concept; pure functions for layout and rendering, side effects
//! (processes, files, devices) at the edges. See docs/architecture.md.

pub mod artifacts;
pub mod atomic_file;
pub mod checksums;
pub mod keygen;
pub mod keys;
pub mod manifest;
pub mod progress;
pub mod signing;
pub mod verify;

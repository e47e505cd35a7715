//! Meetbox image builder: profile in, signed bootable disk image out.
//!
//! One module per concept; pure functions for layout and rendering, side effects
//! (processes, files, devices) at the edges. See docs/architecture.md.

pub mod keyring;
pub mod progress;
pub mod sizing;

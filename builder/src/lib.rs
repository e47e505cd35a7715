//! Meetbox image builder: profile in, signed bootable disk image out.
//!
//! The folders follow the pipeline (docs/architecture.md):
//! [`profile`] (on a [`distro`]) → [`rootfs`] → [`tree`] → [`disk`] → [`publish`] (the
//! [`artifact`]s, signed by [`sign`]), run in order by [`pipeline`]; then [`verify`], [`flash`]
//! and [`vm`] for what a user does with an image, and [`sizing`] for what a box can hold. [`host`] is the edge to the machine: its tools, one
//! command runner, files written atomically, progress, one worker pool. Pure functions plan and
//! render; side effects sit in the few modules that name them.

pub mod artifact;
pub mod cli;
pub mod disk;
pub mod distro;
pub mod flash;
pub mod host;
pub mod install;
pub mod pipeline;
pub mod profile;
pub mod publish;
pub mod rootfs;
pub mod sign;
pub mod sizing;
pub mod tree;
pub mod verify;
pub mod vm;

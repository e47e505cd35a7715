//! Trying an image before flashing it: QEMU with OVMF Secure Boot (`qemu`), and the
//! `meetbox run` command (`run`).

pub mod qemu;
pub mod run;

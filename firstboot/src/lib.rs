//! Meetbox first-boot agent: asks a few questions on the console (or reads an answers file), creates the
//! per-device secrets, renders the Jitsi configuration, applies the image's tuning (config.js caps, Java
//! heaps, swap), obtains a certificate and starts the services.
//!
//! Everything writes below a root directory (`--root`, default `/`), so the whole flow runs against a
//! temporary tree in tests.

// Around the resumable steps (setup.rs, state.rs): ask, then secrets, render, apply, acme; what the
// box reads from the image (layout.rs, tuning.rs); and what keeps it working after setup
// (updates.rs, and the web admin in admin/); and, before all of it on a USB stick, the installer
// (install/).
pub mod acme;
pub mod admin;
pub mod apply;
pub mod ask;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod install;
pub mod integrity;
pub mod layout;
pub mod network;
pub mod reconfigure;
pub mod render;
pub mod reset;
pub mod secrets;
pub mod settings;
pub mod setup;
pub mod state;
pub mod tuning;
pub mod updates;

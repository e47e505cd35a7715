//! Meetbox first-boot agent: asks a few questions on the console (or reads an answers file), creates the
//! per-device secrets, renders the Jitsi configuration, applies the image's tuning (config.js caps, Java
//! heaps, swap), obtains a certificate and starts the services.
//!
//! Everything writes below a root directory (`--root`, default `/`), so the whole flow runs against a
//! temporary tree in tests.

pub mod acme;
pub mod answers;
pub mod apply;
pub mod cli;
pub mod console;
pub mod hidden_input;
pub mod jitsi_env;
pub mod layout;
pub mod network;
pub mod prompts;
pub mod render;
pub mod retry;
pub mod scram;
pub mod secrets;
pub mod services;
pub mod settings;
pub mod setup;
pub mod state;
pub mod swap;
pub mod tls;
pub mod tuning;
pub mod updates;
pub mod validation;

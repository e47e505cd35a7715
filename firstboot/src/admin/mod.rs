//! The web admin after setup: the owner runs the box from a browser on the local network, never a
//! shell (docs/admin.md).
//!
//! Two processes: the web process (web.rs, as the unprivileged `meetbox-admin` user, behind nginx)
//! and the root helper (helper.rs), which carries out only the named actions of actions.rs with
//! arguments it validates itself. Pages are pure (pages.rs), and so are the session rules
//! (sessions.rs). The box's
//! own screen after setup (screen.rs) shows the status and where the admin is, and offers the two
//! actions that need someone at the box.

pub mod actions;
pub mod cli;
pub mod helper;
pub mod jobs;
pub mod pages;
pub mod screen;
pub mod sessions;
pub mod status;
pub mod usb;
pub mod web;

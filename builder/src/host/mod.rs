//! The edge to the build machine: which host tools exist, the one command runner
//! ([`command::CommandRunExt`]), files written atomically, progress
//! output (bars on a terminal, plain lines elsewhere), and the one ordered worker pool.

pub mod atomic_file;
pub mod command;
pub mod pool;
pub mod progress;
#[cfg(test)]
pub mod test_tools;
pub mod tools;

//! The edge to the build machine: which host tools exist, files written atomically, progress
//! output (bars on a terminal, plain lines elsewhere), and the one ordered worker pool.

pub mod atomic_file;
pub mod pool;
pub mod progress;
#[cfg(test)]
pub mod test_tools;
pub mod tools;

//! The edge to the build machine: which host tools exist, the one command runner
//! ([`command::CommandRunExt`]), files written atomically, a lock shared between processes, progress output (bars on a terminal,
//! plain lines elsewhere), the one ordered worker pool, and the tests' one gate for what the host
//! lacks ([`test_tools::can_run`]).

pub mod atomic_file;
pub mod command;
pub mod lock;
pub mod pool;
pub mod progress;
pub mod test_tools;
pub mod tools;

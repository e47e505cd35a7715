//! `meetbox`: build, sign, verify, flash and try Meetbox appliance images.

fn main() -> std::process::ExitCode {
    meetbox::cli::main()
}

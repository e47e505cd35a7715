//! `meetbox-admin`: the web admin of a set-up box (see meetbox_firstboot::admin).

fn main() -> std::process::ExitCode {
    meetbox_firstboot::admin::cli::main()
}

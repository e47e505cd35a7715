use std::process::ExitCode;

fn main() -> ExitCode {
    meetbox_firstboot::cli::main()
}

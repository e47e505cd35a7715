//! The one way the builder runs a host tool, in the spirit of bootc's `CommandRunExt`: a tool
//! that cannot start is named with the package that provides it, and a tool that fails is named
//! with its exit status and its own last words, so no caller prints a bare "exit status 1".

use std::process::{Command, ExitStatus, Output};

use anyhow::{anyhow, Result};

use crate::host::tools;

pub trait CommandRunExt {
    /// Runs to completion with stdout and stderr captured; Ok only on a zero exit.
    fn run_captured(&mut self) -> Result<Output>;
    /// Runs with the terminal's stdin, stdout and stderr (tools whose own progress the user
    /// should see, e.g. mmdebstrap, cargo, sudo's password prompt); Ok only on a zero exit.
    fn run_inherited(&mut self) -> Result<()>;
    /// Runs to completion with output captured, whatever its exit status (callers that read a
    /// failure's stderr themselves).
    fn run_unchecked(&mut self) -> Result<Output>;
}

impl CommandRunExt for Command {
    fn run_captured(&mut self) -> Result<Output> {
        let output = self.run_unchecked()?;
        if !output.status.success() {
            return Err(failed(self, output.status, &output.stderr));
        }
        Ok(output)
    }

    fn run_inherited(&mut self) -> Result<()> {
        let status = self.status().map_err(|err| not_started(self, err))?;
        if !status.success() {
            return Err(failed(self, status, b""));
        }
        Ok(())
    }

    fn run_unchecked(&mut self) -> Result<Output> {
        self.output().map_err(|err| not_started(self, err))
    }
}

fn program(command: &Command) -> String {
    command.get_program().to_string_lossy().into_owned()
}

/// The error for a command that did not start (for callers that spawn it themselves).
pub fn not_started(command: &Command, err: std::io::Error) -> anyhow::Error {
    let program = program(command);
    if err.kind() == std::io::ErrorKind::NotFound {
        return match tools::package_of(&program) {
            Some(package) => {
                anyhow!("`{program}` was not found: install it with `apt-get install {package}`")
            }
            None => anyhow!("`{program}` was not found on PATH"),
        };
    }
    anyhow::Error::new(err).context(format!("cannot run `{program}`"))
}

fn failed(command: &Command, status: ExitStatus, stderr: &[u8]) -> anyhow::Error {
    let program = program(command);
    let args: Vec<String> = command
        .get_args()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let said = String::from_utf8_lossy(stderr);
    let tail: Vec<&str> = said.trim().lines().rev().take(20).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    if tail.is_empty() {
        anyhow!("`{program} {}` failed ({status})", args.join(" "))
    } else {
        anyhow!(
            "`{program} {}` failed ({status}):\n{}",
            args.join(" "),
            tail.join("\n")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named_with_its_package() {
        let err = Command::new("mmdebstrap-that-does-not-exist")
            .run_captured()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`mmdebstrap-that-does-not-exist` was not found on PATH"
        );
        assert_eq!(tools::package_of("mke2fs"), Some("e2fsprogs"));
    }

    #[test]
    fn a_failed_tool_is_named_with_its_status_and_its_last_words() {
        let err = Command::new("sh")
            .args(["-c", "echo first >&2; echo 'the real reason' >&2; exit 3"])
            .run_captured()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("`sh -c "), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.ends_with("first\nthe real reason"), "{err}");
        let output = Command::new("sh")
            .args(["-c", "exit 4"])
            .run_unchecked()
            .unwrap();
        assert_eq!(output.status.code(), Some(4));
        assert!(Command::new("true").run_inherited().is_ok());
        let err = Command::new("false")
            .run_inherited()
            .unwrap_err()
            .to_string();
        assert!(err.contains("`false ` failed"), "{err}");
    }
}

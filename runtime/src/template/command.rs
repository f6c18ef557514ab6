//! The external programs a template build runs (tar, skopeo, umoci,
//! mmdebstrap, debootstrap, getcap/setcap): finding them and running them
//! with an error that names the command, its status and its stderr's tail.
//! Shared by [`super::build`] and [`super::oci`].

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::TemplateError;

/// Runs a builder; on failure the error names it, its status and its stderr's tail.
pub(crate) fn run_builder(mut cmd: Command, label: &str) -> Result<(), TemplateError> {
    let command_line = format!(
        "{} {}",
        label,
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let output = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(TemplateError::io("running", Path::new(cmd.get_program())))?;
    if output.status.success() {
        return Ok(());
    }
    Err(TemplateError::Command {
        command: command_line,
        status: output.status.to_string(),
        stderr_tail: tail(&String::from_utf8_lossy(&output.stderr), 15),
    })
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `program` in PATH or the usual sbin/bin directories.
pub(crate) fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(program))
        .find(|candidate| {
            fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tail keeps the last lines only.
    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}

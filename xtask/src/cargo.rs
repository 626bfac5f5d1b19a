//! Running cargo from the chores, and reading libtest's per-test verdicts from its output.
//!
//! Verdicts are read from the plain `test name ... ok|FAILED|ignored` lines, which every libtest prints; that
//! keeps the chores on stable Rust (the JSON test output needs nightly).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::catalog;

/// The cargo that runs us (so the same toolchain builds the lessons).
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(catalog::root());
    command
}

/// One test's verdict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TestVerdict {
    pub name: String,
    pub passed: bool,
}

/// What `cargo test -p PACKAGE` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestRun {
    pub package: String,
    /// False when the package or its tests did not compile.
    pub compiled: bool,
    pub verdicts: Vec<TestVerdict>,
    /// "Not graded on this broker" reports the tests logged.
    pub ungraded: Vec<serde_json::Value>,
    /// Everything cargo and the tests printed, for showing failures.
    #[serde(skip)]
    pub output: String,
}

impl TestRun {
    pub fn passed(&self) -> usize {
        self.verdicts.iter().filter(|v| v.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.verdicts.len() - self.passed()
    }

    /// The first failure's message (libtest's `---- name stdout ----` block), shortened.
    pub fn first_failure(&self, max_lines: usize) -> String {
        if !self.compiled {
            return self
                .output
                .lines()
                .skip_while(|l| !l.starts_with("error"))
                .take(max_lines)
                .collect::<Vec<_>>()
                .join("\n");
        }
        let mut lines = self.output.lines().skip_while(|l| !l.starts_with("---- ")).peekable();
        let mut out = Vec::new();
        while let Some(line) = lines.next() {
            if out.len() >= max_lines
                || (line.is_empty()
                    && lines.peek().is_some_and(|n| n.starts_with("---- ") || n.starts_with("failures:")))
            {
                break;
            }
            if !line.starts_with("stack backtrace") && !line.trim_start().starts_with("note: run with") {
                out.push(line);
            }
        }
        out.join("\n")
    }
}

/// Runs every test of `package` to the end (no fail-fast), with more arguments for `cargo test` (which targets,
/// `--features`), and collects the verdicts.
pub fn test_package_with(package: &str, extra_args: &[&str], extra_env: &[(&str, &str)]) -> anyhow::Result<TestRun> {
    let ungraded_log = ungraded_log_path(package);
    let _ = std::fs::remove_file(&ungraded_log);
    let mut command = cargo();
    command
        .args(["test", "--package", package, "--no-fail-fast", "--color", "never"])
        .args(extra_args)
        .env(kit::env::UNGRADED_LOG_ENV, &ungraded_log)
        // Snapshots are graded, never rewritten, by the chores; and backtraces would drown the messages.
        .env("INSTA_UPDATE", "no")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null());
    for (key, value) in extra_env {
        command.env(key, value);
    }
    let output = command.output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let verdicts = parse_verdicts(&text);
    let compiled = !text.contains("error: could not compile") && !text.lines().any(|l| l.starts_with("error[E"));
    let ungraded = std::fs::read_to_string(&ungraded_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Ok(TestRun { package: package.to_string(), compiled, verdicts, ungraded, output: text })
}

/// `test a::b ... ok` → (a::b, true); `... FAILED` → false. Ignored tests are not verdicts.
pub fn parse_verdicts(output: &str) -> Vec<TestVerdict> {
    output
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("test ")?;
            let (name, verdict) = rest.rsplit_once(" ... ")?;
            let passed = match verdict.trim() {
                "ok" => true,
                "FAILED" => false,
                _ => return None,
            };
            Some(TestVerdict { name: name.to_string(), passed })
        })
        .collect()
}

fn ungraded_log_path(package: &str) -> PathBuf {
    let dir = crate::scratch::workbook_dir();
    let _ = std::fs::create_dir_all(&dir);
    dir.join(format!("ungraded-{package}.jsonl"))
}

/// Runs a command to completion, returning whether it succeeded and what it printed.
pub fn run_captured(command: &mut Command) -> anyhow::Result<(bool, String)> {
    let output = command.stdin(Stdio::null()).output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Ok((output.status.success(), text))
}

/// A path relative to the workspace root, for messages.
pub fn relative(path: &Path) -> String {
    path.strip_prefix(catalog::root()).unwrap_or(path).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_read_from_libtest_lines() {
        let out = "running 3 tests\ntest a ... ok\ntest b::c ... FAILED\ntest d ... ignored\ntest result: FAILED";
        assert_eq!(
            parse_verdicts(out),
            [TestVerdict { name: "a".into(), passed: true }, TestVerdict { name: "b::c".into(), passed: false }]
        );
    }
}

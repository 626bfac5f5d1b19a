//! The test runner of the proofs and of grading: test executables run directly, each test in a process of its
//! own, several at a time, each with a time limit.
//!
//! A test *passed* only when its process exited with status 0 **and** libtest's own line `test NAME ... ok`
//! is in its output. So a test that did not run (filtered, `#[ignore]`d), one that ended the process early
//! (`std::process::exit(0)` skips libtest's report), or one that ran out of time (its process group is
//! killed) is a failure, never a pass. One process per test also means one broker per test and a hang costs
//! one time limit, not the whole run.
//!
//! cargo-nextest works the same way (a process per test); it is not used because it is not on every machine
//! and building it costs minutes on two cores, while this needs nothing beyond libtest's stable flags
//! (`--list --format terse`, `--exact`).
//!
//! Jobs are grouped (e.g. one group per lazy answer): with `stop_at_first_failure` the first failing job of a
//! group cancels the group's other jobs, because one failure is all such a proof needs.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::scratch::TestExecutable;

/// How many tests run at once by default. The tests mostly wait on a broker; on two cores four at a time kept
/// every solution green through repeated runs, while it roughly halves the wall time of one at a time.
pub const DEFAULT_PARALLEL: usize = 4;

/// How long one test may run by default before it is killed and failed as "timed out". The tests bound their
/// own waits (≤ 30 s each); this only catches a test that hangs outright.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// One test of one executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCase {
    /// The executable's target (`delivery` for `tests/delivery.rs`).
    pub target: String,
    pub executable: PathBuf,
    /// libtest's name for it (`module::test_name`).
    pub name: String,
}

/// Every test of `executables`, as libtest lists them.
pub fn list_tests(executables: &[TestExecutable], crate_dir: &Path) -> anyhow::Result<Vec<TestCase>> {
    let mut tests = Vec::new();
    for executable in executables {
        let output = Command::new(&executable.path)
            .args(["--list", "--format", "terse"])
            .current_dir(crate_dir)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("listing the tests of {}", executable.path.display()))?;
        anyhow::ensure!(
            output.status.success(),
            "listing the tests of {} failed: {}",
            executable.target,
            String::from_utf8_lossy(&output.stderr)
        );
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if let Some(name) = line.strip_suffix(": test") {
                tests.push(TestCase {
                    target: executable.target.clone(),
                    executable: executable.path.clone(),
                    name: name.to_string(),
                });
            }
        }
    }
    Ok(tests)
}

/// A test to run, in a group, with extra environment variables.
#[derive(Debug, Clone)]
pub struct Job {
    pub test: TestCase,
    pub group: usize,
    pub env: Vec<(String, String)>,
    /// The crate the executable belongs to: its working directory, as under `cargo test`.
    pub crate_dir: PathBuf,
}

/// What became of a job.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub test: TestCase,
    pub group: usize,
    pub passed: bool,
    pub timed_out: bool,
    /// Cancelled because another job of its group failed first: no verdict.
    pub cancelled: bool,
    pub exit_code: Option<i32>,
    pub took: Duration,
    /// Everything the test process printed (stdout and stderr, interleaved).
    pub output: String,
    /// "Not graded on this broker" reports the test logged (`kit::grading::can_grade`).
    pub ungraded: Vec<serde_json::Value>,
}

impl Outcome {
    /// Why it failed, in a few lines: libtest's failure block, or what happened to the process.
    pub fn failure(&self, timeout: Duration) -> String {
        if self.timed_out {
            return format!("timed out after {} s (killed)\n{}", timeout.as_secs(), tail(&self.output, 12));
        }
        let header = format!("---- {} stdout ----", self.test.name);
        if let Some(start) = self.output.find(&header) {
            let rest = &self.output[start + header.len()..];
            let end = ["\n---- ", "\nfailures:\n", "\n\nfailures:"]
                .iter()
                .filter_map(|m| rest.find(m))
                .min()
                .unwrap_or(rest.len());
            let text: Vec<_> =
                rest[..end].lines().filter(|l| !l.trim_start().starts_with("note: run with `RUST_BACKTRACE")).collect();
            return text.join("\n").trim().to_string();
        }
        let why = match self.exit_code {
            Some(0) => "exited with status 0 before libtest reported it passed (did it call `std::process::exit`, \
                        or not run at all?)"
                .to_string(),
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_string(),
        };
        format!("{why}\n{}", tail(&self.output, 12))
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<_> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// How to run a batch of jobs.
#[derive(Debug, Clone)]
pub struct Options {
    pub parallel: usize,
    pub timeout: Duration,
    pub stop_at_first_failure: bool,
    /// Where each test's output and "not graded" log go (emptied first).
    pub logs_dir: PathBuf,
}

/// Runs `jobs`, `options.parallel` at a time; the outcomes come back in the jobs' order.
pub fn run(jobs: Vec<Job>, options: &Options) -> anyhow::Result<Vec<Outcome>> {
    let _ = std::fs::remove_dir_all(&options.logs_dir);
    std::fs::create_dir_all(&options.logs_dir)?;
    let groups = jobs.iter().map(|j| j.group).max().map_or(0, |g| g + 1);
    let failed_groups: Vec<AtomicBool> = (0..groups).map(|_| AtomicBool::new(false)).collect();
    let queue: Mutex<VecDeque<usize>> = Mutex::new((0..jobs.len()).collect());
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; jobs.len()]);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..options.parallel.max(1) {
            scope.spawn(|| {
                loop {
                    let Some(index) = queue.lock().expect("queue").pop_front() else { break };
                    let job = &jobs[index];
                    let cancelled = &failed_groups[job.group];
                    let outcome = match run_one(job, index, options, cancelled) {
                        Ok(outcome) => outcome,
                        Err(e) => {
                            first_error.lock().expect("error").get_or_insert(e);
                            break;
                        }
                    };
                    if options.stop_at_first_failure && !outcome.passed && !outcome.cancelled {
                        cancelled.store(true, Ordering::SeqCst);
                    }
                    results.lock().expect("results")[index] = Some(outcome);
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().expect("error") {
        return Err(e);
    }
    Ok(results.into_inner().expect("results").into_iter().map(|o| o.expect("every job ran")).collect())
}

/// Runs one test in its own process group, killing the group when it runs out of time or is cancelled.
fn run_one(job: &Job, index: usize, options: &Options, cancelled: &AtomicBool) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome {
        test: job.test.clone(),
        group: job.group,
        passed: false,
        timed_out: false,
        cancelled: false,
        exit_code: None,
        took: Duration::ZERO,
        output: String::new(),
        ungraded: Vec::new(),
    };
    if options.stop_at_first_failure && cancelled.load(Ordering::SeqCst) {
        outcome.cancelled = true;
        return Ok(outcome);
    }
    let log_path = options.logs_dir.join(format!("{index:04}.log"));
    let ungraded_path = options.logs_dir.join(format!("{index:04}.ungraded.jsonl"));
    let log = File::create(&log_path)?;
    let mut command = Command::new(&job.test.executable);
    command
        // libtest's `--test-threads 1` prints the name before the test runs and the verdict after, so
        // anything the test prints in between splits the line; with more threads it prints the line whole.
        .args(["--exact", job.test.name.as_str(), "--test-threads", "2", "--color", "never"])
        .current_dir(&job.crate_dir)
        .env("CARGO_MANIFEST_DIR", &job.crate_dir)
        // insta would otherwise ask `cargo metadata` for the workspace root, once per test process.
        .env("INSTA_WORKSPACE_ROOT", &job.crate_dir)
        // Snapshots are graded, never rewritten, by the chores; backtraces would drown the messages.
        .env("INSTA_UPDATE", "no")
        .env("RUST_BACKTRACE", "0")
        .env(kit::env::UNGRADED_LOG_ENV, &ungraded_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    for (key, value) in &job.env {
        command.env(key, value);
    }
    let started = Instant::now();
    let mut child = command.spawn().with_context(|| format!("starting {}", job.test.executable.display()))?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > options.timeout {
            outcome.timed_out = true;
            kill_group(&mut child);
            break None;
        }
        if options.stop_at_first_failure && cancelled.load(Ordering::SeqCst) {
            outcome.cancelled = true;
            kill_group(&mut child);
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    outcome.took = started.elapsed();
    outcome.output = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap_or_default()).into_owned();
    outcome.exit_code = status.and_then(|s| s.code());
    let verdict_line = format!("test {} ... ok", job.test.name);
    outcome.passed =
        status.is_some_and(|s| s.success()) && outcome.output.lines().any(|l| l.trim_end().ends_with(&verdict_line));
    outcome.ungraded = std::fs::read_to_string(&ungraded_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Ok(outcome)
}

/// Kills the test's process group (the test and anything it started), then reaps the test.
fn kill_group(child: &mut Child) {
    // SAFETY: kill(2) on the group we created for this child (`process_group(0)`: its id is the child's pid),
    // which is still ours: the child has not been reaped yet, so its id cannot have been reused.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
    }
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(output: &str, exit_code: Option<i32>) -> Outcome {
        Outcome {
            test: TestCase { target: "t".into(), executable: "/bin/true".into(), name: "sends".into() },
            group: 0,
            passed: false,
            timed_out: false,
            cancelled: false,
            exit_code,
            took: Duration::ZERO,
            output: output.into(),
            ungraded: vec![],
        }
    }

    #[test]
    fn a_failure_shows_libtest_block_or_what_happened_to_the_process() {
        let out = "running 1 test\ntest sends ... FAILED\n\nfailures:\n\n---- sends stdout ----\n\nthread 'sends' \
                   panicked at tests/t.rs:9:5:\nnot yet implemented: lesson 01\nnote: run with `RUST_BACKTRACE=1` \
                   environment variable to display a backtrace\n\n\nfailures:\n    sends\n";
        let failure = outcome(out, Some(101)).failure(DEFAULT_TIMEOUT);
        assert!(failure.starts_with("thread 'sends' panicked") && failure.ends_with("lesson 01"), "{failure}");
        let early = outcome("running 1 test\n", Some(0)).failure(DEFAULT_TIMEOUT);
        assert!(early.contains("std::process::exit"), "{early}");
        let mut hung = outcome("running 1 test\n", None);
        hung.timed_out = true;
        assert!(hung.failure(Duration::from_secs(5)).starts_with("timed out after 5 s"));
    }
}

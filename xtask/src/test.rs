//! `cargo xtask test`: the maintainers' suite, the one command CI runs.
//!
//! Steps, in order: generated lessons in sync; formatting; a build of everything; clippy with warnings denied;
//! kit and xtask tests; then for every lesson: the solution passes all its tests, the shipped exercise compiles
//! and *every* test fails on it, and each lazy answer from `lesson.toml` fails at least one test. Last, the book
//! builds. A summary table follows, and the closing line `xtask: N passed, N failed` (one per step).

use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cargo::{self, TestRun};
use crate::catalog::{self, Lesson};
use crate::{exercise, sync};

/// One row of the summary.
struct Step {
    name: String,
    ok: bool,
    detail: String,
    took: Duration,
}

#[derive(Default)]
struct Suite {
    steps: Vec<Step>,
}

impl Suite {
    /// Runs `body` as a step with a spinner, records its verdict and prints it on one line.
    fn step(&mut self, name: impl Into<String>, body: impl FnOnce() -> anyhow::Result<String>) -> bool {
        let name = name.into();
        let spinner = ProgressBar::new_spinner().with_message(name.clone());
        spinner.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").unwrap());
        spinner.enable_steady_tick(Duration::from_millis(200));
        let started = Instant::now();
        let result = body();
        spinner.finish_and_clear();
        let took = started.elapsed();
        let (ok, detail) = match result {
            Ok(detail) => (true, detail),
            Err(e) => (false, format!("{e:#}")),
        };
        let mark = if ok { "ok  " } else { "FAIL" };
        println!(
            "{mark} {name} ({:.0} s){}",
            took.as_secs_f64(),
            if detail.is_empty() { String::new() } else { format!(": {}", first_line(&detail)) }
        );
        if !ok && detail.contains('\n') {
            for line in detail.lines().skip(1).take(40) {
                println!("       {line}");
            }
        }
        self.steps.push(Step { name, ok, detail, took });
        ok
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

pub struct Options {
    pub lesson: Option<String>,
    pub skip_lazy: bool,
}

pub fn run(options: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let lessons = match &options.lesson {
        Some(nn) => vec![catalog::find(nn)?],
        None => catalog::lessons()?,
    };
    let mut suite = Suite::default();

    suite.step("generated lessons are in sync (sync --check)", || sync::run(None, true).map(|_| String::new()));
    // The generated exercises are left out: their formatting follows from their solution's, and renaming the
    // crate (`solution_NN` → `lesson_NN`) can move an import in rustfmt's sort order.
    suite.step("formatting of kit, xtask and solutions (cargo fmt --check)", || {
        let mut command = cargo::cargo();
        command.args(["fmt", "--check", "--package", "kit", "--package", "xtask"]);
        for lesson in catalog::lessons()? {
            command.args(["--package", &lesson.solution_package()]);
        }
        command_step(&mut command)
    });
    let built = suite.step("everything builds (cargo build --workspace --all-targets)", || {
        command_step(cargo::cargo().args(["build", "--workspace", "--all-targets", "--color", "never"]))
    });
    suite.step("clippy, warnings denied", || {
        command_step(cargo::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--color",
            "never",
            "--",
            "-D",
            "warnings",
        ]))
    });
    for package in ["kit", "xtask"] {
        suite.step(format!("{package} tests"), || expect_all_pass(&cargo::test_package(package, &[])?));
    }
    if built {
        for lesson in &lessons {
            prove_lesson(&mut suite, lesson, options.skip_lazy);
        }
    }
    if built && options.lesson.is_none() {
        let reports = catalog::root().join("target").join("workbook");
        let unsolved = reports.join("grade-unsolved.json");
        suite.step("grade: the shipped exercises all grade unsolved (xtask grade --expect unsolved)", || {
            command_step(xtask().args(["grade", "--expect", "unsolved", "--json"]).arg(&unsolved))?;
            report_step(&unsolved)
        });
        let solved = reports.join("grade-solved.json");
        let junit = reports.join("grade-solved.xml");
        suite.step("grade: the solutions all grade solved (xtask grade --lessons-dir solutions)", || {
            command_step(
                xtask()
                    .args(["grade", "--lessons-dir", "solutions", "--expect", "solved", "--json"])
                    .arg(&solved)
                    .arg("--junit")
                    .arg(&junit),
            )?;
            anyhow::ensure!(std::fs::read_to_string(&junit)?.contains("<testsuites"), "no JUnit report written");
            report_step(&solved)
        });
    }
    if catalog::root().join("mdbook").join("book.toml").exists() {
        suite.step("the book builds without warnings (xtask book)", || command_step(xtask().arg("book")));
    }

    let passed = suite.steps.iter().filter(|s| s.ok).count();
    let failed = suite.steps.len() - passed;
    println!("\n{:<70} {:>6} {:>7}", "step", "result", "seconds");
    println!("{}", "-".repeat(85));
    for step in &suite.steps {
        let name: String = step.name.chars().take(70).collect();
        println!("{name:<70} {:>6} {:>7.1}", if step.ok { "ok" } else { "FAILED" }, step.took.as_secs_f64());
    }
    println!("{}", "-".repeat(85));
    println!("total {:.0} s", started.elapsed().as_secs_f64());
    let ungraded: usize = suite.steps.iter().filter(|s| s.detail.contains("not graded on this broker")).count();
    if ungraded > 0 {
        println!("{ungraded} step(s) include tests not graded on this broker (see their lines above)");
    }
    println!("xtask: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// The three proofs for one lesson.
fn prove_lesson(suite: &mut Suite, lesson: &Lesson, skip_lazy: bool) {
    let mut solution_tests = Vec::new();
    suite.step(format!("{}: solution passes", lesson.label()), || {
        let run = cargo::test_package(&lesson.solution_package(), &[])?;
        solution_tests = run.verdicts.iter().map(|v| v.name.clone()).collect();
        expect_all_pass(&run)
    });

    suite.step(format!("{}: exercise compiles and every test fails", lesson.label()), || {
        let run = cargo::test_package(&lesson.exercise_package(), &[])?;
        anyhow::ensure!(run.compiled, "the shipped exercise does not compile:\n{}", run.first_failure(30));
        let mut names: Vec<_> = run.verdicts.iter().map(|v| v.name.clone()).collect();
        let mut expected = solution_tests.clone();
        names.sort();
        expected.sort();
        anyhow::ensure!(
            names == expected,
            "the exercise runs other tests than the solution: {names:?} vs {expected:?}"
        );
        let passing: Vec<_> = run.verdicts.iter().filter(|v| v.passed).map(|v| v.name.as_str()).collect();
        anyhow::ensure!(
            passing.is_empty(),
            "these tests pass without the exercise being solved, so they cannot grade it: {}",
            passing.join(", ")
        );
        Ok(format!("all {} tests fail unsolved", run.verdicts.len()))
    });

    if skip_lazy {
        return;
    }
    for (index, lazy) in lesson.meta.lazy.iter().enumerate() {
        suite.step(format!("{}: lazy answer {} rejected ({})", lesson.label(), index + 1, lazy.why), || {
            let _restore = RestoreOnDrop(lesson);
            write_lazy_lesson(lesson, &lazy.function, &lazy.body)?;
            let run = cargo::test_package(&lesson.exercise_package(), &[])?;
            anyhow::ensure!(
                run.compiled,
                "the lazy body of `{}` does not compile:\n{}",
                lazy.function,
                run.first_failure(20)
            );
            let caught: Vec<_> = run.verdicts.iter().filter(|v| !v.passed).map(|v| v.name.as_str()).collect();
            anyhow::ensure!(
                !caught.is_empty(),
                "every test passes with the lazy `{}` body `{}`: the tests cannot tell it from a real answer",
                lazy.function,
                lazy.body
            );
            Ok(format!("caught by {}", caught.join(", ")))
        });
    }
}

/// Writes the lesson as the solution, except `function`, whose body is `body`.
fn write_lazy_lesson(lesson: &Lesson, function: &str, body: &str) -> anyhow::Result<()> {
    let mut files = sync::generate(lesson)?;
    let mut found = false;
    for (relative, bytes) in files.iter_mut() {
        if relative.extension().and_then(|e| e.to_str()) != Some("rs") || !relative.starts_with("src") {
            continue;
        }
        let solution = std::fs::read_to_string(lesson.solution_dir().join(relative))?;
        let (_, marked) = exercise::make_exercise(&solution, &lesson.number)?;
        let solution = sync::rename_crate(&solution, &lesson.number);
        if marked.iter().any(|m| m.function == function) {
            *bytes = exercise::with_body(&solution, function, body)?.into_bytes();
            found = true;
        } else {
            // The other files solved too, so only this one function is lazy.
            *bytes = strip(&solution);
        }
    }
    anyhow::ensure!(found, "lesson.toml names `{function}`, which is not an exercise of lesson {}", lesson.number);
    sync::write(&lesson.exercise_dir(), &files).context("writing the lazy lesson")
}

/// The solution text without exercise markers.
fn strip(solution: &str) -> Vec<u8> {
    solution
        .split_inclusive('\n')
        .scan(false, |in_marker, line| {
            let t = line.trim();
            if t.starts_with("// EXERCISE:") {
                *in_marker = true;
                return Some("");
            }
            if *in_marker && t.starts_with("//") && !t.starts_with("///") && !t.contains("ANCHOR") {
                return Some("");
            }
            *in_marker = false;
            Some(line)
        })
        .collect::<String>()
        .into_bytes()
}

/// Puts the generated exercise back however the step ends.
struct RestoreOnDrop<'a>(&'a Lesson);

impl Drop for RestoreOnDrop<'_> {
    fn drop(&mut self) {
        if let Err(e) = sync::generate(self.0).and_then(|files| sync::write(&self.0.exercise_dir(), &files)) {
            eprintln!("could not restore lessons/{}: {e:#}; run `cargo xtask sync`", self.0.dir_name);
        }
    }
}

fn expect_all_pass(run: &TestRun) -> anyhow::Result<String> {
    anyhow::ensure!(run.compiled, "does not compile:\n{}", run.first_failure(30));
    anyhow::ensure!(!run.verdicts.is_empty(), "no test ran");
    anyhow::ensure!(
        run.failed() == 0,
        "{} of {} tests failed:\n{}",
        run.failed(),
        run.verdicts.len(),
        run.first_failure(30)
    );
    let mut detail = format!("{} tests", run.verdicts.len());
    if !run.ungraded.is_empty() {
        detail.push_str(&format!(", {} not graded on this broker", run.ungraded.len()));
    }
    Ok(detail)
}

/// One of xtask's own commands, as a step. Through `cargo run`, not `current_exe()`: the workspace build step
/// unifies dependency features differently and rebuilds the xtask binary, so the file this process started
/// from may no longer exist.
fn xtask() -> std::process::Command {
    let mut command = cargo::cargo();
    command.args(["run", "--quiet", "--package", "xtask", "--"]);
    command
}

/// A grade report exists, parses, and covers every lesson.
fn report_step(path: &std::path::Path) -> anyhow::Result<String> {
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let text = report.to_string();
    let missing: Vec<_> = catalog::lessons()?
        .into_iter()
        .filter(|l| !text.contains(&format!("\"{}\"", l.number)))
        .map(|l| l.number)
        .collect();
    anyhow::ensure!(missing.is_empty(), "the report {} lacks lessons {missing:?}", cargo::relative(path));
    Ok(format!("report in {}", cargo::relative(path)))
}

fn command_step(command: &mut std::process::Command) -> anyhow::Result<String> {
    let (ok, output) = cargo::run_captured(command)?;
    if ok {
        Ok(String::new())
    } else {
        let tail: Vec<_> = output.lines().filter(|l| !l.trim().is_empty()).collect();
        let start = tail.len().saturating_sub(40);
        anyhow::bail!("failed:\n{}", tail[start..].join("\n"))
    }
}

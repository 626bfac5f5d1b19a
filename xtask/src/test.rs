//! `cargo xtask test`: the maintainers' suite, the one command CI runs. Learners need none of it (their
//! commands are `lesson`, `check`, `list`, `watch`, `hint`, `reset`); it writes nothing to `lessons/` or
//! `solutions/`, so running it loses no one's work.
//!
//! Steps, in order: generated lessons and book files in sync; formatting; a build of everything; clippy with
//! warnings denied; kit and xtask tests; then for every lesson, from one build of a scratch crate (proofs.rs): the
//! solution passes all its tests (and on real Kafka with `--kafka`), *every* test fails at the exercise's
//! `todo!()`, and each lazy answer from `lesson.toml` fails at least one test. Then `grade` on the shipped
//! exercises and on the solutions, and the book. A table of every step follows, one of the time each lesson costs
//! with a projection for 20 lessons, and the closing line `xtask: N passed, N failed` (one per step).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::cargo::{self, TestRun};
use crate::catalog::{self, Lesson};
use crate::exercise::LazyArm;
use crate::proofs::{self, ProofBuild};
use crate::{exercise, grade, runner, scratch, sync};

/// One row of the summary.
struct Step {
    name: String,
    /// The lesson the step proves, for the per-lesson times.
    lesson: Option<String>,
    ok: bool,
    detail: String,
    took: Duration,
}

#[derive(Default)]
struct Suite {
    steps: Vec<Step>,
}

impl Suite {
    /// Runs `body` as a step with a spinner, records its verdict and prints it.
    fn step(&mut self, name: impl Into<String>, body: impl FnOnce() -> anyhow::Result<String>) -> bool {
        self.run_step(None, name.into(), false, body)
    }

    /// A step that belongs to `lesson`'s share of the time.
    fn lesson_step(
        &mut self,
        lesson: &Lesson,
        name: impl Into<String>,
        body: impl FnOnce() -> anyhow::Result<String>,
    ) -> bool {
        self.run_step(Some(lesson.label()), name.into(), false, body)
    }

    /// A step of `lesson` whose detail is a report of one line per item (a verdict per lazy answer), printed
    /// whole however long: a cut would hide verdicts.
    fn lesson_report_step(
        &mut self,
        lesson: &Lesson,
        name: impl Into<String>,
        body: impl FnOnce() -> anyhow::Result<String>,
    ) -> bool {
        self.run_step(Some(lesson.label()), name.into(), true, body)
    }

    /// Runs the step and prints its verdict with the first line of its detail, then the rest of the detail:
    /// all of it if `whole`, otherwise up to [`DETAIL_LINES`].
    fn run_step(
        &mut self,
        lesson: Option<String>,
        name: String,
        whole: bool,
        body: impl FnOnce() -> anyhow::Result<String>,
    ) -> bool {
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
        let max_lines = (!whole).then_some(if ok { DETAIL_LINES.0 } else { DETAIL_LINES.1 });
        for line in detail_lines(&detail, max_lines) {
            println!("       {line}");
        }
        self.steps.push(Step { name, lesson, ok, detail, took });
        ok
    }

    /// The step table, the per-lesson table and the projection for 20 lessons.
    fn print_times(&self, total: Duration) {
        println!("\n{:<78} {:>6} {:>7}", "step", "result", "seconds");
        println!("{}", "-".repeat(93));
        for step in &self.steps {
            let name: String = step.name.chars().take(78).collect();
            println!("{name:<78} {:>6} {:>7.1}", if step.ok { "ok" } else { "FAILED" }, step.took.as_secs_f64());
        }
        println!("{}", "-".repeat(93));
        let mut per_lesson: BTreeMap<&str, Duration> = BTreeMap::new();
        for step in &self.steps {
            if let Some(lesson) = &step.lesson {
                *per_lesson.entry(lesson).or_default() += step.took;
            }
        }
        let lessons_total: Duration = per_lesson.values().sum();
        // Grading runs every lesson's tests twice (shipped and solved): its time grows with the lessons too, so
        // the projection counts it per lesson rather than as a fixed cost.
        let grading: Duration = self.steps.iter().filter(|s| s.name.starts_with("grade:")).map(|s| s.took).sum();
        let fixed = total.saturating_sub(lessons_total + grading);
        if !per_lesson.is_empty() {
            println!("\n{:<50} {:>7}", "lesson (its proofs)", "seconds");
            for (lesson, took) in &per_lesson {
                let name: String = lesson.chars().take(50).collect();
                println!("{name:<50} {:>7.1}", took.as_secs_f64());
            }
            println!("{:<50} {:>7.1}", "grading (every lesson, shipped and solved)", grading.as_secs_f64());
            println!("{:<50} {:>7.1}", "other shared steps", fixed.as_secs_f64());
            let per_lesson_cost = (lessons_total + grading) / per_lesson.len() as u32;
            let projected = fixed + per_lesson_cost * 20;
            println!(
                "projection for 20 lessons: {:.0} s ({:.1} min) = other shared steps {:.0} s + 20 × {:.0} s per \
                 lesson (its proofs and its share of grading; build and clippy grow a little too)",
                projected.as_secs_f64(),
                projected.as_secs_f64() / 60.0,
                fixed.as_secs_f64(),
                per_lesson_cost.as_secs_f64()
            );
        }
        println!("total {:.0} s", total.as_secs_f64());
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// How many lines of a step's detail are printed under its verdict line, when it passed and when it failed:
/// enough for a compiler error or a failed test's panic; the rest is in the logs (`target/workbook/runs/`) or a
/// rerun away. A report step (one verdict a line) is printed whole.
const DETAIL_LINES: (usize, usize) = (20, 60);

/// The lines of `detail` printed under the step's verdict line, which shows its first line: the others, at most
/// `max_lines` of them (`None`: all), then how many were left out, so a cut is never silent.
fn detail_lines(detail: &str, max_lines: Option<usize>) -> Vec<String> {
    let rest: Vec<&str> = detail.lines().skip(1).collect();
    let shown = max_lines.unwrap_or(usize::MAX).min(rest.len());
    let mut lines: Vec<String> = rest[..shown].iter().map(|line| line.to_string()).collect();
    if shown < rest.len() {
        lines.push(format!("… and {} more line(s), not shown", rest.len() - shown));
    }
    lines
}

pub struct Options {
    pub lesson: Option<String>,
    pub skip_lazy: bool,
    /// Only the lessons' proofs: no sync check, fmt, build, clippy, kit/xtask tests, grade or book.
    pub proofs_only: bool,
    /// Also run each solution's tests against the Kafka at this address.
    pub kafka: Option<String>,
    pub run: RunSettings,
}

pub fn run(options: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let lessons = match &options.lesson {
        Some(nn) => vec![catalog::find(nn)?],
        None => catalog::lessons()?,
    };
    let mut suite = Suite::default();

    if !options.proofs_only {
        suite.step("generated lessons and book files are in sync (sync --check)", || {
            sync::check(None).map(|_| String::new())
        });
        // The generated exercises are left out: their formatting follows from their solution's, and renaming the
        // crate (`solution_NN` → `lesson_NN`) can move an import in rustfmt's sort order.
        suite.step("formatting of kit, kit-testing, xtask, compare and solutions (cargo fmt --check)", || {
            let mut command = cargo::cargo();
            command.args(["fmt", "--check", "--package", "kit", "--package", "kit-testing", "--package", "xtask"]);
            command.args(["--package", "compare"]);
            for lesson in catalog::lessons()? {
                command.args(["--package", &lesson.solution_package()]);
            }
            command_step(&mut command)
        });
        // `--features xtask/brokers`: the build of xtask that is a Kafka client (see `relaunch_with_clients`) is
        // built, linted and tested too; the workspace's other members already unify kit's features up to it.
        const WHOLE_WORKSPACE: [&str; 6] =
            ["--workspace", "--all-targets", "--features", "xtask/brokers", "--color", "never"];
        suite.step("everything builds (cargo build --workspace --all-targets)", || {
            command_step(cargo::cargo().arg("build").args(WHOLE_WORKSPACE))
        });
        suite.step("clippy, warnings denied", || {
            command_step(cargo::cargo().arg("clippy").args(WHOLE_WORKSPACE).args(["--", "-D", "warnings"]))
        });
        // `rabbitmq`: kit::rabbitmq's own tests (its "how to start RabbitMQ" message) are built only with it.
        suite
            .step("kit tests", || expect_all_pass(&cargo::test_package_with("kit", &["--features", "rabbitmq"], &[])?));
        suite.step("xtask tests", || {
            expect_all_pass(&cargo::test_package_with("xtask", &["--features", "brokers"], &[])?)
        });
        // `cargo xtask compare`'s own tests (its tables and percentiles; no broker): the measured run is a step of
        // `.ci/run`, not a test.
        suite.step("compare tests", || expect_all_pass(&cargo::test_package_with("compare", &[], &[])?));
        if let Some(bootstrap) = &options.kafka {
            // The fault proxy and the shared helpers against real Kafka. The JVM-cluster tests (jvm_kafka.rs)
            // start private clusters whatever the broker, so the step above has run them already.
            suite.step(format!("kit tests on real Kafka at {bootstrap}"), || {
                let args = ["--lib", "--test", "fault_proxy", "--test", "embedded_broker"];
                expect_all_pass(&cargo::test_package_with("kit", &args, &[(kit::env::BOOTSTRAP_ENV, bootstrap)])?)
            });
        }
    }
    // The proofs build their own scratch crates, so they do not wait on the workspace build above.
    for lesson in &lessons {
        prove_lesson(&mut suite, lesson, &options);
    }
    if options.lesson.is_none() && !options.proofs_only {
        let reports = scratch::workbook_dir();
        let unsolved = reports.join("grade-unsolved.json");
        suite.step("grade: the shipped exercises all grade unsolved (xtask grade --shipped --expect unsolved)", || {
            let outcome = grade::run_quietly(&grade::Options {
                source: grade::Source::Shipped,
                expect: Some(grade::Expectation::Unsolved),
                json: Some(unsolved.clone()),
                ..grade::Options::new(options.run.clone())
            })?;
            Ok(format!("{}; {outcome}", report_step(&unsolved)?))
        });
        let solved = reports.join("grade-solved.json");
        let junit = reports.join("grade-solved.xml");
        suite.step("grade: the solutions all grade solved (xtask grade --lessons-dir solutions)", || {
            grade::run_quietly(&grade::Options {
                source: grade::Source::Dir(catalog::root().join("solutions")),
                expect: Some(grade::Expectation::Solved),
                json: Some(solved.clone()),
                junit: Some(junit.clone()),
                ..grade::Options::new(options.run.clone())
            })?;
            anyhow::ensure!(std::fs::read_to_string(&junit)?.contains("<testsuites"), "no JUnit report written");
            report_step(&solved)
        });
    }
    if !options.proofs_only && catalog::root().join("mdbook").join("book.toml").exists() {
        suite.step("the book builds without warnings (xtask book)", || command_step(xtask().arg("book")));
    }

    let passed = suite.steps.iter().filter(|s| s.ok).count();
    let failed = suite.steps.len() - passed;
    suite.print_times(started.elapsed());
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

/// How the suite runs tests (see runner.rs).
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub parallel: usize,
    pub timeout: Duration,
}

/// The proofs for one lesson, from one build (proofs.rs): the solution passes, every test fails at the
/// exercise's `todo!()`, each lazy answer is caught; on real Kafka too with `--kafka`.
fn prove_lesson(suite: &mut Suite, lesson: &Lesson, options: &Options) {
    let label = lesson.label();
    let mut built = None;
    suite.lesson_step(lesson, format!("{label}: proof build (solution, todo!() and lazy answers in one)"), || {
        let build = proofs::build(lesson)?;
        let summary = build.summary();
        built = Some(build);
        Ok(summary)
    });
    let Some(build) = built else { return };
    let logs = scratch::workbook_dir().join("runs").join(&lesson.dir_name);

    // The solution first: its durations order the lazy runs, quickest tests first.
    let mut durations: BTreeMap<String, Duration> = BTreeMap::new();
    suite.lesson_step(lesson, format!("{label}: solution passes"), || {
        let outcomes = run_variant(&build, "solution", &[], &options.run, &logs.join("solution"))?;
        durations = outcomes.iter().map(|o| (o.test.name.clone(), o.took)).collect();
        all_pass(&outcomes, options.run.timeout)
    });
    if let Some(bootstrap) = &options.kafka {
        suite.lesson_step(lesson, format!("{label}: solution passes on real Kafka at {bootstrap}"), || {
            let env = [(kit::env::BOOTSTRAP_ENV.to_string(), bootstrap.clone())];
            let outcomes = run_variant(&build, "solution", &env, &options.run, &logs.join("kafka"))?;
            all_pass(&outcomes, options.run.timeout)
        });
    }

    suite.lesson_step(lesson, format!("{label}: every test fails at the exercise's todo!()"), || {
        let outcomes = run_variant(&build, "todo", &[], &options.run, &logs.join("todo"))?;
        every_test_fails_at_the_todo(&outcomes, &lesson.number, options.run.timeout)
    });

    if options.skip_lazy || build.lazy.is_empty() {
        return;
    }
    suite.lesson_report_step(lesson, format!("{label}: {} lazy answers each fail a test", build.lazy.len()), || {
        // Every answer's jobs go into one pool, quickest tests first, so the pool stays full while answers
        // that are already caught drop out.
        let mut order: Vec<&str> = build.tests.iter().map(|t| t.name.as_str()).collect();
        order.sort_by_key(|name| durations.get(*name).copied().unwrap_or(Duration::MAX));
        let mut jobs = Vec::new();
        for name in &order {
            for (group, arm) in build.lazy.iter().enumerate() {
                let (krate, tests) = build.for_variant(&arm.variant);
                if let Some(test) = tests.iter().find(|t| t.name == *name) {
                    jobs.push(runner::Job {
                        test: test.clone(),
                        group,
                        env: vec![(exercise::VARIANT_ENV.to_string(), arm.variant.clone())],
                        crate_dir: krate.dir.clone(),
                    });
                }
            }
        }
        let outcomes = runner::run(
            jobs,
            &runner::Options {
                parallel: options.run.parallel,
                timeout: options.run.timeout,
                stop_at_first_failure: true,
                logs_dir: logs.join("lazy"),
            },
        )?;
        let whys: Vec<&str> = lesson.meta.lazy.iter().map(|l| l.why.as_str()).collect();
        let (uncaught, lines) = lazy_verdicts(&build.lazy, &whys, &outcomes);
        anyhow::ensure!(uncaught == 0, "{uncaught} lazy answer(s) pass every test:\n{}", lines.join("\n"));
        Ok(format!("all {} caught\n{}", build.lazy.len(), lines.join("\n")))
    });
}

/// One line per lazy answer, in lesson.toml's order: its variant, function and `why`, then the test that caught
/// it (the first to fail) or NOT CAUGHT with a one-line summary of its body; and how many were not caught. One
/// line each, so that every verdict shows however long the bodies are.
fn lazy_verdicts(arms: &[LazyArm], whys: &[&str], outcomes: &[runner::Outcome]) -> (usize, Vec<String>) {
    let mut lines = Vec::new();
    let mut uncaught = 0;
    for (group, arm) in arms.iter().enumerate() {
        let why = whys.get(group).copied().unwrap_or("(no why)");
        let answer = format!("{} ({}): {why}", arm.variant, arm.function);
        match outcomes.iter().find(|o| o.group == group && !o.passed && !o.cancelled) {
            Some(o) if o.timed_out => lines.push(format!("{answer} — caught by {} (timed out)", o.test.name)),
            Some(o) => lines.push(format!("{answer} — caught by {}", o.test.name)),
            None => {
                uncaught += 1;
                lines.push(format!(
                    "{answer} — NOT CAUGHT: every test passes with the body {}; the tests cannot tell it from a \
                     real answer",
                    body_summary(&arm.body)
                ));
            }
        }
    }
    (uncaught, lines)
}

/// A lazy body on one line: its whitespace collapsed, cut to a few words, with its length in lines when it has
/// several (the whole body is in lesson.toml, `lazy-K` being the K-th `[[lazy]]`).
fn body_summary(body: &str) -> String {
    let flat = grade::fit(&body.split_whitespace().collect::<Vec<_>>().join(" "), 72);
    match body.trim().lines().count() {
        0 | 1 => format!("`{flat}`"),
        n => format!("`{flat}` ({n} lines)"),
    }
}

/// The unsolved proof: every test failed, and failed at the exercise's `todo!()` — its output holds
/// "not yet implemented: lesson NN". A test that fails for another reason (no Redis, a broken helper) would
/// fail just the same on a right answer, so it proves nothing about the exercise.
fn every_test_fails_at_the_todo(
    outcomes: &[runner::Outcome],
    lesson_number: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    anyhow::ensure!(!outcomes.is_empty(), "no test ran");
    let todo = format!("not yet implemented: lesson {lesson_number}");
    let mut wrong = Vec::new();
    for outcome in outcomes {
        if outcome.passed {
            wrong
                .push(format!("{} passes without the exercise being solved, so it cannot grade it", outcome.test.name));
        } else if !outcome.output.contains(&todo) {
            wrong.push(format!(
                "{} fails, but not at the exercise's todo!() (\"{todo}\" is not in its output):\n{}",
                outcome.test.name,
                indent(&outcome.failure(timeout), 20)
            ));
        }
    }
    anyhow::ensure!(wrong.is_empty(), "{} of {} tests:\n{}", wrong.len(), outcomes.len(), wrong.join("\n"));
    Ok(format!("all {} tests fail at the todo!()", outcomes.len()))
}

/// Runs every test of the build under `variant` (plus `env`), to the end.
fn run_variant(
    build: &ProofBuild,
    variant: &str,
    env: &[(String, String)],
    settings: &RunSettings,
    logs_dir: &std::path::Path,
) -> anyhow::Result<Vec<runner::Outcome>> {
    let (krate, tests) = build.for_variant(variant);
    let mut env = env.to_vec();
    env.push((exercise::VARIANT_ENV.to_string(), variant.to_string()));
    let jobs = tests
        .iter()
        .map(|test| runner::Job { test: test.clone(), group: 0, env: env.clone(), crate_dir: krate.dir.clone() })
        .collect();
    runner::run(
        jobs,
        &runner::Options {
            parallel: settings.parallel,
            timeout: settings.timeout,
            stop_at_first_failure: false,
            logs_dir: logs_dir.to_path_buf(),
        },
    )
}

/// Every test passed: "N tests" (and how many assertions were not graded on this broker).
fn all_pass(outcomes: &[runner::Outcome], timeout: Duration) -> anyhow::Result<String> {
    anyhow::ensure!(!outcomes.is_empty(), "no test ran");
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.passed).collect();
    if !failed.is_empty() {
        let details: Vec<_> =
            failed.iter().map(|o| format!("{}:\n{}", o.test.name, indent(&o.failure(timeout), 25))).collect();
        anyhow::bail!("{} of {} tests failed:\n{}", failed.len(), outcomes.len(), details.join("\n"));
    }
    let ungraded: usize = outcomes.iter().map(|o| o.ungraded.len()).sum();
    let mut detail = format!("{} tests", outcomes.len());
    if ungraded > 0 {
        detail.push_str(&format!(", {ungraded} not graded on this broker"));
    }
    Ok(detail)
}

fn indent(text: &str, max_lines: usize) -> String {
    text.lines().take(max_lines).map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{Outcome, TestCase};

    fn failed(name: &str, output: &str) -> Outcome {
        Outcome {
            test: TestCase { target: "t".into(), executable: "/bin/false".into(), name: name.into() },
            group: 0,
            passed: false,
            timed_out: false,
            cancelled: false,
            exit_code: Some(101),
            took: Duration::from_secs(1),
            output: output.into(),
            ungraded: vec![],
        }
    }

    #[test]
    fn the_unsolved_proof_wants_every_failure_at_the_todo() {
        let at_todo = "thread 'a' panicked at src/lib.rs:9:5:\nnot yet implemented: lesson 07: write `apply_event`";
        assert!(every_test_fails_at_the_todo(&[failed("a", at_todo), failed("b", at_todo)], "07", DEFAULT).is_ok());

        let no_redis = "---- b stdout ----\nthread 'b' panicked at tests/t.rs:3:5:\nRedis: Connection refused\n";
        let error = every_test_fails_at_the_todo(&[failed("a", at_todo), failed("b", no_redis)], "07", DEFAULT)
            .unwrap_err()
            .to_string();
        assert!(error.contains("b fails, but not at the exercise's todo!()") && error.contains("Connection refused"));

        let other_lesson = "not yet implemented: lesson 06: write `publish`";
        assert!(every_test_fails_at_the_todo(&[failed("a", other_lesson)], "07", DEFAULT).is_err());

        let mut passing = failed("a", "test a ... ok");
        passing.passed = true;
        assert!(every_test_fails_at_the_todo(&[passing], "07", DEFAULT).is_err());
        assert!(every_test_fails_at_the_todo(&[], "07", DEFAULT).is_err(), "no test ran");
    }

    #[test]
    fn every_lazy_answer_gets_a_verdict_line_however_long_its_body() {
        let long_body = format!("{{\n{}    0\n}}", "    let _ = 1;\n".repeat(80));
        let arms: Vec<LazyArm> = (1..=25)
            .map(|k| LazyArm {
                variant: format!("lazy-{k}"),
                function: "process_batch".into(),
                body: if k == 2 { long_body.clone() } else { "0".into() },
            })
            .collect();
        let whys: Vec<String> = (1..=25).map(|k| format!("wrong answer {k}")).collect();
        let whys: Vec<&str> = whys.iter().map(String::as_str).collect();
        // Every answer but lazy-2 is caught; lazy-3's first job was cancelled before a later one failed.
        let mut outcomes = Vec::new();
        for group in (0..25).filter(|g| *g != 1) {
            if group == 2 {
                let mut cancelled = failed("cancelled_test", "");
                cancelled.cancelled = true;
                cancelled.group = group;
                outcomes.push(cancelled);
            }
            let mut outcome = failed(&format!("test_{group}"), "assertion failed");
            outcome.group = group;
            outcome.timed_out = group == 24;
            outcomes.push(outcome);
        }

        let (uncaught, lines) = lazy_verdicts(&arms, &whys, &outcomes);
        assert_eq!(uncaught, 1);
        assert_eq!(lines.len(), 25, "one line per answer: {lines:#?}");
        assert!(lines.iter().all(|l| !l.contains('\n')), "{lines:#?}");
        assert_eq!(lines[0], "lazy-1 (process_batch): wrong answer 1 — caught by test_0");
        assert!(lines[1].starts_with("lazy-2 (process_batch): wrong answer 2 — NOT CAUGHT"), "{}", lines[1]);
        assert!(lines[1].contains("`{ let _ = 1; let _ = 1;") && lines[1].contains("…` (83 lines)"), "{}", lines[1]);
        assert!(lines[1].chars().count() < 250, "a summary of the body, not the body: {}", lines[1]);
        assert_eq!(lines[2], "lazy-3 (process_batch): wrong answer 3 — caught by test_2");
        assert_eq!(lines[24], "lazy-25 (process_batch): wrong answer 25 — caught by test_24 (timed out)");

        // The step's detail, printed whole: the last verdict shows too.
        let detail = format!("{uncaught} lazy answer(s) pass every test:\n{}", lines.join("\n"));
        let printed = detail_lines(&detail, None);
        assert_eq!(printed.len(), 25);
        assert!(printed.last().unwrap().starts_with("lazy-25 "));
    }

    #[test]
    fn a_cut_detail_says_how_many_lines_it_left_out() {
        let detail = (0..=30).map(|n| format!("line {n}")).collect::<Vec<_>>().join("\n");
        let printed = detail_lines(&detail, Some(20));
        assert_eq!(printed.len(), 21);
        assert_eq!(
            (printed[0].as_str(), printed[19].as_str()),
            ("line 1", "line 20"),
            "the first line is not repeated"
        );
        assert_eq!(printed[20], "… and 10 more line(s), not shown");
        assert_eq!(detail_lines(&detail, Some(30)).len(), 30, "nothing cut, nothing said");
        assert_eq!(detail_lines("only line", Some(20)), Vec::<String>::new());
        assert_eq!(body_summary("0"), "`0`");
    }

    const DEFAULT: Duration = runner::DEFAULT_TIMEOUT;
}

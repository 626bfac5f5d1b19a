//! `cargo xtask grade [--json FILE] [--junit FILE] [--lessons-dir DIR]`: the teacher's view.
//!
//! Runs every lesson's tests (in `lessons/` by default), prints a score table and writes reports that a CI
//! server or a learning-management system can read: JSON with everything, JUnit XML for test-report plug-ins.
//! A lesson's points are its share of passing tests; "not graded" counts the assertions its tests skipped
//! because the broker could not show the behaviour (`kit::testing::can_grade`).
//!
//! `--lessons-dir solutions` grades the reference solutions, and `--expect solved|unsolved` turns the grade
//! into a check: the maintainers' suite uses both to prove a fresh checkout grades every lesson unsolved and
//! the solutions grade solved.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cargo::{self, TestRun};
use crate::catalog::{self, Lesson};

/// Options of `cargo xtask grade`.
pub struct Options {
    pub json: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    pub lessons_dir: PathBuf,
    pub points_per_lesson: f64,
    pub expect: Option<Expectation>,
}

/// What every lesson must come out as, for `--expect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Expectation {
    Solved,
    Unsolved,
}

/// One test's result.
#[derive(Debug, Clone, Serialize)]
pub struct TestGrade {
    pub name: String,
    pub passed: bool,
    /// The test's own output when it failed: the assertion message a learner needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// One lesson's result.
#[derive(Debug, Clone, Serialize)]
pub struct LessonGrade {
    pub number: String,
    pub title: String,
    pub package: String,
    pub compiled: bool,
    pub passed: usize,
    pub total: usize,
    pub points: f64,
    pub max_points: f64,
    /// "Not graded on this broker" reports.
    pub ungraded: usize,
    pub solved: bool,
    pub tests: Vec<TestGrade>,
    /// The compiler's first error, when the lesson did not compile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile_error: Option<String>,
}

/// The whole grade.
#[derive(Debug, Clone, Serialize)]
pub struct GradeReport {
    /// Which broker the tests ran against.
    pub broker: String,
    pub lessons_dir: String,
    pub points: f64,
    pub max_points: f64,
    pub solved: usize,
    pub lessons: Vec<LessonGrade>,
}

pub fn run(options: Options) -> anyhow::Result<()> {
    let lessons = catalog::lessons()?;
    let progress = ProgressBar::new(lessons.len() as u64);
    progress.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} grading {msg} [{elapsed}]")?);
    let mut grades = Vec::new();
    for lesson in &lessons {
        progress.set_message(lesson.label());
        grades.push(grade_lesson(lesson, &options.lessons_dir, options.points_per_lesson)?);
        progress.inc(1);
    }
    progress.finish_and_clear();
    let report = GradeReport {
        broker: broker_in_use(),
        lessons_dir: cargo::relative(&options.lessons_dir),
        points: round(grades.iter().map(|g| g.points).sum()),
        max_points: round(grades.iter().map(|g| g.max_points).sum()),
        solved: grades.iter().filter(|g| g.solved).count(),
        lessons: grades,
    };
    print!("{}", table(&report));
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("JSON report: {}", path.display());
    }
    if let Some(path) = &options.junit {
        std::fs::write(path, junit(&report)).with_context(|| format!("writing {}", path.display()))?;
        println!("JUnit report: {}", path.display());
    }
    if let Some(expectation) = options.expect {
        let wrong: Vec<_> = report
            .lessons
            .iter()
            .filter(|l| l.solved != (expectation == Expectation::Solved))
            .map(|l| format!("{} {}", l.number, l.title))
            .collect();
        if !wrong.is_empty() {
            bail!("expected every lesson {expectation:?}, but not: {}", wrong.join(", "));
        }
        println!("as expected, every lesson is {expectation:?}");
    }
    Ok(())
}

/// Runs one lesson's tests from `lessons_dir` and scores them.
pub fn grade_lesson(lesson: &Lesson, lessons_dir: &Path, points_per_lesson: f64) -> anyhow::Result<LessonGrade> {
    let package = package_in(&lessons_dir.join(&lesson.dir_name))?;
    let run = cargo::test_package(&package, &[])?;
    Ok(score(lesson, &run, points_per_lesson))
}

/// The package name in `dir/Cargo.toml` (`lesson-05` in lessons/, `solution-05` in solutions/).
fn package_in(dir: &Path) -> anyhow::Result<String> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| format!("no lesson crate at {}", dir.display()))?;
    let value: toml::Value = toml::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    value["package"]["name"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("{} names no package", manifest.display()))
}

/// Turns a test run into a grade.
pub fn score(lesson: &Lesson, run: &TestRun, points_per_lesson: f64) -> LessonGrade {
    let total = run.verdicts.len();
    let passed = run.passed();
    let tests = run
        .verdicts
        .iter()
        .map(|v| TestGrade {
            name: v.name.clone(),
            passed: v.passed,
            failure: (!v.passed).then(|| failure_of(&run.output, &v.name)).flatten(),
        })
        .collect();
    let points = if total == 0 { 0.0 } else { round(points_per_lesson * passed as f64 / total as f64) };
    LessonGrade {
        number: lesson.number.clone(),
        title: lesson.meta.title.clone(),
        package: run.package.clone(),
        compiled: run.compiled,
        passed,
        total,
        points,
        max_points: points_per_lesson,
        ungraded: run.ungraded.len(),
        solved: run.all_passed(),
        tests,
        compile_error: (!run.compiled).then(|| run.first_failure(20)),
    }
}

/// The `---- NAME stdout ----` block libtest prints for a failed test, without the backtrace hint.
fn failure_of(output: &str, test: &str) -> Option<String> {
    let header = format!("---- {test} stdout ----");
    let start = output.find(&header)? + header.len();
    let rest = &output[start..];
    let end =
        ["\n---- ", "\nfailures:\n", "\n\nfailures:"].iter().filter_map(|m| rest.find(m)).min().unwrap_or(rest.len());
    let text: Vec<_> =
        rest[..end].lines().filter(|l| !l.trim_start().starts_with("note: run with `RUST_BACKTRACE")).collect();
    Some(text.join("\n").trim().to_string())
}

/// The broker the tests will resolve, in the words of `kit::Broker::resolve`'s order.
fn broker_in_use() -> String {
    if let Some(bootstrap) = std::env::var(kit::broker::BOOTSTRAP_ENV).ok().filter(|s| !s.is_empty()) {
        return format!("external Kafka at {bootstrap}");
    }
    match std::env::var(kit::broker::BROKER_ENV).as_deref() {
        Ok("testcontainers") => "apache/kafka in a test container".into(),
        _ => "embedded (librdkafka mock cluster)".into(),
    }
}

fn round(points: f64) -> f64 {
    (points * 100.0).round() / 100.0
}

/// The score table printed to the terminal.
pub fn table(report: &GradeReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "graded {} on {}\n", report.lessons_dir, report.broker);
    let _ = writeln!(out, "{:<36} {:>7} {:>8} {:>11}   status", "lesson", "tests", "points", "not graded");
    for lesson in &report.lessons {
        let label = format!("{} {}", lesson.number, lesson.title);
        let status = match (lesson.compiled, lesson.solved) {
            (false, _) => "does not compile",
            (true, true) => "solved",
            (true, false) => "unsolved",
        };
        let _ = writeln!(
            out,
            "{label:<36} {:>7} {:>8.1} {:>11}   {status}",
            format!("{}/{}", lesson.passed, lesson.total),
            lesson.points,
            lesson.ungraded
        );
    }
    let _ = writeln!(
        out,
        "\ntotal: {:.1} / {:.1} points, {} of {} lessons solved",
        report.points,
        report.max_points,
        report.solved,
        report.lessons.len()
    );
    out
}

/// JUnit XML: a `<testsuite>` per lesson, a `<testcase>` per test; a lesson that does not compile is one
/// failing `compile` case, so it still shows up in every report viewer.
pub fn junit(report: &GradeReport) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let tests: usize = report.lessons.iter().map(|l| l.total.max(1)).sum();
    let failures: usize = report.lessons.iter().map(|l| if l.compiled { l.total - l.passed } else { 1 }).sum();
    let _ = writeln!(xml, "<testsuites name=\"kafka-workbook\" tests=\"{tests}\" failures=\"{failures}\">");
    for lesson in &report.lessons {
        let name = escape(&format!("{} {}", lesson.number, lesson.title));
        let (count, failed) = if lesson.compiled { (lesson.total, lesson.total - lesson.passed) } else { (1, 1) };
        let _ = writeln!(xml, "  <testsuite name=\"{name}\" tests=\"{count}\" failures=\"{failed}\" skipped=\"0\">");
        let _ = writeln!(
            xml,
            "    <properties><property name=\"points\" value=\"{}\"/><property name=\"max_points\" value=\"{}\"/>\
             <property name=\"not_graded_on_this_broker\" value=\"{}\"/></properties>",
            lesson.points, lesson.max_points, lesson.ungraded
        );
        if let Some(error) = &lesson.compile_error {
            let _ = writeln!(
                xml,
                "    <testcase classname=\"{}\" name=\"compile\"><failure message=\"does not compile\">{}</failure></testcase>",
                escape(&lesson.package),
                escape(error)
            );
        }
        for test in &lesson.tests {
            let open =
                format!("    <testcase classname=\"{}\" name=\"{}\"", escape(&lesson.package), escape(&test.name));
            if test.passed {
                let _ = writeln!(xml, "{open}/>");
            } else {
                let message = test.failure.as_deref().unwrap_or("failed");
                let first = message.lines().find(|l| !l.trim().is_empty()).unwrap_or("failed");
                let _ = writeln!(
                    xml,
                    "{open}><failure message=\"{}\">{}</failure></testcase>",
                    escape(first),
                    escape(message)
                );
            }
        }
        let _ = writeln!(xml, "  </testsuite>");
    }
    xml.push_str("</testsuites>\n");
    xml
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cargo::parse_verdicts;
    use crate::catalog::LessonMeta;

    fn lesson() -> Lesson {
        Lesson {
            number: "01".into(),
            dir_name: "01-first-event".into(),
            meta: LessonMeta {
                title: "The first event".into(),
                summary: String::new(),
                hint: String::new(),
                lazy: vec![],
            },
        }
    }

    const OUTPUT: &str = "running 2 tests\n\
        test encodes ... ok\n\
        test sends ... FAILED\n\
        \nfailures:\n\n---- sends stdout ----\n\nthread 'sends' panicked at tests/t.rs:9:5:\n\
        not yet implemented: lesson 01 <send_event>\n\
        note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\n\nfailures:\n    sends\n\n\
        test result: FAILED. 1 passed; 1 failed\n";

    fn run(output: &str) -> TestRun {
        TestRun {
            package: "lesson-01".into(),
            compiled: true,
            verdicts: parse_verdicts(output),
            ungraded: vec![serde_json::json!({"test": "sends"})],
            output: output.into(),
        }
    }

    #[test]
    fn points_are_the_share_of_passing_tests() {
        let grade = score(&lesson(), &run(OUTPUT), 10.0);
        assert_eq!((grade.passed, grade.total, grade.points, grade.ungraded, grade.solved), (1, 2, 5.0, 1, false));
        let failure = grade.tests[1].failure.as_deref().unwrap();
        assert!(failure.starts_with("thread 'sends' panicked") && failure.contains("not yet implemented"), "{failure}");
        assert!(!failure.contains("RUST_BACKTRACE"));
    }

    #[test]
    fn a_lesson_is_solved_only_when_every_test_passes() {
        let all_ok = "test a ... ok\ntest b ... ok\n";
        assert!(score(&lesson(), &run(all_ok), 10.0).solved);
        assert!(!score(&lesson(), &run(""), 10.0).solved, "no test ran: not solved");
        let mut broken = run("");
        broken.compiled = false;
        broken.output = "error[E0308]: mismatched types\n --> src/lib.rs:3:5".into();
        let grade = score(&lesson(), &broken, 10.0);
        assert_eq!((grade.points, grade.solved), (0.0, false));
        assert!(grade.compile_error.unwrap().contains("mismatched types"));
    }

    #[test]
    fn reports_carry_every_test_and_the_totals() {
        let report = GradeReport {
            broker: "embedded".into(),
            lessons_dir: "lessons".into(),
            points: 5.0,
            max_points: 10.0,
            solved: 0,
            lessons: vec![score(&lesson(), &run(OUTPUT), 10.0)],
        };
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["lessons"][0]["tests"][1]["name"], "sends");
        assert_eq!(json["lessons"][0]["ungraded"], 1);
        let xml = junit(&report);
        assert!(xml.contains("<testsuite name=\"01 The first event\" tests=\"2\" failures=\"1\""), "{xml}");
        assert!(xml.contains("<testcase classname=\"lesson-01\" name=\"encodes\"/>"));
        assert!(xml.contains("<failure message=\"thread &apos;sends&apos; panicked at tests/t.rs:9:5:\">"), "{xml}");
        assert!(xml.contains("lesson 01 &lt;send_event&gt;"), "the message is escaped");
        let table = table(&report);
        assert!(table.contains("01 The first event") && table.contains("1/2") && table.contains("unsolved"), "{table}");
    }
}

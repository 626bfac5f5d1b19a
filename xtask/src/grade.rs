//! `cargo xtask grade [--json FILE] [--junit FILE] [--lessons-dir DIR | --shipped]`: the teacher's view, and
//! the verdict behind the learner's `check`, `list` and `watch`.
//!
//! Grading runs the *canonical* tests against the learner's code: a scratch crate (scratch.rs) in
//! `<target>/workbook/grade/<source>/NN-slug/` holds the learner's `lessons/NN-slug/src` with the tests,
//! snapshots and manifest of `solutions/NN-slug` (crate name rewritten `solution` → `lesson`, as sync does).
//! What a learner writes in their copy of `tests/` or `Cargo.toml` does not count: marking a failing test
//! `#[ignore]` does not hide it. The tests run through runner.rs, one process each with a time limit: a test
//! that did not run, ran out of time, or ended its process early (`std::process::exit(0)`) fails. The table,
//! the JSON and the JUnit report all come from that one run.
//!
//! A lesson's points are its share of passing tests; "not graded" counts the assertions its tests skipped
//! because the broker could not show the behaviour (`kit::grading::can_grade`).
//!
//! `--lessons-dir solutions` grades the reference solutions, `--shipped` the exercises exactly as `sync`
//! generates them (whatever `lessons/` holds), and `--expect solved|unsolved` turns the grade into a check: the
//! maintainers' suite uses both to prove the shipped exercises grade unsolved and the solutions solved.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::catalog::{self, Lesson};
use crate::runner::{self, Outcome};
use crate::scratch::{self, FileMap};
use crate::sync;
use crate::test::RunSettings;

/// Whose code is graded.
#[derive(Debug, Clone)]
pub enum Source {
    /// The lesson crates in this directory (`lessons/`, or `solutions/`): their `src/` only.
    Dir(PathBuf),
    /// The exercises as `cargo xtask sync` generates them from the solutions, whatever `lessons/` holds.
    Shipped,
}

impl Source {
    /// A short name, for directories and the report.
    fn name(&self) -> String {
        match self {
            Source::Dir(dir) => dir.file_name().map_or("lessons".into(), |n| n.to_string_lossy().into_owned()),
            Source::Shipped => "shipped".into(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::Dir(dir) => crate::cargo::relative(dir),
            Source::Shipped => "the shipped exercises (as sync generates them)".into(),
        }
    }
}

/// Options of `cargo xtask grade`.
pub struct Options {
    pub json: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    pub source: Source,
    pub points_per_lesson: f64,
    pub expect: Option<Expectation>,
    pub run: RunSettings,
}

impl Options {
    /// `lessons/`, 10 points a lesson, no reports, no expectation.
    pub fn new(run: RunSettings) -> Options {
        Options {
            json: None,
            junit: None,
            source: Source::Dir(catalog::root().join("lessons")),
            points_per_lesson: 10.0,
            expect: None,
            run,
        }
    }
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
    /// The test executable (`tests/NAME.rs`) it belongs to.
    pub binary: String,
    pub passed: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    pub seconds: f64,
    /// Why it failed: the assertion message a learner needs, or what became of its process.
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

/// `cargo xtask grade`: grades every lesson, prints the table, writes the reports, checks `--expect`.
pub fn run(options: Options) -> anyhow::Result<()> {
    let report = grade_all(&options, true)?;
    print!("{}", table(&report));
    for line in write_reports(&options, &report)? {
        println!("{line}");
    }
    Ok(())
}

/// The same without the table or progress (for the maintainers' suite): the reports' paths, or why the
/// expectation failed.
pub fn run_quietly(options: &Options) -> anyhow::Result<String> {
    let report = grade_all(options, false)?;
    Ok(write_reports(options, &report)?.join("; "))
}

fn grade_all(options: &Options, show_progress: bool) -> anyhow::Result<GradeReport> {
    let lessons = catalog::lessons()?;
    let progress = if show_progress { ProgressBar::new(lessons.len() as u64) } else { ProgressBar::hidden() };
    progress.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} grading {msg} [{elapsed}]")?);
    let mut grades = Vec::new();
    for lesson in &lessons {
        progress.set_message(lesson.label());
        grades.push(grade_lesson(lesson, &options.source, options.points_per_lesson, &options.run)?);
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(GradeReport {
        broker: broker_in_use(),
        lessons_dir: options.source.describe(),
        points: round(grades.iter().map(|g| g.points).sum()),
        max_points: round(grades.iter().map(|g| g.max_points).sum()),
        solved: grades.iter().filter(|g| g.solved).count(),
        lessons: grades,
    })
}

/// Writes the JSON and JUnit reports asked for, then checks `--expect`.
fn write_reports(options: &Options, report: &GradeReport) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    if let Some(path) = &options.json {
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
        std::fs::write(path, serde_json::to_string_pretty(report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        lines.push(format!("JSON report: {}", path.display()));
    }
    if let Some(path) = &options.junit {
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
        std::fs::write(path, junit(report)).with_context(|| format!("writing {}", path.display()))?;
        lines.push(format!("JUnit report: {}", path.display()));
    }
    if let Some(expectation) = options.expect {
        let wrong: Vec<_> = report
            .lessons
            .iter()
            .filter(|l| l.solved != (expectation == Expectation::Solved))
            .map(|l| format!("{} {} ({}/{} tests pass)", l.number, l.title, l.passed, l.total))
            .collect();
        if !wrong.is_empty() {
            bail!("expected every lesson {expectation:?}, but not: {}", wrong.join(", "));
        }
        lines.push(format!("as expected, every lesson is {expectation:?}"));
    }
    Ok(lines)
}

/// Builds the lesson's grading crate from `source` and runs the canonical tests against it.
pub fn grade_lesson(
    lesson: &Lesson,
    source: &Source,
    points_per_lesson: f64,
    settings: &RunSettings,
) -> anyhow::Result<LessonGrade> {
    let (package, src) = match source {
        Source::Dir(dir) => {
            let crate_dir = dir.join(&lesson.dir_name);
            let package = package_in(&crate_dir)?;
            let mut src = FileMap::new();
            for relative in scratch::files_under(&crate_dir.join("src"))? {
                src.insert(Path::new("src").join(&relative), std::fs::read(crate_dir.join("src").join(&relative))?);
            }
            (package, src)
        }
        Source::Shipped => {
            let generated = sync::generate(lesson)?;
            (lesson.exercise_package(), generated.into_iter().filter(|(p, _)| p.starts_with("src")).collect())
        }
    };
    let lib_name = package.replace('-', "_");
    let mut files = canonical_files(lesson, &package)?;
    files.extend(src);
    let manifest = std::fs::read_to_string(lesson.solution_dir().join("Cargo.toml"))?;
    let kind = source.name();
    let dir = scratch::workbook_dir().join("grade").join(&kind).join(&lesson.dir_name);
    // The learner's unit tests (in `src/`) are not graded: only the canonical tests count.
    let package_name = format!("grade-{kind}-{}", lesson.number);
    let krate = scratch::write_crate(&dir, &package_name, &lib_name, &manifest, &files, false)?;
    let build = scratch::build_tests(&krate)?;
    if !build.ok {
        return Ok(score(lesson, &package, None, points_per_lesson, settings.timeout, Some(build.error_text(20))));
    }
    let tests = runner::list_tests(&build.executables, &krate.dir)?;
    let jobs = tests
        .into_iter()
        .map(|test| runner::Job { test, group: 0, env: Vec::new(), crate_dir: krate.dir.clone() })
        .collect();
    let outcomes = runner::run(
        jobs,
        &runner::Options {
            parallel: settings.parallel,
            timeout: settings.timeout,
            stop_at_first_failure: false,
            logs_dir: scratch::workbook_dir().join("runs").join(format!("grade-{kind}")).join(&lesson.dir_name),
        },
    )?;
    Ok(score(lesson, &package, Some(outcomes.as_slice()), points_per_lesson, settings.timeout, None))
}

/// The solution's tests, snapshots and other files (not `src/`, not the manifest or lesson.toml), with the
/// crate name rewritten to `package`'s as sync does.
fn canonical_files(lesson: &Lesson, package: &str) -> anyhow::Result<FileMap> {
    let dir = lesson.solution_dir();
    let solution = lesson.solution_package();
    let mut files = FileMap::new();
    for relative in scratch::files_under(&dir)? {
        if relative.starts_with("src") || relative == Path::new("Cargo.toml") || relative == Path::new("lesson.toml") {
            continue;
        }
        let bytes = std::fs::read(dir.join(&relative))?;
        let ext = relative.extension().and_then(|e| e.to_str()).unwrap_or("");
        let bytes = if (ext == "rs" || ext == "toml") && package != solution {
            sync::rename_crate(&String::from_utf8(bytes)?, &lesson.number).into_bytes()
        } else {
            bytes
        };
        files.insert(relative, bytes);
    }
    Ok(files)
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

/// Turns a run (`None`: it did not compile) into a grade.
fn score(
    lesson: &Lesson,
    package: &str,
    outcomes: Option<&[Outcome]>,
    points_per_lesson: f64,
    timeout: std::time::Duration,
    compile_error: Option<String>,
) -> LessonGrade {
    let outcomes = outcomes.unwrap_or_default();
    let total = outcomes.len();
    let passed = outcomes.iter().filter(|o| o.passed).count();
    let tests = outcomes
        .iter()
        .map(|o| TestGrade {
            name: o.test.name.clone(),
            binary: o.test.target.clone(),
            passed: o.passed,
            timed_out: o.timed_out,
            seconds: round(o.took.as_secs_f64()),
            failure: (!o.passed).then(|| o.failure(timeout)),
        })
        .collect();
    let compiled = compile_error.is_none();
    let points = if total == 0 { 0.0 } else { round(points_per_lesson * passed as f64 / total as f64) };
    LessonGrade {
        number: lesson.number.clone(),
        title: lesson.meta.title.clone(),
        package: package.to_string(),
        compiled,
        passed,
        total,
        points,
        max_points: points_per_lesson,
        ungraded: outcomes.iter().map(|o| o.ungraded.len()).sum(),
        solved: compiled && total > 0 && passed == total,
        tests,
        compile_error,
    }
}

/// The broker the tests will resolve, in the words of `kit::Broker::resolve`'s order.
fn broker_in_use() -> String {
    if let Some(bootstrap) = std::env::var(kit::env::BOOTSTRAP_ENV).ok().filter(|s| !s.is_empty()) {
        return format!("external Kafka at {bootstrap}");
    }
    match std::env::var(kit::env::BROKER_ENV).as_deref() {
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
        let label = fit(&format!("{} {}", lesson.number, lesson.title), 36);
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

/// `text` cut to `width` characters (ending in `…` when cut), so a long title never runs into the next column.
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
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
    use std::time::Duration;

    use super::*;
    use crate::catalog::LessonMeta;
    use crate::runner::TestCase;

    fn lesson() -> Lesson {
        Lesson {
            number: "01".into(),
            dir_name: "01-first-event".into(),
            meta: LessonMeta {
                title: "The first event".into(),
                summary: String::new(),
                hints: vec![],
                lazy: vec![],
                rabbitmq: None,
                equivalent: vec![],
            },
        }
    }

    const FAILED: &str = "running 1 test\ntest sends ... FAILED\n\nfailures:\n\n---- sends stdout ----\n\n\
        thread 'sends' panicked at tests/t.rs:9:5:\nnot yet implemented: lesson 01 <send_event>\n\
        note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\n\nfailures:\n    sends\n\n\
        test result: FAILED. 0 passed; 1 failed\n";

    fn outcome(name: &str, passed: bool, output: &str) -> Outcome {
        Outcome {
            test: TestCase { target: "t".into(), executable: "/bin/true".into(), name: name.into() },
            group: 0,
            passed,
            timed_out: false,
            cancelled: false,
            exit_code: Some(if passed { 0 } else { 101 }),
            took: Duration::from_millis(1500),
            output: output.into(),
            ungraded: if name == "sends" { vec![serde_json::json!({"test": "sends"})] } else { vec![] },
        }
    }

    fn graded(outcomes: &[Outcome]) -> LessonGrade {
        score(&lesson(), "lesson-01", Some(outcomes), 10.0, Duration::from_secs(60), None)
    }

    #[test]
    fn points_are_the_share_of_passing_tests() {
        let grade = graded(&[outcome("encodes", true, ""), outcome("sends", false, FAILED)]);
        assert_eq!((grade.passed, grade.total, grade.points, grade.ungraded, grade.solved), (1, 2, 5.0, 1, false));
        let failure = grade.tests[1].failure.as_deref().unwrap();
        assert!(failure.starts_with("thread 'sends' panicked") && failure.contains("not yet implemented"), "{failure}");
        assert!(!failure.contains("RUST_BACKTRACE"));
    }

    #[test]
    fn a_lesson_is_solved_only_when_every_test_passes() {
        assert!(graded(&[outcome("a", true, ""), outcome("b", true, "")]).solved);
        assert!(!graded(&[]).solved, "no test ran: not solved");
        let broken = score(
            &lesson(),
            "lesson-01",
            None,
            10.0,
            Duration::from_secs(60),
            Some("error[E0308]: mismatched types\n --> src/lib.rs:3:5".into()),
        );
        assert_eq!((broken.points, broken.solved, broken.compiled), (0.0, false, false));
        assert!(broken.compile_error.unwrap().contains("mismatched types"));
    }

    #[test]
    fn a_long_title_is_cut_to_its_column() {
        assert_eq!(fit("01 The first event", 36), "01 The first event");
        let cut = fit("06 An HTTP gateway that validates, publishes and serves", 20);
        assert_eq!((cut.chars().count(), cut.ends_with('…')), (20, true));
    }

    #[test]
    fn reports_carry_every_test_and_the_totals() {
        let report = GradeReport {
            broker: "embedded".into(),
            lessons_dir: "lessons".into(),
            points: 5.0,
            max_points: 10.0,
            solved: 0,
            lessons: vec![graded(&[outcome("encodes", true, ""), outcome("sends", false, FAILED)])],
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

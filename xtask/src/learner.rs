//! The learner's commands: `list`, `check NN`, `hint NN`, `watch` and `reset NN` (with `lesson NN`).
//!
//! A lesson is *solved* when every canonical test passes against the learner's `lessons/NN-slug/src` (grade.rs
//! builds them together in a scratch crate under the target directory); nothing else is stored, so the status
//! can never disagree with the tests. The *current* lesson is the first unsolved one, which is what
//! `watch` follows, in the manner of rustlings' watch mode.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};

use crate::catalog::{self, Lesson};
use crate::grade::{self, LessonGrade};
use crate::progress::spinner;
use crate::sync;
use crate::test::RunSettings;

/// Points are not a learner's concern; the grade module wants a scale.
const POINTS: f64 = 10.0;

/// Grades lesson `lesson`'s exercise.
fn check_lesson(lesson: &Lesson, settings: &RunSettings) -> anyhow::Result<LessonGrade> {
    grade::grade_lesson(lesson, &grade::Source::Dir(catalog::root().join("lessons")), POINTS, settings)
}

fn default_settings() -> RunSettings {
    RunSettings { parallel: crate::runner::DEFAULT_PARALLEL, timeout: crate::runner::DEFAULT_TIMEOUT }
}

pub fn list() -> anyhow::Result<()> {
    let lessons = catalog::lessons()?;
    let progress = ProgressBar::new(lessons.len() as u64);
    progress.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} checking {msg} [{elapsed}]")?);
    let mut rows = Vec::new();
    for lesson in &lessons {
        progress.set_message(lesson.label());
        rows.push((lesson, check_lesson(lesson, &default_settings())?));
        progress.inc(1);
    }
    progress.finish_and_clear();
    let mut current_marked = false;
    let width = rows.iter().map(|(l, _)| l.label().chars().count()).max().unwrap_or(0).min(LABEL_WIDTH);
    for (lesson, grade) in &rows {
        let marker = if !grade.solved && !current_marked {
            current_marked = true;
            "→"
        } else {
            " "
        };
        let status = match (grade.compiled, grade.solved) {
            (_, true) => "solved".to_string(),
            (false, _) => "does not compile".to_string(),
            (true, false) => format!("unsolved ({}/{} tests pass)", grade.passed, grade.total),
        };
        println!("{marker} {:<width$}  {status}", grade::fit(&lesson.label(), width));
    }
    let solved = rows.iter().filter(|(_, g)| g.solved).count();
    println!("\n{} {solved}/{} lessons solved", bar(solved, rows.len(), 30), rows.len());
    if let Some((lesson, _)) = rows.iter().find(|(_, g)| !g.solved) {
        println!("next: lesson {} — `cargo xtask check {}`, or `cargo xtask watch`", lesson.label(), lesson.number);
    } else {
        println!("every lesson is solved. Well done!");
    }
    Ok(())
}

/// The widest a lesson's label may be in `list`'s table; longer titles are cut short with `…`.
const LABEL_WIDTH: usize = 48;

/// `[#####-----]` with `done` of `total` filled.
fn bar(done: usize, total: usize, width: usize) -> String {
    let filled = (done * width).checked_div(total).unwrap_or(0);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

/// `cargo xtask check NN`: exits with status 1 until the lesson is solved, so graders can run it as is. An
/// unsolved lesson is an expected outcome, not an error: it gets the grade and a plain exit, no error chain.
pub fn check(nn: &str, settings: &RunSettings) -> anyhow::Result<()> {
    let lesson = catalog::find(nn)?;
    let spinner = spinner(&format!("checking lesson {} (compiling and running its tests)", lesson.label()));
    let grade = check_lesson(&lesson, settings)?;
    spinner.finish_and_clear();
    print_grade(&lesson, &grade);
    if !grade.solved {
        std::process::exit(1);
    }
    Ok(())
}

fn print_grade(lesson: &Lesson, grade: &LessonGrade) {
    println!("lesson {} — {}", lesson.label(), lesson.meta.summary);
    if let Some(error) = &grade.compile_error {
        println!("\nyour code does not compile yet:\n\n{error}\n");
        println!("fix lessons/{}/src and run the check again.", lesson.dir_name);
        return;
    }
    println!();
    for test in &grade.tests {
        println!("  {} {}", if test.passed { "✓" } else { "✗" }, test.name);
    }
    if let Some(failure) = grade.tests.iter().find_map(|t| t.failure.as_ref().map(|f| (&t.name, f))) {
        let lines: Vec<_> = failure.1.lines().take(25).collect();
        println!("\nfirst failure, {}:\n\n{}\n", failure.0, indent(&lines.join("\n")));
    }
    if grade.ungraded > 0 {
        println!(
            "\n{} assertion(s) were NOT GRADED ON THIS BROKER: the embedded broker cannot show them. \
             Run against real Kafka to grade them (see the book's \"Running real Kafka\").",
            grade.ungraded
        );
    }
    if grade.solved {
        println!("\n{}/{} tests pass: lesson {} is solved!", grade.passed, grade.total, lesson.number);
    } else {
        println!(
            "\n{}/{} tests pass. Edit lessons/{}/src/lib.rs; `cargo xtask hint {}` gives a hint.",
            grade.passed, grade.total, lesson.dir_name, lesson.number
        );
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// `cargo xtask hint NN [--level N]`: one level of the lesson's hint, and how many more there are.
pub fn hint(nn: &str, level: usize) -> anyhow::Result<()> {
    let lesson = catalog::find(nn)?;
    let levels = lesson.meta.hints.len();
    let Some(text) = lesson.meta.hint(level) else {
        anyhow::bail!("lesson {} has hint levels 1 to {levels}; there is no level {level}", lesson.number);
    };
    println!("lesson {} — {}\n", lesson.label(), lesson.meta.summary);
    println!("hint {level} of {levels}:\n");
    println!("{text}");
    println!("\n{}", hint_footer(&lesson.number, level, levels));
    println!("The chapter explains the why: `cargo xtask book --serve`, then lessons/{}.", lesson.dir_name);
    Ok(())
}

/// What comes after hint `level` of `levels`: the command for the next one, or that this was the last.
fn hint_footer(number: &str, level: usize, levels: usize) -> String {
    match levels.saturating_sub(level) {
        0 => "That was the last level. Still stuck? `cargo xtask lesson NN --solution` runs the reference, and \
              the chapter shows it folded at its end."
            .replace("NN", number),
        more => format!(
            "{more} more level{} after this one, each more concrete: `cargo xtask hint {number} --level {}`.",
            if more == 1 { "" } else { "s" },
            level + 1
        ),
    }
}

/// `cargo xtask reset NN`: writes the exercise afresh from the solution. The learner's files are kept in
/// `<target>/workbook/backups/` first: a reset should never be the way work gets lost.
pub fn reset(nn: &str) -> anyhow::Result<()> {
    let lesson = catalog::find(nn)?;
    let dir = lesson.exercise_dir();
    let files = sync::generate(&lesson)?;
    let changed = sync::compare(&dir, &files)?;
    if changed.is_empty() {
        println!("lessons/{} is already as shipped; nothing to reset", lesson.dir_name);
        return Ok(());
    }
    let backup = sync::backup(&lesson)?;
    sync::write(&dir, &files)?;
    let mut state = sync::SyncState::load();
    state.record(&lesson, &files);
    state.save()?;
    println!("lessons/{} is reset ({} file(s) rewritten).", lesson.dir_name, changed.len());
    println!("Your previous files are in {}", backup.display());
    Ok(())
}

/// Every file under `dir`, skipping build output.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    stack.push(path);
                }
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// What the files of a lesson looked like: path → modification time and size.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Option<SystemTime>, u64)> {
    files_under(dir)
        .into_iter()
        .filter_map(|p| {
            let meta = std::fs::metadata(&p).ok()?;
            Some((p, (meta.modified().ok(), meta.len())))
        })
        .collect()
}

/// How often `watch` looks at the files. Polling a handful of files is cheap, and works on every file system
/// (including network and container mounts where change notifications do not arrive).
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// `cargo xtask watch`: checks the current lesson, then again each time one of its files changes; moves on
/// when it is solved. Ctrl-C stops.
pub fn watch() -> anyhow::Result<()> {
    let lessons = catalog::lessons()?;
    let mut index = 0;
    loop {
        let Some(lesson) = lessons.get(index) else {
            println!("every lesson is solved. Well done! (`cargo xtask list` shows them all)");
            return Ok(());
        };
        clear_screen();
        let spinner = spinner(&format!("checking lesson {}", lesson.label()));
        let grade = check_lesson(lesson, &default_settings())?;
        spinner.finish_and_clear();
        if grade.solved {
            // Solved already (or just now): on to the next, at once.
            println!("lesson {} is solved", lesson.label());
            index += 1;
            continue;
        }
        print_grade(lesson, &grade);
        println!("\nwatching lessons/{} — save a file to check again (Ctrl-C stops)", lesson.dir_name);
        let dir = lesson.exercise_dir();
        let before = snapshot(&dir);
        while snapshot(&dir) == before {
            std::thread::sleep(WATCH_INTERVAL);
        }
    }
}

fn clear_screen() {
    print!("\x1b[2J\x1b[H");
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_bar_fills_with_solved_lessons() {
        assert_eq!(bar(0, 9, 9), "[---------]");
        assert_eq!(bar(3, 9, 9), "[###------]");
        assert_eq!(bar(9, 9, 9), "[#########]");
        assert_eq!(bar(0, 0, 4), "[----]");
    }

    #[test]
    fn a_hint_says_how_to_get_the_next_level() {
        assert!(hint_footer("05", 1, 3).starts_with("2 more levels after this one"), "{}", hint_footer("05", 1, 3));
        assert!(hint_footer("05", 1, 3).contains("cargo xtask hint 05 --level 2"));
        assert!(hint_footer("05", 2, 3).starts_with("1 more level after"));
        assert!(hint_footer("05", 3, 3).starts_with("That was the last level"));
        assert!(hint_footer("05", 3, 3).contains("cargo xtask lesson 05 --solution"));
    }

    #[test]
    fn watch_notices_a_saved_file() {
        let dir = std::env::temp_dir().join(format!("xtask-watch-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("src/lib.rs"), "todo").unwrap();
        let before = snapshot(&dir);
        assert_eq!(snapshot(&dir), before, "nothing changed");
        std::fs::write(dir.join("src/lib.rs"), "done!").unwrap();
        assert_ne!(snapshot(&dir), before, "a save is seen");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The lesson catalog: every `solutions/NN-slug/` with its `lesson.toml`, and where its generated exercise lives.
//!
//! Lessons are discovered from the file system, so adding one is adding a directory: no list to keep in step.

use std::path::PathBuf;

use anyhow::Context;
use serde::Deserialize;

/// One lesson as the chores see it.
#[derive(Debug, Clone)]
pub struct Lesson {
    /// Two digits, e.g. `"05"`.
    pub number: String,
    /// `NN-slug`, the directory name under both `solutions/` and `lessons/`.
    pub dir_name: String,
    pub meta: LessonMeta,
}

/// `solutions/NN-slug/lesson.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LessonMeta {
    pub title: String,
    pub summary: String,
    /// The hint levels, in order: each `[[hint]]` table is one level, from a nudge to near-code.
    #[serde(default, rename = "hint")]
    pub hints: Vec<Hint>,
    #[serde(default)]
    pub lazy: Vec<LazyAnswer>,
    /// What the story's RabbitMQ counterpart shows (`cargo xtask lesson NN --rabbitmq`), for the lessons that
    /// have one: its program then takes `--rabbitmq`.
    #[serde(default)]
    pub rabbitmq: Option<String>,
    /// Mutants of the exercise functions that no test can catch because they change no behaviour
    /// (`cargo xtask mutants` reports them apart from the missed ones).
    #[serde(default)]
    pub equivalent: Vec<EquivalentMutant>,
}

/// A cargo-mutants mutant that changes no behaviour (`[[equivalent]]` in lesson.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EquivalentMutant {
    /// cargo-mutants' description without its `file:line:col:` prefix, e.g. `replace < with <= in check`.
    pub mutant: String,
    pub why: String,
}

/// One level of a lesson's hint (`[[hint]]` in lesson.toml). `cargo xtask hint NN` shows the first;
/// `--level N` the N-th, each more concrete than the one before.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hint {
    pub text: String,
}

/// A plausible wrong body the tests must reject.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LazyAnswer {
    pub function: String,
    pub body: String,
    pub why: String,
}

impl Lesson {
    pub fn solution_dir(&self) -> PathBuf {
        root().join("solutions").join(&self.dir_name)
    }

    pub fn exercise_dir(&self) -> PathBuf {
        root().join("lessons").join(&self.dir_name)
    }

    pub fn solution_package(&self) -> String {
        format!("solution-{}", self.number)
    }

    pub fn exercise_package(&self) -> String {
        format!("lesson-{}", self.number)
    }

    /// `NN title`, for tables and messages.
    pub fn label(&self) -> String {
        format!("{} {}", self.number, self.meta.title)
    }
}

/// The workspace root (xtask lives one level below it).
///
/// `cargo run`, which the `cargo xtask` alias is, gives a program its manifest directory at run time too, and
/// that one wins over the directory compiled in: checkouts that share one target directory (git worktrees do,
/// to compile the dependencies once) share one `target/debug/xtask` as well, built from whichever checkout
/// compiled it last, and each must still work on its own files.
pub fn root() -> PathBuf {
    let at_run_time = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let manifest_dir = at_run_time
        .filter(|dir| dir.join("src/main.rs").is_file() && dir.file_name() == Some("xtask".as_ref()))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().expect("xtask sits in the workspace").to_path_buf()
}

/// Every lesson, in order.
pub fn lessons() -> anyhow::Result<Vec<Lesson>> {
    let mut lessons = Vec::new();
    for entry in std::fs::read_dir(root().join("solutions")).context("reading solutions/")? {
        let entry = entry?;
        let dir_name = entry.file_name().to_string_lossy().into_owned();
        let Some((number, _slug)) = dir_name.split_once('-') else { continue };
        if number.len() != 2 || !number.bytes().all(|b| b.is_ascii_digit()) || !entry.path().is_dir() {
            continue;
        }
        let meta_path = entry.path().join("lesson.toml");
        let text = std::fs::read_to_string(&meta_path).with_context(|| format!("reading {}", meta_path.display()))?;
        let meta: LessonMeta = toml::from_str(&text).with_context(|| format!("parsing {}", meta_path.display()))?;
        lessons.push(Lesson { number: number.to_string(), dir_name, meta });
    }
    lessons.sort_by(|a, b| a.number.cmp(&b.number));
    Ok(lessons)
}

impl LessonMeta {
    /// Hint level `level` (counting from 1), trimmed; `None` past the last.
    pub fn hint(&self, level: usize) -> Option<&str> {
        level.checked_sub(1).and_then(|i| self.hints.get(i)).map(|h| h.text.trim())
    }
}

/// The lesson numbered `nn` (`5`, `05` and `05-offsets` all work).
pub fn find(nn: &str) -> anyhow::Result<Lesson> {
    let wanted = nn.split('-').next().unwrap_or(nn);
    let wanted = format!("{:0>2}", wanted);
    let all = lessons()?;
    let numbers: Vec<_> = all.iter().map(|l| l.number.clone()).collect();
    all.into_iter()
        .find(|l| l.number == wanted)
        .ok_or_else(|| anyhow::anyhow!("no lesson {nn:?}; the lessons are {}", numbers.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lesson_has_hints_that_get_more_concrete() {
        for lesson in lessons().unwrap() {
            let label = lesson.label();
            let hints = &lesson.meta.hints;
            assert!(hints.len() >= 2, "lesson {label} has {} hint level(s); write at least 2", hints.len());
            for level in 1..=hints.len() {
                assert!(!lesson.meta.hint(level).unwrap().is_empty(), "lesson {label}: hint level {level} is empty");
            }
            assert_ne!(
                lesson.meta.hint(1),
                lesson.meta.hint(2),
                "lesson {label}: hint levels 1 and 2 say the same thing"
            );
        }
    }

    #[test]
    fn hint_levels_count_from_one() {
        let meta: LessonMeta = toml::from_str(
            "title = \"t\"\nsummary = \"s\"\n[[hint]]\ntext = \" first \"\n[[hint]]\ntext = \"second\"\n",
        )
        .unwrap();
        assert_eq!(meta.hint(0), None);
        assert_eq!(meta.hint(1), Some("first"));
        assert_eq!(meta.hint(2), Some("second"));
        assert_eq!(meta.hint(3), None);
    }
}

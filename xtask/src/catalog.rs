//! The lesson catalog: every `solutions/NN-slug/` with its `lesson.toml`, and where its generated exercise lives.
//!
//! Lessons are discovered from the file system, so adding one is adding a directory: no list to keep in step.

use std::path::{Path, PathBuf};

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
    pub hint: String,
    #[serde(default)]
    pub lazy: Vec<LazyAnswer>,
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
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf()
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

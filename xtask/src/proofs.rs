//! The proofs of one lesson, built once: the solution passes, every test fails at the exercise's `todo!()`,
//! each lazy answer is caught.
//!
//! One scratch crate (`<target>/workbook/proofs/NN-slug/`, package `proof-NN`) holds the solution with every
//! `// EXERCISE:` body replaced by a dispatch on `WORKBOOK_VARIANT` (exercise.rs): `todo` is the shipped
//! exercise's `todo!()`, `lazy-K` the K-th lazy answer of lesson.toml, anything else the solution. Its tests are
//! built once (`cargo test --no-run`) and the executables run per variant (runner.rs). Before this, each lazy
//! answer was written into `lessons/` and its crate rebuilt and relinked (4–6 executables with librdkafka).
//!
//! A lazy body that cannot share a function with the others (a different concrete type behind `impl Trait`, a
//! type the dispatch's `match` cannot unify) fails the shared build; the compiler's errors are traced to the
//! lazy arms they point into, those answers leave the shared build and each gets a build of its own with its
//! body written in place (`proofs/NN-slug-lazy-K/`). The step's detail says which.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::catalog::Lesson;
use crate::exercise::{self, LazyArm};
use crate::runner::{self, TestCase};
use crate::scratch::{self, FileMap, ScratchCrate};

/// A lesson's proof build: the shared crate and its tests, plus any lazy answers built on their own.
pub struct ProofBuild {
    pub krate: ScratchCrate,
    pub tests: Vec<TestCase>,
    pub lazy: Vec<LazyArm>,
    /// Lazy answers (by variant) that have their own crate, each with its tests.
    pub separate: Vec<(String, ScratchCrate, Vec<TestCase>)>,
}

impl ProofBuild {
    /// The crate and tests that run `variant`.
    pub fn for_variant(&self, variant: &str) -> (&ScratchCrate, &[TestCase]) {
        match self.separate.iter().find(|(v, _, _)| v == variant) {
            Some((_, krate, tests)) => (krate, tests),
            None => (&self.krate, &self.tests),
        }
    }

    /// A line for the build step.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} tests in {} executables; solution, todo!() and {} lazy answer(s) in one build",
            self.tests.len(),
            self.tests.iter().map(|t| &t.target).collect::<BTreeSet<_>>().len(),
            self.lazy.len() - self.separate.len()
        );
        if !self.separate.is_empty() {
            let own: Vec<_> = self.separate.iter().map(|(v, _, _)| v.as_str()).collect();
            text.push_str(&format!("; {} built on their own (their bodies cannot share the dispatch)", own.join(", ")));
        }
        text
    }
}

/// The lesson's lazy answers as dispatch arms (`lazy-1`, `lazy-2`, … in lesson.toml's order).
pub fn lazy_arms(lesson: &Lesson) -> Vec<LazyArm> {
    lesson
        .meta
        .lazy
        .iter()
        .enumerate()
        .map(|(i, l)| LazyArm {
            variant: format!("lazy-{}", i + 1),
            function: l.function.clone(),
            body: l.body.clone(),
        })
        .collect()
}

/// Builds the lesson's proofs (see the module comment).
pub fn build(lesson: &Lesson) -> anyhow::Result<ProofBuild> {
    let all = lazy_arms(lesson);
    let dir = scratch::workbook_dir().join("proofs").join(&lesson.dir_name);
    let mut shared = all.clone();
    let (krate, built) = loop {
        let files = dispatch_files(lesson, &shared, &all)?;
        let krate = write(lesson, &dir, &format!("proof-{}", lesson.number), &files)?;
        let build = scratch::build_tests(&krate)?;
        if build.ok {
            break (krate, build);
        }
        let culprits = lazy_arms_at_fault(&build, &files);
        if culprits.is_empty() {
            if shared.is_empty() {
                bail!("the solution with its dispatch does not compile:\n{}", build.error_text(40));
            }
            // Errors the lazy arms cannot explain: try without any lazy arm, so a broken solution shows as such.
            shared.clear();
        } else {
            shared.retain(|arm| !culprits.contains(&arm.variant));
        }
    };
    let tests = runner::list_tests(&built.executables, &krate.dir)?;
    anyhow::ensure!(!tests.is_empty(), "the lesson has no tests");
    let mut separate = Vec::new();
    for arm in all.iter().filter(|a| !shared.iter().any(|s| s.variant == a.variant)) {
        let files = literal_files(lesson, arm)?;
        let own_dir = scratch::workbook_dir().join("proofs").join(format!("{}-{}", lesson.dir_name, arm.variant));
        let own = write(lesson, &own_dir, &format!("proof-{}-{}", lesson.number, arm.variant), &files)?;
        let build = scratch::build_tests(&own)?;
        anyhow::ensure!(
            build.ok,
            "the lazy body of `{}` ({}) does not compile:\n{}",
            arm.function,
            arm.variant,
            build.error_text(20)
        );
        let own_tests = runner::list_tests(&build.executables, &own.dir)?;
        separate.push((arm.variant.clone(), own, own_tests));
    }
    Ok(ProofBuild { krate, tests, lazy: all, separate })
}

/// The solution's files with every marked body a dispatch holding `arms`; fails if one of `all` aims at a
/// function that is not marked.
fn dispatch_files(lesson: &Lesson, arms: &[LazyArm], all: &[LazyArm]) -> anyhow::Result<FileMap> {
    let mut placed = BTreeSet::new();
    let mut marked = BTreeSet::new();
    let files = solution_files(lesson, |text| {
        let (_, exercises) = exercise::make_exercise(text, &lesson.number)?;
        marked.extend(exercises.into_iter().map(|e| e.function));
        let (text, variants) = exercise::dispatch(text, &lesson.number, arms)?;
        placed.extend(variants);
        Ok(text)
    })?;
    for arm in all {
        anyhow::ensure!(
            marked.contains(&arm.function),
            "lesson.toml's {} names `{}`, which is not an exercise of lesson {}",
            arm.variant,
            arm.function,
            lesson.number
        );
    }
    debug_assert!(arms.iter().all(|a| placed.contains(&a.variant)));
    Ok(files)
}

/// The solution's files with `arm`'s body written in place of its function's.
fn literal_files(lesson: &Lesson, arm: &LazyArm) -> anyhow::Result<FileMap> {
    solution_files(lesson, |text| Ok(exercise::replace_body(text, &arm.function, &arm.body)?.0))
}

/// Every file of the solution crate but its manifest and lesson.toml, with `src/**.rs` passed through `edit`.
fn solution_files(lesson: &Lesson, mut edit: impl FnMut(&str) -> anyhow::Result<String>) -> anyhow::Result<FileMap> {
    let dir = lesson.solution_dir();
    let mut files = FileMap::new();
    for relative in scratch::files_under(&dir)? {
        if relative == std::path::Path::new("Cargo.toml") || relative == std::path::Path::new("lesson.toml") {
            continue;
        }
        let bytes = std::fs::read(dir.join(&relative))?;
        let is_source = relative.starts_with("src") && relative.extension().is_some_and(|e| e == "rs");
        let bytes = if is_source {
            edit(&String::from_utf8(bytes)?)
                .with_context(|| format!("{}/{}", lesson.dir_name, relative.display()))?
                .into_bytes()
        } else {
            bytes
        };
        files.insert(relative, bytes);
    }
    Ok(files)
}

fn write(lesson: &Lesson, dir: &std::path::Path, package: &str, files: &FileMap) -> anyhow::Result<ScratchCrate> {
    let manifest = std::fs::read_to_string(lesson.solution_dir().join("Cargo.toml"))?;
    scratch::write_crate(dir, package, &format!("solution_{}", lesson.number), &manifest, files, true)
}

/// The lazy variants whose arms the build's errors point into; empty when any error points elsewhere.
fn lazy_arms_at_fault(build: &scratch::Build, files: &FileMap) -> BTreeSet<String> {
    let mut culprits = BTreeSet::new();
    for error in &build.errors {
        if error.at.is_empty() {
            return BTreeSet::new();
        }
        for (file, line) in &error.at {
            let Some(text) = files.get(&PathBuf::from(file)).map(|b| String::from_utf8_lossy(b).into_owned()) else {
                return BTreeSet::new();
            };
            match arm_at(&text, *line) {
                Some(variant) => {
                    culprits.insert(variant);
                }
                None => return BTreeSet::new(),
            }
        }
    }
    if build.errors.is_empty() { BTreeSet::new() } else { culprits }
}

/// The lazy arm of a dispatch that line `line` (from 1) of `text` lies in, if any: the nearest arm head above
/// it, unless the solution's arm or the dispatch's start comes first.
fn arm_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    for candidate in lines[..line.min(lines.len())].iter().rev() {
        let t = candidate.trim();
        if let Some(rest) = t.strip_prefix("Ok(\"lazy-") {
            let number: String = rest.chars().take_while(char::is_ascii_digit).collect();
            return Some(format!("lazy-{number}"));
        }
        if t.starts_with("_ => {") || t.starts_with("Ok(\"todo\")") || t.contains(exercise::VARIANT_ENV) {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_traced_to_the_lazy_arm_it_lies_in() {
        let source = "// EXERCISE: Two.\npub fn two() -> u8 {\n    2\n}\n";
        let arms = [
            LazyArm { variant: "lazy-1".into(), function: "two".into(), body: "1".into() },
            LazyArm { variant: "lazy-12".into(), function: "two".into(), body: "\"two\"".into() },
        ];
        let (text, _) = exercise::dispatch(source, "01", &arms).unwrap();
        let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
        assert_eq!(arm_at(&text, line_of("\"two\"")), Some("lazy-12".into()));
        assert_eq!(arm_at(&text, line_of("            1")), Some("lazy-1".into()));
        assert_eq!(arm_at(&text, line_of("    2")), None, "the solution's arm");
        assert_eq!(arm_at(&text, 1), None);
    }
}

//! `cargo xtask mutants [NN…]`: cargo-mutants over each solution's exercise functions, and the verdict the
//! lessons' tests give on every mutant.
//!
//! A lesson's lazy answers are the wrong answers its authors thought of; cargo-mutants makes the small ones
//! nobody thinks of (`<` for `<=`, a match arm deleted, a body replaced by `Default::default()`) and reports the
//! ones no test notices. Only the exercise functions are mutated, because they are what learners write and what
//! the tests grade; the rest of a solution is scaffolding the learner reads.
//!
//! A missed mutant is either a test to write or a mutant that cannot change behaviour (an *equivalent* mutant:
//! `seq < high` turned `seq <= high` where the two are never equal). The second kind is listed in the lesson's
//! `lesson.toml` as `[[equivalent]]` with `mutant` (cargo-mutants' description without its `file:line:col:`, as
//! the table prints it) and `why`. The command fails while a missed mutant is neither killed nor listed.
//!
//! cargo-mutants builds a copy of the workspace (never the files here) in a target directory of its own,
//! `<target>/workbook/mutants/target`: a mutated crate compiled into the main target directory would be taken
//! for the real one by the next build there, since cargo names a path crate's artifacts by its path inside the
//! workspace, not on disk. A mutant whose tests run past `--timeout` counts as caught (a hung test fails).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::catalog::{self, Lesson};
use crate::{exercise, scratch};

/// What the tests made of each mutant of one lesson.
#[derive(Debug, Default)]
struct Verdicts {
    caught: usize,
    timed_out: usize,
    unviable: usize,
    equivalent: Vec<(String, String)>,
    missed: Vec<String>,
    seconds: u64,
}

/// `mutants.out/outcomes.json`, the parts read here.
#[derive(Deserialize)]
struct Outcomes {
    outcomes: Vec<Outcome>,
}

#[derive(Deserialize)]
struct Outcome {
    scenario: Scenario,
    summary: String,
}

#[derive(Deserialize)]
enum Scenario {
    Baseline,
    Mutant { name: String },
}

pub fn run(lessons: &[String], timeout_seconds: u64) -> anyhow::Result<()> {
    ensure_cargo_mutants()?;
    let selected: Vec<Lesson> = if lessons.is_empty() {
        catalog::lessons()?
    } else {
        lessons.iter().map(|nn| catalog::find(nn)).collect::<anyhow::Result<_>>()?
    };
    let mut table = Vec::new();
    for lesson in &selected {
        println!("mutants: {} …", lesson.label());
        let verdicts = mutate(lesson, timeout_seconds)?;
        for name in &verdicts.missed {
            println!("  MISSED  {name}");
        }
        for (name, why) in &verdicts.equivalent {
            println!("  equivalent  {name} — {why}");
        }
        table.push((lesson.label(), verdicts));
    }

    println!(
        "\n{:<40} {:>7} {:>7} {:>8} {:>9} {:>10} {:>7} {:>8}",
        "lesson", "mutants", "caught", "timeout", "unviable", "equivalent", "missed", "seconds"
    );
    let mut unexplained = 0;
    for (label, v) in &table {
        let total = v.caught + v.timed_out + v.unviable + v.equivalent.len() + v.missed.len();
        println!(
            "{:<40} {:>7} {:>7} {:>8} {:>9} {:>10} {:>7} {:>8}",
            truncate(label, 40),
            total,
            v.caught,
            v.timed_out,
            v.unviable,
            v.equivalent.len(),
            v.missed.len(),
            v.seconds
        );
        unexplained += v.missed.len();
    }
    if unexplained > 0 {
        bail!(
            "{unexplained} mutant(s) of exercise functions pass every test: write a test that fails on each, or \
             list it in the lesson's lesson.toml as [[equivalent]] with why no behaviour changes"
        );
    }
    Ok(())
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        text.chars().take(width - 1).collect::<String>() + "…"
    }
}

fn ensure_cargo_mutants() -> anyhow::Result<()> {
    let found = Command::new("cargo").args(["mutants", "--version"]).output().is_ok_and(|o| o.status.success());
    if !found {
        bail!("cargo-mutants is not installed: `cargo install cargo-mutants --locked` (a few minutes, once)");
    }
    Ok(())
}

/// The solution's source files that mark exercises (relative to the workspace root, as cargo-mutants' `--file`
/// takes them) and the exercise functions they mark, as the proofs and `sync` find them. A lesson may spread its
/// exercises over several modules (lesson 11 has five).
fn exercise_functions(lesson: &Lesson) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let src = catalog::root().join("solutions").join(&lesson.dir_name).join("src");
    let mut entries: Vec<_> = std::fs::read_dir(&src)
        .with_context(|| format!("reading {}", src.display()))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .collect();
    entries.sort();
    let (mut files, mut functions) = (Vec::new(), Vec::new());
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let relative = format!("solutions/{}/src/{name}", lesson.dir_name);
        let source = std::fs::read_to_string(&path).with_context(|| format!("reading {relative}"))?;
        let (_, exercises) = exercise::make_exercise(&source, &lesson.number)?;
        if !exercises.is_empty() {
            files.push(relative);
            functions.extend(exercises.into_iter().map(|e| e.function));
        }
    }
    Ok((files, functions))
}

fn mutate(lesson: &Lesson, timeout_seconds: u64) -> anyhow::Result<Verdicts> {
    let (files, functions) = exercise_functions(lesson)?;
    if functions.is_empty() {
        bail!("solutions/{}/src marks no exercise function", lesson.dir_name);
    }
    let out_dir = scratch::workbook_dir().join("mutants").join(&lesson.dir_name);
    std::fs::create_dir_all(&out_dir)?;
    let started = Instant::now();
    let status = Command::new("cargo")
        .current_dir(catalog::root())
        .env("CARGO_TARGET_DIR", scratch::workbook_dir().join("mutants").join("target"))
        .args(["mutants", "--no-shuffle", "--package", &lesson.solution_package()])
        .args(files.iter().flat_map(|file| ["--file", file.as_str()]))
        .arg("--re")
        .arg(format!(r"\b({})\b", functions.join("|")))
        .arg("--timeout")
        .arg(timeout_seconds.to_string())
        .arg("--output")
        .arg(&out_dir)
        .status()
        .context("running cargo mutants")?;
    // cargo-mutants exits 2 when mutants were missed and 3 when some timed out: the outcomes tell which.
    if !matches!(status.code(), Some(0 | 2 | 3)) {
        bail!("cargo mutants failed for {} ({status}); see {}", lesson.label(), out_dir.join("mutants.out").display());
    }
    let mut verdicts = read_outcomes(&out_dir.join("mutants.out/outcomes.json"), lesson)?;
    verdicts.seconds = started.elapsed().as_secs();
    Ok(verdicts)
}

/// A mutant's description without its `file:line:col: ` prefix, which moves with every edit above it.
fn description(name: &str) -> &str {
    name.splitn(4, ':').nth(3).map_or(name, str::trim)
}

fn read_outcomes(path: &Path, lesson: &Lesson) -> anyhow::Result<Verdicts> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let outcomes: Outcomes = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let equivalents: BTreeMap<&str, &str> =
        lesson.meta.equivalent.iter().map(|e| (e.mutant.as_str(), e.why.as_str())).collect();
    let mut verdicts = Verdicts::default();
    for outcome in outcomes.outcomes {
        let Scenario::Mutant { name } = outcome.scenario else {
            if outcome.summary != "Success" {
                bail!("the unmutated solution of {} fails its own tests under cargo-mutants", lesson.label());
            }
            continue;
        };
        match outcome.summary.as_str() {
            "CaughtMutant" => verdicts.caught += 1,
            "Timeout" => verdicts.timed_out += 1,
            "Unviable" => verdicts.unviable += 1,
            "MissedMutant" => match equivalents.get(description(&name)) {
                Some(why) => verdicts.equivalent.push((description(&name).to_string(), why.to_string())),
                None => verdicts.missed.push(description(&name).to_string()),
            },
            other => bail!("cargo-mutants reported {other:?} for {name}"),
        }
    }
    Ok(verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mutant_is_named_without_where_it_is() {
        assert_eq!(
            description("solutions/09-idempotent-producer/src/lib.rs:248:35: replace < with <= in check_once_in_order"),
            "replace < with <= in check_once_in_order"
        );
    }

    #[test]
    fn every_equivalent_mutant_names_an_exercise_function_of_its_lesson() {
        for lesson in catalog::lessons().unwrap() {
            let (_, functions) = exercise_functions(&lesson).unwrap();
            for equivalent in &lesson.meta.equivalent {
                assert!(
                    functions.iter().any(|f| {
                        equivalent.mutant.ends_with(&format!(" in {f}"))
                            || equivalent.mutant.starts_with(&format!("replace {f} "))
                    }),
                    "lesson {}: [[equivalent]] {:?} names none of the exercise functions {functions:?}",
                    lesson.label(),
                    equivalent.mutant
                );
                assert!(!equivalent.why.trim().is_empty(), "lesson {}: an [[equivalent]] says no why", lesson.label());
            }
        }
    }
}

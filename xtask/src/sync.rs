//! `cargo xtask sync [NN] [--check | --force]`: writes each `lessons/NN-slug/` from `solutions/NN-slug/`.
//! A maintainers' command: learners never need it (`reset NN` restores one exercise, keeping a backup).
//!
//! What a lesson crate is, file by file:
//! - `Cargo.toml`, `tests/**`, other files: copied, with the crate name rewritten (`solution-NN` → `lesson-NN`,
//!   `solution_NN` → `lesson_NN`) in Rust and TOML files; snapshots byte for byte.
//! - `src/**.rs`: the same, plus a banner, and the bodies of `// EXERCISE:` functions replaced by TODOs.
//! - `lesson.toml` stays with the solution (the chores read it there); build output and pending snapshots are
//!   never copied.
//!
//! It also writes the book's generated files (`mdbook/generated/hints/`, mdbook-mermaid's scripts: see `book`),
//! which are committed so `mdbook build mdbook` works on a fresh clone.
//!
//! `--check` writes nothing and fails when any lesson, or any of the book's generated files, differs from what
//! sync would write.
//!
//! Sync never overwrites work: a lesson whose `src/` holds a file that is neither what sync would write now nor
//! what it (or a passing `--check`) last saw there is a learner's, and is left alone with a message naming the
//! files; `--force` backs those files up under `<target>/workbook/backups/` first, as `reset` does. What sync
//! last saw is a digest per file in `<target>/workbook/sync-state.json`, outside the repository; without it
//! (a fresh clone) only files equal to the new generation count as untouched, so a changed solution needs
//! `--force` once there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, bail};

use crate::catalog::{self, Lesson};
use crate::{book, exercise, scratch};

/// Files of a generated lesson: path relative to the lesson dir → contents.
pub type FileMap = BTreeMap<PathBuf, Vec<u8>>;

/// `cargo xtask sync [NN] [--force]`.
pub fn run(only: Option<String>, force: bool) -> anyhow::Result<()> {
    let lessons = selected(only)?;
    let mut state = SyncState::load();
    let mut refused = Vec::new();
    for lesson in &lessons {
        let expected = generate(lesson)?;
        let dir = lesson.exercise_dir();
        let differences = compare(&dir, &expected)?;
        if differences.is_empty() {
            state.record(lesson, &expected);
            continue;
        }
        let changed = learner_changes(lesson, &expected, &state)?;
        if !changed.is_empty() {
            if !force {
                refused.push(format!("lessons/{}: {}", lesson.dir_name, changed.join(", ")));
                continue;
            }
            let backup = backup(lesson)?;
            println!("lessons/{}: your files are backed up in {}", lesson.dir_name, backup.display());
        }
        write(&dir, &expected)?;
        state.record(lesson, &expected);
        println!("synced lessons/{} ({} file(s) changed)", lesson.dir_name, differences.len());
    }
    state.save()?;
    book::sync(&lessons)?;
    if !refused.is_empty() {
        bail!(
            "left alone, because their src/ was changed since it was generated (a learner's work?):\n  {}\n\
             `cargo xtask sync --force` backs these files up and overwrites them; `cargo xtask reset NN` does it for \
             one lesson",
            refused.join("\n  ")
        );
    }
    Ok(())
}

/// `cargo xtask sync [NN] --check`: writes nothing to lessons/; fails if any lesson is out of date.
pub fn check(only: Option<String>) -> anyhow::Result<()> {
    let whole_tree = only.is_none();
    let lessons = selected(only)?;
    let mut state = SyncState::load();
    let mut stale = Vec::new();
    for lesson in &lessons {
        let expected = generate(lesson)?;
        let differences = compare(&lesson.exercise_dir(), &expected)?;
        if differences.is_empty() {
            state.record(lesson, &expected);
        } else {
            stale.push(format!("{}:\n  {}", lesson.dir_name, differences.join("\n  ")));
        }
    }
    // Orphans only make sense against every lesson, not one.
    if let Some(orphans) = orphan_lessons(&lessons)?.filter(|_| whole_tree) {
        stale.push(orphans);
    }
    let book = book::stale(&lessons, whole_tree)?;
    if !book.is_empty() {
        stale.push(format!("the book (mdbook/):\n  {}", book.join("\n  ")));
    }
    let _ = state.save();
    if !stale.is_empty() {
        bail!("generated files are out of date — run `cargo xtask sync`:\n{}", stale.join("\n"));
    }
    println!("lessons/ and the book's generated files are in sync with solutions/ ({} lessons)", lessons.len());
    Ok(())
}

fn selected(only: Option<String>) -> anyhow::Result<Vec<Lesson>> {
    match only {
        Some(nn) => Ok(vec![catalog::find(&nn)?]),
        None => catalog::lessons(),
    }
}

/// The files of the lesson's `src/` that are a learner's work: neither what sync would write now nor what it
/// last saw there.
pub fn learner_changes(lesson: &Lesson, expected: &FileMap, state: &SyncState) -> anyhow::Result<Vec<String>> {
    let dir = lesson.exercise_dir();
    let mut changed = Vec::new();
    for relative in source_files(&dir)?.into_iter().filter(|p| p.starts_with("src")) {
        let bytes = std::fs::read(dir.join(&relative))?;
        let untouched = expected.get(&relative) == Some(&bytes) || state.saw(lesson, &relative, &bytes);
        if !untouched {
            changed.push(relative.display().to_string());
        }
    }
    Ok(changed)
}

/// Copies the lesson's files to `<target>/workbook/backups/NN-slug-SECONDS/` and returns that directory.
pub fn backup(lesson: &Lesson) -> anyhow::Result<PathBuf> {
    let dir = lesson.exercise_dir();
    let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_secs();
    let backup = scratch::workbook_dir().join("backups").join(format!("{}-{stamp}", lesson.dir_name));
    for relative in source_files(&dir)? {
        let target = backup.join(&relative);
        std::fs::create_dir_all(target.parent().expect("a file has a parent"))?;
        std::fs::copy(dir.join(&relative), &target)?;
    }
    Ok(backup)
}

/// What sync last wrote or saw in sync, per lesson file: a digest of its bytes.
#[derive(Default)]
pub struct SyncState {
    digests: BTreeMap<String, String>,
}

impl SyncState {
    fn path() -> PathBuf {
        scratch::workbook_dir().join("sync-state.json")
    }

    pub fn load() -> SyncState {
        let digests = std::fs::read_to_string(Self::path())
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        SyncState { digests }
    }

    pub fn save(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(scratch::workbook_dir())?;
        std::fs::write(Self::path(), serde_json::to_string_pretty(&self.digests)?)?;
        Ok(())
    }

    fn key(lesson: &Lesson, relative: &Path) -> String {
        format!("{}/{}", lesson.dir_name, relative.display())
    }

    /// Remembers the lesson's `src/` files as `files` holds them.
    pub fn record(&mut self, lesson: &Lesson, files: &FileMap) {
        let prefix = format!("{}/", lesson.dir_name);
        self.digests.retain(|k, _| !k.starts_with(&prefix));
        for (relative, bytes) in files.iter().filter(|(p, _)| p.starts_with("src")) {
            self.digests.insert(Self::key(lesson, relative), digest(bytes));
        }
    }

    fn saw(&self, lesson: &Lesson, relative: &Path, bytes: &[u8]) -> bool {
        self.digests.get(&Self::key(lesson, relative)) == Some(&digest(bytes))
    }
}

/// FNV-1a, 64 bits: stable across Rust versions (unlike `DefaultHasher`), and plenty to tell edits apart.
fn digest(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
    format!("{hash:016x}")
}

/// Every file `lessons/NN-slug/` should hold.
pub fn generate(lesson: &Lesson) -> anyhow::Result<FileMap> {
    let source_dir = lesson.solution_dir();
    let mut files = FileMap::new();
    for relative in source_files(&source_dir)? {
        let bytes = std::fs::read(source_dir.join(&relative))?;
        let generated = transform(lesson, &relative, bytes)
            .with_context(|| format!("{}/{}", lesson.dir_name, relative.display()))?;
        files.insert(relative, generated);
    }
    Ok(files)
}

/// The generated form of one solution file.
fn transform(lesson: &Lesson, relative: &Path, bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let ext = relative.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext != "rs" && ext != "toml" {
        return Ok(bytes);
    }
    let text = rename_crate(&String::from_utf8(bytes)?, &lesson.number);
    if !(ext == "rs" && relative.starts_with("src")) {
        return Ok(text.into_bytes());
    }
    let (mut body, marked) = exercise::make_exercise(&text, &lesson.number)?;
    if !marked.is_empty() {
        body = insert_allow(&body);
    }
    let banner = format!(
        "// GENERATED by `cargo xtask sync` from solutions/{dir}/{file}. Write the bodies marked TODO;\n\
         // `cargo xtask check {nn}` grades them and `cargo xtask reset {nn}` restores this file.\n",
        dir = lesson.dir_name,
        file = relative.display(),
        nn = lesson.number
    );
    Ok((banner + &body).into_bytes())
}

pub fn rename_crate(text: &str, number: &str) -> String {
    text.replace(&format!("solution-{number}"), &format!("lesson-{number}"))
        .replace(&format!("solution_{number}"), &format!("lesson_{number}"))
}

/// Puts the exercise's lint allowances after the file's leading comments (inner attributes must precede items).
/// A `///` line is not one of them: it documents the first item (`/// The RabbitMQ side.` over `pub mod rabbit;`),
/// so the allowances go before it, never between it and its item.
fn insert_allow(text: &str) -> String {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        let outer_doc = t.starts_with("///") && !t.starts_with("////");
        if t.is_empty() || (t.starts_with("//") && !outer_doc) || t.starts_with("#![") {
            at += line.len();
        } else {
            break;
        }
    }
    let allow = "// Until every TODO is written, its `todo!()` leaves imports and arguments unused: no need to warn.\n\
                 #![allow(unused_imports, unused_variables, unused_mut, dead_code, unreachable_code)]\n\n";
    format!("{}{allow}{}", &text[..at], &text[at..])
}

/// Files under `dir` a lesson is made of, relative to `dir`, sorted (build output, hidden files and pending
/// snapshots left out, as in every crate the chores copy).
pub fn source_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = crate::scratch::files_under(dir)?;
    out.retain(|p| p != Path::new("lesson.toml"));
    Ok(out)
}

/// What differs between `dir` and `expected`, one line per file.
pub fn compare(dir: &Path, expected: &FileMap) -> anyhow::Result<Vec<String>> {
    let actual: Vec<PathBuf> = if dir.exists() { source_files(dir)? } else { Vec::new() };
    let mut differences = Vec::new();
    for (path, bytes) in expected {
        match std::fs::read(dir.join(path)) {
            Ok(found) if &found == bytes => {}
            Ok(_) => differences.push(format!("differs: {}", path.display())),
            Err(_) => differences.push(format!("missing: {}", path.display())),
        }
    }
    for path in actual {
        if !expected.contains_key(&path) {
            differences.push(format!("extra:   {}", path.display()));
        }
    }
    Ok(differences)
}

/// Writes `files` into `dir`, removing files that are no longer part of the lesson.
pub fn write(dir: &Path, files: &FileMap) -> anyhow::Result<()> {
    if dir.exists() {
        for path in source_files(dir)? {
            if !files.contains_key(&path) {
                std::fs::remove_file(dir.join(&path))?;
            }
        }
    }
    for (path, bytes) in files {
        let target = dir.join(path);
        std::fs::create_dir_all(target.parent().unwrap())?;
        if std::fs::read(&target).ok().as_deref() != Some(bytes.as_slice()) {
            std::fs::write(&target, bytes)?;
        }
    }
    Ok(())
}

/// Lesson directories that have no solution any more.
fn orphan_lessons(lessons: &[Lesson]) -> anyhow::Result<Option<String>> {
    let dir = catalog::root().join("lessons");
    if !dir.exists() {
        return Ok(None);
    }
    let mut orphans = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !lessons.iter().any(|l| l.dir_name == name) {
            orphans.push(name);
        }
    }
    Ok((!orphans.is_empty()).then(|| format!("lessons without a solution (delete them): {}", orphans.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::insert_allow;

    #[test]
    fn the_allowances_go_after_the_module_docs_and_before_the_first_items_docs() {
        let text = "//! The crate.\n\n/// The RabbitMQ side.\npub mod rabbit;\n";
        let out = insert_allow(text);
        let allow = out.find("#![allow(").unwrap();
        assert!(out.find("//! The crate.").unwrap() < allow, "{out}");
        assert!(allow < out.find("/// The RabbitMQ side.").unwrap(), "{out}");
    }
}

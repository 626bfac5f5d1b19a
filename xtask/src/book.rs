//! `cargo xtask book [--serve]`: builds (or serves) the book in `docs/` with a pinned mdBook.
//!
//! What it does, in order:
//! 1. Finds mdBook and mdbook-mermaid at their pinned versions, in the workbook's tool directory on this machine
//!    (`~/.cache/kafka-workbook/tools/bin`) or on `PATH`, and installs them there with `cargo install --locked`
//!    when missing.
//!    That takes a few minutes, once per machine; a spinner says so. Pinning keeps every machine rendering, and
//!    warning about, the same things.
//! 2. Writes each lesson's hint levels from its `lesson.toml` to `mdbook/generated/hints/NN-slug.md`, one folded
//!    block per level, so the chapters include the very text `cargo xtask hint NN --level N` prints (one source,
//!    two readers).
//! 3. Checks that mdbook-mermaid's JavaScript next to `book.toml` (`mermaid.min.js`, `mermaid-init.js`) is what
//!    the pinned mdbook-mermaid ships.
//!
//! The files of steps 2 and 3 are committed, so `mdbook build mdbook` and `mdbook serve mdbook` work on a fresh
//! clone with nothing but the pinned tools: `cargo xtask sync` writes them as it writes `lessons/`, and
//! `cargo xtask sync --check` fails when they are stale (the mermaid files are compared when the pinned
//! mdbook-mermaid is installed; `cargo xtask book` always compares them).
//! 4. Runs `mdbook build` and fails on any warning or error it logs, and on any `{{#include}}` or `{{#…}}`
//!    directive left in the HTML: a missing file or anchor must break the build, never ship a hole.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::catalog;

/// The mdBook the book is written for: exactly the version mdbook-mermaid 0.17.1 is built against (its lock
/// file pins mdbook-preprocessor 0.5.0), because the preprocessor warns on any other version, and the build
/// treats warnings as errors.
pub const MDBOOK_VERSION: &str = "0.5.0";
/// Renders ```` ```mermaid ```` blocks (diagrams are drawn in the reader's browser by mermaid.js).
pub const MDBOOK_MERMAID_VERSION: &str = "0.17.1";

/// A tool the book needs, at its pinned version.
struct Tool {
    name: &'static str,
    version: &'static str,
    /// Measured on a 2-core machine, for the progress message.
    install_minutes: u32,
}

const TOOLS: [Tool; 2] = [
    // CPU time of `cargo install --locked` measured here: mdbook 4 min 49 s, mdbook-mermaid 3 min 5 s of user
    // time (8 and 21 min of wall time on a loaded 2-core machine). Each is built once per machine.
    Tool { name: "mdbook", version: MDBOOK_VERSION, install_minutes: 5 },
    Tool { name: "mdbook-mermaid", version: MDBOOK_MERMAID_VERSION, install_minutes: 3 },
];

pub fn run(serve: bool, port: u16) -> anyhow::Result<()> {
    let tools_bin = ensure_tools()?;
    prepare()?;
    let book_dir = book_dir();
    let path = path_with(&tools_bin);
    if serve {
        println!("serving the book on http://127.0.0.1:{port} (rebuilds on save; Ctrl-C stops)");
        let status = Command::new(tools_bin.join("mdbook"))
            .args(["serve", "--hostname", "127.0.0.1", "--port", &port.to_string()])
            .arg(&book_dir)
            .env("PATH", path)
            .status()?;
        if !status.success() {
            bail!("mdbook serve stopped: {status}");
        }
        return Ok(());
    }
    let output = Command::new(tools_bin.join("mdbook"))
        .arg("build")
        .arg(&book_dir)
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()?;
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let problems = log_problems(&log);
    if !output.status.success() || !problems.is_empty() {
        bail!("the book did not build cleanly ({}):\n{log}", output.status);
    }
    let holes = unexpanded_directives(&book_dir.join("book"))?;
    if !holes.is_empty() {
        bail!("directives left unexpanded in the book (a missing file or anchor?):\n  {}", holes.join("\n  "));
    }
    println!("book built without warnings: {}", book_dir.join("book").join("index.html").display());
    Ok(())
}

/// `mdbook/`, where `book.toml` is.
pub fn book_dir() -> PathBuf {
    catalog::root().join("mdbook")
}

/// `~/.cache/kafka-workbook/tools` (`kit::machine_dir`): per machine and outside the clone, so a second clone, or
/// a `cargo clean`, does not spend minutes building the same pinned tools again.
fn tools_root() -> PathBuf {
    kit::machine_dir().join("tools")
}

/// Makes sure every tool is there at its pinned version; returns the directory holding them.
fn ensure_tools() -> anyhow::Result<PathBuf> {
    let root = tools_root();
    let bin = root.join("bin");
    for tool in &TOOLS {
        if has_version(&bin.join(tool.name), tool.version) {
            continue;
        }
        // A matching tool on PATH (say, installed with `cargo install` by hand) is as good: link it in.
        if let Some(found) = on_path(tool.name).filter(|p| has_version(p, tool.version)) {
            std::fs::create_dir_all(&bin)?;
            let _ = std::fs::remove_file(bin.join(tool.name));
            if std::fs::hard_link(&found, bin.join(tool.name)).is_err() {
                std::fs::copy(&found, bin.join(tool.name))?;
            }
            continue;
        }
        install(tool, &root)?;
    }
    Ok(bin)
}

fn install(tool: &Tool, root: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(root)?;
    let log_path = root.join(format!("install-{}.log", tool.name));
    let log = std::fs::File::create(&log_path)?;
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")?);
    spinner.set_message(format!(
        "installing {} {} with cargo (once per machine, about {} min on 2 cores; log: {})",
        tool.name,
        tool.version,
        tool.install_minutes,
        log_path.display()
    ));
    spinner.enable_steady_tick(Duration::from_millis(200));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["install", tool.name, "--version", tool.version, "--locked", "--root"])
        .arg(root)
        // Our own CARGO_TARGET_DIR would make the tool's build share (and lock) the workbook's target dir.
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()?;
    spinner.finish_and_clear();
    if !status.success() {
        let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<_> = tail.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("`cargo install {} --version {}` failed ({status}):\n{}", tool.name, tool.version, tail.join("\n"));
    }
    println!("installed {} {} in {}", tool.name, tool.version, root.join("bin").display());
    Ok(())
}

/// Whether `program --version` names exactly `version` (`mdbook v0.5.4`, `mdbook-mermaid 0.17.1`).
fn has_version(program: &Path, version: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map(|o| version_matches(&String::from_utf8_lossy(&o.stdout), version))
        .unwrap_or(false)
}

fn version_matches(output: &str, version: &str) -> bool {
    output.split_whitespace().any(|word| word.trim_start_matches('v') == version)
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// PATH with the tools first, so mdbook finds the pinned preprocessor.
fn path_with(bin: &Path) -> std::ffi::OsString {
    let mut paths = vec![bin.to_path_buf()];
    if let Some(existing) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&existing));
    }
    std::env::join_paths(paths).expect("PATH entries without separators")
}

/// Steps 2 and 3 of the module docs: generated includes written, mermaid's scripts checked.
fn prepare() -> anyhow::Result<()> {
    write_hints(&catalog::lessons()?)?;
    let bin = tools_root().join("bin");
    let stale = stale_mermaid_assets(&bin.join("mdbook-mermaid"))?;
    if !stale.is_empty() {
        bail!(
            "the committed mermaid files are not those of mdbook-mermaid {MDBOOK_MERMAID_VERSION} — run `cargo xtask \
             sync` and commit them:\n  {}",
            stale.join("\n  ")
        );
    }
    Ok(())
}

/// `mdbook/generated/hints/`, the lessons' hint levels as the chapters include them.
fn hints_dir() -> PathBuf {
    book_dir().join("generated").join("hints")
}

/// The hint file of each lesson: path → contents.
fn hint_files(lessons: &[catalog::Lesson]) -> Vec<(PathBuf, String)> {
    lessons
        .iter()
        .map(|lesson| {
            (hints_dir().join(format!("{}.md", lesson.dir_name)), format!("{}\n", hints_markdown(&lesson.meta)))
        })
        .collect()
}

/// Writes the hint files of `lessons` (those that changed only).
pub fn write_hints(lessons: &[catalog::Lesson]) -> anyhow::Result<()> {
    std::fs::create_dir_all(hints_dir())?;
    for (path, text) in hint_files(lessons) {
        write_if_changed(&path, &text)?;
    }
    Ok(())
}

/// What `cargo xtask sync` writes to the book (the hints of `lessons`; the mermaid files when the pinned
/// mdbook-mermaid is at hand, which it says otherwise).
pub fn sync(lessons: &[catalog::Lesson]) -> anyhow::Result<()> {
    write_hints(lessons)?;
    let Some(tool) = pinned_mermaid() else {
        println!("{}", mermaid_not_compared());
        return Ok(());
    };
    for (name, bytes) in mermaid_assets(&tool)? {
        let path = book_dir().join(name);
        if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
            std::fs::write(&path, bytes)?;
            println!("wrote mdbook/{name} (mdbook-mermaid {MDBOOK_MERMAID_VERSION})");
        }
    }
    Ok(())
}

/// For `cargo xtask sync --check`: one line per generated file of the book that is missing, differs or is left
/// over (`all`: `lessons` is every lesson, so a hint file of no lesson is one).
pub fn stale(lessons: &[catalog::Lesson], all: bool) -> anyhow::Result<Vec<String>> {
    let mut stale = Vec::new();
    let expected = hint_files(lessons);
    let root = catalog::root();
    for (path, text) in &expected {
        let shown = path.strip_prefix(&root).unwrap_or(path).display();
        match std::fs::read_to_string(path) {
            Ok(found) if &found == text => {}
            Ok(_) => stale.push(format!("differs: {shown} (from its lesson.toml)")),
            Err(_) => stale.push(format!("missing: {shown}")),
        }
    }
    if all && hints_dir().exists() {
        for entry in std::fs::read_dir(hints_dir())? {
            let path = entry?.path();
            if !expected.iter().any(|(p, _)| *p == path) {
                stale.push(format!("extra:   {} (no lesson)", path.strip_prefix(&root).unwrap_or(&path).display()));
            }
        }
    }
    match pinned_mermaid() {
        Some(tool) => stale.extend(stale_mermaid_assets(&tool)?),
        None => println!("{}", mermaid_not_compared()),
    }
    Ok(stale)
}

fn mermaid_not_compared() -> String {
    format!(
        "mdbook/mermaid*.js not compared: mdbook-mermaid {MDBOOK_MERMAID_VERSION} is not installed (`cargo xtask \
         book` installs it)"
    )
}

/// The pinned mdbook-mermaid, if it is installed (in the tools directory or on PATH).
fn pinned_mermaid() -> Option<PathBuf> {
    let ours = tools_root().join("bin").join("mdbook-mermaid");
    std::iter::once(ours).chain(on_path("mdbook-mermaid")).find(|p| has_version(p, MDBOOK_MERMAID_VERSION))
}

/// The files `mdbook-mermaid install` writes next to `book.toml`: name → contents, as `tool` ships them. It
/// never overwrites a file that exists, so it writes them into a scratch copy of the book's directory.
fn mermaid_assets(tool: &Path) -> anyhow::Result<Vec<(&'static str, Vec<u8>)>> {
    let scratch = std::env::temp_dir().join(format!("workbook-mermaid-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    std::fs::copy(book_dir().join("book.toml"), scratch.join("book.toml"))?;
    let output = Command::new(tool)
        .arg("install")
        .arg(&scratch)
        .stdin(Stdio::null())
        .output()
        .context("running mdbook-mermaid install")?;
    let assets = MERMAID_ASSETS
        .iter()
        .map(|name| {
            Ok((*name, std::fs::read(scratch.join(name)).with_context(|| format!("mdbook-mermaid wrote no {name}"))?))
        })
        .collect::<anyhow::Result<Vec<_>>>();
    let _ = std::fs::remove_dir_all(&scratch);
    if !output.status.success() {
        bail!("mdbook-mermaid install failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    assets
}

/// The files of mdbook-mermaid the book loads (`additional-js` in book.toml).
const MERMAID_ASSETS: [&str; 2] = ["mermaid.min.js", "mermaid-init.js"];

/// One line per committed mermaid file that is not what `tool` ships.
fn stale_mermaid_assets(tool: &Path) -> anyhow::Result<Vec<String>> {
    Ok(mermaid_assets(tool)?
        .into_iter()
        .filter_map(|(name, bytes)| match std::fs::read(book_dir().join(name)) {
            Ok(found) if found == bytes => None,
            Ok(_) => Some(format!("differs: mdbook/{name} (from mdbook-mermaid {MDBOOK_MERMAID_VERSION})")),
            Err(_) => Some(format!("missing: mdbook/{name} (from mdbook-mermaid {MDBOOK_MERMAID_VERSION})")),
        })
        .collect())
}

/// A lesson's hint levels as folded blocks, each opened on its own ("Hint 1 of 3", …). mdBook renders markdown
/// inside `<details>` only when blank lines separate it from the tags.
fn hints_markdown(meta: &catalog::LessonMeta) -> String {
    let levels = meta.hints.len();
    (1..=levels)
        .filter_map(|level| meta.hint(level).map(|text| (level, text)))
        .map(|(level, text)| {
            let closeness = if level == levels && levels > 1 { " (close to the code)" } else { "" };
            format!("<details>\n<summary>Hint {level} of {levels}{closeness}</summary>\n\n{text}\n\n</details>")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Writing only on change keeps `mdbook serve` from rebuilding in a loop.
fn write_if_changed(path: &Path, text: &str) -> anyhow::Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text)?;
    }
    Ok(())
}

/// Lines of mdBook's (and its preprocessors') log that are warnings or errors; INFO lines are fine.
fn log_problems(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| {
            line.split(|c: char| !c.is_ascii_alphabetic())
                .any(|word| matches!(word, "WARN" | "ERROR" | "Warning" | "Error"))
        })
        .collect()
}

/// `file: directive` for every `{{#…}}` mdBook left in the rendered pages.
fn unexpanded_directives(book: &Path) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut stack = vec![book.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "html") && !path.ends_with("print.html") {
                let text = std::fs::read_to_string(&path)?;
                for (at, _) in text.match_indices("{{#") {
                    let snippet: String = text[at..].chars().take(80).take_while(|c| *c != '\n').collect();
                    found.push(format!("{}: {snippet}", path.strip_prefix(book).unwrap_or(&path).display()));
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_both_tools_formats() {
        assert!(version_matches("mdbook v0.5.4\n", "0.5.4"));
        assert!(version_matches("mdbook-mermaid 0.17.1\n", "0.17.1"));
        assert!(!version_matches("mdbook v0.4.52\n", "0.5.4"));
        assert!(!version_matches("", "0.5.4"));
    }

    #[test]
    fn warnings_and_errors_fail_the_build_but_info_does_not() {
        let log = " INFO Book building has started\n\
                   2025-01-01 [WARN] (mdbook::preprocess::links): Unable to read file\n\
                    ERROR Rendering failed\n\
                    INFO Running the html backend\n\
                   Warning: The mdbook-mermaid preprocessor was built against version 0.5.0 of mdbook\n";
        assert_eq!(log_problems(log).len(), 3);
        assert!(log_problems(" INFO Book building has started\n INFO HTML book written to `book`\n").is_empty());
    }

    /// The solution's `{{#include}}`s of exercise anchors (those the chapter also includes from `lessons/`) that
    /// sit outside any `<details>` block.
    fn solutions_outside_details(chapter: &str, dir_name: &str) -> Vec<String> {
        let exercise = format!("{{{{#include ../../lessons/{dir_name}/");
        let solution = format!("{{{{#include ../../solutions/{dir_name}/");
        let exercises: Vec<&str> = chapter
            .match_indices(&exercise)
            .filter_map(|(at, _)| chapter[at + exercise.len()..].split("}}").next())
            .collect();
        let mut depth = 0usize;
        let mut open = Vec::new();
        for line in chapter.lines() {
            depth += line.matches("<details").count();
            if let Some(at) = line.find(&solution) {
                let target = line[at + solution.len()..].split("}}").next().unwrap_or_default();
                if depth == 0 && exercises.contains(&target) {
                    open.push(target.to_string());
                }
            }
            depth = depth.saturating_sub(line.matches("</details>").count());
        }
        open
    }

    #[test]
    fn a_solution_include_outside_details_is_found() {
        let chapter = "{{#include ../../lessons/01-x/src/lib.rs:a}}\n\
                       {{#include ../../solutions/01-x/src/lib.rs:given}}\n\
                       <details>\n<summary>s</summary>\n\n{{#include ../../solutions/01-x/src/lib.rs:a}}\n\n</details>\n";
        assert!(solutions_outside_details(chapter, "01-x").is_empty(), "folded, or not an exercise");
        let open = format!("{chapter}{{{{#include ../../solutions/01-x/src/lib.rs:a}}}}\n");
        assert_eq!(solutions_outside_details(&open, "01-x"), ["src/lib.rs:a"]);
    }

    #[test]
    fn the_committed_hint_files_are_those_of_each_lesson_toml() {
        let lessons = catalog::lessons().unwrap();
        for (path, text) in hint_files(&lessons) {
            let found = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(found == text, "{} is stale: run `cargo xtask sync`", path.display());
        }
    }

    #[test]
    fn the_readme_and_the_introduction_name_the_pinned_versions() {
        for file in ["README.md", "docs/introduction.md"] {
            let text = std::fs::read_to_string(catalog::root().join(file)).unwrap();
            for (tool, version) in [("mdbook", MDBOOK_VERSION), ("mdbook-mermaid", MDBOOK_MERMAID_VERSION)] {
                let install = format!("cargo install {tool} --version {version} --locked");
                assert!(text.contains(&install), "{file} does not say `{install}`");
            }
            assert!(text.contains("mdbook serve mdbook"), "{file} does not say `mdbook serve mdbook`");
            assert!(text.contains("cargo xtask book --serve"), "{file} does not say `cargo xtask book --serve`");
        }
    }

    #[test]
    fn hint_levels_render_as_folded_blocks_with_blank_lines_around_the_markdown() {
        let meta: catalog::LessonMeta =
            toml::from_str("title = \"t\"\nsummary = \"s\"\n[[hint]]\ntext = \"- one\"\n[[hint]]\ntext = \"two\"\n")
                .unwrap();
        assert_eq!(
            hints_markdown(&meta),
            "<details>\n<summary>Hint 1 of 2</summary>\n\n- one\n\n</details>\n\n\
             <details>\n<summary>Hint 2 of 2 (close to the code)</summary>\n\ntwo\n\n</details>"
        );
    }

    #[test]
    fn every_lesson_chapter_includes_its_exercise_and_solution() {
        let summary = std::fs::read_to_string(catalog::root().join("docs/SUMMARY.md")).unwrap();
        for lesson in catalog::lessons().unwrap() {
            let chapter = format!("lessons/{}.md", lesson.dir_name);
            let Ok(text) = std::fs::read_to_string(catalog::root().join("docs").join(&chapter)) else { continue };
            assert!(summary.contains(&format!("({chapter})")), "{chapter} is not listed in docs/SUMMARY.md");
            assert!(
                text.contains(&format!("{{{{#include ../../lessons/{}/src/", lesson.dir_name)),
                "{chapter} shows no exercise"
            );
            assert!(
                text.contains(&format!("{{{{#include ../../solutions/{}/src/", lesson.dir_name)),
                "{chapter} shows no solution"
            );
            assert!(
                text.contains(&format!("{{{{#include ../../mdbook/generated/hints/{}.md}}}}", lesson.dir_name)),
                "{chapter} does not include its hint levels"
            );
            let open = solutions_outside_details(&text, &lesson.dir_name);
            assert!(open.is_empty(), "{chapter} shows the solution of an exercise unfolded: {open:?}");
            assert!(text.contains("```mermaid"), "{chapter} has no diagram");
            assert!(text.contains("## What can go wrong"), "{chapter} has no 'What can go wrong'");
        }
    }
}

//! Scratch crates: the lesson crates the chores build for themselves, under the target directory, so that no
//! maintainer command writes to `lessons/` or `solutions/`.
//!
//! A scratch crate lives in `<target>/workbook/<kind>/NN-slug/` (e.g. `proofs/`, `grade/`). It sits outside
//! the workspace's members, so it is a workspace of its own: its manifest is the lesson's, with `workspace =
//! true` fields and dependencies spelled out from the root `Cargo.toml` (path dependencies such as kit made
//! absolute), the root's profiles and patches copied (they only count at a workspace root), and the root
//! `Cargo.lock` copied in so the versions match. It builds into the *same* target directory, so compiled
//! dependencies (librdkafka above all) are shared with the workspace's own builds and between scratch crates.
//!
//! Each scratch crate gets its own package name (`proof-05`, `grade-05`): cargo tells two crates' outputs apart
//! by package name, and every scratch crate is the root of its workspace, so without a distinct name two of
//! them would overwrite each other's artifacts. The library keeps the lesson's crate name (`[lib] name`), so
//! the tests' `use solution_05::…` still resolves. Binaries are not built (`autobins = false`): no test runs
//! them, and each would link librdkafka once more.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use toml::{Table, Value};

use crate::{cargo, catalog};

/// Files of a crate: path relative to its directory → contents.
pub type FileMap = BTreeMap<PathBuf, Vec<u8>>;

/// The target directory cargo builds into: `CARGO_TARGET_DIR` (relative to the workspace root) or `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => catalog::root().join(dir),
        None => catalog::root().join("target"),
    }
}

/// Where the chores keep their files: scratch crates, reports, logs, backups.
pub fn workbook_dir() -> PathBuf {
    target_dir().join("workbook")
}

/// A scratch crate on disk.
#[derive(Debug, Clone)]
pub struct ScratchCrate {
    pub dir: PathBuf,
}

/// Writes a scratch crate into `dir`: `files` (sources, tests, snapshots; no manifest) plus a standalone
/// manifest made from `manifest` (the lesson's `Cargo.toml` text) for package `package` whose library is named
/// `lib_name`. Files are written only when their bytes change (cargo decides freshness by modification time),
/// and files no longer part of the crate are removed.
///
/// `unit_tests` says whether the library's own `#[cfg(test)]` tests count. Not when grading: `src/` is the
/// learner's there, and tests they add must not add to their score. Without any, the library's test
/// executable is not built at all (it would link librdkafka to run nothing); doctests are never run.
pub fn write_crate(
    dir: &Path,
    package: &str,
    lib_name: &str,
    manifest: &str,
    files: &FileMap,
    unit_tests: bool,
) -> anyhow::Result<ScratchCrate> {
    let has_unit_tests = unit_tests
        && files
            .iter()
            .any(|(path, bytes)| path.starts_with("src") && String::from_utf8_lossy(bytes).contains("#[cfg(test)]"));
    let mut all = files.clone();
    let manifest = standalone_manifest(manifest, package, lib_name, has_unit_tests)?;
    all.insert(PathBuf::from("Cargo.toml"), manifest.into_bytes());
    std::fs::create_dir_all(dir)?;
    for stale in files_under(dir)? {
        if !all.contains_key(&stale) && stale != Path::new("Cargo.lock") {
            std::fs::remove_file(dir.join(&stale))?;
        }
    }
    for (path, bytes) in &all {
        write_if_changed(&dir.join(path), bytes)?;
    }
    // The root lock, so the scratch crate resolves the versions the workspace uses. Cargo prunes the packages
    // this crate does not use when it writes the file back, which is why it is copied before each build.
    let lock = std::fs::read(catalog::root().join("Cargo.lock")).context("reading Cargo.lock")?;
    write_if_changed(&dir.join("Cargo.lock"), &lock)?;
    Ok(ScratchCrate { dir: dir.to_path_buf() })
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if std::fs::read(path).ok().as_deref() != Some(bytes) {
        std::fs::create_dir_all(path.parent().expect("a file has a parent"))?;
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Files under `dir` (relative), skipping hidden entries, `target/` and pending snapshots.
pub fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name == "target"
                || name.starts_with('.')
                || name.ends_with(".snap.new")
                || name.ends_with(".pending-snap")
            {
                continue;
            }
            if path.is_dir() {
                walk(base, &path, out)?;
            } else {
                out.push(path.strip_prefix(base)?.to_path_buf());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out)?;
    }
    out.sort();
    Ok(out)
}

/// The member manifest `manifest` as the root of a workspace of its own (see the module comment).
pub fn standalone_manifest(manifest: &str, package: &str, lib_name: &str, unit_tests: bool) -> anyhow::Result<String> {
    let root_text = std::fs::read_to_string(catalog::root().join("Cargo.toml")).context("reading Cargo.toml")?;
    standalone_manifest_with(manifest, package, lib_name, unit_tests, &toml::from_str(&root_text)?, &catalog::root())
}

fn standalone_manifest_with(
    manifest: &str,
    package: &str,
    lib_name: &str,
    unit_tests: bool,
    root: &Table,
    root_dir: &Path,
) -> anyhow::Result<String> {
    let mut table: Table = toml::from_str(manifest).context("parsing the lesson's Cargo.toml")?;
    let workspace = root.get("workspace").and_then(Value::as_table).cloned().unwrap_or_default();
    let inherited_package = workspace.get("package").and_then(Value::as_table).cloned().unwrap_or_default();
    let inherited_deps = workspace.get("dependencies").and_then(Value::as_table).cloned().unwrap_or_default();

    let package_table =
        table.get_mut("package").and_then(Value::as_table_mut).context("the manifest has no [package]")?;
    for (key, value) in package_table.iter_mut() {
        if is_inherited(value) {
            *value = inherited_package
                .get(key)
                .cloned()
                .with_context(|| format!("package.{key} is inherited but the root does not set it"))?;
        }
    }
    package_table.insert("name".into(), Value::String(package.into()));
    package_table.remove("default-run");
    for auto in ["autobins", "autoexamples", "autobenches"] {
        package_table.insert(auto.into(), Value::Boolean(false));
    }
    let lib = table.entry("lib").or_insert_with(|| Value::Table(Table::new()));
    if let Some(lib) = lib.as_table_mut() {
        lib.insert("name".into(), Value::String(lib_name.into()));
        lib.insert("test".into(), Value::Boolean(unit_tests));
        lib.insert("doctest".into(), Value::Boolean(false));
    }
    table.remove("bin");

    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(deps) = table.get_mut(section).and_then(Value::as_table_mut) {
            make_explicit(deps, &inherited_deps, root_dir)?;
        }
    }
    if let Some(targets) = table.get_mut("target").and_then(Value::as_table_mut) {
        for (_, target) in targets.iter_mut() {
            for (name, deps) in target.as_table_mut().into_iter().flat_map(|t| t.iter_mut()) {
                match deps.as_table_mut() {
                    Some(deps) if name.ends_with("dependencies") => make_explicit(deps, &inherited_deps, root_dir)?,
                    _ => {}
                }
            }
        }
    }
    if table.get("lints").is_some_and(is_inherited) {
        match workspace.get("lints") {
            Some(lints) => table.insert("lints".into(), lints.clone()),
            None => table.remove("lints"),
        };
    }

    let mut own_workspace = Table::new();
    if let Some(resolver) = workspace.get("resolver") {
        own_workspace.insert("resolver".into(), resolver.clone());
    }
    table.insert("workspace".into(), Value::Table(own_workspace));
    for shared in ["profile", "patch"] {
        if let Some(value) = root.get(shared) {
            table.insert(shared.into(), value.clone());
        }
    }
    let text = toml::to_string(&table)?;
    Ok(format!("# Scratch crate written by `cargo xtask` (scratch.rs); rewritten on every run.\n{text}"))
}

/// Every dependency of `deps` spelled out (see [`explicit_dependency`]).
fn make_explicit(deps: &mut Table, inherited: &Table, root_dir: &Path) -> anyhow::Result<()> {
    for (name, spec) in deps.iter_mut() {
        *spec = explicit_dependency(name, spec, inherited, root_dir)?;
    }
    Ok(())
}

/// `{ workspace = true }`.
fn is_inherited(value: &Value) -> bool {
    value.as_table().and_then(|t| t.get("workspace")).and_then(Value::as_bool) == Some(true)
}

/// A dependency spec without `workspace = true`: the root's spec, with the member's `features` added and its
/// `optional` kept; relative paths made absolute.
fn explicit_dependency(name: &str, spec: &Value, inherited: &Table, root_dir: &Path) -> anyhow::Result<Value> {
    if !is_inherited(spec) {
        return Ok(spec.clone());
    }
    let member = spec.as_table().expect("an inherited spec is a table");
    let mut explicit = match inherited.get(name) {
        Some(Value::String(version)) => Table::from_iter([("version".to_string(), Value::String(version.clone()))]),
        Some(Value::Table(table)) => table.clone(),
        _ => anyhow::bail!("dependency `{name}` is inherited but the root's [workspace.dependencies] lacks it"),
    };
    if let Some(Value::String(path)) = explicit.get("path") {
        let absolute = root_dir.join(path).display().to_string();
        explicit.insert("path".into(), Value::String(absolute));
    }
    for (key, value) in member {
        match key.as_str() {
            "workspace" => {}
            "features" => {
                let mut features = explicit.get("features").and_then(Value::as_array).cloned().unwrap_or_default();
                for feature in value.as_array().into_iter().flatten() {
                    if !features.contains(feature) {
                        features.push(feature.clone());
                    }
                }
                explicit.insert("features".into(), Value::Array(features));
            }
            _ => {
                explicit.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(Value::Table(explicit))
}

/// A test executable cargo built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestExecutable {
    /// The target's name: the file name of an integration test, or the library's name for its unit tests.
    pub target: String,
    pub path: PathBuf,
}

/// One compiler error, with the places it points at.
#[derive(Debug, Clone)]
pub struct CompileError {
    pub rendered: String,
    /// (file relative to the crate, first line) of each primary span.
    pub at: Vec<(String, usize)>,
}

/// What `cargo test --no-run` made of a scratch crate.
#[derive(Debug, Clone)]
pub struct Build {
    pub ok: bool,
    pub executables: Vec<TestExecutable>,
    pub errors: Vec<CompileError>,
    /// Cargo's own complaint when it failed before compiling (a bad manifest, a missing dependency).
    pub cargo_error: String,
}

impl Build {
    /// The first errors as a learner reads them.
    pub fn error_text(&self, max_lines: usize) -> String {
        let text = if self.errors.is_empty() {
            self.cargo_error.clone()
        } else {
            self.errors.iter().map(|e| e.rendered.trim_end()).collect::<Vec<_>>().join("\n\n")
        };
        text.lines().take(max_lines).collect::<Vec<_>>().join("\n")
    }
}

/// Builds every test executable of `krate` into the shared target directory (`cargo test --no-run`).
pub fn build_tests(krate: &ScratchCrate) -> anyhow::Result<Build> {
    let mut command = cargo::cargo();
    command
        .args(["test", "--no-run", "--message-format=json", "--color", "never", "--manifest-path"])
        .arg(krate.dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir());
    // kit builds its Docker client only when asked: the tests would otherwise say which flag to add.
    if std::env::var(kit::env::BROKER_ENV).as_deref() == Ok("testcontainers") {
        command.args(["--features", "kit/testcontainers"]);
    }
    let output = command.stdin(Stdio::null()).output().context("running cargo")?;
    let mut build =
        Build { ok: output.status.success(), executables: Vec::new(), errors: Vec::new(), cargo_error: String::new() };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        match message["reason"].as_str() {
            Some("compiler-artifact") if message["profile"]["test"] == true => {
                if let Some(path) = message["executable"].as_str() {
                    build.executables.push(TestExecutable {
                        target: message["target"]["name"].as_str().unwrap_or_default().to_string(),
                        path: PathBuf::from(path),
                    });
                }
            }
            Some("compiler-message") if message["message"]["level"] == "error" => {
                let at = message["message"]["spans"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| s["is_primary"] == true)
                    .map(|s| {
                        let file = s["file_name"].as_str().unwrap_or_default();
                        let file = Path::new(file).strip_prefix(&krate.dir).unwrap_or(Path::new(file));
                        (file.display().to_string(), s["line_start"].as_u64().unwrap_or(0) as usize)
                    })
                    .collect();
                let rendered = message["message"]["rendered"].as_str().unwrap_or_default().to_string();
                build.errors.push(CompileError { rendered, at });
            }
            _ => {}
        }
    }
    if !build.ok {
        let stderr = String::from_utf8_lossy(&output.stderr);
        build.cargo_error =
            stderr.lines().filter(|l| l.starts_with("error") || l.starts_with("  ")).collect::<Vec<_>>().join("\n");
    }
    build.executables.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(build)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = r#"
[workspace]
resolver = "3"
members = ["kit"]
[workspace.package]
edition = "2024"
license = "MIT"
[workspace.dependencies]
kit = { path = "kit" }
tokio = { version = "1", features = ["full"] }
anyhow = "1"
[profile.dev]
debug = "line-tables-only"
"#;

    const MEMBER: &str = r#"
[package]
name = "solution-05"
version = "0.1.0"
edition.workspace = true
license.workspace = true
default-run = "solution-05"

[dependencies]
kit.workspace = true
anyhow.workspace = true
tokio = { workspace = true, features = ["test-util"] }

[dev-dependencies]
insta = "1"
"#;

    #[test]
    fn a_member_manifest_becomes_a_workspace_of_its_own() {
        let root: Table = toml::from_str(ROOT).unwrap();
        let text =
            standalone_manifest_with(MEMBER, "proof-05", "solution_05", false, &root, Path::new("/work/book")).unwrap();
        let manifest: Table = toml::from_str(&text).unwrap();
        assert_eq!(manifest["package"]["name"].as_str(), Some("proof-05"));
        assert_eq!(manifest["package"]["edition"].as_str(), Some("2024"));
        assert_eq!(manifest["package"]["license"].as_str(), Some("MIT"));
        assert!(manifest["package"].get("default-run").is_none());
        assert_eq!(manifest["package"]["autobins"].as_bool(), Some(false));
        assert_eq!(manifest["lib"]["name"].as_str(), Some("solution_05"));
        assert_eq!(manifest["lib"]["test"].as_bool(), Some(false), "no unit tests: no executable for them");
        assert_eq!(manifest["dependencies"]["kit"]["path"].as_str(), Some("/work/book/kit"));
        assert_eq!(manifest["dependencies"]["anyhow"]["version"].as_str(), Some("1"));
        let features: Vec<_> = manifest["dependencies"]["tokio"]["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert_eq!(features, ["full", "test-util"]);
        assert_eq!(manifest["dev-dependencies"]["insta"].as_str(), Some("1"));
        assert_eq!(manifest["workspace"]["resolver"].as_str(), Some("3"));
        assert_eq!(manifest["profile"]["dev"]["debug"].as_str(), Some("line-tables-only"));
    }
}

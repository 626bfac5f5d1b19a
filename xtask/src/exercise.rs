//! Turning a solution into an exercise: the functions marked `// EXERCISE:` lose their bodies.
//!
//! The file is parsed with syn (proc-macro2's `span-locations` gives every token its line and column), so a
//! marked function is found by *position* — the first function after the marker — never by name: a file may
//! hold two `owned` methods, or `fn` inside a string. Only the byte range of a marked body (`{` to `}`) and the
//! marker's own lines are replaced; every other byte of the file stays as written (a parser-printer round trip
//! would lose comments and layout).
//!
//! The same machinery writes the three forms a body takes: the exercise's `todo!()` (sync), a lazy answer, and
//! the proofs' *dispatch*, which holds the solution, the `todo!()` and every lazy answer of a function and picks
//! one at run time from `WORKBOOK_VARIANT` (see `test.rs`), so one build proves them all.

use std::ops::Range;
use std::str::FromStr;

use anyhow::{Context, bail};
use proc_macro2::{LineColumn, TokenStream, TokenTree};
use quote::ToTokens;
use syn::visit::Visit;

const MARKER: &str = "// EXERCISE:";

/// The variable a proof build reads to pick each marked function's body: `solution` (also the default),
/// `todo`, or `lazy-K` (the K-th `[[lazy]]` of lesson.toml, counting from 1).
pub const VARIANT_ENV: &str = "WORKBOOK_VARIANT";

/// One marked function found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exercise {
    pub function: String,
    pub instruction: Vec<String>,
}

/// A marked function and where its pieces are in the file.
struct Marked {
    exercise: Exercise,
    /// The marker's comment lines, newline included: removed from every generated form.
    marker: Range<usize>,
    /// From the body's `{` to just after its `}`.
    body: Range<usize>,
    /// The indentation of the line the body opens on.
    indent: String,
}

/// A lazy answer aimed at one function: its variant name (`lazy-K`) and body.
#[derive(Debug, Clone)]
pub struct LazyArm {
    pub variant: String,
    pub function: String,
    pub body: String,
}

/// The `todo!()` an exercise body ends with; its message starts `lesson NN:` (what the unsolved proof looks for).
pub fn todo_macro(lesson_number: &str, function: &str) -> String {
    format!(
        "todo!(\"lesson {lesson_number}: write `{function}` (the TODO above says what it must do; \
         `cargo xtask hint {lesson_number}` helps)\")"
    )
}

/// The exercise version of `source`: markers removed, marked bodies replaced by a TODO and `todo!()`.
pub fn make_exercise(source: &str, lesson_number: &str) -> anyhow::Result<(String, Vec<Exercise>)> {
    rewrite(source, |exercise, _, indent| {
        let inner = format!("{indent}    ");
        let mut body = String::from("{\n");
        for (i, line) in exercise.instruction.iter().enumerate() {
            let lead = if i == 0 { format!("TODO(lesson {lesson_number}): ") } else { String::new() };
            body.push_str(format!("{inner}// {lead}{line}").trim_end());
            body.push('\n');
        }
        body.push_str(&format!("{inner}{}\n{indent}}}", todo_macro(lesson_number, &exercise.function)));
        body
    })
}

/// `source` with the markers removed and the body of the marked `function` replaced by `{ new_body }`; the
/// other marked functions keep their solution. The flag says whether `function` is marked in this file.
pub fn replace_body(source: &str, function: &str, new_body: &str) -> anyhow::Result<(String, bool)> {
    let mut found = false;
    let (text, _) = rewrite(source, |exercise, original, indent| {
        if exercise.function != function {
            return original.to_string();
        }
        found = true;
        format!("{{\n{indent}    {}\n{indent}}}", new_body.trim())
    })?;
    Ok((text, found))
}

#[cfg(test)]
fn with_body(source: &str, function: &str, new_body: &str) -> anyhow::Result<String> {
    let (text, found) = replace_body(source, function, new_body)?;
    anyhow::ensure!(found, "no marked function `{function}`");
    Ok(text)
}

/// `source` with markers removed and each marked body replaced by a dispatch on `WORKBOOK_VARIANT`: `todo` runs
/// the exercise's `todo!()`, each `lazy-K` aimed at this function runs its lazy body, anything else (unset,
/// `solution`) the solution's body. Returns the text and the lazy arms it placed (by variant).
pub fn dispatch(source: &str, lesson_number: &str, lazy: &[LazyArm]) -> anyhow::Result<(String, Vec<String>)> {
    let mut placed = Vec::new();
    let (text, _) = rewrite(source, |exercise, original, indent| {
        let arm = format!("{indent}        ");
        let mut body = format!("{{\n{indent}    match ::std::env::var(\"{VARIANT_ENV}\").as_deref() {{\n");
        body.push_str(&format!("{arm}Ok(\"todo\") => {},\n", todo_macro(lesson_number, &exercise.function)));
        for answer in lazy.iter().filter(|a| a.function == exercise.function) {
            placed.push(answer.variant.clone());
            body.push_str(&format!(
                "{arm}Ok(\"{}\") => {{\n{arm}    {}\n{arm}}}\n",
                answer.variant,
                answer.body.trim()
            ));
        }
        body.push_str(&format!("{arm}_ => {original}\n{indent}    }}\n{indent}}}"));
        body
    })?;
    Ok((text, placed))
}

/// Removes the markers and replaces each marked body (`{ … }`) by what `body_for(exercise, original body,
/// indent)` returns. Returns the text and the exercises found, in file order.
pub fn rewrite(
    source: &str,
    mut body_for: impl FnMut(&Exercise, &str, &str) -> String,
) -> anyhow::Result<(String, Vec<Exercise>)> {
    let marked = locate(source)?;
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    for m in &marked {
        edits.push((m.marker.clone(), String::new()));
        edits.push((m.body.clone(), body_for(&m.exercise, &source[m.body.clone()], &m.indent)));
    }
    edits.sort_by_key(|(range, _)| std::cmp::Reverse(range.start));
    let mut text = source.to_string();
    for (range, replacement) in edits {
        text.replace_range(range, &replacement);
    }
    Ok((text, marked.into_iter().map(|m| m.exercise).collect()))
}

/// Every marked function of `source`, in file order.
fn locate(source: &str) -> anyhow::Result<Vec<Marked>> {
    let lines = LineIndex::new(source);
    let markers = marker_blocks(source)?;
    if markers.is_empty() {
        return Ok(Vec::new());
    }
    let file = syn::parse_file(source).context("parsing the file as Rust")?;
    let mut functions = Functions::default();
    functions.visit_file(&file);
    let mut found: Vec<Marked> = Vec::new();
    for (range, instruction) in markers {
        let function = functions
            .all
            .iter()
            .map(|f| (lines.offset(f.start), f))
            .filter(|(start, _)| *start >= range.end)
            .min_by_key(|(start, _)| *start);
        let Some((start, function)) = function else {
            bail!("the `{MARKER}` marker on line {} is not followed by a function", lines.line_of(range.start));
        };
        // Only comments (anchors) and blank lines may sit between the marker and the function's first
        // attribute or doc comment; anything else means the marker is not *right before* a function.
        let between = &source[range.end..start];
        if let Some(stray) = between.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with("//")) {
            bail!(
                "the `{MARKER}` marker on line {} is not right before a function (found `{stray}` first)",
                lines.line_of(range.start)
            );
        }
        if found.iter().any(|m| m.body.start == lines.offset(function.open)) {
            bail!("two `{MARKER}` markers before the function `{}`", function.name);
        }
        let open = lines.offset(function.open);
        let close = lines.offset(function.close);
        found.push(Marked {
            exercise: Exercise { function: function.name.clone(), instruction },
            marker: range,
            body: open..close + 1,
            indent: lines.indent_at(source, open),
        });
    }
    Ok(found)
}

/// The marker blocks of `source`: the byte range of their lines and the instruction they carry. A marker is a
/// line comment starting `// EXERCISE:`, continued by the plain `//` lines under it (not doc comments, not
/// anchors). Text inside a string literal that looks like a marker is not one.
fn marker_blocks(source: &str) -> anyhow::Result<Vec<(Range<usize>, Vec<String>)>> {
    let literals = literal_ranges(source)?;
    let mut blocks = Vec::new();
    let mut offset = 0;
    let mut lines = source.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        let start = offset;
        offset += line.len();
        let trimmed = line.trim();
        let Some(first) = trimmed.strip_prefix(MARKER) else { continue };
        if literals.iter().any(|l| l.contains(&start)) {
            continue;
        }
        let mut instruction = vec![first.trim().to_string()];
        while let Some(next) = lines.peek() {
            let t = next.trim();
            if t.starts_with("//") && !t.starts_with("///") && !t.starts_with("//!") && !t.contains("ANCHOR") {
                instruction.push(t.trim_start_matches("//").trim().to_string());
                offset += next.len();
                lines.next();
            } else {
                break;
            }
        }
        blocks.push((start..offset, instruction));
    }
    Ok(blocks)
}

/// Byte ranges of every literal token (strings, chars, numbers) in `source`.
fn literal_ranges(source: &str) -> anyhow::Result<Vec<Range<usize>>> {
    fn collect(stream: TokenStream, lines: &LineIndex, out: &mut Vec<Range<usize>>) {
        for tree in stream {
            match tree {
                TokenTree::Literal(literal) => {
                    let span = literal.span();
                    out.push(lines.offset(span.start())..lines.offset(span.end()));
                }
                TokenTree::Group(group) => collect(group.stream(), lines, out),
                _ => {}
            }
        }
    }
    let lines = LineIndex::new(source);
    let stream = TokenStream::from_str(source).map_err(|e| anyhow::anyhow!("lexing the file: {e}"))?;
    let mut out = Vec::new();
    collect(stream, &lines, &mut out);
    Ok(out)
}

/// A function with a body, as the parser saw it.
struct FoundFn {
    name: String,
    /// Its first token: the first attribute or doc comment, else `pub`/`async`/`fn`.
    start: LineColumn,
    open: LineColumn,
    close: LineColumn,
}

/// Collects every function with a body: free functions, methods, trait defaults, nested ones.
#[derive(Default)]
struct Functions {
    all: Vec<FoundFn>,
}

impl Functions {
    fn add(&mut self, item: &impl ToTokens, name: &syn::Ident, block: &syn::Block) {
        let Some(first) = item.to_token_stream().into_iter().next() else { return };
        self.all.push(FoundFn {
            name: name.to_string(),
            start: first.span().start(),
            open: block.brace_token.span.open().start(),
            close: block.brace_token.span.close().start(),
        });
    }
}

impl<'ast> Visit<'ast> for Functions {
    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        self.add(item, &item.sig.ident, &item.block);
        syn::visit::visit_item_fn(self, item);
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        self.add(item, &item.sig.ident, &item.block);
        syn::visit::visit_impl_item_fn(self, item);
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let Some(block) = &item.default {
            self.add(item, &item.sig.ident, block);
        }
        syn::visit::visit_trait_item_fn(self, item);
    }
}

/// Line starts of a text, to turn proc-macro2's line (from 1) and column (in chars, from 0) into byte offsets.
struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        LineIndex { text, starts }
    }

    fn offset(&self, at: LineColumn) -> usize {
        let start = self.starts.get(at.line.saturating_sub(1)).copied().unwrap_or(self.text.len());
        let line = &self.text[start..];
        start + line.char_indices().nth(at.column).map_or(line.len(), |(i, _)| i)
    }

    fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }

    fn indent_at(&self, text: &str, offset: usize) -> String {
        let start = self.starts[self.line_of(offset) - 1];
        text[start..].chars().take_while(|c| *c == ' ').collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOLUTION: &str = r##"//! A lesson.
use std::fmt;

// EXERCISE: Return the answer.
// Not 41, not 43.
// ANCHOR: answer
/// The answer.
pub fn answer(x: u32) -> u32 {
    let s = "a { brace in a string }";
    let c = '{';
    let r = r#"} raw "# ;
    /* a } in a comment */
    if x > 0 { 42 } else { 42 }
}
// ANCHOR_END: answer

pub fn untouched<'a>(s: &'a str) -> &'a str {
    s
}
"##;

    #[test]
    fn a_marked_body_becomes_a_todo_and_the_rest_stays() {
        let (exercise, marked) = make_exercise(SOLUTION, "07").unwrap();
        assert_eq!(
            marked,
            [Exercise {
                function: "answer".into(),
                instruction: vec!["Return the answer.".into(), "Not 41, not 43.".into()]
            }]
        );
        assert!(!exercise.contains("EXERCISE"), "markers are removed");
        assert!(exercise.contains("// ANCHOR: answer\n/// The answer.\npub fn answer(x: u32) -> u32 {\n    // TODO(lesson 07): Return the answer.\n    // Not 41, not 43.\n    todo!("));
        assert!(exercise.contains("\n}\n// ANCHOR_END: answer\n"));
        assert!(!exercise.contains("42"), "the whole body is gone");
        assert!(exercise.contains("pub fn untouched<'a>(s: &'a str) -> &'a str {\n    s\n}"));
    }

    #[test]
    fn a_lazy_body_replaces_only_its_function() {
        let lazy = with_body(SOLUTION, "answer", "0").unwrap();
        assert!(lazy.contains("pub fn answer(x: u32) -> u32 {\n    0\n}"));
        assert!(lazy.contains("    s\n}"));
        assert!(!lazy.contains("EXERCISE"));
    }

    #[test]
    fn a_marker_without_a_function_is_an_error() {
        assert!(make_exercise("// EXERCISE: nothing follows\n", "01").is_err());
        assert!(make_exercise("// EXERCISE: a struct first\npub struct S;\npub fn f() {}\n", "01").is_err());
        assert!(with_body(SOLUTION, "missing", "0").is_err());
    }

    /// Two methods share a name with the marked one's neighbours: the marker's position decides.
    const SAME_NAMES: &str = "pub struct A;
impl A {
    pub fn owned(&self) -> u8 {
        1
    }
}

pub struct B;
impl B {
    // EXERCISE: Return two.
    pub fn owned(&self) -> u8 {
        2
    }
}
";

    #[test]
    fn the_function_after_the_marker_is_the_one_replaced_even_when_names_repeat() {
        let (exercise, marked) = make_exercise(SAME_NAMES, "04").unwrap();
        assert_eq!(marked.len(), 1);
        assert!(exercise.contains("impl A {\n    pub fn owned(&self) -> u8 {\n        1\n    }"), "{exercise}");
        assert!(
            exercise.contains("impl B {\n    pub fn owned(&self) -> u8 {\n        // TODO(lesson 04): Return two.")
        );
        assert!(!exercise.contains("        2\n"));
    }

    #[test]
    fn fn_inside_a_string_is_not_a_function() {
        let source = "// EXERCISE: Greet.\npub fn greet() -> &'static str {\n    \"fn fake() { }\"\n}\n\
                      pub const S: &str = \"\n// EXERCISE: not a marker, a string\n\";\n";
        let (exercise, marked) = make_exercise(source, "01").unwrap();
        assert_eq!(marked.len(), 1);
        assert_eq!(marked[0].function, "greet");
        assert!(!exercise.contains("fn fake"));
        assert!(exercise.contains("// EXERCISE: not a marker, a string\n"), "the string is left alone");
    }

    #[test]
    fn non_ascii_in_comments_and_strings_keeps_every_byte() {
        let source = "/* Grüße — ünïcödé } { */\n// EXERCISE: Say héllo — politely.\n/// Ça va?\n\
                      pub fn hello() -> String {\n    /* ☕ } */ \"héllo 👋\".to_string()\n}\n// fin ✓\n";
        let (exercise, marked) = make_exercise(source, "02").unwrap();
        assert_eq!(marked[0].instruction, ["Say héllo — politely."]);
        assert!(exercise.starts_with("/* Grüße — ünïcödé } { */\n/// Ça va?\npub fn hello() -> String {\n"));
        assert!(exercise.ends_with("\")\n}\n// fin ✓\n"), "{exercise}");
        let lazy = with_body(source, "hello", "String::new()").unwrap();
        assert_eq!(
            lazy,
            "/* Grüße — ünïcödé } { */\n/// Ça va?\npub fn hello() -> String {\n    String::new()\n}\n// fin ✓\n"
        );
    }

    #[test]
    fn a_dispatch_holds_every_variant_of_a_body() {
        let lazy = [LazyArm { variant: "lazy-2".into(), function: "answer".into(), body: "0".into() }];
        let (text, placed) = dispatch(SOLUTION, "07", &lazy).unwrap();
        assert_eq!(placed, ["lazy-2"]);
        assert!(text.contains("match ::std::env::var(\"WORKBOOK_VARIANT\").as_deref() {"), "{text}");
        assert!(text.contains("Ok(\"todo\") => todo!(\"lesson 07: write `answer`"));
        assert!(text.contains("Ok(\"lazy-2\") => {\n            0\n        }"));
        assert!(
            text.contains("_ => {\n    let s = \"a { brace in a string }\";"),
            "the solution's body is the default"
        );
        assert!(!text.contains("EXERCISE"));
        syn::parse_file(&text).expect("the dispatch is valid Rust");
    }
}

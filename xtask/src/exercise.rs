//! Turning a solution into an exercise: the functions marked `// EXERCISE:` lose their bodies.
//!
//! Rust source is only scanned, not parsed: the marker names the next `fn`, whose body runs from its first `{`
//! to the matching `}`. The scanner skips strings, raw strings, chars and comments so braces inside them do not
//! count. That is all the syntax an exercise body needs, and it keeps every other byte of the file as written
//! (a parser-printer round trip would lose comments and layout).

use anyhow::{Context, bail};

const MARKER: &str = "// EXERCISE:";

/// One marked function found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exercise {
    pub function: String,
    pub instruction: Vec<String>,
}

/// The exercise version of `source`: markers removed, marked bodies replaced by a TODO and `todo!()`.
pub fn make_exercise(source: &str, lesson_number: &str) -> anyhow::Result<(String, Vec<Exercise>)> {
    let (unmarked, marked) = strip_markers(source)?;
    let mut text = unmarked;
    for exercise in marked.iter().rev() {
        let (open, close) = body_range(&text, &exercise.function)?;
        let indent = indent_of_line_at(&text, open);
        let inner = format!("{indent}    ");
        let mut body = String::from("{\n");
        for (i, line) in exercise.instruction.iter().enumerate() {
            let lead = if i == 0 { format!("TODO(lesson {lesson_number}): ") } else { String::new() };
            body.push_str(format!("{inner}// {lead}{line}").trim_end());
            body.push('\n');
        }
        body.push_str(&format!(
            "{inner}todo!(\"lesson {lesson_number}: write `{}` (the TODO above says what it must do; \
             `cargo xtask hint {lesson_number}` helps)\")\n{indent}}}",
            exercise.function
        ));
        text.replace_range(open..=close, &body);
    }
    Ok((text, marked))
}

/// `source` with the markers removed and the body of `function` replaced by `{ new_body }` (lazy answers).
pub fn with_body(source: &str, function: &str, new_body: &str) -> anyhow::Result<String> {
    let (mut text, _) = strip_markers(source)?;
    let (open, close) = body_range(&text, function)?;
    let indent = indent_of_line_at(&text, open);
    text.replace_range(open..=close, &format!("{{\n{indent}    {}\n{indent}}}", new_body.trim()));
    Ok(text)
}

/// Removes every marker block and returns the text with the marked functions' names and instructions.
fn strip_markers(source: &str) -> anyhow::Result<(String, Vec<Exercise>)> {
    let mut out = String::with_capacity(source.len());
    let mut marked = Vec::new();
    let mut lines = source.split_inclusive('\n').peekable();
    let mut pending: Option<Vec<String>> = None;
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if let Some(first) = trimmed.strip_prefix(MARKER) {
            let mut instruction = vec![first.trim().to_string()];
            while let Some(next) = lines.peek() {
                let t = next.trim();
                if t.starts_with("//") && !t.starts_with("///") && !t.starts_with("//!") && !t.contains("ANCHOR") {
                    instruction.push(t.trim_start_matches("//").trim().to_string());
                    lines.next();
                } else {
                    break;
                }
            }
            if pending.replace(instruction).is_some() {
                bail!("two `{MARKER}` markers without a function between them");
            }
            continue;
        }
        if let Some(instruction) = pending.take() {
            if let Some(function) = fn_name(trimmed) {
                marked.push(Exercise { function, instruction });
            } else {
                pending = Some(instruction); // doc comments, attributes and anchors may sit in between
            }
        }
        out.push_str(line);
    }
    if pending.is_some() {
        bail!("a `{MARKER}` marker is not followed by a function");
    }
    Ok((out, marked))
}

/// The name of the function a line declares, if it declares one.
fn fn_name(line: &str) -> Option<String> {
    if line.starts_with("//") || line.starts_with('#') {
        return None;
    }
    let mut words = line.split(|c: char| c.is_whitespace() || c == '(' || c == '<');
    while let Some(word) = words.next() {
        if word == "fn" {
            return words.next().map(str::to_string).filter(|n| !n.is_empty());
        }
    }
    None
}

/// Byte positions of the `{` and `}` around the body of `function`.
fn body_range(text: &str, function: &str) -> anyhow::Result<(usize, usize)> {
    let mut offset = 0;
    let start = text
        .split_inclusive('\n')
        .find_map(|line| {
            let at = offset;
            offset += line.len();
            (fn_name(line.trim()).as_deref() == Some(function)).then_some(at)
        })
        .with_context(|| format!("no function `{function}`"))?;
    let open = scan(text, start, |c| c == '{').with_context(|| format!("`{function}` has no body"))?;
    let mut depth = 0usize;
    let close = scan(text, open, |c| {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        depth == 0
    })
    .with_context(|| format!("the body of `{function}` is not closed"))?;
    Ok((open, close))
}

/// Position of the first code character from `from` (outside comments, strings and chars) where `hit` says yes.
fn scan(text: &str, from: usize, mut hit: impl FnMut(char) -> bool) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            let mut j = i;
            while j < bytes.len() {
                if text[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if text[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            i = j;
        } else if let Some(len) = raw_string_len(rest) {
            i += len;
        } else if rest.starts_with('"') || rest.starts_with("b\"") {
            let mut j = i + rest.find('"').unwrap() + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            i = j + 1;
        } else if rest.starts_with('\'') {
            i += char_literal_len(rest).unwrap_or(1); // a lifetime's quote is just skipped
        } else {
            let c = rest.chars().next().unwrap();
            if hit(c) {
                return Some(i);
            }
            i += c.len_utf8();
        }
    }
    None
}

/// Length of a raw string literal (`r"…"`, `r#"…"#`, `br#"…"#`) at the start of `rest`.
fn raw_string_len(rest: &str) -> Option<usize> {
    let after_prefix = rest.strip_prefix("br").or_else(|| rest.strip_prefix('r'))?;
    let hashes = after_prefix.bytes().take_while(|&b| b == b'#').count();
    let body = after_prefix[hashes..].strip_prefix('"')?;
    let closing = format!("\"{}", "#".repeat(hashes));
    let end = body.find(&closing)?;
    Some(rest.len() - body.len() + end + closing.len())
}

/// Length of a char literal (`'x'`, `'\n'`, `'\u{1F600}'`) at the start of `rest`; `None` for a lifetime.
fn char_literal_len(rest: &str) -> Option<usize> {
    let mut chars = rest.char_indices().skip(1);
    let (_, first) = chars.next()?;
    if first == '\\' {
        return rest[2..].find('\'').map(|p| p + 3);
    }
    let (at, second) = chars.next()?;
    (second == '\'').then_some(at + 1)
}

fn indent_of_line_at(text: &str, pos: usize) -> String {
    let line_start = text[..pos].rfind('\n').map_or(0, |p| p + 1);
    text[line_start..].chars().take_while(|c| *c == ' ').collect()
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
        assert!(with_body(SOLUTION, "missing", "0").is_err());
    }
}

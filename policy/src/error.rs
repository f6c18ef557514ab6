//! Where things are in the policy files, and what is wrong with them.
//!
//! Owns [`Loc`] (a file, line and column), [`Located`] (a value with the
//! place it was written), [`Diagnostic`] (an error or warning naming place
//! and key), the conversion of TOML parser errors into diagnostics (byte
//! offset → line and column, and the dotted key the offset falls in), and
//! the did-you-mean for unknown keys.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A place in a policy file: 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Loc {
    pub file: Arc<PathBuf>,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// A value together with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub loc: Loc,
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The policy is used, but probably not as meant.
    Warning,
    /// The policy is refused.
    Error,
}

/// One finding about a policy: `FILE:LINE:COLUMN: KEY: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Where; `None` when the problem is a whole file (it cannot be read).
    pub loc: Option<Loc>,
    /// The dotted key (`users.alice.memory`), empty when none is known.
    pub key: String,
    pub message: String,
}

impl Diagnostic {
    pub(crate) fn error(
        loc: Option<Loc>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            loc,
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn warning(
        loc: Option<Loc>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            loc,
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.loc {
            write!(f, "{loc}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Maps byte offsets of one file to lines and columns.
#[derive(Debug)]
pub(crate) struct Source<'a> {
    pub file: Arc<PathBuf>,
    pub text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    pub(crate) fn new(text: &'a str, file: &Path) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source {
            file: Arc::new(file.to_path_buf()),
            text,
            line_starts,
        }
    }

    /// The place of byte `offset` (clamped to the text).
    pub(crate) fn loc(&self, offset: usize) -> Loc {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Loc {
            file: self.file.clone(),
            line: (line + 1) as u32,
            column: column as u32,
        }
    }

    pub(crate) fn locate<T>(&self, spanned: toml::Spanned<T>) -> Located<T> {
        let loc = self.loc(spanned.span().start);
        Located {
            value: spanned.into_inner(),
            loc,
        }
    }

    /// Turns a TOML/serde error into a diagnostic naming place and key.
    pub(crate) fn toml_error(&self, e: &toml::de::Error) -> Diagnostic {
        let span = e.span();
        let loc = span
            .as_ref()
            .map_or_else(|| self.loc(0), |s| self.loc(s.start));
        let mut key = span.map(|s| key_at(self.text, s)).unwrap_or_default();
        let raw = e.message().trim_end();
        let message = match unknown_field(raw) {
            Some((name, expected)) => {
                // The span of an unknown key is the key itself: drop it from the path.
                if key.rsplit('.').next() == Some(name.as_str()) {
                    let cut = key.len() - name.len();
                    key.truncate(cut.saturating_sub(1));
                }
                unknown_key_message(&name, &expected)
            }
            // The parser's messages can span lines ("invalid table header\nexpected ..."): one line each.
            None => raw
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(": "),
        };
        Diagnostic::error(Some(loc), key, message)
    }
}

/// `unknown key "memroy" (did you mean "memory"?)`
pub(crate) fn unknown_key_message(name: &str, known: &[String]) -> String {
    match did_you_mean(name, known.iter().map(String::as_str)) {
        Some(s) => format!("unknown key \"{name}\" (did you mean \"{s}\"?)"),
        None if known.is_empty() => format!("unknown key \"{name}\""),
        None => format!("unknown key \"{name}\" (known keys: {})", known.join(", ")),
    }
}

/// Parses serde's "unknown field `x`, expected one of `a`, `b`" (or
/// "expected `a`", "there are no fields").
fn unknown_field(msg: &str) -> Option<(String, Vec<String>)> {
    let rest = msg.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    let name = rest[..end].to_string();
    let expected = rest[end + 1..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((name, expected))
}

/// The closest known word to `word`, if close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    known
        .into_iter()
        .map(|k| (edit_distance(word, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance (with adjacent transpositions counted once).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev2: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(prev2[j - 2] + 1);
            }
        }
        prev2 = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}

/// The dotted key path (`users.alice.mounts[0].target`) whose key or value
/// holds byte `span.start`; empty if none does (a syntax error).
fn key_at(text: &str, span: Range<usize>) -> String {
    let Ok(doc) = toml_edit::ImDocument::parse(text) else {
        return String::new();
    };
    let mut best = String::new();
    walk_table(doc.as_table(), &mut String::new(), span.start, &mut best);
    best
}

fn contains(span: Option<Range<usize>>, at: usize) -> bool {
    span.is_some_and(|s| s.start <= at && at < s.end.max(s.start + 1))
}

fn walk_table(table: &toml_edit::Table, path: &mut String, at: usize, best: &mut String) {
    for (name, item) in table.iter() {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(name);
        if let Some((key, _)) = table.get_key_value(name) {
            if contains(key.span(), at) {
                *best = path.clone();
            }
        }
        walk_item(item, path, at, best);
        path.truncate(len);
    }
}

fn walk_item(item: &toml_edit::Item, path: &mut String, at: usize, best: &mut String) {
    match item {
        toml_edit::Item::Table(t) => walk_table(t, path, at, best),
        toml_edit::Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                if contains(t.span(), at) {
                    *best = path.clone();
                }
                walk_table(t, path, at, best);
                path.truncate(len);
            }
        }
        toml_edit::Item::Value(v) => walk_value(v, path, at, best),
        toml_edit::Item::None => {}
    }
}

fn walk_value(value: &toml_edit::Value, path: &mut String, at: usize, best: &mut String) {
    if contains(value.span(), at) {
        *best = path.clone();
    }
    match value {
        toml_edit::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk_value(v, path, at, best);
                path.truncate(len);
            }
        }
        toml_edit::Value::InlineTable(t) => {
            for (name, v) in t.iter() {
                let len = path.len();
                path.push('.');
                path.push_str(name);
                if let Some((key, _)) = t.get_key_value(name) {
                    if contains(key.span(), at) {
                        *best = path.clone();
                    }
                }
                walk_value(v, path, at, best);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte offsets map to 1-based lines and character columns.
    #[test]
    fn offsets_map_to_lines_and_columns() {
        let s = Source::new("a = 1\nbé = 2\n", Path::new("f.toml"));
        assert_eq!(s.loc(0).to_string(), "f.toml:1:1");
        assert_eq!(s.loc(6).to_string(), "f.toml:2:1");
        assert_eq!(s.loc(10).to_string(), "f.toml:2:4");
    }

    /// A one-letter typo or a swap of two letters finds the key meant; nonsense finds none.
    #[test]
    fn did_you_mean_finds_close_keys() {
        let known = ["memory", "memory_high", "pids", "shell"];
        assert_eq!(did_you_mean("memroy", known), Some("memory"));
        assert_eq!(did_you_mean("pid", known), Some("pids"));
        assert_eq!(did_you_mean("colour", known), None);
    }

    /// The key path finder names keys in tables, inline tables and arrays.
    #[test]
    fn key_at_names_nested_keys() {
        let text =
            "[users.alice]\nmemory = \"1X\"\nmounts = [ { source = \"/a\", target = \"/b\" } ]\n";
        let at = text.find("\"1X\"").unwrap();
        assert_eq!(key_at(text, at..at + 4), "users.alice.memory");
        let at = text.find("\"/b\"").unwrap();
        assert_eq!(key_at(text, at..at + 4), "users.alice.mounts[0].target");
    }
}

//! Config problems and where they are: `FILE:LINE:COL: message`.
//!
//! Owns the error types that `Config::load` returns and the mapping from a byte offset in a
//! file to a 1-based line and column. It never stops at the first problem: validation pushes
//! every problem it finds into a [`Problems`] list, and the list is sorted before it is
//! returned.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One thing wrong with a config or tuning file, and where it is.
///
/// Displays as `FILE:LINE:COL: message`, the format editors and `keygate check` use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}:{}: {}", file.display(), line, col, message)]
pub struct ConfigProblem {
    /// The file the problem is in, as it was named to the loader.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters (not bytes) from the start of the line.
    pub col: usize,
    /// What is wrong, in one line.
    pub message: String,
}

/// Every problem found in a config, sorted by file and position.
///
/// Displays one problem per line. Never empty when returned by the loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl ConfigErrors {
    /// A single problem at line 1, column 1 of `file`; used when the file cannot be read.
    pub fn whole_file(file: &Path, message: impl Into<String>) -> ConfigErrors {
        ConfigErrors(vec![ConfigProblem {
            file: file.to_path_buf(),
            line: 1,
            col: 1,
            message: message.into(),
        }])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Maps byte offsets in one file's text to 1-based lines and columns.
pub(crate) struct SourceMap<'a> {
    text: &'a str,
    /// Byte offset at which each line starts; always holds at least `0`.
    line_starts: Vec<usize>,
}

impl<'a> SourceMap<'a> {
    pub(crate) fn new(text: &'a str) -> SourceMap<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceMap { text, line_starts }
    }

    /// Line and column of `offset`, both 1-based. An offset past the end, or inside a
    /// multi-byte character, is moved back to the nearest character boundary.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }

        // The line holding `offset` is the last one starting at or before it.
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        let col = self.text[start..offset].chars().count() + 1;
        (line, col)
    }
}

/// Problems collected while validating one file.
pub(crate) struct Problems<'a> {
    file: PathBuf,
    map: SourceMap<'a>,
    list: Vec<ConfigProblem>,
}

impl<'a> Problems<'a> {
    pub(crate) fn new(file: &Path, text: &'a str) -> Problems<'a> {
        Problems {
            file: file.to_path_buf(),
            map: SourceMap::new(text),
            list: Vec::new(),
        }
    }

    /// Records a problem at the start of `span`.
    pub(crate) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = self.map.position(span.start);
        self.list.push(ConfigProblem {
            file: self.file.clone(),
            line,
            col,
            message: message.into(),
        });
    }

    /// The 1-based line holding `offset`, for messages that refer to an earlier value.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.map.position(offset).0
    }

    /// Records a TOML syntax or shape error, placed by the span the parser reported.
    pub(crate) fn toml(&mut self, err: &toml::de::Error) {
        let span = err.span().unwrap_or(0..0);
        let mut message = err.message().trim_end().replace('\n', "; ");
        // A type error quotes the value; for a secret written with the wrong type (a number,
        // say) that would put the secret in the log.
        if self.is_secret_value(span.start) {
            message = hide_quoted(&message);
        }
        self.at(span, message);
    }

    /// Whether the value at `offset` is assigned to a `secret*` key on its line.
    fn is_secret_value(&self, offset: usize) -> bool {
        let text = self.map.text;
        let before = text.get(..offset.min(text.len())).unwrap_or_default();
        let line = before.rsplit('\n').next().unwrap_or_default();
        line.split(['=', '{', ','])
            .rev()
            .nth(1)
            .is_some_and(|key| key.trim().trim_matches('"').starts_with("secret"))
    }

    /// Adds problems found in another file (the tuning file, say).
    pub(crate) fn extend(&mut self, other: ConfigErrors) {
        self.list.extend(other.0);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The problems in order: this file's first, each file's sorted by position.
    pub(crate) fn into_errors(self) -> ConfigErrors {
        let Problems { file, mut list, .. } = self;
        list.sort_by(|a, b| {
            let rank = |p: &ConfigProblem| p.file != file;
            (rank(a), &a.file, a.line, a.col).cmp(&(rank(b), &b.file, b.line, b.col))
        });
        ConfigErrors(list)
    }
}

/// `message` with every `quoted` part replaced by `(hidden)`.
fn hide_quoted(message: &str) -> String {
    message
        .split('`')
        .enumerate()
        .map(|(i, part)| if i % 2 == 1 { "(hidden)" } else { part })
        .collect::<Vec<_>>()
        .join("`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_chars() {
        let text = "ab\n\nxé = 1\nlast";
        let map = SourceMap::new(text);
        let cases = [
            (0, (1, 1)),
            (1, (1, 2)),
            (2, (1, 3)),
            (3, (2, 1)),
            (4, (3, 1)),
            (5, (3, 2)),
            // Offset 6 is inside 'é'; it moves back to the start of the character.
            (6, (3, 2)),
            (7, (3, 3)),
            (12, (4, 1)),
            (999, (4, 5)),
        ];
        for (offset, want) in cases {
            assert_eq!(map.position(offset), want, "offset {offset}");
        }
    }

    #[test]
    fn empty_text_is_line_one() {
        assert_eq!(SourceMap::new("").position(0), (1, 1));
        assert_eq!(SourceMap::new("").position(10), (1, 1));
    }

    #[test]
    fn problems_sort_by_position_main_file_first() {
        let text = "a\nb\nc\n";
        let mut problems = Problems::new(Path::new("main.toml"), text);
        problems.at(4..5, "third");
        problems.extend(ConfigErrors::whole_file(
            Path::new("a-tuning.toml"),
            "other",
        ));
        problems.at(0..1, "first");
        problems.at(2..3, "second");
        let shown = problems.into_errors().to_string();
        assert_eq!(
            shown,
            "main.toml:1:1: first\nmain.toml:2:1: second\nmain.toml:3:1: third\n\
             a-tuning.toml:1:1: other"
        );
    }
}

use std::fmt;
use std::ops::Range;

/// A configuration error: file, position (1-based) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{}:{}: {}", self.file, l, c, self.message),
            (Some(l), None) => write!(f, "{}:{}: {}", self.file, l, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column (in characters) of byte offset `pos` in `text`.
pub(crate) fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = text[line_start..pos].chars().count() + 1;
    (line, column)
}

/// Builds errors that carry file name and position.
pub(crate) struct Ctx<'a> {
    pub text: &'a str,
    pub origin: &'a str,
}

impl Ctx<'_> {
    pub fn at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (l, c) = line_col(self.text, span.start);
        ConfigError { file: self.origin.to_string(), line: Some(l), column: Some(c), message: message.into() }
    }

    pub fn nowhere(&self, message: impl Into<String>) -> ConfigError {
        ConfigError { file: self.origin.to_string(), line: None, column: None, message: message.into() }
    }

    pub fn toml(&self, e: toml::de::Error) -> ConfigError {
        let msg = e.message().trim_end().to_string();
        match e.span() {
            Some(s) => self.at(s, msg),
            None => self.nowhere(msg),
        }
    }
}

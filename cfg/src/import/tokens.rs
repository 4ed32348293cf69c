//! Tokenizer shared by the lvs.cf and keepalived.conf importers.

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tok {
    pub text: String,
    pub line: usize,
    pub quoted: bool,
}

impl Tok {
    pub fn is(&self, s: &str) -> bool {
        !self.quoted && self.text == s
    }
}

/// Split into tokens: words, quoted strings (with `\` escapes: `\n`, `\r`,
/// `\t`, `\\`, `\"`), and the punctuation in `punct` as separate tokens.
/// Text after an unquoted comment character is skipped.
pub(crate) fn tokenize(text: &str, comments: &[char], punct: &[char]) -> Result<Vec<Tok>, (usize, String)> {
    let mut out = Vec::new();
    // A byte order mark (editors on Windows) is not part of the first word.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let mut chars = line.chars().peekable();
        let mut cur = String::new();
        let flush = |cur: &mut String, out: &mut Vec<Tok>| {
            if !cur.is_empty() {
                out.push(Tok { text: std::mem::take(cur), line: n, quoted: false });
            }
        };
        while let Some(c) = chars.next() {
            if comments.contains(&c) {
                break;
            } else if c.is_whitespace() {
                flush(&mut cur, &mut out);
            } else if punct.contains(&c) {
                flush(&mut cur, &mut out);
                out.push(Tok { text: c.to_string(), line: n, quoted: false });
            } else if c == '"' && cur.is_empty() {
                let mut s = String::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next() {
                            Some('n') => s.push('\n'),
                            Some('r') => s.push('\r'),
                            Some('t') => s.push('\t'),
                            Some(o) => s.push(o),
                            None => s.push('\\'),
                        },
                        o => s.push(o),
                    }
                }
                if !closed {
                    return Err((n, "unterminated quoted string".into()));
                }
                out.push(Tok { text: s, line: n, quoted: true });
            } else {
                cur.push(c);
            }
        }
        flush(&mut cur, &mut out);
    }
    Ok(out)
}

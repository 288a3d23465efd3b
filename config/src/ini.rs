//! A small reader for the INI dialect chatmail.ini uses.
//!
//! Lines are `key = value` inside `[section]` headers; `#` and `;` start a
//! comment line; surrounding whitespace is trimmed. Continuation lines and
//! inline comments are not supported, because chatmail's own reader
//! (iniconfig) does not treat `#` inside a value as a comment either: a
//! value like `privacy_mail = a#b@example.org` keeps its `#`.

use std::fmt;

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub section: String,
    pub key: String,
    pub value: String,
    /// 1-based line number, for error messages.
    pub line: usize,
}

/// A line that is neither a section header, a comment, nor `key = value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub problem: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

/// Splits `text` into entries, in file order. Duplicate keys are reported as
/// an error: silently taking the first or the last one hides typos.
pub fn parse(text: &str) -> Result<Vec<Entry>, SyntaxError> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut section: Option<String> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(SyntaxError { line, problem: format!("section header {trimmed:?} lacks a closing ']'") });
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(SyntaxError { line, problem: "empty section name".into() });
            }
            section = Some(name.to_owned());
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err(SyntaxError {
                line,
                problem: format!("expected 'key = value', found {:?}", truncate(trimmed)),
            });
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(SyntaxError { line, problem: "missing key before '='".into() });
        }
        let Some(section) = section.clone() else {
            return Err(SyntaxError {
                line,
                problem: format!("key {key:?} appears before any [section] header"),
            });
        };
        if let Some(previous) = entries.iter().find(|e| e.section == section && e.key == key) {
            return Err(SyntaxError {
                line,
                problem: format!("key {key:?} is set twice in [{section}] (first on line {})", previous.line),
            });
        }
        entries.push(Entry { section, key: key.to_owned(), value: value.trim().to_owned(), line });
    }
    Ok(entries)
}

fn truncate(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(MAX).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sections_keys_and_values() {
        let text = "# comment\n; other comment\n\n[params]\nmail_domain = example.org\n  max = 1 \n[other]\nx=a = b\n";
        let entries = parse(text).expect("valid");
        let got: Vec<(&str, &str, &str, usize)> =
            entries.iter().map(|e| (e.section.as_str(), e.key.as_str(), e.value.as_str(), e.line)).collect();
        assert_eq!(
            got,
            vec![("params", "mail_domain", "example.org", 5), ("params", "max", "1", 6), ("other", "x", "a = b", 8)]
        );
    }

    #[test]
    fn keeps_hash_inside_values() {
        let entries = parse("[params]\nprivacy_mail = a#b@example.org\n").expect("valid");
        assert_eq!(entries[0].value, "a#b@example.org");
    }

    #[test]
    fn empty_value_is_allowed() {
        let entries = parse("[params]\npassthrough_senders =\n").expect("valid");
        assert_eq!(entries[0].value, "");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let cases = [
            ("[params\n", 1, "closing"),
            ("[]\n", 1, "empty section"),
            ("key = value\n", 1, "before any [section]"),
            ("[params]\njust words\n", 2, "expected 'key = value'"),
            ("[params]\n = 3\n", 2, "missing key"),
            ("[params]\na = 1\n\na = 2\n", 4, "set twice"),
        ];
        for (text, line, needle) in cases {
            let err = parse(text).expect_err(text);
            assert_eq!(err.line, line, "{text:?}");
            assert!(err.problem.contains(needle), "{text:?}: {}", err.problem);
        }
    }
}

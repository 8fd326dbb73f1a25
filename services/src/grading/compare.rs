//! Output comparison: does a case's stdout match what was expected?
//!
//! Four built-in modes, from strictest to most lenient:
//! - `exact`: byte for byte.
//! - `trim`: trailing whitespace at the end of each line and trailing blank lines (final newlines)
//!   ignored — what most judges call the default, because editors and `print` disagree on them.
//! - `tokens`: the whitespace-separated tokens are equal (line breaks and spacing ignored).
//! - `float`: like `tokens`, but a pair of tokens that both parse as numbers is equal within an
//!   absolute or relative tolerance (either suffices, as in Codeforces' and DOMjudge's float
//!   checkers); non-numeric tokens must be equal.
//!
//! On a mismatch the first differing line (1-based) is reported with both sides cut to
//! [`DIFF_CAP`] bytes, so a grading UI can show "line 3: expected `42`, got `41`".

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most bytes of each side of a [`Difference`].
pub const DIFF_CAP: usize = 200;

/// How a case's stdout is compared with the expected one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompareMode {
    /// Byte for byte.
    Exact,
    /// Trailing whitespace of each line and trailing blank lines ignored. The default.
    #[default]
    Trim,
    /// Whitespace-separated tokens equal.
    Tokens,
    /// Tokens equal, numbers within `abs_tolerance` or `rel_tolerance`.
    Float,
}

/// A comparison mode with its tolerances.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    #[serde(default)]
    pub mode: CompareMode,
    /// `float` only: numbers within this absolute difference are equal. Default 1e-6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0)]
    pub abs_tolerance: Option<f64>,
    /// `float` only: numbers within this relative difference (of the expected value) are equal.
    /// Default 1e-6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0)]
    pub rel_tolerance: Option<f64>,
}

/// The default tolerance of the `float` mode, absolute and relative.
pub const DEFAULT_TOLERANCE: f64 = 1e-6;

/// Where expected and actual output first differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Difference {
    /// 1-based line number (of the expected output) where they first differ.
    pub line: u64,
    /// That line of the expected output (cut to 200 bytes; empty past its end).
    pub expected: String,
    /// That line of the actual output (cut to 200 bytes; empty past its end).
    pub actual: String,
    /// What differs, when a line is not enough ("expected 3 tokens, got 2", "0.5 vs 0.6 is
    /// outside the tolerance").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Compare {
    /// Checks that the tolerances are finite and not negative.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("abs_tolerance", self.abs_tolerance),
            ("rel_tolerance", self.rel_tolerance),
        ] {
            if let Some(v) = v {
                if !v.is_finite() || v < 0.0 {
                    return Err(format!("{name} must be a finite number >= 0, got {v}"));
                }
                if self.mode != CompareMode::Float {
                    return Err(format!("{name} applies only to mode `float`"));
                }
            }
        }
        Ok(())
    }

    /// `None` when `actual` matches `expected` under this mode, else the first difference.
    pub fn check(&self, expected: &[u8], actual: &[u8]) -> Option<Difference> {
        match self.mode {
            CompareMode::Exact => {
                if expected == actual {
                    None
                } else {
                    Some(first_line_difference(expected, actual, |a, b| a == b))
                }
            }
            CompareMode::Trim => {
                let (e, a) = (trim_lines(expected), trim_lines(actual));
                if e == a {
                    None
                } else {
                    let mut d =
                        first_line_difference(expected, actual, |a, b| trim_end(a) == trim_end(b));
                    if d.expected == d.actual && d.note.is_none() {
                        d.note = Some("the outputs differ in their number of lines".into());
                    }
                    Some(d)
                }
            }
            CompareMode::Tokens => self.tokens(expected, actual, |a, b| a == b),
            CompareMode::Float => {
                let abs = self.abs_tolerance.unwrap_or(DEFAULT_TOLERANCE);
                let rel = self.rel_tolerance.unwrap_or(DEFAULT_TOLERANCE);
                self.tokens(expected, actual, |e, a| float_eq(e, a, abs, rel))
            }
        }
    }

    fn tokens(
        &self,
        expected: &[u8],
        actual: &[u8],
        eq: impl Fn(&[u8], &[u8]) -> bool,
    ) -> Option<Difference> {
        let e: Vec<(u64, &[u8])> = tokens(expected).collect();
        let a: Vec<(u64, &[u8])> = tokens(actual).collect();
        for (i, (et, at)) in e.iter().zip(a.iter()).enumerate() {
            if !eq(et.1, at.1) {
                return Some(Difference {
                    line: et.0,
                    expected: cut(line_at(expected, et.0)),
                    actual: cut(line_at(actual, at.0)),
                    note: Some(format!(
                        "token {}: expected `{}`, got `{}`",
                        i + 1,
                        cut(et.1),
                        cut(at.1)
                    )),
                });
            }
        }
        if e.len() == a.len() {
            return None;
        }
        let line = match (e.get(a.len()), a.get(e.len())) {
            (Some(t), _) => t.0,
            (None, Some(t)) => t.0,
            (None, None) => 1,
        };
        Some(Difference {
            line,
            expected: cut(line_at(expected, line)),
            actual: cut(line_at(actual, line)),
            note: Some(format!("expected {} tokens, got {}", e.len(), a.len())),
        })
    }
}

fn trim_end(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &line[..end]
}

/// Lines with trailing whitespace removed, trailing empty lines dropped.
fn trim_lines(s: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = s.split(|b| *b == b'\n').map(trim_end).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// Tokens with their 1-based line numbers.
fn tokens(s: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    s.split(|b| *b == b'\n').enumerate().flat_map(|(i, line)| {
        line.split(|b| b.is_ascii_whitespace())
            .filter(|t| !t.is_empty())
            .map(move |t| (i as u64 + 1, t))
    })
}

fn float_eq(e: &[u8], a: &[u8], abs: f64, rel: f64) -> bool {
    if e == a {
        return true;
    }
    let parse = |t: &[u8]| {
        std::str::from_utf8(t)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    match (parse(e), parse(a)) {
        (Some(x), Some(y)) => {
            let diff = (x - y).abs();
            diff <= abs || diff <= rel * x.abs()
        }
        _ => false,
    }
}

fn line_at(s: &[u8], line: u64) -> &[u8] {
    let idx = usize::try_from(line.saturating_sub(1)).unwrap_or(usize::MAX);
    s.split(|b| *b == b'\n').nth(idx).unwrap_or(b"")
}

/// The first line where `eq` fails (lines past an output's end are empty).
fn first_line_difference(
    expected: &[u8],
    actual: &[u8],
    eq: impl Fn(&[u8], &[u8]) -> bool,
) -> Difference {
    let mut e = expected.split(|b| *b == b'\n');
    let mut a = actual.split(|b| *b == b'\n');
    let mut line = 0u64;
    loop {
        line += 1;
        match (e.next(), a.next()) {
            (None, None) => {
                // Equal line by line yet different: only a final newline differs (exact mode).
                return Difference {
                    line: line - 1,
                    expected: cut(line_at(expected, line - 1)),
                    actual: cut(line_at(actual, line - 1)),
                    note: Some("the outputs differ only in their final newline".into()),
                };
            }
            (el, al) => {
                let (el, al) = (el.unwrap_or(b""), al.unwrap_or(b""));
                if !eq(el, al) {
                    return Difference {
                        line,
                        expected: cut(el),
                        actual: cut(al),
                        note: None,
                    };
                }
            }
        }
    }
}

/// At most [`DIFF_CAP`] bytes, as text (invalid UTF-8 replaced), `…` marking a cut.
pub fn cut(s: &[u8]) -> String {
    if s.len() <= DIFF_CAP {
        return String::from_utf8_lossy(s).into_owned();
    }
    let mut t = String::from_utf8_lossy(&s[..DIFF_CAP]).into_owned();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(mode: CompareMode) -> Compare {
        Compare {
            mode,
            ..Compare::default()
        }
    }

    #[test]
    fn exact_is_byte_for_byte() {
        let c = mode(CompareMode::Exact);
        assert_eq!(c.check(b"1 2\n", b"1 2\n"), None);
        let d = c.check(b"1 2\n", b"1 2").unwrap();
        assert_eq!(
            d.note.as_deref(),
            Some("the outputs differ only in their final newline")
        );
        let d = c.check(b"a\nb\nc\n", b"a\nB\nc\n").unwrap();
        assert_eq!(
            (d.line, d.expected.as_str(), d.actual.as_str()),
            (2, "b", "B")
        );
        assert!(c.check(b"x \n", b"x\n").is_some());
    }

    #[test]
    fn trim_ignores_trailing_spaces_and_final_newlines_only() {
        let c = mode(CompareMode::Trim);
        assert_eq!(c.check(b"1 2\n3\n", b"1 2  \n3\n\n\n"), None);
        assert_eq!(c.check(b"1 2\n3", b"1 2\r\n3\r\n"), None);
        let d = c.check(b"1 2\n3\n", b" 1 2\n3\n").unwrap();
        assert_eq!((d.line, d.actual.as_str()), (1, " 1 2"));
        let d = c.check(b"1\n\n2\n", b"1\n2\n").unwrap();
        assert_eq!(d.line, 2);
        let d = c.check(b"1\n2\n", b"1\n").unwrap();
        assert_eq!(
            (d.line, d.expected.as_str(), d.actual.as_str()),
            (2, "2", "")
        );
    }

    #[test]
    fn tokens_ignore_all_spacing() {
        let c = mode(CompareMode::Tokens);
        assert_eq!(c.check(b"1 2\n3\n", b"1\n2   3"), None);
        let d = c.check(b"1 2\n3\n", b"1 2\n4\n").unwrap();
        assert_eq!(d.line, 2);
        assert_eq!(d.note.as_deref(), Some("token 3: expected `3`, got `4`"));
        let d = c.check(b"1 2 3", b"1 2").unwrap();
        assert_eq!(d.note.as_deref(), Some("expected 3 tokens, got 2"));
    }

    #[test]
    fn float_accepts_numbers_within_either_tolerance() {
        let c = Compare {
            mode: CompareMode::Float,
            abs_tolerance: Some(1e-3),
            rel_tolerance: Some(1e-9),
        };
        assert_eq!(c.check(b"0.3333 yes\n", b"0.33329 yes"), None);
        assert!(c.check(b"0.3333", b"0.335").is_some());
        assert!(c.check(b"0.3333 yes", b"0.3333 no").is_some());
        let rel = Compare {
            mode: CompareMode::Float,
            abs_tolerance: Some(0.0),
            rel_tolerance: Some(1e-6),
        };
        assert_eq!(rel.check(b"1000000000", b"1000000999"), None);
        assert!(rel.check(b"1000000000", b"1000002000").is_some());
        assert!(rel.check(b"1", b"nan").is_some());
        assert!(rel.check(b"inf", b"1e400").is_some());
        // Defaults: 1e-6 either way.
        let d = mode(CompareMode::Float);
        assert_eq!(d.check(b"2.0000001", b"2.0"), None);
    }

    #[test]
    fn tolerances_are_checked() {
        let bad = Compare {
            mode: CompareMode::Float,
            abs_tolerance: Some(-1.0),
            rel_tolerance: None,
        };
        assert!(bad.validate().unwrap_err().contains("abs_tolerance"));
        let wrong_mode = Compare {
            mode: CompareMode::Tokens,
            abs_tolerance: None,
            rel_tolerance: Some(0.1),
        };
        assert!(
            wrong_mode
                .validate()
                .unwrap_err()
                .contains("only to mode `float`")
        );
    }

    #[test]
    fn differences_are_cut() {
        let long = vec![b'a'; 1000];
        let d = mode(CompareMode::Exact).check(&long, b"b").unwrap();
        assert_eq!(d.expected.chars().count(), DIFF_CAP + 1);
        assert!(d.expected.ends_with('…'));
    }
}

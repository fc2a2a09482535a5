//! `LIKE` patterns (spec §3.4.3), compiled once and matched without allocating.
//!
//! `%` matches any run of characters, `_` exactly one character (a Unicode scalar value), and
//! `\%` and `\_` the literal characters. A backslash before anything else is an ordinary
//! character, as in the reference implementations: `'ab\c'` matches `ab\c`, and `\\%` is a
//! literal backslash followed by a literal `%`.
//!
//! A pattern is split at its `%`s into segments of literal text and `_`s. Each segment has a
//! fixed length in characters, so matching is greedy without backtracking: the first segment
//! is anchored at the start, the last at the end, and every segment between them is matched at
//! its leftmost position (taking the leftmost occurrence never rules out a match that a later
//! one would allow).

/// A compiled `LIKE` pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LikePattern {
    /// The pattern split at `%`: one segment if it has no `%`, `n + 1` if it has `n`.
    segments: Box<[Segment]>,
}

type Segment = Box<[Piece]>;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// Literal text, never empty; consecutive literal characters form one piece.
    Literal(Box<str>),
    /// This many `_`s in a row.
    AnyChars(usize),
}

/// A necessary condition for a string to match a pattern, read off its fixed ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Shape<'p> {
    /// The pattern has no wildcard: only this string matches.
    Exact(&'p str),
    /// Matching strings start with `prefix` (if any) and end with `suffix` (if any).
    Ends {
        prefix: Option<&'p str>,
        suffix: Option<&'p str>,
    },
}

impl LikePattern {
    pub fn new(pattern: &str) -> LikePattern {
        let mut segments = Vec::new();
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if matches!(chars.peek(), Some('%' | '_')) => {
                    literal.extend(chars.next());
                }
                '%' => {
                    flush(&mut literal, &mut pieces);
                    segments.push(std::mem::take(&mut pieces).into_boxed_slice());
                }
                '_' => {
                    flush(&mut literal, &mut pieces);
                    match pieces.last_mut() {
                        Some(Piece::AnyChars(n)) => *n += 1,
                        _ => pieces.push(Piece::AnyChars(1)),
                    }
                }
                c => literal.push(c),
            }
        }
        flush(&mut literal, &mut pieces);
        segments.push(pieces.into_boxed_slice());
        LikePattern {
            segments: segments.into_boxed_slice(),
        }
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        let Some((first, rest)) = self.segments.split_first() else {
            return text.is_empty();
        };
        let Some((last, middle)) = rest.split_last() else {
            return match_at(first, text, 0) == Some(text.len());
        };
        let Some(mut pos) = match_at(first, text, 0) else {
            return false;
        };
        for segment in middle.iter().filter(|s| !s.is_empty()) {
            match find(segment, text, pos) {
                Some(end) => pos = end,
                None => return false,
            }
        }
        match start_of_last(text, char_len(last)) {
            Some(start) => start >= pos && match_at(last, text, start) == Some(text.len()),
            None => false,
        }
    }

    /// What every matching string looks like at its ends.
    pub fn shape(&self) -> Shape<'_> {
        if let [only] = &*self.segments {
            match &**only {
                [] => return Shape::Exact(""),
                [Piece::Literal(s)] => return Shape::Exact(s),
                _ => {}
            }
        }
        Shape::Ends {
            prefix: self.segments.first().and_then(|s| literal(s.first())),
            suffix: self.segments.last().and_then(|s| literal(s.last())),
        }
    }
}

fn literal(piece: Option<&Piece>) -> Option<&str> {
    match piece {
        Some(Piece::Literal(s)) => Some(s),
        _ => None,
    }
}

fn flush(literal: &mut String, pieces: &mut Vec<Piece>) {
    if !literal.is_empty() {
        pieces.push(Piece::Literal(std::mem::take(literal).into_boxed_str()));
    }
}

/// The segment's length in characters.
fn char_len(segment: &[Piece]) -> usize {
    segment
        .iter()
        .map(|p| match p {
            Piece::Literal(s) => s.chars().count(),
            Piece::AnyChars(n) => *n,
        })
        .sum()
}

/// Matches `segment` at byte offset `pos` of `text`; returns the offset just past the match.
fn match_at(segment: &[Piece], text: &str, mut pos: usize) -> Option<usize> {
    for piece in segment {
        match piece {
            Piece::Literal(s) => {
                if !text.get(pos..)?.starts_with(&**s) {
                    return None;
                }
                pos += s.len();
            }
            Piece::AnyChars(n) => {
                for _ in 0..*n {
                    pos += text.get(pos..)?.chars().next()?.len_utf8();
                }
            }
        }
    }
    Some(pos)
}

/// Finds the leftmost match of a non-empty `segment` in `text` at or after byte offset `from`;
/// returns the offset just past it.
fn find(segment: &[Piece], text: &str, mut from: usize) -> Option<usize> {
    loop {
        if let Some(Piece::Literal(s)) = segment.first() {
            // Jump to the next place the leading literal occurs.
            from += text.get(from..)?.find(&**s)?;
        }
        if let Some(end) = match_at(segment, text, from) {
            return Some(end);
        }
        // Try again one character further on.
        from += text.get(from..)?.chars().next()?.len_utf8();
    }
}

/// Byte offset at which the last `n` characters of `text` start.
fn start_of_last(text: &str, n: usize) -> Option<usize> {
    if n == 0 {
        return Some(text.len());
    }
    text.char_indices().rev().nth(n - 1).map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(text: &str, pattern: &str) -> bool {
        LikePattern::new(pattern).matches(text)
    }

    #[test]
    fn tck_cases() {
        assert!(like("abc", "abc"));
        assert!(like(r"ab\c", r"ab\c"));
        assert!(like("abc", "a%b%c"));
        assert!(like("azbc", "a%b%c"));
        assert!(like("azzzbzzzc", "a%b%c"));
        assert!(like("a%b%c", "a%b%c"));
        assert!(!like("ac", "abc"));
        assert!(!like("", "abc"));
        assert!(like(".ab.cde.", ".%.%."));
        assert!(!like("ab.cde", ".%.%."));
        assert!(!like("abc", "a_b_c"));
        assert!(like("a_b_c", "a_b_c"));
        assert!(!like("abzc", "a_b_c"));
        assert!(!like("azbc", "a_b_c"));
        assert!(like("azbzc", "a_b_c"));
        assert!(like(".a.b.", "._._."));
        assert!(!like("abcd.", "._._."));
        assert!(like("a_b_c", r"a\_b\_c"));
        assert!(!like("azbzc", r"a\_b\_c"));
        assert!(!like("abc", r"a\_b\_c"));
        assert!(!like("abc", r"a\%b\%c"));
        assert!(like("a%b%c", r"a\%b\%c"));
        assert!(!like("azbzc", r"a\%b\%c"));
        assert!(like("abc123123%456_dzf", r"abc%123\%456\_d_f"));
    }

    #[test]
    fn wildcards() {
        assert!(like("", ""));
        assert!(!like("a", ""));
        assert!(like("", "%"));
        assert!(like("anything", "%"));
        assert!(like("", "%%"));
        assert!(like("abc", "%%%c"));
        assert!(!like("", "_"));
        assert!(like("é", "_"));
        assert!(!like("éé", "_"));
        assert!(like("😀x", "__"));
        assert!(like("abc", "___"));
        assert!(!like("abcd", "___"));
        assert!(like("abcd", "___%"));
        assert!(like("abcd", "%___"));
        assert!(!like("ab", "%___"));
        assert!(like("xay", "%a%"));
        assert!(!like("xy", "%a%"));
        assert!(like("aXbYa", "a%a"));
        assert!(!like("a", "a%a"));
        assert!(like("aa", "a%a"));
        // The middle segment must not overlap the anchored last one.
        assert!(!like("abc", "%bc%c"));
        assert!(like("abcbc", "%bc%c"));
        assert!(like("ab_c", "a%_c"));
        assert!(like("aaab", "%aab"));
        assert!(like("xaaab", "%a_b"));
        assert!(like("mississippi", "m%iss%ppi"));
        assert!(like("mississippi", "%s_s%p_"));
        assert!(!like("mississippi", "%s_s%s_s%s_s%"));
        assert!(like("https://example.com", "https://%"));
        assert!(!like("http://example.com", "https://%"));
        assert!(like("com.github.error", "%.error"));
        assert!(like("é/ü/ö", "_/%/_"));
    }

    #[test]
    fn escapes() {
        assert!(like("100%", r"100\%"));
        assert!(!like("1000", r"100\%"));
        assert!(like("a_", r"a\_"));
        assert!(!like("ab", r"a\_"));
        // A backslash escapes only `%` and `_`.
        assert!(like(r"a\b", r"a\b"));
        assert!(like(r"a\", r"a\"));
        assert!(like(r"a\%", r"a\\%"));
        assert!(!like(r"a\x", r"a\\%"));
        assert!(like(r"\", r"\"));
    }

    #[test]
    fn shapes() {
        let shape = |p: &str| {
            let pattern = LikePattern::new(p);
            match pattern.shape() {
                Shape::Exact(s) => format!("exact {s}"),
                Shape::Ends { prefix, suffix } => format!("{prefix:?} {suffix:?}"),
            }
        };
        assert_eq!(shape("abc"), "exact abc");
        assert_eq!(shape(""), "exact ");
        assert_eq!(shape(r"a\%b"), "exact a%b");
        assert_eq!(shape("abc%"), r#"Some("abc") None"#);
        assert_eq!(shape("%abc"), r#"None Some("abc")"#);
        assert_eq!(shape("a%b%c"), r#"Some("a") Some("c")"#);
        assert_eq!(shape(r"a\_%"), r#"Some("a_") None"#);
        assert_eq!(shape("a_c"), r#"Some("a") Some("c")"#);
        assert_eq!(shape("_bc%"), "None None");
        assert_eq!(shape("%"), "None None");
        assert_eq!(shape("%_"), "None None");
    }
}

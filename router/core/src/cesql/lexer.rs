//! The lexer: source text to [`Token`]s (spec §2).
//!
//! Words (`[A-Za-z0-9_]+`) come out as keywords, integer literals (all digits) or
//! [`TokenKind::Word`]; whether a word is an attribute or a function name is the parser's call,
//! because it depends on a following `(`. Signs are separate tokens: the parser folds a `-` or
//! `+` in prefix position into the integer literal after it (spec §2.2 `integer-literal`).

use super::error::CompileError;

/// A token and the byte range of its source text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Token<'s> {
    pub kind: TokenKind<'s>,
    /// Byte offset of the token's first character.
    pub start: usize,
    /// Byte offset one past its last character.
    pub end: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum TokenKind<'s> {
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    /// `=`
    Eq,
    /// `!=`
    NotEq,
    /// `<>`
    LtGt,
    Lt,
    Le,
    Gt,
    Ge,
    /// One or more ASCII digits, unsigned.
    Integer(&'s str),
    /// A string literal's value, escapes resolved.
    String(String),
    /// A word that is not a keyword: an attribute or function name, as written.
    Word(&'s str),
    Keyword(Keyword),
    Eof,
}

/// The reserved words. Case-insensitive (spec §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Keyword {
    And,
    Or,
    Xor,
    Not,
    Like,
    In,
    Exists,
    True,
    False,
}

impl Keyword {
    const ALL: [(&'static str, Keyword); 9] = [
        ("AND", Keyword::And),
        ("OR", Keyword::Or),
        ("XOR", Keyword::Xor),
        ("NOT", Keyword::Not),
        ("LIKE", Keyword::Like),
        ("IN", Keyword::In),
        ("EXISTS", Keyword::Exists),
        ("TRUE", Keyword::True),
        ("FALSE", Keyword::False),
    ];

    fn from_word(word: &str) -> Option<Keyword> {
        Self::ALL
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(word))
            .map(|&(_, k)| k)
    }
}

/// Splits `src` into tokens, ending with one [`TokenKind::Eof`] at `src.len()`.
pub(super) fn tokenize(src: &str) -> Result<Vec<Token<'_>>, CompileError> {
    let mut tokens = Vec::new();
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let b = bytes[i];
        let two = |second: u8| bytes.get(i + 1) == Some(&second);
        let (kind, len) = match b {
            // The reference grammar skips exactly these (`[ \t\r\n]+`), plus form feed.
            b' ' | b'\t' | b'\r' | b'\n' | b'\x0C' => {
                i += 1;
                continue;
            }
            b'(' => (TokenKind::LParen, 1),
            b')' => (TokenKind::RParen, 1),
            b',' => (TokenKind::Comma, 1),
            b'+' => (TokenKind::Plus, 1),
            b'-' => (TokenKind::Minus, 1),
            b'*' => (TokenKind::Star, 1),
            b'/' => (TokenKind::Slash, 1),
            b'%' => (TokenKind::Percent, 1),
            b'=' => (TokenKind::Eq, 1),
            b'!' if two(b'=') => (TokenKind::NotEq, 2),
            b'<' if two(b'>') => (TokenKind::LtGt, 2),
            b'<' if two(b'=') => (TokenKind::Le, 2),
            b'<' => (TokenKind::Lt, 1),
            b'>' if two(b'=') => (TokenKind::Ge, 2),
            b'>' => (TokenKind::Gt, 1),
            b'\'' | b'"' => {
                let (value, len) = string_literal(src, start)?;
                (TokenKind::String(value), len)
            }
            b if is_word_byte(b) => {
                let len = bytes[start..]
                    .iter()
                    .position(|&b| !is_word_byte(b))
                    .unwrap_or(bytes.len() - start);
                let word = &src[start..start + len];
                let kind = if word.bytes().all(|b| b.is_ascii_digit()) {
                    TokenKind::Integer(word)
                } else if let Some(k) = Keyword::from_word(word) {
                    TokenKind::Keyword(k)
                } else {
                    TokenKind::Word(word)
                };
                (kind, len)
            }
            _ => {
                // `start` is a char boundary: every token so far ended on one.
                let character = src[start..].chars().next().unwrap_or('\u{FFFD}');
                return Err(CompileError::InvalidCharacter {
                    character,
                    column: column_at(src, start),
                });
            }
        };
        i += len;
        tokens.push(Token {
            kind,
            start,
            end: i,
        });
    }
    tokens.push(Token {
        kind: TokenKind::Eof,
        start: src.len(),
        end: src.len(),
    });
    Ok(tokens)
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Reads the string literal whose opening quote is at `start`; returns its value and its length
/// in bytes, quotes included.
///
/// Escapes follow the reference grammar (`'\\' .` is one unit inside a literal) and its
/// reference implementations: a backslash before the delimiting quote stands for that quote;
/// every other backslash is kept as written, together with the character after it. So
/// `'a\'b'` is `a'b`, `'a\"b'` is `a\"b`, `'a\\'` is `a\\`, and `'a\_b'` is `a\_b` (which
/// `LIKE` then reads as an escaped `_`).
fn string_literal(src: &str, start: usize) -> Result<(String, usize), CompileError> {
    let mut chars = src[start..].char_indices();
    let quote = match chars.next() {
        Some((_, q)) => q,
        None => {
            return Err(CompileError::UnterminatedString {
                column: column_at(src, start),
            });
        }
    };
    let mut value = String::new();
    while let Some((offset, c)) = chars.next() {
        if c == quote {
            return Ok((value, offset + c.len_utf8()));
        }
        if c == '\\' {
            match chars.next() {
                Some((_, next)) if next == quote => value.push(quote),
                Some((_, next)) => {
                    value.push('\\');
                    value.push(next);
                }
                None => break,
            }
        } else {
            value.push(c);
        }
    }
    Err(CompileError::UnterminatedString {
        column: column_at(src, start),
    })
}

/// The 1-based column, in characters, of byte offset `byte` of `src`.
pub(super) fn column_at(src: &str, byte: usize) -> u32 {
    let prefix = src.get(..byte).unwrap_or(src);
    saturate(prefix.chars().count() + 1)
}

/// Byte offsets to columns in O(1) for ASCII sources and O(log n) otherwise, for the compiler,
/// which needs the column of every node.
pub(super) struct Columns {
    /// The byte offset of every character, when some character is not ASCII.
    char_offsets: Option<Vec<usize>>,
}

impl Columns {
    pub fn new(src: &str) -> Columns {
        Columns {
            char_offsets: (!src.is_ascii()).then(|| src.char_indices().map(|(i, _)| i).collect()),
        }
    }

    /// The 1-based column of byte offset `byte`, a character boundary or the end.
    pub fn at(&self, byte: usize) -> u32 {
        match &self.char_offsets {
            None => saturate(byte + 1),
            Some(offsets) => {
                let (Ok(index) | Err(index)) = offsets.binary_search(&byte);
                saturate(index + 1)
            }
        }
    }
}

fn saturate(column: usize) -> u32 {
    u32::try_from(column).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind<'_>> {
        tokenize(src)
            .expect("tokenizes")
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    #[test]
    fn operators_and_punctuation() {
        use TokenKind::*;
        assert_eq!(
            kinds("( ) , + - * / % = != <> < <= > >="),
            vec![
                LParen, RParen, Comma, Plus, Minus, Star, Slash, Percent, Eq, NotEq, LtGt, Lt, Le,
                Gt, Ge, Eof
            ]
        );
        // Longest match without whitespace.
        assert_eq!(kinds("a<=b"), vec![Word("a"), Le, Word("b"), Eof]);
        assert_eq!(kinds("1<>2"), vec![Integer("1"), LtGt, Integer("2"), Eof]);
    }

    #[test]
    fn keywords_are_case_insensitive() {
        use Keyword::*;
        let expected: Vec<_> = [And, Or, Xor, Not, Like, In, Exists, True, False]
            .into_iter()
            .map(TokenKind::Keyword)
            .chain([TokenKind::Eof])
            .collect();
        assert_eq!(kinds("and Or XOR nOt like IN Exists tRuE FALSE"), expected);
    }

    #[test]
    fn words_and_integers() {
        use TokenKind::*;
        assert_eq!(
            kinds("abc 123 1abc CONCAT_WS my_ext andy"),
            vec![
                Word("abc"),
                Integer("123"),
                Word("1abc"),
                Word("CONCAT_WS"),
                Word("my_ext"),
                Word("andy"),
                Eof
            ]
        );
    }

    #[test]
    fn string_escapes() {
        let one = |src| match kinds(src).remove(0) {
            TokenKind::String(s) => s,
            other => panic!("not a string: {other:?}"),
        };
        assert_eq!(one(r#"'a"b\'c'"#), r#"a"b'c"#);
        assert_eq!(one(r#""a'b\"c""#), r#"a'b"c"#);
        assert_eq!(one(r"'ab\c'"), r"ab\c");
        assert_eq!(one(r#"'a\"b'"#), r#"a\"b"#);
        assert_eq!(one(r"'a\\'"), r"a\\");
        assert_eq!(one(r"'a\_b\%'"), r"a\_b\%");
        assert_eq!(one("''"), "");
        assert_eq!(one("'héllo wörld'"), "héllo wörld");
    }

    #[test]
    fn errors_report_columns() {
        assert_eq!(
            tokenize("a = 'abc"),
            Err(CompileError::UnterminatedString { column: 5 })
        );
        assert_eq!(
            tokenize(r"'abc\'"),
            Err(CompileError::UnterminatedString { column: 1 })
        );
        assert_eq!(
            tokenize("'é' ! 1"),
            Err(CompileError::InvalidCharacter {
                character: '!',
                column: 5
            })
        );
        assert_eq!(
            tokenize("é"),
            Err(CompileError::InvalidCharacter {
                character: 'é',
                column: 1
            })
        );
    }

    #[test]
    fn columns_count_characters() {
        for src in ["abc = 'x'", "'héé' = 😀 x", ""] {
            let columns = Columns::new(src);
            let boundaries = src.char_indices().map(|(i, _)| i).chain([src.len()]);
            for (n, byte) in boundaries.enumerate() {
                assert_eq!(columns.at(byte), column_at(src, byte));
                assert_eq!(column_at(src, byte), u32::try_from(n + 1).expect("small"));
            }
        }
    }

    #[test]
    fn spans() {
        let tokens = tokenize("ab  <= 'x'").expect("tokenizes");
        let spans: Vec<_> = tokens.iter().map(|t| (t.start, t.end)).collect();
        assert_eq!(spans, vec![(0, 2), (4, 6), (7, 10), (10, 10)]);
    }
}

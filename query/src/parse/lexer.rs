//! A small SQL lexer for the statement-level parser: words, quoted names,
//! numbers, strings and punctuation, each with its byte span in the statement,
//! so expression text can be handed on exactly as the user wrote it.

use crate::error::QueryError;

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A bare word: keyword or identifier.
    Word(String),
    /// A `backquoted` or "double quoted" identifier.
    Quoted(String),
    Number(String),
    /// A 'single quoted' string, unescaped.
    Str(String),
    /// Punctuation and operators: ( ) , ; . = and the rest, one or two chars.
    Punct(String),
}

/// A token with its byte range in the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

impl Token {
    /// Whether this is the keyword `kw` (case-insensitive, unquoted).
    pub fn is_kw(&self, kw: &str) -> bool {
        matches!(&self.tok, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    /// Whether this is the punctuation `p`.
    pub fn is_punct(&self, p: &str) -> bool {
        matches!(&self.tok, Tok::Punct(x) if x == p)
    }

    /// The identifier this token names, quoted or not.
    pub fn ident(&self) -> Option<&str> {
        match &self.tok {
            Tok::Word(w) | Tok::Quoted(w) => Some(w),
            _ => None,
        }
    }
}

fn quoted(src: &str, start: usize, q: char) -> Result<(String, usize), QueryError> {
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            if let Some((_, e)) = chars.next() {
                out.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    other => other,
                });
            }
        } else if c == q {
            // A doubled quote is an escaped quote.
            let next = start + 1 + i + 1;
            if src[next..].starts_with(q) {
                out.push(q);
                chars.next();
                continue;
            }
            return Ok((out, next));
        } else {
            out.push(c);
        }
    }
    Err(QueryError::syntax(format!("unterminated quoted text starting at position {start}")))
}

/// Splits a statement into tokens, skipping whitespace and comments.
pub fn lex(src: &str) -> Result<Vec<Token>, QueryError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if src[i..].starts_with("--") || src[i..].starts_with('#') {
            i = src[i..].find('\n').map(|n| i + n + 1).unwrap_or(bytes.len());
        } else if src[i..].starts_with("/*") {
            i = src[i + 2..]
                .find("*/")
                .map(|n| i + 2 + n + 2)
                .ok_or_else(|| QueryError::syntax("unterminated comment"))?;
        } else if c == b'\'' {
            let (s, end) = quoted(src, i, '\'')?;
            out.push(Token { tok: Tok::Str(s), start: i, end });
            i = end;
        } else if c == b'`' || c == b'"' {
            let (s, end) = quoted(src, i, c as char)?;
            out.push(Token { tok: Tok::Quoted(s), start: i, end });
            i = end;
        } else if c.is_ascii_digit() {
            let mut j = i;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'.' || bytes[j] == b'_') {
                j += 1;
            }
            out.push(Token { tok: Tok::Number(src[i..j].to_string()), start: i, end: j });
            i = j;
        } else if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            let mut j = i;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_' || bytes[j] >= 0x80) {
                j += 1;
            }
            out.push(Token { tok: Tok::Word(src[i..j].to_string()), start: i, end: j });
            i = j;
        } else {
            let two = src.get(i..i + 2).unwrap_or("");
            let len = if ["<=", ">=", "!=", "<>", "==", "||", "->", "::"].contains(&two) { 2 } else { 1 };
            let end = (i + len).min(bytes.len());
            let text = src.get(i..end).ok_or_else(|| QueryError::syntax(format!("bad character at position {i}")))?;
            out.push(Token { tok: Tok::Punct(text.to_string()), start: i, end });
            i = end;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexes_with_spans() {
        let src =
            "CREATE TABLE `my t` (a String DEFAULT 'x''y', b UInt8) -- note\n ENGINE=MergeTree /* c */ ORDER BY a";
        let t = lex(src).unwrap();
        assert!(t[0].is_kw("create"));
        assert_eq!(t[2].tok, Tok::Quoted("my t".into()));
        let s = t.iter().find(|t| matches!(t.tok, Tok::Str(_))).unwrap();
        assert_eq!(s.tok, Tok::Str("x'y".into()));
        assert_eq!(&src[s.start..s.end], "'x''y'");
        assert!(t.last().unwrap().ident() == Some("a"));
        assert!(lex("SELECT 'open").is_err());
        assert!(lex("SELECT /* open").is_err());
    }
}

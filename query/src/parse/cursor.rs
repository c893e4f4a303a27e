//! A cursor over a statement's tokens: keywords, names, and expression text
//! captured verbatim up to the next clause.

use super::lexer::{Tok, Token, lex};
use crate::error::QueryError;

/// Tokens of one statement and a position in them.
pub struct Cursor<'a> {
    pub src: &'a str,
    pub toks: Vec<Token>,
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(src: &'a str) -> Result<Self, QueryError> {
        let mut toks = lex(src)?;
        // A trailing semicolon ends the statement.
        while toks.last().is_some_and(|t| t.is_punct(";")) {
            toks.pop();
        }
        Ok(Cursor { src, toks, pos: 0 })
    }

    pub fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }

    pub fn peek_kw(&self, kw: &str) -> bool {
        self.peek().is_some_and(|t| t.is_kw(kw))
    }

    /// Whether the next tokens are exactly these keywords.
    pub fn peek_kws(&self, kws: &[&str]) -> bool {
        kws.iter().enumerate().all(|(i, k)| self.toks.get(self.pos + i).is_some_and(|t| t.is_kw(k)))
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    /// Consumes the keywords if they come next.
    pub fn eat_kws(&mut self, kws: &[&str]) -> bool {
        if self.peek_kws(kws) {
            self.pos += kws.len();
            true
        } else {
            false
        }
    }

    pub fn eat_punct(&mut self, p: &str) -> bool {
        if self.peek().is_some_and(|t| t.is_punct(p)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// The position for error messages, as ClickHouse prints it.
    pub fn error(&self, expected: &str) -> QueryError {
        match self.peek() {
            Some(t) => QueryError::syntax(format!(
                "Syntax error: failed at position {} ('{}'): expected {expected}",
                t.start + 1,
                &self.src[t.start..t.end]
            )),
            None => QueryError::syntax(format!(
                "Syntax error: failed at position {} (end of query): expected {expected}",
                self.src.len() + 1
            )),
        }
    }

    pub fn expect_kws(&mut self, kws: &[&str]) -> Result<(), QueryError> {
        if self.eat_kws(kws) { Ok(()) } else { Err(self.error(&kws.join(" "))) }
    }

    pub fn expect_punct(&mut self, p: &str) -> Result<(), QueryError> {
        if self.eat_punct(p) { Ok(()) } else { Err(self.error(&format!("'{p}'"))) }
    }

    /// An identifier (bare or quoted).
    pub fn ident(&mut self) -> Result<String, QueryError> {
        match self.peek().and_then(|t| t.ident()).map(str::to_string) {
            Some(id) => {
                self.pos += 1;
                Ok(id)
            }
            None => Err(self.error("identifier")),
        }
    }

    /// `[db.]name`.
    pub fn qualified_name(&mut self) -> Result<(Option<String>, String), QueryError> {
        let first = self.ident()?;
        if self.eat_punct(".") { Ok((Some(first), self.ident()?)) } else { Ok((None, first)) }
    }

    /// A string literal.
    pub fn string(&mut self) -> Result<String, QueryError> {
        match self.peek().map(|t| t.tok.clone()) {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.error("string literal")),
        }
    }

    /// The source text of the expression starting here and running until a
    /// `,` or `)` at depth 0, or one of the `stops` keywords at depth 0.
    pub fn expr_text(&mut self, stops: &[&str]) -> Result<String, QueryError> {
        let start = self.pos;
        let mut depth = 0i32;
        while let Some(t) = self.peek() {
            if depth == 0 && (t.is_punct(",") || t.is_punct(")") || stops.iter().any(|k| t.is_kw(k))) {
                break;
            }
            if t.is_punct("(") || t.is_punct("[") {
                depth += 1;
            } else if t.is_punct(")") || t.is_punct("]") {
                depth -= 1;
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error("expression"));
        }
        if depth != 0 {
            return Err(self.error("')'"));
        }
        Ok(self.src[self.toks[start].start..self.toks[self.pos - 1].end].to_string())
    }

    /// Everything from here to the end of the statement, verbatim.
    pub fn rest(&mut self) -> String {
        let text = match self.peek() {
            Some(t) => self.src[t.start..].trim().to_string(),
            None => String::new(),
        };
        self.pos = self.toks.len();
        text
    }

    /// Fails unless the statement is fully consumed.
    pub fn finish(&self) -> Result<(), QueryError> {
        if self.at_end() { Ok(()) } else { Err(self.error("end of query")) }
    }
}

/// Splits a key expression into its elements: `(a, b)` and `tuple(a, b)` are
/// lists, `tuple()` is empty, anything else is one expression.
pub fn split_key(text: &str) -> Result<Vec<String>, QueryError> {
    let mut c = Cursor::new(text)?;
    let is_tuple_call = c.peek_kw("tuple") && c.toks.get(1).is_some_and(|t| t.is_punct("("));
    let is_paren = c.peek().is_some_and(|t| t.is_punct("("));
    if !(is_tuple_call || is_paren) {
        return Ok(vec![text.trim().to_string()]);
    }
    c.pos = if is_tuple_call { 2 } else { 1 };
    let mut out = Vec::new();
    if !c.eat_punct(")") {
        loop {
            out.push(c.expr_text(&[])?);
            if c.eat_punct(")") {
                break;
            }
            c.expect_punct(",")?;
        }
    }
    if !c.at_end() {
        // `(a) + 1`: the parentheses don't enclose the whole key.
        return Ok(vec![text.trim().to_string()]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_keys() {
        assert_eq!(split_key("(a, toDate(b))").unwrap(), vec!["a", "toDate(b)"]);
        assert_eq!(split_key("tuple()").unwrap(), Vec::<String>::new());
        assert_eq!(split_key("tuple(a,b)").unwrap(), vec!["a", "b"]);
        assert_eq!(split_key("toYYYYMM(d)").unwrap(), vec!["toYYYYMM(d)"]);
        assert_eq!(split_key("(a) + 1").unwrap(), vec!["(a) + 1"]);
    }

    #[test]
    fn expression_text_is_verbatim() {
        let mut c = Cursor::new("x = if(a > 1, 'a,b', b)  , y").unwrap();
        c.pos = 2;
        assert_eq!(c.expr_text(&[]).unwrap(), "if(a > 1, 'a,b', b)");
        assert!(c.eat_punct(","));
    }
}

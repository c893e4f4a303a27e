//! The fast path of `INSERT … VALUES`: ClickHouse's Values format for rows
//! of plain literals (numbers, quoted strings, NULL, true/false), parsed as
//! text cells like TabSeparated instead of being planned by DataFusion as a
//! query. Anything else — an expression, a function call, an array, a value
//! the column type does not parse — returns `None` and the caller plans the
//! statement as before (ClickHouse's `input_format_values_interpret_expressions`
//! fallback), so errors and results stay those of the general path.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

/// Parses `VALUES (…), (…)` text (after the keyword) into a batch, or `None`.
pub fn read_values(text: &str, schema: &SchemaRef) -> Option<RecordBatch> {
    let rows = literal_rows(text, schema.fields().len())?;
    super::read::rows_to_batch((0..schema.fields().len()).collect(), rows, schema).ok()
}

/// Splits the rows into cells; `None` at the first non-literal.
fn literal_rows(text: &str, width: usize) -> Option<Vec<Vec<Option<String>>>> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut rows = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if *b.get(i)? != b'(' {
            return None;
        }
        i += 1;
        let mut row = Vec::with_capacity(width);
        loop {
            skip_ws(&mut i);
            row.push(literal(b, &mut i)?);
            skip_ws(&mut i);
            match *b.get(i)? {
                b',' => i += 1,
                b')' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
        if row.len() != width {
            return None;
        }
        rows.push(row);
        skip_ws(&mut i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b';') => {
                i += 1;
                skip_ws(&mut i);
                return (i == b.len()).then_some(rows);
            }
            None => return Some(rows),
            // `(…) (…)` without commas is valid in ClickHouse too.
            Some(b'(') => {}
            Some(_) => return None,
        }
    }
}

/// One literal at `b[*i]`: its text, `None` for NULL; the outer `None` for
/// anything that is not a plain literal.
fn literal(b: &[u8], i: &mut usize) -> Option<Option<String>> {
    match *b.get(*i)? {
        b'\'' => quoted(b, i).map(Some),
        c if c == b'-' || c == b'+' || c == b'.' || c.is_ascii_digit() => {
            let start = *i;
            *i += 1;
            while *i < b.len() {
                let c = b[*i];
                let exp_sign = (c == b'-' || c == b'+') && matches!(b[*i - 1], b'e' | b'E');
                if c.is_ascii_digit() || c == b'.' || c == b'e' || c == b'E' || exp_sign {
                    *i += 1;
                } else {
                    break;
                }
            }
            let s = std::str::from_utf8(&b[start..*i]).ok()?;
            // `1-2`, `1e`, `..`: an expression or a typo — the planner decides.
            s.parse::<f64>().ok()?;
            Some(Some(s.to_string()))
        }
        c if c.is_ascii_alphabetic() => {
            let start = *i;
            while *i < b.len() && (b[*i].is_ascii_alphanumeric() || b[*i] == b'_') {
                *i += 1;
            }
            let word = std::str::from_utf8(&b[start..*i]).ok()?;
            let next = b[*i..].iter().find(|c| !c.is_ascii_whitespace());
            if next == Some(&b'(') {
                return None; // a function call
            }
            if word.eq_ignore_ascii_case("null") {
                Some(None)
            } else if word.eq_ignore_ascii_case("true") || word.eq_ignore_ascii_case("false") {
                Some(Some(word.to_ascii_lowercase()))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// A single-quoted string with ClickHouse's escapes (`\\'`, `''`, `\\n`, …).
fn quoted(b: &[u8], i: &mut usize) -> Option<String> {
    *i += 1;
    let mut out = Vec::new();
    while *i < b.len() {
        let c = b[*i];
        *i += 1;
        match c {
            b'\\' => {
                let e = *b.get(*i)?;
                *i += 1;
                out.push(match e {
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'0' => 0,
                    b'b' => 8,
                    b'f' => 12,
                    // `\\x41`-style and other escapes: leave them to the planner.
                    b'x' | b'X' | b'N' => return None,
                    other => other,
                });
            }
            b'\'' if b.get(*i) == Some(&b'\'') => {
                out.push(b'\'');
                *i += 1;
            }
            b'\'' => return String::from_utf8(out).ok(),
            other => out.push(other),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(text: &str, width: usize) -> Option<Vec<Vec<Option<String>>>> {
        literal_rows(text, width)
    }

    #[test]
    fn plain_literals_are_cells() {
        let rows = cells("(1, 'a''b'), (-2.5e3,'x\\'y\\n') (NULL, true);", 2).unwrap();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(rows, vec![vec![s("1"), s("a'b")], vec![s("-2.5e3"), s("x'y\n")], vec![None, s("true")]]);
    }

    #[test]
    fn anything_else_falls_back_to_the_planner() {
        for text in [
            "(1 + 1, 'a')",
            "(now(), 'a')",
            "([1, 2], 'a')",
            "(1, 'a'), (2)",
            "(1, 'a') SETTINGS x = 1",
            "(toDate('2024-01-01'), 'a')",
            "(1-2, 'a')",
            "(1, 'unterminated)",
            "(x, 'a')",
            "",
        ] {
            assert_eq!(cells(text, 2), None, "{text}");
        }
    }
}

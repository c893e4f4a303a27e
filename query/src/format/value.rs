//! One value as ClickHouse writes it in text formats: numbers, dates as
//! `YYYY-MM-DD`, date-times as `YYYY-MM-DD hh:mm:ss[.fff]`, UUIDs in 8-4-4-4-12
//! form, arrays as `[…]`, with each format's quoting and escaping.

use std::fmt::Write;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::*;
use chrono::{DateTime, NaiveDate};

/// How strings are quoted and escaped, and how NULL is spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// TabSeparated: backslash escapes, NULL is `\N`.
    Tsv,
    /// CSV: double quotes doubled inside double quotes, NULL is `\N`.
    Csv,
    /// JSON: JSON strings, 64-bit integers quoted, NULL is `null`.
    Json,
    /// Inside an array in TSV/CSV: single-quoted strings, NULL is `NULL`.
    Quoted,
}

fn escape_tsv(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\'' => out.push_str("\\'"),
            c => out.push(c),
        }
    }
}

fn write_str(out: &mut String, s: &str, style: Style) {
    match style {
        Style::Tsv => escape_tsv(out, s),
        Style::Csv => {
            out.push('"');
            out.push_str(&s.replace('"', "\"\""));
            out.push('"');
        }
        Style::Json => {
            // serde_json's string escaping cannot fail on a &str.
            out.push_str(&serde_json::to_string(s).unwrap_or_default());
        }
        Style::Quoted => {
            out.push('\'');
            escape_tsv(out, s);
            out.push('\'');
        }
    }
}

fn date(days: i32) -> String {
    NaiveDate::from_num_days_from_ce_opt(days + 719_163).map(|d| d.to_string()).unwrap_or_else(|| "1970-01-01".into())
}

fn datetime(value: i64, unit: TimeUnit, digits: u32) -> String {
    let (secs, nanos) = match unit {
        TimeUnit::Second => (value, 0),
        TimeUnit::Millisecond => (value.div_euclid(1000), value.rem_euclid(1000) * 1_000_000),
        TimeUnit::Microsecond => (value.div_euclid(1_000_000), value.rem_euclid(1_000_000) * 1000),
        TimeUnit::Nanosecond => (value.div_euclid(1_000_000_000), value.rem_euclid(1_000_000_000)),
    };
    let dt = DateTime::from_timestamp(secs, nanos as u32).unwrap_or_default().naive_utc();
    let mut s = dt.format("%Y-%m-%d %H:%M:%S").to_string();
    if digits > 0 {
        let frac = format!("{:09}", nanos);
        s.push('.');
        s.push_str(&frac[..digits as usize]);
    }
    s
}

fn float(out: &mut String, v: f64, style: Style) {
    if v.is_nan() {
        out.push_str(if style == Style::Json { "null" } else { "nan" });
    } else if v.is_infinite() {
        out.push_str(match (style, v > 0.0) {
            (Style::Json, _) => "null",
            (_, true) => "inf",
            (_, false) => "-inf",
        });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Fraction digits of a DateTime64 from its declared type, else its unit.
pub fn datetime_digits(unit: TimeUnit, ch_type: Option<&str>) -> u32 {
    if let Some(p) = ch_type
        .and_then(|t| t.split("DateTime64(").nth(1))
        .and_then(|r| r.split([',', ')']).next())
        .and_then(|p| p.trim().parse().ok())
    {
        return p;
    }
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}

/// Appends row `i` of `a` to `out`. `ch_type` is the declared ClickHouse type
/// when known (it decides UUID vs FixedString and DateTime64 precision).
pub fn write_value(out: &mut String, a: &ArrayRef, i: usize, style: Style, ch_type: Option<&str>) {
    if a.is_null(i) {
        out.push_str(match style {
            Style::Json => "null",
            Style::Quoted => "NULL",
            _ => "\\N",
        });
        return;
    }
    macro_rules! int {
        ($t:ty, $quote64:expr) => {{
            let v = a.as_primitive::<$t>().value(i);
            if style == Style::Json && $quote64 {
                let _ = write!(out, "\"{v}\"");
            } else {
                let _ = write!(out, "{v}");
            }
        }};
    }
    match a.data_type() {
        DataType::Int8 => int!(Int8Type, false),
        DataType::Int16 => int!(Int16Type, false),
        DataType::Int32 => int!(Int32Type, false),
        DataType::Int64 => int!(Int64Type, true),
        DataType::UInt8 => int!(UInt8Type, false),
        DataType::UInt16 => int!(UInt16Type, false),
        DataType::UInt32 => int!(UInt32Type, false),
        DataType::UInt64 => int!(UInt64Type, true),
        DataType::Float32 => float(out, a.as_primitive::<Float32Type>().value(i) as f64, style),
        DataType::Float64 => float(out, a.as_primitive::<Float64Type>().value(i), style),
        DataType::Boolean => out.push_str(if a.as_boolean().value(i) { "true" } else { "false" }),
        DataType::Decimal128(_, s) => {
            let text = Decimal128Type::format_decimal(a.as_primitive::<Decimal128Type>().value(i), 38, *s);
            if style == Style::Json {
                let _ = write!(out, "{text}");
            } else {
                out.push_str(&text);
            }
        }
        DataType::Date32 => {
            let d = date(a.as_primitive::<Date32Type>().value(i));
            write_str(out, &d, if style == Style::Tsv { Style::Tsv } else { style });
        }
        DataType::Timestamp(unit, _) => {
            let v = match unit {
                TimeUnit::Second => a.as_primitive::<TimestampSecondType>().value(i),
                TimeUnit::Millisecond => a.as_primitive::<TimestampMillisecondType>().value(i),
                TimeUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().value(i),
                TimeUnit::Nanosecond => a.as_primitive::<TimestampNanosecondType>().value(i),
            };
            let s = datetime(v, *unit, datetime_digits(*unit, ch_type));
            write_str(out, &s, style);
        }
        DataType::Utf8 => write_str(out, a.as_string::<i32>().value(i), style),
        DataType::LargeUtf8 => write_str(out, a.as_string::<i64>().value(i), style),
        DataType::Utf8View => write_str(out, a.as_string_view().value(i), style),
        DataType::FixedSizeBinary(16) if ch_type == Some("UUID") => {
            let b = a.as_fixed_size_binary().value(i);
            let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
            let s = format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]);
            write_str(out, &s, style);
        }
        DataType::FixedSizeBinary(_) => {
            write_str(out, &String::from_utf8_lossy(a.as_fixed_size_binary().value(i)), style)
        }
        DataType::Binary => write_str(out, &String::from_utf8_lossy(a.as_binary::<i32>().value(i)), style),
        DataType::List(_) => {
            let list = a.as_list::<i32>();
            let items = list.value(i);
            let inner_type = ch_type.and_then(|t| t.strip_prefix("Array(")).and_then(|t| t.strip_suffix(')'));
            let inner_style = if style == Style::Json { Style::Json } else { Style::Quoted };
            let mut s = String::from("[");
            for j in 0..items.len() {
                if j > 0 {
                    s.push(',');
                }
                write_value(&mut s, &items, j, inner_style, inner_type);
            }
            s.push(']');
            match style {
                Style::Csv => write_str(out, &s, Style::Csv),
                _ => out.push_str(&s),
            }
        }
        _ => {
            let s = arrow::util::display::array_value_to_string(a, i).unwrap_or_default();
            write_str(out, &s, style);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::*;

    use super::*;

    fn one(a: ArrayRef, style: Style, t: Option<&str>) -> String {
        let mut s = String::new();
        write_value(&mut s, &a, 0, style, t);
        s
    }

    #[test]
    fn renders_like_clickhouse() {
        assert_eq!(one(Arc::new(StringArray::from(vec!["a\tb\n'c\\"])), Style::Tsv, None), "a\\tb\\n\\'c\\\\");
        assert_eq!(one(Arc::new(StringArray::from(vec!["say \"hi\""])), Style::Csv, None), "\"say \"\"hi\"\"\"");
        assert_eq!(one(Arc::new(Date32Array::from(vec![15857])), Style::Tsv, None), "2013-06-01");
        assert_eq!(
            one(Arc::new(TimestampSecondArray::from(vec![1373891234])), Style::Tsv, None),
            "2013-07-15 12:27:14"
        );
        assert_eq!(
            one(Arc::new(TimestampMillisecondArray::from(vec![1373891234567])), Style::Json, Some("DateTime64(3)")),
            "\"2013-07-15 12:27:14.567\""
        );
        assert_eq!(one(Arc::new(UInt64Array::from(vec![u64::MAX])), Style::Json, None), "\"18446744073709551615\"");
        assert_eq!(one(Arc::new(UInt32Array::from(vec![7])), Style::Json, None), "7");
        assert_eq!(one(Arc::new(Int32Array::from(vec![None])), Style::Tsv, None), "\\N");
        assert_eq!(one(Arc::new(Float64Array::from(vec![f64::NAN])), Style::Tsv, None), "nan");
        assert_eq!(one(Arc::new(Float64Array::from(vec![0.1])), Style::Tsv, None), "0.1");
        let d = Decimal128Array::from(vec![12345]).with_precision_and_scale(10, 2).unwrap();
        assert_eq!(one(Arc::new(d), Style::Tsv, None), "123.45");
        let uuid = FixedSizeBinaryArray::try_from_iter(vec![vec![0x12u8; 16]].into_iter()).unwrap();
        assert_eq!(one(Arc::new(uuid), Style::Tsv, Some("UUID")), "12121212-1212-1212-1212-121212121212");
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1), None, Some(3)])]);
        assert_eq!(one(Arc::new(list), Style::Tsv, None), "[1,NULL,3]");
        let mut b = ListBuilder::new(StringBuilder::new());
        b.values().append_value("x'y");
        b.append(true);
        assert_eq!(one(Arc::new(b.finish()), Style::Tsv, None), "['x\\'y']");
    }
}

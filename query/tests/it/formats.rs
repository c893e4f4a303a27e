//! Text formats: ClickHouse's spelling of values, round trips, and input
//! errors that name the row and column.

use std::sync::Arc;

use arrow::datatypes::Schema;
use query::format::{self, Format};
use query::parse::{Statement, parse_statement};

fn schema(ddl_columns: &str) -> Arc<Schema> {
    let sql = format!("CREATE TABLE t ({ddl_columns}) ENGINE = MergeTree ORDER BY tuple()");
    match parse_statement(&sql).unwrap() {
        Statement::CreateTable(t) => t.schema(),
        other => panic!("{other:?}"),
    }
}

const COLUMNS: &str = "d Date, t DateTime, t3 DateTime64(3), u UInt64, i Int32, f Float64, s String, \
                       n Nullable(String), b Bool, dec Decimal(10, 2), id UUID";

#[test]
fn tsv_round_trip_with_clickhouse_spelling() {
    let s = schema(COLUMNS);
    let input = "2013-06-01\t2013-07-15 12:27:14\t2013-07-15 12:27:14.567\t18446744073709551615\t-5\t0.1\ta\\tb\\\\c\t\\N\ttrue\t123.45\t12121212-1212-1212-1212-121212121212\n\
                 1970-01-01\t1970-01-01 00:00:00\t1970-01-01 00:00:00.000\t0\t0\t0\t\tx\tfalse\t0.00\t00000000-0000-0000-0000-000000000000\n";
    let batch = format::read(Format::TabSeparated, input.as_bytes(), &s).unwrap();
    assert_eq!(batch.num_rows(), 2);
    let out =
        String::from_utf8(format::write(Format::TabSeparated, std::slice::from_ref(&batch), &s).unwrap()).unwrap();
    assert_eq!(out, input);
    let with_types = String::from_utf8(
        format::write(Format::TabSeparatedWithNamesAndTypes, std::slice::from_ref(&batch), &s).unwrap(),
    )
    .unwrap();
    let mut lines = with_types.lines();
    assert_eq!(lines.next().unwrap(), "d\tt\tt3\tu\ti\tf\ts\tn\tb\tdec\tid");
    assert_eq!(
        lines.next().unwrap(),
        "Date\tDateTime\tDateTime64(3)\tUInt64\tInt32\tFloat64\tString\tNullable(String)\tBool\tDecimal(10, 2)\tUUID"
    );
    // And it reads back, columns matched by the header.
    let again = format::read(Format::TabSeparatedWithNamesAndTypes, with_types.as_bytes(), &s).unwrap();
    assert_eq!(again, batch);
}

#[test]
fn csv_and_json_each_row_round_trip() {
    let s = schema(COLUMNS);
    let tsv = "2013-06-01\t2013-07-15 12:27:14\t2013-07-15 12:27:14.567\t7\t-5\t1.5\tsay \"hi\", ok\t\\N\ttrue\t1.50\t12121212-1212-1212-1212-121212121212\n";
    let batch = format::read(Format::TabSeparated, tsv.as_bytes(), &s).unwrap();
    let csv = String::from_utf8(format::write(Format::Csv, std::slice::from_ref(&batch), &s).unwrap()).unwrap();
    assert_eq!(
        csv,
        "\"2013-06-01\",\"2013-07-15 12:27:14\",\"2013-07-15 12:27:14.567\",7,-5,1.5,\"say \"\"hi\"\", ok\",\\N,true,1.50,\"12121212-1212-1212-1212-121212121212\"\n"
    );
    assert_eq!(format::read(Format::Csv, csv.as_bytes(), &s).unwrap(), batch);
    let json =
        String::from_utf8(format::write(Format::JsonEachRow, std::slice::from_ref(&batch), &s).unwrap()).unwrap();
    assert_eq!(
        json,
        "{\"d\":\"2013-06-01\",\"t\":\"2013-07-15 12:27:14\",\"t3\":\"2013-07-15 12:27:14.567\",\"u\":\"7\",\"i\":-5,\"f\":1.5,\
         \"s\":\"say \\\"hi\\\", ok\",\"n\":null,\"b\":true,\"dec\":1.50,\"id\":\"12121212-1212-1212-1212-121212121212\"}\n"
    );
    assert_eq!(format::read(Format::JsonEachRow, json.as_bytes(), &s).unwrap(), batch);
}

#[test]
fn missing_values_take_defaults_and_unknown_json_keys_are_skipped() {
    let s = schema("a UInt32, b String, c Nullable(Int64)");
    let b = format::read(Format::JsonEachRow, b"{\"b\": \"x\", \"zzz\": 1}\n{\"a\": 5}", &s).unwrap();
    let out = String::from_utf8(format::write(Format::TabSeparated, &[b], &s).unwrap()).unwrap();
    assert_eq!(out, "0\tx\t\\N\n5\t\t\\N\n");
    let b = format::read(Format::Csv, b"1,,\n2,\"\",3\r\n", &s).unwrap();
    let out = String::from_utf8(format::write(Format::TabSeparated, &[b], &s).unwrap()).unwrap();
    assert_eq!(out, "1\t\t\\N\n2\t\t3\n");
}

#[test]
fn bad_input_names_row_and_column_and_accepts_nothing() {
    let s = schema("a UInt8, d Date, s String");
    let cases: &[(Format, &[u8], u32, &str)] = &[
        (
            Format::TabSeparated,
            b"1\t2013-06-01\tx\n300\t2013-06-01\ty\n",
            6,
            "Cannot parse '300' as UInt8 (at row 2, column 1: a)",
        ),
        (Format::TabSeparated, b"1\t2013-13-45\tx\n", 6, "Cannot parse '2013-13-45' as Date (at row 1, column 2: d)"),
        (Format::TabSeparated, b"1\t2013-06-01\n", 27, "expected 3 tab-separated fields, got 2 (at row 1)"),
        (Format::Csv, b"1,2013-06-01,\"open\n", 27, "unterminated quoted field (at row 1)"),
        (Format::JsonEachRow, b"{\"a\": 1}\n{\"a\": 2", 117, "Cannot parse JSON object at row 2"),
        (Format::JsonEachRow, b"[1]", 117, "expected '{'"),
        (Format::TabSeparated, b"1\t2013-06-01\t\xff\n", 27, "not valid UTF-8 at byte 13"),
        (Format::TabSeparatedWithNames, b"a\tnope\ts\n", 16, "There is no column `nope`"),
    ];
    for (f, body, code, msg) in cases {
        let e = format::read(*f, body, &s).unwrap_err();
        assert_eq!(e.code, *code, "{e}");
        assert!(e.message.contains(msg), "{e}\nexpected: {msg}");
    }
    let e = Format::from_name("Parquett").unwrap_err();
    assert_eq!((e.code, e.name), (73, "UNKNOWN_FORMAT"));
    assert_eq!(Format::from_name("TSVWithNames").unwrap(), Format::TabSeparatedWithNames);
}

//! Round trips and bad input for the binary formats.

use super::*;

fn schema(cols: &[(&str, &str)]) -> Schema {
    Schema::new(cols.iter().map(|(n, t)| parse_type(t).unwrap().field(n)).collect::<Vec<_>>())
}

fn sample() -> (Schema, RecordBatch) {
    let s = schema(&[
        ("u", "UInt64"),
        ("s", "String"),
        ("n", "Nullable(Int32)"),
        ("d", "Date"),
        ("t", "DateTime"),
        ("t3", "DateTime64(3)"),
        ("dec", "Decimal(10, 2)"),
        ("id", "UUID"),
        ("a", "Array(Nullable(String))"),
        ("lc", "LowCardinality(String)"),
        ("b", "Bool"),
    ]);
    let mut lb = ListBuilder::new(StringBuilder::new());
    lb.append(true);
    lb.values().append_value("a");
    lb.values().append_null();
    lb.append(true);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(vec![1, u64::MAX])),
        Arc::new(StringArray::from(vec!["hello", ""])),
        Arc::new(Int32Array::from(vec![None, Some(-7)])),
        Arc::new(Date32Array::from(vec![15857, 1])),
        Arc::new(TimestampSecondArray::from(vec![1373891234, 1])),
        Arc::new(TimestampMillisecondArray::from(vec![1373891234567, 1])),
        Arc::new(Decimal128Array::from(vec![12345, -1]).with_precision_and_scale(10, 2).unwrap()),
        Arc::new(
            FixedSizeBinaryArray::try_from_iter(vec![(1u8..=16).collect::<Vec<_>>(), vec![0; 16]].into_iter()).unwrap(),
        ),
        Arc::new(lb.finish()),
        Arc::new(StringArray::from(vec!["x", "y"])),
        Arc::new(BooleanArray::from(vec![true, false])),
    ];
    let b = RecordBatch::try_new(Arc::new(s.clone()), cols).unwrap();
    (s, b)
}

fn same(a: &RecordBatch, b: &RecordBatch) {
    assert_eq!(a.num_columns(), b.num_columns());
    for i in 0..a.num_columns() {
        let want = arrow::compute::cast(a.column(i), b.column(i).data_type()).unwrap();
        assert_eq!(want.to_data(), b.column(i).to_data(), "column {}", a.schema().field(i).name());
    }
}

#[test]
fn row_binary_round_trips_every_type() {
    let (s, b) = sample();
    let bytes = write_row_binary(std::slice::from_ref(&b), &s, false).unwrap();
    // u64 1 then "hello" as length 5 + bytes, then NULL flag 1.
    assert_eq!(&bytes[..15], &[1, 0, 0, 0, 0, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o', 1]);
    same(&b, &read_row_binary(&bytes, &s, false).unwrap());
    let with_header = write_row_binary(std::slice::from_ref(&b), &s, true).unwrap();
    let back = read_row_binary(&with_header, &Schema::empty(), true).unwrap();
    same(&b, &back);
    assert_eq!(back.schema().field(9).name(), "lc");
}

#[test]
fn native_round_trips_every_type() {
    let (s, b) = sample();
    let bytes = write_native(&[b.clone(), b.slice(1, 1)], &s).unwrap();
    let back = read_native(&bytes).unwrap();
    assert_eq!(back.len(), 2);
    same(&b, &back[0]);
    same(&b.slice(1, 1), &back[1]);
    // Empty result: one block with the header and no data.
    let empty = write_native(&[], &s).unwrap();
    assert_eq!(read_native(&empty).unwrap()[0].num_rows(), 0);
}

#[test]
fn native_low_cardinality_as_clients_write_it() {
    // LowCardinality(Nullable(String)), 3 rows: 'a', NULL, 'a'.
    let mut b = Vec::new();
    write_varuint(&mut b, 1);
    write_varuint(&mut b, 3);
    write_string(&mut b, b"c");
    write_string(&mut b, b"LowCardinality(Nullable(String))");
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&((1u64 << 9) | (1 << 10)).to_le_bytes());
    b.extend_from_slice(&2u64.to_le_bytes());
    write_string(&mut b, b"");
    write_string(&mut b, b"a");
    b.extend_from_slice(&3u64.to_le_bytes());
    b.extend_from_slice(&[1, 0, 1]);
    let got = read_native(&b).unwrap();
    let c = got[0].column(0).as_string::<i32>();
    assert_eq!((c.value(0), c.is_null(1), c.value(2)), ("a", true, "a"));
}

#[test]
fn truncated_and_corrupt_input_are_errors() {
    let (s, b) = sample();
    let bytes = write_row_binary(std::slice::from_ref(&b), &s, false).unwrap();
    for cut in [1, 9, bytes.len() / 2, bytes.len() - 1] {
        let e = read_row_binary(&bytes[..cut], &s, false).unwrap_err();
        assert!(e.message.contains("at row"), "{e}");
    }
    let native = write_native(std::slice::from_ref(&b), &s).unwrap();
    for cut in [1, 5, native.len() / 2, native.len() - 1] {
        assert!(read_native(&native[..cut]).is_err());
    }
    // A LowCardinality block claiming an impossible index width is an error, not a panic.
    let mut lc = Vec::new();
    write_varuint(&mut lc, 1);
    write_varuint(&mut lc, 1);
    write_string(&mut lc, b"c");
    write_string(&mut lc, b"LowCardinality(String)");
    lc.extend_from_slice(&1u64.to_le_bytes());
    lc.extend_from_slice(&((1u64 << 9) | 200).to_le_bytes());
    lc.extend_from_slice(&1u64.to_le_bytes());
    write_string(&mut lc, b"a");
    lc.extend_from_slice(&1u64.to_le_bytes());
    lc.push(0);
    assert_eq!(read_native(&lc).unwrap_err().code, 27);
    // A huge string length does not allocate; it is a short read.
    let mut huge = Vec::new();
    write_varuint(&mut huge, u64::MAX >> 1);
    let s1 = schema(&[("s", "String")]);
    assert_eq!(read_row_binary(&huge, &s1, false).unwrap_err().code, 33);
}

/// Found by `corrupt_binary_bodies_never_panic`: a header naming zero
/// columns followed by data looped forever.
#[test]
fn regression_row_binary_with_zero_columns_and_data_is_an_error_not_a_hang() {
    let body = [0u8, 1, 2, 3];
    assert!(read_row_binary(&body, &Schema::empty(), true).is_err());
    assert!(read_row_binary(&body[1..], &Schema::empty(), false).is_err());
    assert_eq!(read_row_binary(&[0u8], &Schema::empty(), true).unwrap().num_rows(), 0);
}

proptest::proptest! {
    /// Corrupt bodies (random bytes overwritten, then cut) are errors or
    /// data, never a panic or a huge allocation.
    #[test]
    fn corrupt_binary_bodies_never_panic(edits in proptest::collection::vec((0usize..4096, 0u8..=255), 1..8), cut in 0usize..4096) {
        let (s, b) = sample();
        for mut body in [
            write_native(std::slice::from_ref(&b), &s).unwrap(),
            write_row_binary(std::slice::from_ref(&b), &s, true).unwrap(),
        ] {
            for (pos, v) in &edits {
                let n = body.len();
                body[pos % n] = *v;
            }
            body.truncate(cut.min(body.len()));
            let _ = read_native(&body);
            let _ = read_row_binary(&body, &Schema::empty(), true);
            let _ = read_row_binary(&body, &s, false);
        }
    }
}

//! ClickHouse's binary formats: RowBinary (+WithNamesAndTypes) and Native
//! (https://clickhouse.com/docs/interfaces/formats). Both share the per-value
//! encoding: little-endian fixed-width numbers, `Date` as days in a UInt16,
//! `DateTime` as seconds in a UInt32, strings as a LEB128 length and bytes.
//! RowBinary writes row by row (a NULL flag byte before a Nullable value, a
//! length before an array's items); Native writes blocks column by column (a
//! whole null map before the values, cumulative UInt64 offsets before array
//! items, LowCardinality as dictionary + indexes).

use std::sync::Arc;

use arrow::array::*;
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::*;

use crate::error::QueryError;
use crate::parse::types::{ChType, parse_type};

fn short_read(want: usize, have: usize) -> QueryError {
    QueryError {
        code: 33,
        name: "CANNOT_READ_ALL_DATA",
        message: format!("Cannot read all data. Bytes expected: {want}, bytes read: {have}"),
    }
}

fn input_error(message: String) -> QueryError {
    QueryError { code: 27, name: "CANNOT_PARSE_INPUT_ASSERTION_FAILED", message }
}

/// A cursor over an input body that never reads past its end.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads from the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], QueryError> {
        let have = self.buf.len() - self.pos;
        if n > have {
            return Err(short_read(n, have));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, QueryError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, QueryError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    fn varuint(&mut self) -> Result<u64, QueryError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(input_error("a variable-length integer is longer than 10 bytes".into()))
    }

    /// A length that must fit in what is left of the body (so a corrupt
    /// length cannot make us allocate gigabytes).
    fn len(&mut self, per_item: usize) -> Result<usize, QueryError> {
        let n = self.varuint()?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(per_item.max(1) as u64) > left {
            return Err(short_read(n as usize, left as usize));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<&'a [u8], QueryError> {
        let n = self.len(1)?;
        self.take(n)
    }

    fn utf8(&mut self) -> Result<String, QueryError> {
        let s = self.string()?;
        String::from_utf8(s.to_vec()).map_err(|_| input_error("a column name or type is not valid UTF-8".into()))
    }
}

/// Appends `v` as LEB128.
pub fn write_varuint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    write_varuint(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Bytes of one value of a fixed-width type; `None` for strings and containers.
fn width(t: &ChType) -> Option<usize> {
    use ChType::*;
    Some(match t {
        UInt8 | Int8 | Bool => 1,
        UInt16 | Int16 | Date => 2,
        UInt32 | Int32 | Float32 | Date32 | DateTime(_) => 4,
        UInt64 | Int64 | Float64 | DateTime64(..) => 8,
        Decimal { precision, .. } => decimal_width(*precision),
        Uuid => 16,
        FixedString(n) => *n,
        _ => return None,
    })
}

fn decimal_width(p: u8) -> usize {
    match p {
        0..=9 => 4,
        10..=18 => 8,
        19..=38 => 16,
        _ => 32,
    }
}

fn unit_digits(u: TimeUnit) -> u32 {
    match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}

/// The type a result column is sent as: what was declared, without
/// LowCardinality (clients read plain columns fine), else derived from Arrow.
pub fn output_type(f: &Field) -> ChType {
    fn strip(t: ChType) -> ChType {
        match t {
            ChType::LowCardinality(t) => strip(*t),
            ChType::Array(t) => ChType::Array(Box::new(strip(*t))),
            ChType::Nullable(t) => ChType::Nullable(Box::new(strip(*t))),
            ChType::AggregateFunction(..) => ChType::String,
            t => t,
        }
    }
    let t = parse_type(&super::ch_type_name(f)).unwrap_or(ChType::String);
    let t = strip(t);
    // A declared type whose Arrow type no longer matches (an expression kept
    // the metadata) falls back to what the values are.
    if t.arrow_type() == *f.data_type() || matches!(t, ChType::String | ChType::Nullable(_)) {
        return t;
    }
    let plain = Field::new(f.name(), f.data_type().clone(), f.is_nullable());
    strip(parse_type(&super::ch_type_name(&plain)).unwrap_or(ChType::String))
}

/// Casts a column to the Arrow type its ClickHouse type is encoded from.
fn conform(a: &ArrayRef, t: &ChType) -> Result<ArrayRef, QueryError> {
    let want = match t {
        ChType::String => DataType::Utf8,
        ChType::Nullable(inner) if **inner == ChType::String => DataType::Utf8,
        t => t.arrow_type(),
    };
    if a.data_type() == &want || (matches!(a.data_type(), DataType::Binary) && want == DataType::Utf8) {
        return Ok(a.clone());
    }
    arrow::compute::cast(a, &want).map_err(|e| QueryError {
        code: 53,
        name: "TYPE_MISMATCH",
        message: format!("cannot send a {} column as {t}: {e}", a.data_type()),
    })
}

fn timestamp(a: &dyn Array, i: usize) -> (i64, TimeUnit) {
    match a.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            (a.as_primitive::<TimestampSecondType>().value(i), TimeUnit::Second)
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            (a.as_primitive::<TimestampMillisecondType>().value(i), TimeUnit::Millisecond)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            (a.as_primitive::<TimestampMicrosecondType>().value(i), TimeUnit::Microsecond)
        }
        _ => (a.as_primitive::<TimestampNanosecondType>().value(i), TimeUnit::Nanosecond),
    }
}

fn bytes_of(a: &dyn Array, i: usize) -> &[u8] {
    match a.data_type() {
        DataType::Binary => a.as_binary::<i32>().value(i),
        DataType::FixedSizeBinary(_) => a.as_fixed_size_binary().value(i),
        _ => a.as_string::<i32>().value(i).as_bytes(),
    }
}

/// Writes value `i` of a non-container column (`a` already conformed to `t`).
fn write_scalar(out: &mut Vec<u8>, t: &ChType, a: &dyn Array, i: usize) {
    use ChType::*;
    macro_rules! prim {
        ($ty:ty) => {
            out.extend_from_slice(&a.as_primitive::<$ty>().value(i).to_le_bytes())
        };
    }
    match t {
        UInt8 => prim!(UInt8Type),
        UInt16 => prim!(UInt16Type),
        UInt32 => prim!(UInt32Type),
        UInt64 => prim!(UInt64Type),
        Int8 => prim!(Int8Type),
        Int16 => prim!(Int16Type),
        Int32 => prim!(Int32Type),
        Int64 => prim!(Int64Type),
        Float32 => prim!(Float32Type),
        Float64 => prim!(Float64Type),
        Bool => out.push(a.as_boolean().value(i) as u8),
        Date => out.extend_from_slice(&(a.as_primitive::<Date32Type>().value(i).clamp(0, 65535) as u16).to_le_bytes()),
        Date32 => prim!(Date32Type),
        DateTime(_) => {
            let (v, _) = timestamp(a, i);
            out.extend_from_slice(&(v.clamp(0, u32::MAX as i64) as u32).to_le_bytes());
        }
        DateTime64(p, _) => {
            let (v, unit) = timestamp(a, i);
            let shift = unit_digits(unit).saturating_sub(*p as u32);
            out.extend_from_slice(&(v / 10i64.pow(shift)).to_le_bytes());
        }
        Decimal { precision, .. } => {
            let v = a.as_primitive::<Decimal128Type>().value(i);
            let w = decimal_width(*precision);
            let b = v.to_le_bytes();
            if w <= 16 {
                out.extend_from_slice(&b[..w]);
            } else {
                out.extend_from_slice(&b);
                out.extend_from_slice(&[if v < 0 { 0xff } else { 0 }; 16]);
            }
        }
        Uuid => {
            // ClickHouse keeps a UUID as two little-endian u64 halves; we keep its textual bytes.
            let b = a.as_fixed_size_binary().value(i);
            out.extend(b[..8].iter().rev());
            out.extend(b[8..16].iter().rev());
        }
        FixedString(_) => out.extend_from_slice(a.as_fixed_size_binary().value(i)),
        _ => write_string(out, bytes_of(a, i)),
    }
}

/// RowBinary: one value of any type.
fn write_row_value(out: &mut Vec<u8>, t: &ChType, a: &dyn Array, i: usize) {
    match t {
        ChType::Nullable(inner) => {
            if a.is_null(i) {
                out.push(1);
            } else {
                out.push(0);
                write_row_value(out, inner, a, i);
            }
        }
        ChType::Array(inner) => {
            let list = a.as_list::<i32>();
            let items = list.value(i);
            write_varuint(out, items.len() as u64);
            for j in 0..items.len() {
                write_row_value(out, inner, items.as_ref(), j);
            }
        }
        t => write_scalar(out, t, a, i),
    }
}

/// Native: a whole column.
fn write_native_column(out: &mut Vec<u8>, t: &ChType, a: &dyn Array) {
    match t {
        ChType::Nullable(inner) => {
            out.extend((0..a.len()).map(|i| a.is_null(i) as u8));
            write_native_column(out, inner, a);
        }
        ChType::Array(inner) => {
            let list = a.as_list::<i32>();
            let offs = list.value_offsets();
            let base = offs[0];
            for o in &offs[1..] {
                out.extend_from_slice(&((o - base) as u64).to_le_bytes());
            }
            let items = list.values().slice(base as usize, (offs[offs.len() - 1] - base) as usize);
            write_native_column(out, inner, items.as_ref());
        }
        t => (0..a.len()).for_each(|i| write_scalar(out, t, a, i)),
    }
}

fn prepared(batches: &[RecordBatch], schema: &Schema) -> Result<(Vec<ChType>, Vec<Vec<ArrayRef>>), QueryError> {
    let types: Vec<ChType> = schema.fields().iter().map(|f| output_type(f)).collect();
    let mut cols = Vec::new();
    for b in batches {
        cols.push(b.columns().iter().zip(&types).map(|(c, t)| conform(c, t)).collect::<Result<Vec<_>, _>>()?);
    }
    Ok((types, cols))
}

/// RowBinary output; with `header`, RowBinaryWithNamesAndTypes.
pub fn write_row_binary(batches: &[RecordBatch], schema: &Schema, header: bool) -> Result<Vec<u8>, QueryError> {
    let (types, cols) = prepared(batches, schema)?;
    let mut out = Vec::new();
    if header {
        write_varuint(&mut out, types.len() as u64);
        schema.fields().iter().for_each(|f| write_string(&mut out, f.name().as_bytes()));
        types.iter().for_each(|t| write_string(&mut out, t.to_string().as_bytes()));
    }
    for (b, cols) in batches.iter().zip(&cols) {
        for i in 0..b.num_rows() {
            for (c, t) in cols.iter().zip(&types) {
                write_row_value(&mut out, t, c.as_ref(), i);
            }
        }
    }
    Ok(out)
}

/// Native output: one block per batch (a result with no rows is one empty block).
pub fn write_native(batches: &[RecordBatch], schema: &Schema) -> Result<Vec<u8>, QueryError> {
    let (types, cols) = prepared(batches, schema)?;
    let mut out = Vec::new();
    let block = |out: &mut Vec<u8>, rows: usize, cols: Option<&Vec<ArrayRef>>| {
        write_varuint(out, types.len() as u64);
        write_varuint(out, rows as u64);
        for (k, (f, t)) in schema.fields().iter().zip(&types).enumerate() {
            write_string(out, f.name().as_bytes());
            write_string(out, t.to_string().as_bytes());
            // Zero rows are zero bytes of data, as ClickHouse writes them.
            if let Some(cols) = cols
                && rows > 0
            {
                write_native_column(out, t, cols[k].as_ref());
            }
        }
    };
    let mut any = false;
    for (b, c) in batches.iter().zip(&cols) {
        if b.num_rows() > 0 {
            block(&mut out, b.num_rows(), Some(c));
            any = true;
        }
    }
    if !any {
        block(&mut out, 0, None);
    }
    Ok(out)
}

/// A column being decoded.
enum Col {
    /// Fixed-width values, raw little-endian bytes.
    Fixed {
        t: ChType,
        width: usize,
        bytes: Vec<u8>,
    },
    /// Strings (or aggregate states): concatenated bytes and end offsets.
    Str {
        binary: bool,
        data: Vec<u8>,
        offsets: Vec<i32>,
    },
    Nullable {
        valid: Vec<bool>,
        inner: Box<Col>,
    },
    Array {
        field: FieldRef,
        offsets: Vec<i32>,
        inner: Box<Col>,
    },
    LowCardinality {
        nullable: bool,
        inner: Box<Col>,
    },
}

impl Col {
    fn new(t: &ChType) -> Col {
        match t {
            ChType::Nullable(inner) => Col::Nullable { valid: Vec::new(), inner: Box::new(Col::new(inner)) },
            ChType::Array(inner) => {
                let field = Arc::new(Field::new("item", inner.arrow_type(), inner.is_nullable()));
                Col::Array { field, offsets: vec![0], inner: Box::new(Col::new(inner)) }
            }
            ChType::LowCardinality(inner) => {
                Col::LowCardinality { nullable: inner.is_nullable(), inner: Box::new(Col::new(inner)) }
            }
            t => match width(t) {
                Some(width) => Col::Fixed { t: t.clone(), width, bytes: Vec::new() },
                None => {
                    Col::Str { binary: matches!(t, ChType::AggregateFunction(..)), data: Vec::new(), offsets: vec![0] }
                }
            },
        }
    }

    fn push_default(&mut self) {
        match self {
            Col::Fixed { width, bytes, .. } => bytes.resize(bytes.len() + *width, 0),
            Col::Str { data, offsets, .. } => offsets.push(data.len() as i32),
            Col::Nullable { valid, inner } => {
                valid.push(false);
                inner.push_default();
            }
            Col::Array { offsets, .. } => offsets.push(offsets[offsets.len() - 1]),
            Col::LowCardinality { inner, .. } => inner.push_default(),
        }
    }

    fn push_str(data: &mut Vec<u8>, offsets: &mut Vec<i32>, s: &[u8]) -> Result<(), QueryError> {
        data.extend_from_slice(s);
        let end = i32::try_from(data.len()).map_err(|_| input_error("a string column is larger than 2 GiB".into()))?;
        offsets.push(end);
        Ok(())
    }

    /// RowBinary: one value.
    fn read_one(&mut self, r: &mut Reader) -> Result<(), QueryError> {
        match self {
            Col::Fixed { width, bytes, .. } => bytes.extend_from_slice(r.take(*width)?),
            Col::Str { data, offsets, .. } => Col::push_str(data, offsets, r.string()?)?,
            Col::Nullable { valid, inner } => {
                if r.u8()? != 0 {
                    valid.push(false);
                    inner.push_default();
                } else {
                    valid.push(true);
                    inner.read_one(r)?;
                }
            }
            Col::Array { offsets, inner, .. } => {
                let n = r.len(1)?;
                for _ in 0..n {
                    inner.read_one(r)?;
                }
                let next = i32::try_from(n).ok().and_then(|n| offsets[offsets.len() - 1].checked_add(n));
                offsets.push(next.ok_or_else(|| input_error("an array column is larger than 2^31 items".into()))?);
            }
            // In RowBinary LowCardinality(T) is just T.
            Col::LowCardinality { inner, .. } => inner.read_one(r)?,
        }
        Ok(())
    }

    /// Native: the state prefix (LowCardinality's key version), which comes
    /// before any data, even of an enclosing array.
    fn read_prefix(&mut self, r: &mut Reader) -> Result<(), QueryError> {
        match self {
            Col::Array { inner, .. } | Col::Nullable { inner, .. } => inner.read_prefix(r),
            Col::LowCardinality { .. } => match r.u64()? {
                1 => Ok(()),
                v => Err(input_error(format!("unsupported LowCardinality serialization version {v}"))),
            },
            _ => Ok(()),
        }
    }

    /// Native: `n` values of this column.
    fn read_many(&mut self, r: &mut Reader, n: usize) -> Result<(), QueryError> {
        match self {
            Col::Fixed { width, bytes, .. } => {
                let len = n.checked_mul(*width).ok_or_else(|| short_read(usize::MAX, r.buf.len() - r.pos))?;
                bytes.extend_from_slice(r.take(len)?)
            }
            Col::Str { data, offsets, .. } => {
                for _ in 0..n {
                    Col::push_str(data, offsets, r.string()?)?;
                }
            }
            Col::Nullable { valid, inner } => {
                valid.extend(r.take(n)?.iter().map(|b| *b == 0));
                inner.read_many(r, n)?;
            }
            Col::Array { offsets, inner, .. } => {
                let base = offsets[offsets.len() - 1];
                let mut last = 0u64;
                for _ in 0..n {
                    let o = r.u64()?;
                    let next = i32::try_from(o).ok().and_then(|o| base.checked_add(o));
                    let Some(next) = next.filter(|_| o >= last && o <= (r.buf.len() as u64) * 8) else {
                        return Err(input_error(format!("array offsets are corrupt ({o} after {last})")));
                    };
                    last = o;
                    offsets.push(next);
                }
                inner.read_many(r, last as usize)?;
            }
            Col::LowCardinality { nullable, inner } => {
                if n == 0 {
                    return Ok(());
                }
                let flags = r.u64()?;
                if flags & (1 << 8) != 0 || flags & (1 << 9) == 0 {
                    return Err(input_error("LowCardinality with a shared global dictionary is not supported".into()));
                }
                let keys = r.u64()? as usize;
                if keys > r.buf.len() {
                    return Err(short_read(keys, r.buf.len() - r.pos));
                }
                // The dictionary is of the non-Nullable type; key 0 stands for NULL.
                let mut dict = match &**inner {
                    Col::Nullable { inner, .. } => Col::new(&inner.ch_type()),
                    c => Col::new(&c.ch_type()),
                };
                dict.read_many(r, keys)?;
                let dict = dict.finish()?;
                let rows = r.u64()? as usize;
                if rows != n {
                    return Err(input_error(format!("LowCardinality column has {rows} indexes for {n} rows")));
                }
                let iw = match flags & 0xff {
                    k @ 0..=3 => 1usize << k,
                    k => return Err(input_error(format!("LowCardinality index type {k} is not 0..3"))),
                };
                let raw = r.take(rows.checked_mul(iw).ok_or_else(|| short_read(usize::MAX, 0))?)?;
                let idx: Vec<u64> = raw
                    .chunks_exact(iw)
                    .map(|c| {
                        let mut b = [0u8; 8];
                        b[..iw].copy_from_slice(c);
                        u64::from_le_bytes(b)
                    })
                    .collect();
                if let Some(bad) = idx.iter().find(|k| **k as usize >= keys) {
                    return Err(input_error(format!(
                        "LowCardinality index {bad} is outside its {keys}-key dictionary"
                    )));
                }
                inner.extend_from(&dict, &idx, *nullable)?;
            }
        }
        Ok(())
    }

    /// Appends dictionary values by index (LowCardinality).
    fn extend_from(&mut self, dict: &ArrayRef, idx: &[u64], nullable: bool) -> Result<(), QueryError> {
        match self {
            Col::Nullable { valid, inner } => {
                for k in idx {
                    if nullable && *k == 0 {
                        valid.push(false);
                        inner.push_default();
                    } else {
                        valid.push(true);
                        inner.extend_from(dict, std::slice::from_ref(k), false)?;
                    }
                }
            }
            Col::Str { data, offsets, .. } => {
                for k in idx {
                    Col::push_str(data, offsets, bytes_of(dict.as_ref(), *k as usize))?;
                }
            }
            Col::Fixed { width, bytes, t } => {
                let mut tmp = Vec::new();
                for k in idx {
                    tmp.clear();
                    write_scalar(&mut tmp, t, dict.as_ref(), *k as usize);
                    bytes.extend_from_slice(&tmp[..*width]);
                }
            }
            _ => return Err(input_error("LowCardinality of a container type is not supported".into())),
        }
        Ok(())
    }

    fn ch_type(&self) -> ChType {
        match self {
            Col::Fixed { t, .. } => t.clone(),
            Col::Str { binary: false, .. } => ChType::String,
            Col::Str { binary: true, .. } => ChType::String,
            Col::Nullable { inner, .. } => ChType::Nullable(Box::new(inner.ch_type())),
            Col::Array { inner, .. } => ChType::Array(Box::new(inner.ch_type())),
            Col::LowCardinality { inner, .. } => inner.ch_type(),
        }
    }

    fn finish(self) -> Result<ArrayRef, QueryError> {
        Ok(match self {
            Col::Fixed { t, width, bytes } => fixed_array(&t, width, bytes)?,
            Col::Str { binary, data, offsets } => {
                let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
                if binary {
                    Arc::new(BinaryArray::new(offsets, Buffer::from_vec(data), None))
                } else {
                    let a = StringArray::try_new(offsets, Buffer::from_vec(data), None)
                        .map_err(|_| input_error("a String value is not valid UTF-8".into()))?;
                    Arc::new(a)
                }
            }
            Col::Nullable { valid, inner } => {
                let inner = inner.finish()?;
                let data = inner
                    .to_data()
                    .into_builder()
                    .nulls(Some(NullBuffer::from(valid)))
                    .build()
                    .map_err(|e| input_error(e.to_string()))?;
                make_array(data)
            }
            Col::Array { field, offsets, inner } => {
                let values = inner.finish()?;
                let list = ListArray::try_new(field, OffsetBuffer::new(ScalarBuffer::from(offsets)), values, None)
                    .map_err(|e| input_error(e.to_string()))?;
                Arc::new(list)
            }
            Col::LowCardinality { inner, .. } => inner.finish()?,
        })
    }
}

fn fixed_array(t: &ChType, width: usize, bytes: Vec<u8>) -> Result<ArrayRef, QueryError> {
    use ChType::*;
    let n = bytes.len() / width.max(1);
    macro_rules! prim {
        ($ty:ty) => {{
            let buf = Buffer::from_slice_ref(&bytes);
            Arc::new(PrimitiveArray::<$ty>::new(ScalarBuffer::new(buf, 0, n), None)) as ArrayRef
        }};
    }
    fn le<const W: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; W]> + '_ {
        bytes.chunks_exact(W).map(|c| c.try_into().unwrap_or([0; W]))
    }
    Ok(match t {
        UInt8 => prim!(UInt8Type),
        UInt16 => prim!(UInt16Type),
        UInt32 => prim!(UInt32Type),
        UInt64 => prim!(UInt64Type),
        Int8 => prim!(Int8Type),
        Int16 => prim!(Int16Type),
        Int32 => prim!(Int32Type),
        Int64 => prim!(Int64Type),
        Float32 => prim!(Float32Type),
        Float64 => prim!(Float64Type),
        Date32 => prim!(Date32Type),
        Bool => Arc::new(BooleanArray::from(bytes.iter().map(|b| *b != 0).collect::<Vec<_>>())),
        Date => Arc::new(Date32Array::from(le::<2>(&bytes).map(|b| u16::from_le_bytes(b) as i32).collect::<Vec<_>>())),
        DateTime(tz) => Arc::new(
            TimestampSecondArray::from(le::<4>(&bytes).map(|b| u32::from_le_bytes(b) as i64).collect::<Vec<_>>())
                .with_timezone_opt(tz.clone()),
        ),
        DateTime64(p, _) => {
            let DataType::Timestamp(unit, tz) = t.arrow_type() else { unreachable!("DateTime64 maps to Timestamp") };
            let mul = 10i64.pow(unit_digits(unit).saturating_sub(*p as u32));
            let v: Vec<i64> = le::<8>(&bytes).map(|b| i64::from_le_bytes(b).saturating_mul(mul)).collect();
            let a: ArrayRef = match unit {
                TimeUnit::Second => Arc::new(TimestampSecondArray::from(v).with_timezone_opt(tz)),
                TimeUnit::Millisecond => Arc::new(TimestampMillisecondArray::from(v).with_timezone_opt(tz)),
                TimeUnit::Microsecond => Arc::new(TimestampMicrosecondArray::from(v).with_timezone_opt(tz)),
                TimeUnit::Nanosecond => Arc::new(TimestampNanosecondArray::from(v).with_timezone_opt(tz)),
            };
            a
        }
        Decimal { precision, scale } => {
            let v: Vec<i128> = bytes
                .chunks_exact(width)
                .map(|c| {
                    let neg = c[c.len() - 1] & 0x80 != 0;
                    let mut b = [if neg { 0xff } else { 0 }; 16];
                    let k = c.len().min(16);
                    b[..k].copy_from_slice(&c[..k]);
                    i128::from_le_bytes(b)
                })
                .collect();
            Arc::new(
                Decimal128Array::from(v)
                    .with_precision_and_scale(*precision, *scale)
                    .map_err(|e| input_error(e.to_string()))?,
            )
        }
        Uuid => {
            let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
            for c in bytes.chunks_exact(16) {
                out.extend(c[..8].iter().rev());
                out.extend(c[8..].iter().rev());
            }
            Arc::new(FixedSizeBinaryArray::new(16, Buffer::from_vec(out), None))
        }
        FixedString(w) => Arc::new(FixedSizeBinaryArray::new(*w as i32, Buffer::from_vec(bytes), None)),
        other => return Err(input_error(format!("type {other} is not fixed-width"))),
    })
}

fn batch(names: &[String], types: &[ChType], cols: Vec<Col>, rows: usize) -> Result<RecordBatch, QueryError> {
    let arrays = cols.into_iter().map(Col::finish).collect::<Result<Vec<_>, _>>()?;
    let fields: Vec<Field> = names
        .iter()
        .zip(types)
        .zip(&arrays)
        .map(|((n, t), a)| Field::new(n, a.data_type().clone(), t.is_nullable() || a.null_count() > 0))
        .collect();
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| input_error(e.to_string()))
}

fn header_types(r: &mut Reader, n: usize) -> Result<Vec<ChType>, QueryError> {
    (0..n).map(|_| parse_type(&r.utf8()?)).collect()
}

/// Reads RowBinary input. Without a header the columns are `schema`'s, in
/// order; with one (RowBinaryWithNamesAndTypes) they are what it names.
pub fn read_row_binary(body: &[u8], schema: &Schema, header: bool) -> Result<RecordBatch, QueryError> {
    let mut r = Reader::new(body);
    let (names, types) = if header {
        let n = r.len(2)?;
        let names = (0..n).map(|_| r.utf8()).collect::<Result<Vec<_>, _>>()?;
        (names, header_types(&mut r, n)?)
    } else {
        let types =
            schema.fields().iter().map(|f| parse_type(&super::ch_type_name(f))).collect::<Result<Vec<_>, _>>()?;
        (schema.fields().iter().map(|f| f.name().clone()).collect(), types)
    };
    let mut cols: Vec<Col> = types.iter().map(Col::new).collect();
    if cols.is_empty() && !r.at_end() {
        // A row of no columns reads no bytes: the loop below would never end.
        return Err(input_error("RowBinary data for zero columns".to_string()));
    }
    let mut rows = 0;
    while !r.at_end() {
        for (c, col) in cols.iter_mut().enumerate() {
            col.read_one(&mut r).map_err(|e| QueryError {
                message: format!("{} (at row {}, column `{}`)", e.message, rows + 1, names[c]),
                ..e
            })?;
        }
        rows += 1;
    }
    batch(&names, &types, cols, rows)
}

/// Reads Native input: each block becomes a batch with the block's own
/// columns and types.
pub fn read_native(body: &[u8]) -> Result<Vec<RecordBatch>, QueryError> {
    let mut r = Reader::new(body);
    let mut out = Vec::new();
    while !r.at_end() {
        let ncols = r.len(2)?;
        let rows = r.varuint()? as usize;
        let mut names = Vec::with_capacity(ncols);
        let mut types = Vec::with_capacity(ncols);
        let mut cols = Vec::with_capacity(ncols);
        for _ in 0..ncols {
            let name = r.utf8()?;
            let t = parse_type(&r.utf8()?)?;
            let mut col = Col::new(&t);
            if rows > 0 {
                col.read_prefix(&mut r)?;
                col.read_many(&mut r, rows)
                    .map_err(|e| QueryError { message: format!("{} (column `{name}`)", e.message), ..e })?;
            }
            names.push(name);
            types.push(t);
            cols.push(col);
        }
        out.push(batch(&names, &types, cols, rows)?);
    }
    Ok(out)
}

#[cfg(test)]
#[path = "binary_tests.rs"]
mod tests;

//! ClickHouse's hash functions users shard and sample by — `cityHash64`,
//! `xxHash64`, `sipHash64`, `murmurHash3_64`, `intHash64` — returning
//! ClickHouse's values (checked against chDB: `storage/tests/fixtures/
//! hashes_chdb.tsv`). A Distributed table's sharding key must hash as
//! ClickHouse does, or rows land on other shards than a ClickHouse user
//! expects.
//!
//! ClickHouse hashes a number by its bytes at the column's own width
//! (`xxHash64(toUInt8(1))` differs from `xxHash64(toUInt64(1))`), except
//! `cityHash64`, which takes a number's bits (zero-extended) through
//! `intHash64`'s mix, and `intHash64`, which takes the value as a UInt64.

use std::hash::Hasher;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, UInt64Array};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::common::{Result, exec_err};

/// ClickHouse's `intHash64`: the 64-bit Murmur finaliser over the value
/// xor a fixed salt.
pub fn int_hash64(x: u64) -> u64 {
    fmix64(x ^ 0x4cf2d2baae6da887)
}

fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    x
}

/// One value as the hash functions see it.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    /// A number or date: its bits zero-extended, and its width in bytes.
    Pod { bits: u64, width: usize },
    /// A string's bytes.
    Bytes(&'a [u8]),
}

impl Key<'_> {
    fn with_bytes<T>(&self, f: impl FnOnce(&[u8]) -> T) -> T {
        match self {
            Key::Pod { bits, width } => f(&bits.to_le_bytes()[..*width]),
            Key::Bytes(b) => f(b),
        }
    }
}

/// The hash functions a sharding key may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashFn {
    CityHash64,
    XxHash64,
    SipHash64,
    MurmurHash3_64,
}

impl HashFn {
    /// The function a SQL name calls (case-insensitive), if any.
    pub fn by_name(name: &str) -> Option<HashFn> {
        match name.to_ascii_lowercase().as_str() {
            "cityhash64" => Some(HashFn::CityHash64),
            "xxhash64" => Some(HashFn::XxHash64),
            "siphash64" => Some(HashFn::SipHash64),
            "murmurhash3_64" => Some(HashFn::MurmurHash3_64),
            _ => None,
        }
    }

    /// The hash of one value.
    pub fn hash(self, key: Key<'_>) -> u64 {
        match self {
            HashFn::CityHash64 => match key {
                Key::Pod { bits, .. } => int_hash64(bits),
                Key::Bytes(b) => ch_cityhash102::cityhash64(b),
            },
            HashFn::XxHash64 => key.with_bytes(|b| xxhash_rust::xxh64::xxh64(b, 0)),
            HashFn::SipHash64 => key.with_bytes(|b| {
                let mut h = siphasher::sip::SipHasher24::new_with_keys(0, 0);
                h.write(b);
                h.finish()
            }),
            HashFn::MurmurHash3_64 => key.with_bytes(|b| {
                let mut r = b;
                let h = murmur3::murmur3_x64_128(&mut r, 0).unwrap_or(0);
                (h as u64) ^ ((h >> 64) as u64)
            }),
        }
    }

    /// The hash of every row of `a` (NULL stays NULL).
    pub fn hash_array(self, a: &ArrayRef) -> Result<ArrayRef> {
        Ok(Arc::new(map_keys(a, |k| self.hash(k))?))
    }
}

/// `f` of every row's [`Key`].
pub fn map_keys(a: &ArrayRef, f: impl Fn(Key<'_>) -> u64) -> Result<UInt64Array> {
    macro_rules! pods {
        ($t:ty, $width:expr, $bits:expr) => {{
            let p = a.as_primitive::<$t>();
            p.iter().map(|v| v.map(|v| f(Key::Pod { bits: $bits(v), width: $width }))).collect()
        }};
    }
    Ok(match a.data_type() {
        DataType::UInt8 => pods!(UInt8Type, 1, |v: u8| v as u64),
        DataType::UInt16 => pods!(UInt16Type, 2, |v: u16| v as u64),
        DataType::UInt32 => pods!(UInt32Type, 4, |v: u32| v as u64),
        DataType::UInt64 => pods!(UInt64Type, 8, |v: u64| v),
        DataType::Int8 => pods!(Int8Type, 1, |v: i8| v as u8 as u64),
        DataType::Int16 => pods!(Int16Type, 2, |v: i16| v as u16 as u64),
        DataType::Int32 => pods!(Int32Type, 4, |v: i32| v as u32 as u64),
        DataType::Int64 => pods!(Int64Type, 8, |v: i64| v as u64),
        DataType::Float32 => pods!(Float32Type, 4, |v: f32| v.to_bits() as u64),
        DataType::Float64 => pods!(Float64Type, 8, |v: f64| v.to_bits()),
        // A Date column is ClickHouse's Date: days as UInt16.
        DataType::Date32 => pods!(Date32Type, 2, |v: i32| v as u16 as u64),
        DataType::Boolean => {
            a.as_boolean().iter().map(|v| v.map(|v| f(Key::Pod { bits: v as u64, width: 1 }))).collect()
        }
        // DateTime is seconds as UInt32; DateTime64 ticks as Int64.
        DataType::Timestamp(unit, _) => {
            let i = cast(a, &DataType::Int64)?;
            let width = if *unit == TimeUnit::Second { 4 } else { 8 };
            let mask = if width == 4 { u32::MAX as u64 } else { u64::MAX };
            i.as_primitive::<Int64Type>()
                .iter()
                .map(|v| v.map(|v| f(Key::Pod { bits: v as u64 & mask, width })))
                .collect()
        }
        DataType::Utf8 => a.as_string::<i32>().iter().map(|v| v.map(|v| f(Key::Bytes(v.as_bytes())))).collect(),
        DataType::LargeUtf8 => a.as_string::<i64>().iter().map(|v| v.map(|v| f(Key::Bytes(v.as_bytes())))).collect(),
        DataType::Utf8View => a.as_string_view().iter().map(|v| v.map(|v| f(Key::Bytes(v.as_bytes())))).collect(),
        DataType::Binary => a.as_binary::<i32>().iter().map(|v| v.map(|v| f(Key::Bytes(v)))).collect(),
        DataType::FixedSizeBinary(_) => a.as_fixed_size_binary().iter().map(|v| v.map(|v| f(Key::Bytes(v)))).collect(),
        DataType::Dictionary(_, _) => {
            let plain = cast(a, &DataType::Utf8)?;
            return map_keys(&plain, f);
        }
        t => return exec_err!("cannot hash a value of type {t}"),
    })
}

/// `intHash64` of every row: integers taken as UInt64 (negative values
/// wrap, as ClickHouse does).
pub fn int_hash64_array(a: &ArrayRef) -> Result<ArrayRef> {
    let t = a.data_type();
    let as_u64: UInt64Array = if t.is_signed_integer() {
        cast(a, &DataType::Int64)?.as_primitive::<Int64Type>().unary(|v| v as u64)
    } else if t.is_unsigned_integer() {
        cast(a, &DataType::UInt64)?.as_primitive::<UInt64Type>().clone()
    } else if matches!(t, DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _)) {
        cast(a, &DataType::Int64)?.as_primitive::<Int64Type>().unary(|v| v as u64)
    } else {
        return exec_err!("intHash64 expects an integer, got {t}");
    };
    Ok(Arc::new(as_u64.unary::<_, UInt64Type>(int_hash64)))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, StringArray};
    use arrow::array::{TimestampSecondArray, UInt8Array, UInt16Array, UInt32Array};

    use super::*;

    /// The column of one fixture row's type holding its value.
    fn column(ty: &str, text: &str) -> ArrayRef {
        match ty {
            "UInt8" => Arc::new(UInt8Array::from(vec![text.parse::<u8>().unwrap()])),
            "UInt16" => Arc::new(UInt16Array::from(vec![text.parse::<u16>().unwrap()])),
            "UInt32" => Arc::new(UInt32Array::from(vec![text.parse::<u32>().unwrap()])),
            "UInt64" => Arc::new(UInt64Array::from(vec![text.parse::<u64>().unwrap()])),
            "Int8" => Arc::new(Int8Array::from(vec![text.parse::<i8>().unwrap()])),
            "Int16" => Arc::new(Int16Array::from(vec![text.parse::<i16>().unwrap()])),
            "Int32" => Arc::new(Int32Array::from(vec![text.parse::<i32>().unwrap()])),
            "Int64" => Arc::new(Int64Array::from(vec![text.parse::<i64>().unwrap()])),
            "Float32" => Arc::new(Float32Array::from(vec![text.parse::<f32>().unwrap()])),
            "Float64" => Arc::new(Float64Array::from(vec![text.parse::<f64>().unwrap()])),
            "Date" => {
                let d = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap();
                let days = (d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32;
                Arc::new(arrow::array::Date32Array::from(vec![days]))
            }
            "DateTime" => {
                let t = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap();
                Arc::new(TimestampSecondArray::from(vec![t.and_utc().timestamp()]))
            }
            "String" => Arc::new(StringArray::from(vec![text])),
            other => panic!("fixture type {other}"),
        }
    }

    /// Every value in the chDB fixture hashes to ClickHouse's value.
    #[test]
    fn hashes_match_clickhouse() {
        let fixture = include_str!("../../tests/fixtures/hashes_chdb.tsv");
        let mut checked = 0;
        let mut wrong = Vec::new();
        for line in fixture.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let [func, ty, text, want] = f[..] else { panic!("bad fixture line {line}") };
            let col = column(ty, text);
            let got = match HashFn::by_name(func) {
                Some(h) => h.hash_array(&col).unwrap(),
                None => int_hash64_array(&col).unwrap(),
            };
            let got = got.as_primitive::<UInt64Type>().value(0);
            if got.to_string() != want {
                wrong.push(format!("{func}({ty} {text:?}) = {got}, ClickHouse says {want}"));
            }
            checked += 1;
        }
        assert!(checked > 250, "fixture has {checked} rows");
        assert!(wrong.is_empty(), "{} of {checked} differ:\n{}", wrong.len(), wrong.join("\n"));
    }
}

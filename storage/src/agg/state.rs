//! Aggregate states: creation from values, merge, serialization and the final value.
//! Serialized as a version byte followed by the state; ties in merges resolve the
//! same way on every replica, so merged parts stay byte-identical.

use std::collections::BTreeSet;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use roaring::RoaringTreemap;

use super::AggregateFunction;
use crate::error::{Result, StorageError};

const STATE_VERSION: u8 = 1;

/// A single value an aggregate consumes.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum Value {
    Null,
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
}

impl Value {
    /// Reads row `i` of an array as a value (integers, floats, dates, strings).
    pub fn from_array(a: &ArrayRef, i: usize) -> Result<Value> {
        if a.is_null(i) {
            return Ok(Value::Null);
        }
        let t = a.data_type();
        Ok(if t.is_unsigned_integer() {
            Value::UInt(cast(&a.slice(i, 1), &DataType::UInt64)?.as_primitive::<UInt64Type>().value(0))
        } else if t.is_signed_integer() || t.is_temporal() {
            Value::Int(cast(&a.slice(i, 1), &DataType::Int64)?.as_primitive::<Int64Type>().value(0))
        } else if t.is_floating() || matches!(t, DataType::Decimal128(..)) {
            Value::Float(cast(&a.slice(i, 1), &DataType::Float64)?.as_primitive::<Float64Type>().value(0))
        } else {
            let s = cast(&a.slice(i, 1), &DataType::Utf8)?;
            Value::Str(s.as_string::<i32>().value(0).to_string())
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(0),
            Value::Int(v) => {
                out.push(1);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::UInt(v) => {
                out.push(2);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::Float(v) => {
                out.push(3);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::Str(s) => {
                out.push(4);
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Value> {
        Ok(match r.u8()? {
            0 => Value::Null,
            1 => Value::Int(i64::from_le_bytes(r.array()?)),
            2 => Value::UInt(u64::from_le_bytes(r.array()?)),
            3 => Value::Float(f64::from_le_bytes(r.array()?)),
            4 => {
                let n = u32::from_le_bytes(r.array()?) as usize;
                let b = r.bytes(n)?;
                Value::Str(String::from_utf8(b.to_vec()).map_err(|_| bad("string is not UTF-8"))?)
            }
            t => return Err(bad(&format!("unknown value tag {t}"))),
        })
    }

    /// The 128-bit identity uniqExact counts: integers by value, the rest by hash.
    fn uniq_key(&self) -> u128 {
        match self {
            Value::Int(v) => *v as u64 as u128,
            Value::UInt(v) => *v as u128,
            Value::Float(v) => xxhash_rust::xxh3::xxh3_128(&v.to_le_bytes()) | (1u128 << 127),
            Value::Str(s) => xxhash_rust::xxh3::xxh3_128(s.as_bytes()) | (1u128 << 127),
            Value::Null => 0,
        }
    }
}

fn bad(msg: &str) -> StorageError {
    StorageError::BadAggregateState(msg.to_string())
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(bad("truncated state"));
        }
        let (h, t) = self.buf.split_at(n);
        self.buf = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let b = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }
}

/// The state of one aggregate over the rows folded into it so far.
#[derive(Debug, Clone, PartialEq)]
pub enum AggState {
    Sum(Value),
    Min(Value),
    Max(Value),
    Count(u64),
    Avg { sum: f64, count: u64 },
    Any(Value),
    AnyLast(Value),
    UniqExact(BTreeSet<u128>),
    GroupBitmap(RoaringTreemap),
}

impl AggState {
    /// The empty state of `f`.
    pub fn new(f: AggregateFunction) -> Self {
        match f {
            AggregateFunction::Sum => AggState::Sum(Value::Null),
            AggregateFunction::Min => AggState::Min(Value::Null),
            AggregateFunction::Max => AggState::Max(Value::Null),
            AggregateFunction::Count => AggState::Count(0),
            AggregateFunction::Avg => AggState::Avg { sum: 0.0, count: 0 },
            AggregateFunction::Any => AggState::Any(Value::Null),
            AggregateFunction::AnyLast => AggState::AnyLast(Value::Null),
            AggregateFunction::UniqExact => AggState::UniqExact(BTreeSet::new()),
            AggregateFunction::GroupBitmap => AggState::GroupBitmap(RoaringTreemap::new()),
        }
    }

    /// Folds one value in.
    pub fn add(&mut self, v: &Value) -> Result<()> {
        let other = match (&*self, v) {
            (AggState::Count(_), Value::Null) => AggState::Count(0),
            (AggState::Count(_), _) => AggState::Count(1),
            (_, Value::Null) => return Ok(()),
            (AggState::Sum(_), v) => AggState::Sum(v.clone()),
            (AggState::Min(_), v) => AggState::Min(v.clone()),
            (AggState::Max(_), v) => AggState::Max(v.clone()),
            (AggState::Avg { .. }, v) => AggState::Avg { sum: as_f64(v)?, count: 1 },
            (AggState::Any(_), v) => AggState::Any(v.clone()),
            (AggState::AnyLast(_), v) => AggState::AnyLast(v.clone()),
            (AggState::UniqExact(_), v) => AggState::UniqExact([v.uniq_key()].into_iter().collect()),
            (AggState::GroupBitmap(_), v) => {
                let x = match v {
                    Value::UInt(x) => *x,
                    Value::Int(x) if *x >= 0 => *x as u64,
                    _ => return Err(bad("groupBitmap takes non-negative integers")),
                };
                AggState::GroupBitmap([x].into_iter().collect())
            }
        };
        self.merge(&other)
    }

    /// Merges another state of the same function into this one. `other` holds
    /// later rows (it matters for any/anyLast).
    pub fn merge(&mut self, other: &AggState) -> Result<()> {
        match (self, other) {
            (AggState::Sum(a), AggState::Sum(b)) => *a = add_values(a, b)?,
            (AggState::Min(a), AggState::Min(b)) => {
                if *a == Value::Null || (*b != Value::Null && b < a) {
                    *a = b.clone()
                }
            }
            (AggState::Max(a), AggState::Max(b)) => {
                if *a == Value::Null || (*b != Value::Null && b > a) {
                    *a = b.clone()
                }
            }
            (AggState::Count(a), AggState::Count(b)) => *a += b,
            (AggState::Avg { sum, count }, AggState::Avg { sum: s2, count: c2 }) => {
                *sum += s2;
                *count += c2;
            }
            (AggState::Any(a), AggState::Any(b)) => {
                if *a == Value::Null {
                    *a = b.clone()
                }
            }
            (AggState::AnyLast(a), AggState::AnyLast(b)) => {
                if *b != Value::Null {
                    *a = b.clone()
                }
            }
            (AggState::UniqExact(a), AggState::UniqExact(b)) => a.extend(b.iter().copied()),
            (AggState::GroupBitmap(a), AggState::GroupBitmap(b)) => *a |= b,
            _ => return Err(bad("merging states of different functions")),
        }
        Ok(())
    }

    /// The aggregate's result (`finalizeAggregation`).
    pub fn finalize(&self) -> Value {
        match self {
            AggState::Sum(v) | AggState::Min(v) | AggState::Max(v) | AggState::Any(v) | AggState::AnyLast(v) => {
                v.clone()
            }
            AggState::Count(c) => Value::UInt(*c),
            AggState::Avg { sum, count } => {
                if *count == 0 {
                    Value::Float(f64::NAN)
                } else {
                    Value::Float(sum / *count as f64)
                }
            }
            AggState::UniqExact(s) => Value::UInt(s.len() as u64),
            AggState::GroupBitmap(b) => Value::UInt(b.len()),
        }
    }

    /// Serializes the state.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![STATE_VERSION];
        match self {
            AggState::Sum(v) | AggState::Min(v) | AggState::Max(v) | AggState::Any(v) | AggState::AnyLast(v) => {
                v.write(&mut out)
            }
            AggState::Count(c) => out.extend_from_slice(&c.to_le_bytes()),
            AggState::Avg { sum, count } => {
                out.extend_from_slice(&sum.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
            AggState::UniqExact(s) => {
                out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                for k in s {
                    out.extend_from_slice(&k.to_le_bytes());
                }
            }
            AggState::GroupBitmap(b) => {
                // Serialization into a Vec cannot fail.
                let _ = b.serialize_into(&mut out);
            }
        }
        out
    }

    /// Reads a state of `f` serialized by [`AggState::to_bytes`].
    pub fn from_bytes(f: AggregateFunction, bytes: &[u8]) -> Result<AggState> {
        let mut r = Reader { buf: bytes };
        if r.u8()? != STATE_VERSION {
            return Err(bad("unknown state version"));
        }
        let s = match f {
            AggregateFunction::Sum => AggState::Sum(Value::read(&mut r)?),
            AggregateFunction::Min => AggState::Min(Value::read(&mut r)?),
            AggregateFunction::Max => AggState::Max(Value::read(&mut r)?),
            AggregateFunction::Any => AggState::Any(Value::read(&mut r)?),
            AggregateFunction::AnyLast => AggState::AnyLast(Value::read(&mut r)?),
            AggregateFunction::Count => AggState::Count(u64::from_le_bytes(r.array()?)),
            AggregateFunction::Avg => {
                AggState::Avg { sum: f64::from_le_bytes(r.array()?), count: u64::from_le_bytes(r.array()?) }
            }
            AggregateFunction::UniqExact => {
                let n = u64::from_le_bytes(r.array()?) as usize;
                if n.saturating_mul(16) > r.buf.len() {
                    return Err(bad("truncated uniqExact state"));
                }
                let mut s = BTreeSet::new();
                for _ in 0..n {
                    s.insert(u128::from_le_bytes(r.array()?));
                }
                AggState::UniqExact(s)
            }
            AggregateFunction::GroupBitmap => {
                let b = RoaringTreemap::deserialize_from(r.buf).map_err(|e| bad(&e.to_string()))?;
                r.buf = &[];
                AggState::GroupBitmap(b)
            }
        };
        if !r.buf.is_empty() {
            return Err(bad("trailing bytes after state"));
        }
        Ok(s)
    }
}

fn as_f64(v: &Value) -> Result<f64> {
    Ok(match v {
        Value::Int(x) => *x as f64,
        Value::UInt(x) => *x as f64,
        Value::Float(x) => *x,
        _ => return Err(bad("numeric aggregate over a non-number")),
    })
}

fn add_values(a: &Value, b: &Value) -> Result<Value> {
    Ok(match (a, b) {
        (Value::Null, x) | (x, Value::Null) => x.clone(),
        (Value::Int(x), Value::Int(y)) => Value::Int(x.wrapping_add(*y)),
        (Value::UInt(x), Value::UInt(y)) => Value::UInt(x.wrapping_add(*y)),
        (x, y) => Value::Float(as_f64(x)? + as_f64(y)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(f: AggregateFunction, vals: &[Value]) -> AggState {
        let mut s = AggState::new(f);
        for v in vals {
            s.add(v).unwrap();
        }
        s
    }

    #[test]
    fn every_function_merges_as_if_added_in_one_state() {
        use AggregateFunction::*;
        let a = [Value::UInt(5), Value::UInt(3), Value::Null];
        let b = [Value::UInt(3), Value::UInt(9)];
        for f in [Sum, Min, Max, Count, Avg, Any, AnyLast, UniqExact, GroupBitmap] {
            let mut m = state(f, &a);
            m.merge(&state(f, &b)).unwrap();
            let all: Vec<Value> = a.iter().chain(b.iter()).cloned().collect();
            assert_eq!(m.finalize(), state(f, &all).finalize(), "{f:?}");
            let round = AggState::from_bytes(f, &m.to_bytes()).unwrap();
            assert_eq!(round.finalize(), m.finalize(), "{f:?} round trip");
        }
        let mut u = state(UniqExact, &a);
        u.merge(&state(UniqExact, &b)).unwrap();
        assert_eq!(u.finalize(), Value::UInt(3));
        assert_eq!(state(Count, &a).finalize(), Value::UInt(2));
        assert_eq!(state(AnyLast, &b).finalize(), Value::UInt(9));
        assert_eq!(state(Any, &b).finalize(), Value::UInt(3));
    }

    #[test]
    fn corrupted_state_is_an_error_not_a_panic() {
        let good = state(AggregateFunction::UniqExact, &[Value::UInt(1)]).to_bytes();
        for cut in 0..good.len() {
            assert!(AggState::from_bytes(AggregateFunction::UniqExact, &good[..cut]).is_err());
        }
        assert!(AggState::from_bytes(AggregateFunction::GroupBitmap, &[1, 0xff, 0xff]).is_err());
    }
}

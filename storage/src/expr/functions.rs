//! ClickHouse functions that table expressions use, as DataFusion scalar UDFs.
//! Dates are interpreted in UTC (the server time zone is UTC).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, PrimitiveArray, UInt32Array, UInt64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Date32Type, Int64Type, TimeUnit, UInt64Type};
use chrono::{Datelike, NaiveDate};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

type Kernel = fn(&[ArrayRef]) -> Result<ArrayRef>;
type ReturnType = fn(&[DataType]) -> DataType;

/// One ClickHouse function: a name, a kernel over arrays and its return type.
#[derive(Debug)]
struct ChFunction {
    name: &'static str,
    aliases: Vec<String>,
    signature: Signature,
    ret: ReturnType,
    kernel: Kernel,
}

impl PartialEq for ChFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for ChFunction {}
impl Hash for ChFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

impl ScalarUDFImpl for ChFunction {
    fn name(&self) -> &str {
        self.name
    }
    fn aliases(&self) -> &[String] {
        &self.aliases
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok((self.ret)(arg_types))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = args.args.iter().map(|a| a.to_array(n)).collect::<Result<Vec<_>>>()?;
        Ok(ColumnarValue::Array((self.kernel)(&arrays)?))
    }
}

fn udf(name: &'static str, arity: usize, ret: ReturnType, kernel: Kernel) -> ScalarUDF {
    let lower = name.to_lowercase();
    let aliases = if lower != name { vec![lower] } else { vec![] };
    ScalarUDF::new_from_impl(ChFunction {
        name,
        aliases,
        signature: Signature::any(arity, Volatility::Immutable),
        ret,
        kernel,
    })
}

/// Every ClickHouse function storage provides.
pub fn clickhouse_udfs() -> Vec<ScalarUDF> {
    vec![
        udf("toYYYYMM", 1, |_| DataType::UInt32, |a| date_to_u32(&a[0], |d| d.year() as u32 * 100 + d.month())),
        udf(
            "toYYYYMMDD",
            1,
            |_| DataType::UInt32,
            |a| date_to_u32(&a[0], |d| d.year() as u32 * 10000 + d.month() * 100 + d.day()),
        ),
        // ClickHouse's truth: a number is true when it is not 0 (`WHERE flag`
        // on a UInt8 column); the SQL layer wraps bare conditions in it.
        udf("toBool", 1, |_| DataType::Boolean, |a| Ok(cast(&a[0], &DataType::Boolean)?)),
        udf("toDate", 1, |_| DataType::Date32, |a| Ok(cast(&days(&a[0])?, &DataType::Date32)?)),
        udf(
            "toStartOfMonth",
            1,
            |_| DataType::Date32,
            |a| {
                let d = days(&a[0])?;
                let out: PrimitiveArray<Date32Type> = d.as_primitive::<Date32Type>().unary(|v| {
                    let date = from_days(v);
                    v - (date.day() as i32 - 1)
                });
                Ok(Arc::new(out))
            },
        ),
        udf("toStartOfDay", 1, ts_sec, |a| trunc_seconds(&a[0], 86400)),
        udf("toStartOfHour", 1, ts_sec, |a| trunc_seconds(&a[0], 3600)),
        udf(
            "intHash64",
            1,
            |_| DataType::UInt64,
            |a| {
                let v = as_u64(&a[0])?;
                Ok(Arc::new(v.unary::<_, UInt64Type>(int_hash64)))
            },
        ),
        udf("xxHash64", 1, |_| DataType::UInt64, |a| xx_hash64(&a[0])),
        udf(
            "modulo",
            2,
            |t| t[0].clone(),
            |a| {
                let rhs = cast(&a[1], a[0].data_type())?;
                Ok(arrow::compute::kernels::numeric::rem(&a[0], &rhs)?)
            },
        ),
    ]
}

fn ts_sec(_: &[DataType]) -> DataType {
    DataType::Timestamp(TimeUnit::Second, None)
}

/// ClickHouse's intHash64 (the 64-bit Murmur finaliser).
pub fn int_hash64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    x
}

fn from_days(days: i32) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(days + 719_163).unwrap_or(NaiveDate::MIN)
}

/// Days since the epoch of a Date, DateTime or date string.
fn days(a: &ArrayRef) -> Result<ArrayRef> {
    match a.data_type() {
        DataType::Date32 => Ok(a.clone()),
        DataType::Date64 | DataType::Timestamp(_, _) | DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            Ok(cast(a, &DataType::Date32)?)
        }
        t => exec_err!("expected Date or DateTime, got {t}"),
    }
}

fn date_to_u32(a: &ArrayRef, f: fn(NaiveDate) -> u32) -> Result<ArrayRef> {
    let d = days(a)?;
    let out: UInt32Array = d.as_primitive::<Date32Type>().unary(|v| f(from_days(v)));
    Ok(Arc::new(out))
}

fn trunc_seconds(a: &ArrayRef, unit: i64) -> Result<ArrayRef> {
    let secs = cast(a, &DataType::Timestamp(TimeUnit::Second, None))?;
    let secs = cast(&secs, &DataType::Int64)?;
    let out: Int64Array = secs.as_primitive::<Int64Type>().unary(|v| v - v.rem_euclid(unit));
    Ok(cast(&(Arc::new(out) as ArrayRef), &DataType::Timestamp(TimeUnit::Second, None))?)
}

/// Integers reinterpreted as u64 (negative values wrap, as ClickHouse does).
fn as_u64(a: &ArrayRef) -> Result<UInt64Array> {
    let t = a.data_type();
    if t.is_signed_integer() {
        let i = cast(a, &DataType::Int64)?;
        Ok(i.as_primitive::<Int64Type>().unary(|v| v as u64))
    } else if t.is_unsigned_integer() {
        Ok(cast(a, &DataType::UInt64)?.as_primitive::<UInt64Type>().clone())
    } else if matches!(t, DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _)) {
        let i = cast(a, &DataType::Int64)?;
        Ok(i.as_primitive::<Int64Type>().unary(|v| v as u64))
    } else {
        exec_err!("expected an integer, got {t}")
    }
}

fn xx_hash64(a: &ArrayRef) -> Result<ArrayRef> {
    use xxhash_rust::xxh64::xxh64;
    match a.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let s = cast(a, &DataType::Utf8)?;
            let s = s.as_string::<i32>();
            let out: UInt64Array = s.iter().map(|v| v.map(|v| xxh64(v.as_bytes(), 0))).collect();
            Ok(Arc::new(out))
        }
        _ => {
            let v = as_u64(a)?;
            let out: UInt64Array =
                (0..v.len()).map(|i| (!v.is_null(i)).then(|| xxh64(&v.value(i).to_le_bytes(), 0))).collect();
            Ok(Arc::new(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_hash64_matches_clickhouse() {
        // SELECT intHash64(0), intHash64(1) in ClickHouse.
        assert_eq!(int_hash64(0), 0);
        assert_eq!(int_hash64(1), 12994781566227106604);
    }
}

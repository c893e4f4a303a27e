//! ClickHouse functions that table expressions use, as DataFusion scalar UDFs.
//! Dates are interpreted in UTC (the server time zone is UTC).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, PrimitiveArray, UInt32Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Date32Type, Int64Type, TimeUnit};
use chrono::{Datelike, NaiveDate};

use super::hash::HashFn;
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
        udf("intHash64", 1, |_| DataType::UInt64, |a| super::hash::int_hash64_array(&a[0])),
        udf("cityHash64", 1, |_| DataType::UInt64, |a| HashFn::CityHash64.hash_array(&a[0])),
        udf("xxHash64", 1, |_| DataType::UInt64, |a| HashFn::XxHash64.hash_array(&a[0])),
        udf("sipHash64", 1, |_| DataType::UInt64, |a| HashFn::SipHash64.hash_array(&a[0])),
        udf("murmurHash3_64", 1, |_| DataType::UInt64, |a| HashFn::MurmurHash3_64.hash_array(&a[0])),
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

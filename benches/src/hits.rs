//! The "hits-like" events table (seed 20240601): same columns and
//! distributions as the shared peer benchmark's `gen_hits`, from our own
//! generator (a SplitMix64 stream, so every run and machine gets the same rows).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Array, Float64Array, RecordBatch, StringArray, TimestampSecondArray, UInt8Array, UInt16Array,
    UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub const SEED: u64 = 20240601;
const SPAN_DAYS: i64 = 122;
/// 2013-06-01 00:00:00 UTC.
const T0: i64 = 1_370_044_800;

/// The table's Arrow schema.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_date", DataType::Date32, false),
        Field::new("event_time", DataType::Timestamp(TimeUnit::Second, None), false),
        Field::new("user_id", DataType::UInt64, false),
        Field::new("counter_id", DataType::UInt32, false),
        Field::new("url", DataType::Utf8, false),
        Field::new("region", DataType::UInt16, false),
        Field::new("duration", DataType::UInt32, false),
        Field::new("revenue", DataType::Float64, false),
        Field::new("is_mobile", DataType::UInt8, false),
    ]))
}

/// ClickHouse DDL of the table.
pub const CH_DDL: &str = "CREATE TABLE {name} (event_date Date, event_time DateTime, user_id UInt64, counter_id UInt32, \
url String, region UInt16, duration UInt32, revenue Float64, is_mobile UInt8) ENGINE = MergeTree \
PARTITION BY toYYYYMM(event_date) ORDER BY (counter_id, event_date, user_id)";

/// A small deterministic PRNG (SplitMix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    /// Zipf(s≈1)-like rank in [0, card): P(k) ~ 1/(k+1).
    pub fn log_uniform_rank(&mut self, card: u64) -> u64 {
        let u = self.f64();
        (((card as f64 + 1.0).powf(u) - 1.0) as u64).min(card - 1)
    }
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.f64().max(1e-300), self.f64());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn url_vocab(rng: &mut Rng, card: usize) -> Vec<String> {
    let mut domains: Vec<String> = (0..2000).map(|i| format!("site{i}.example.com")).collect();
    domains.extend(["www.google.com", "maps.google.ru", "news.example.org", "shop.example.net"].map(String::from));
    // The heavy domains are random ones.
    for i in (1..domains.len()).rev() {
        domains.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let words = [
        "news", "sport", "video", "item", "catalog", "search", "auto", "weather", "games", "music", "login", "cart",
        "profile", "maps", "blog", "forum",
    ];
    (0..card)
        .map(|i| {
            let d = &domains[rng.log_uniform_rank(domains.len() as u64) as usize];
            let (w1, w2) = (words[rng.below(16) as usize], words[rng.below(16) as usize]);
            let (pid, q) = (rng.below(10_000_000), rng.below(1000));
            if i % 97 == 0 {
                format!("https://{d}/{w1}/redirect?from=google&id={pid}")
            } else {
                format!("https://{d}/{w1}/{w2}/{pid}.html?p={q}")
            }
        })
        .collect()
}

/// Generates `rows` rows in batches of `batch_rows`, in event-time order.
pub fn generate(rows: usize, batch_rows: usize) -> Vec<RecordBatch> {
    let mut rng = Rng::new(SEED);
    let mut secs: Vec<i64> = (0..rows).map(|_| rng.below((SPAN_DAYS * 86400) as u64) as i64).collect();
    secs.sort_unstable();
    let vocab = url_vocab(&mut rng, 100_000);
    let mut perm: Vec<u32> = (0..vocab.len() as u32).collect();
    for i in (1..perm.len()).rev() {
        perm.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let schema = schema();
    let mut out = Vec::new();
    for start in (0..rows).step_by(batch_rows.max(1)) {
        let n = batch_rows.min(rows - start);
        let t: Vec<i64> = secs[start..start + n].iter().map(|s| s + T0).collect();
        let d: Vec<i32> = t.iter().map(|t| (t / 86400) as i32).collect();
        let user: Vec<u64> = (0..n)
            .map(|_| {
                let r = if rng.f64() < 0.3 { rng.below(1_000_000) } else { rng.log_uniform_rank(1_000_000) };
                (r + 1).wrapping_mul(0x9E3779B97F4A7C15)
            })
            .collect();
        let counter: Vec<u32> = (0..n).map(|_| rng.log_uniform_rank(1000) as u32 + 1).collect();
        let url: StringArray = (0..n)
            .map(|_| Some(vocab[perm[rng.log_uniform_rank(vocab.len() as u64) as usize] as usize].as_str()))
            .collect();
        let region: Vec<u16> = (0..n).map(|_| rng.log_uniform_rank(300) as u16).collect();
        let duration: Vec<u32> = (0..n).map(|_| ((-rng.f64().max(1e-300).ln()) * 60.0).min(86400.0) as u32).collect();
        let revenue: Vec<f64> = (0..n)
            .map(|_| if rng.f64() < 0.1 { ((2.0 + rng.normal()).exp() * 100.0).round() / 100.0 } else { 0.0 })
            .collect();
        let mobile: Vec<u8> = (0..n).map(|_| (rng.f64() < 0.3) as u8).collect();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Date32Array::from(d)),
            Arc::new(TimestampSecondArray::from(t)),
            Arc::new(UInt64Array::from(user)),
            Arc::new(UInt32Array::from(counter)),
            Arc::new(url),
            Arc::new(UInt16Array::from(region)),
            Arc::new(UInt32Array::from(duration)),
            Arc::new(Float64Array::from(revenue)),
            Arc::new(UInt8Array::from(mobile)),
        ];
        // The columns match the schema by construction.
        out.push(RecordBatch::try_new(schema.clone(), cols).expect("hits batch"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_shaped_like_the_spec() {
        let a = generate(20_000, 5000);
        let b = generate(20_000, 5000);
        assert_eq!(a, b);
        assert_eq!(a.len(), 4);
        let all = arrow::compute::concat_batches(&schema(), &a).unwrap();
        let c = arrow::array::AsArray::as_primitive::<arrow::datatypes::UInt32Type>(all.column(3));
        let share_62 = c.values().iter().filter(|v| **v == 62).count() as f64 / 20_000.0;
        assert!(share_62 > 0.0005 && share_62 < 0.005, "{share_62}");
    }
}

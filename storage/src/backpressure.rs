//! Too-many-parts backpressure (ClickHouse's `parts_to_delay_insert` /
//! `parts_to_throw_insert`), checked by the write path before each insert.

use std::time::Duration;

use crate::error::{Result, StorageError};
use crate::table::MergeTreeSettings;

/// How long to delay an insert into a partition with `active_parts` parts, or
/// the error rejecting it. `Ok(None)` means go ahead.
pub fn check_insert(partition_id: &str, active_parts: usize, s: &MergeTreeSettings) -> Result<Option<Duration>> {
    if active_parts >= s.parts_to_throw_insert {
        return Err(StorageError::TooManyParts { partition: partition_id.to_string(), parts: active_parts });
    }
    if active_parts < s.parts_to_delay_insert {
        return Ok(None);
    }
    // ClickHouse's curve: the delay grows exponentially from ~1 ms at the delay
    // threshold to max_delay_to_insert at the throw threshold.
    let allowed = (s.parts_to_throw_insert - s.parts_to_delay_insert).max(1) as f64;
    let over = (active_parts - s.parts_to_delay_insert + 1) as f64;
    let ms = (s.max_delay_to_insert_ms as f64).powf(over / allowed).max(1.0);
    Ok(Some(Duration::from_millis(ms as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_then_throws_naming_the_partition() {
        let s = MergeTreeSettings::default();
        assert_eq!(check_insert("202306", 999, &s).unwrap(), None);
        let d1 = check_insert("202306", 1000, &s).unwrap().unwrap();
        let d2 = check_insert("202306", 2999, &s).unwrap().unwrap();
        assert!(d1 < d2 && d2 <= Duration::from_millis(1000));
        let e = check_insert("202306", 3000, &s).unwrap_err();
        assert!(e.to_string().contains("partition 202306"), "{e}");
        assert_eq!(e.code(), (252, "TOO_MANY_PARTS"));
    }
}

//! The inline-part codec: a small part's files as they ride inside an
//! `Insert` entry (file name → base64 of its bytes, metadata included).
//! Pure encoding: no file is read or written here.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::{ReplicationError, Result};

/// Encodes a part's files for an `Insert` entry.
pub fn encode(files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    files.iter().map(|(f, b)| (f.clone(), B64.encode(b))).collect()
}

/// Decodes the files of an inline `Insert`; a file that is not base64 is
/// a corrupted entry.
pub fn decode(files: &BTreeMap<String, String>) -> Result<BTreeMap<String, Vec<u8>>> {
    files
        .iter()
        .map(|(name, b64)| {
            let bytes =
                B64.decode(b64).map_err(|e| ReplicationError::Corrupted(format!("inline part file {name}: {e}")))?;
            Ok((name.clone(), bytes))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_garbage_is_corruption() {
        let files: BTreeMap<String, Vec<u8>> =
            [("a.bin".to_string(), vec![0u8, 1, 255]), ("meta.json".to_string(), b"{}".to_vec())].into();
        assert_eq!(decode(&encode(&files)).unwrap(), files);
        let bad: BTreeMap<String, String> = [("a.bin".to_string(), "not base64!".to_string())].into();
        assert!(matches!(decode(&bad), Err(ReplicationError::Corrupted(m)) if m.contains("a.bin")));
    }
}

//! Finding damage on disk before it is served or silently dropped.
//!
//! Three layers, each with its own checksum, are checked:
//! - **the write-ahead log**, at open: RocksDB replays it with
//!   `TolerateCorruptedTailRecords`, so a record torn at the very end (a crash during a write
//!   that was never acknowledged: every acknowledgement waits for its fsync) is dropped, and
//!   anything damaged before the end fails the open. RocksDB's default, point-in-time
//!   recovery, would instead stop replaying at the damage and open with everything after it
//!   gone, saying nothing;
//! - **table files (SSTs)**: every block read is checked against its checksum
//!   (`paranoid_checks`, `verify_checksums`); [`Engine::verify_tables`] reads every block of
//!   every column family once, which is what a node does at start;
//! - **the replicated log and its metadata**: each value carries its own crc32
//!   ([`crate::log::frame`]), checked on every read and by [`crate::LogStore::verify`].
//!
//! A failure names the file (or the log index) and the data directory; see
//! `docs/operations.md` ("Damaged data") for what an operator does next.

use std::path::Path;

use crate::engine::{Engine, ALL_CFS};
use crate::StorageError;

/// Where the operator's steps for damaged data are written down.
pub const DAMAGE_GUIDE: &str = "docs/operations.md, \"Damaged data\"";

/// What [`Engine::verify_tables`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableReport {
    pub entries: u64,
    pub bytes: u64,
}

impl Engine {
    /// Reads every entry of every column family with block checksums verified and without
    /// filling the block cache. A damaged block fails with [`StorageError::Damaged`] naming the
    /// table file RocksDB reported. Costs one sequential read of the live data.
    pub fn verify_tables(&self) -> Result<TableReport, StorageError> {
        let mut report = TableReport::default();
        for name in ALL_CFS {
            let mut options = rocksdb::ReadOptions::default();
            options.set_verify_checksums(true);
            options.fill_cache(false);
            let iter =
                self.db()
                    .iterator_cf_opt(self.cf(name), options, rocksdb::IteratorMode::Start);
            for item in iter {
                let (key, value) = item.map_err(|error| damaged(self.path(), &error))?;
                report.entries += 1;
                report.bytes += (key.len() + value.len()) as u64;
            }
        }
        Ok(report)
    }

    /// Writes every memtable out to table files and waits (tests that damage a table file
    /// use it to have one).
    pub fn flush_all(&self) -> Result<(), StorageError> {
        let handles: Vec<_> = ALL_CFS.iter().map(|name| self.cf(name)).collect();
        self.db()
            .flush_cfs_opt(&handles, &rocksdb::FlushOptions::default())?;
        Ok(())
    }
}

/// Turns a RocksDB error into [`StorageError::Damaged`] when it reports corruption; any other
/// error stays what it was.
pub(crate) fn classify(dir: &Path, error: rocksdb::Error) -> StorageError {
    if error.kind() == rocksdb::ErrorKind::Corruption {
        damaged(dir, &error)
    } else {
        StorageError::Rocks(error)
    }
}

fn damaged(dir: &Path, error: &rocksdb::Error) -> StorageError {
    let detail = error.to_string();
    let mut files = wal_files(dir);
    // RocksDB names a damaged table file in its message; a damaged WAL record it does not.
    let names_a_file = detail.contains(".sst") || detail.contains("MANIFEST");
    if names_a_file {
        files.clear();
    }
    StorageError::Damaged {
        dir: dir.display().to_string(),
        detail: truncate(&detail, 512),
        files: if files.is_empty() {
            String::new()
        } else {
            format!(" (write-ahead log files: {})", files.join(", "))
        },
    }
}

/// The WAL files in `dir`, oldest first, with their sizes.
fn wal_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, u64)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let len = entry.metadata().ok()?.len();
            name.ends_with(".log").then_some((name, len))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|(name, len)| format!("{} ({len} bytes)", dir.join(name).display()))
        .collect()
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::CF_KV;
    use std::io::{Seek, SeekFrom, Write};

    const KEYS: u32 = 20_000;

    /// Writes `KEYS` synced keys and closes the engine: everything lives in the WAL only.
    fn write_keys(dir: &Path) {
        let engine = Engine::open(dir).unwrap();
        for i in 0..KEYS {
            let mut options = rocksdb::WriteOptions::default();
            options.set_sync(i % 1_000 == 999);
            engine
                .db()
                .put_cf_opt(
                    engine.cf(CF_KV),
                    format!("key-{i:06}"),
                    [7u8; 100],
                    &options,
                )
                .unwrap();
        }
        engine.sync_wal().unwrap();
    }

    fn only_file(dir: &Path, suffix: &str) -> std::path::PathBuf {
        let mut found: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect();
        found.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
        found.pop().unwrap_or_else(|| panic!("no {suffix} file"))
    }

    fn scribble(path: &Path, offset: u64, len: usize) {
        let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(&vec![0x5a; len]).unwrap();
        file.sync_all().unwrap();
    }

    fn count(engine: &Engine) -> u32 {
        engine
            .db()
            .iterator_cf(engine.cf(CF_KV), rocksdb::IteratorMode::Start)
            .count() as u32
    }

    #[test]
    fn a_wal_damaged_in_the_middle_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_keys(dir.path());
        let wal = only_file(dir.path(), ".log");
        let len = std::fs::metadata(&wal).unwrap().len();
        scribble(&wal, len / 2, 4096);
        let error = Engine::open(dir.path())
            .err()
            .expect("a damaged WAL must not open");
        let text = error.to_string();
        assert!(matches!(error, StorageError::Damaged { .. }), "{text}");
        assert!(
            text.contains(&wal.file_name().unwrap().to_string_lossy().into_owned()),
            "{text}"
        );
        assert!(text.contains(DAMAGE_GUIDE), "{text}");
        // Refusing changed nothing: the file is still there, still damaged, still refused.
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), len);
        assert!(Engine::open(dir.path()).is_err());
    }

    #[test]
    fn a_torn_tail_is_dropped_and_everything_before_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        write_keys(dir.path());
        let wal = only_file(dir.path(), ".log");
        let len = std::fs::metadata(&wal).unwrap().len();
        // A crash in the middle of the last write: its record is cut short.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&wal)
            .unwrap()
            .set_len(len - 40)
            .unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        assert_eq!(count(&engine), KEYS - 1);
    }

    #[test]
    fn a_damaged_table_is_found_by_verify_and_never_read_as_data() {
        let dir = tempfile::tempdir().unwrap();
        write_keys(dir.path());
        {
            let engine = Engine::open(dir.path()).unwrap();
            engine.flush_all().unwrap();
            assert_eq!(
                engine.verify_tables().unwrap().entries,
                KEYS as u64,
                "an intact database verifies"
            );
        }
        let table = only_file(dir.path(), ".sst");
        let len = std::fs::metadata(&table).unwrap().len();
        scribble(&table, len / 3, 64);
        let engine = Engine::open(dir.path()).unwrap();
        let error = engine.verify_tables().unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, StorageError::Damaged { .. }), "{text}");
        assert!(
            text.contains(&table.file_name().unwrap().to_string_lossy().into_owned()),
            "{text}"
        );
        // A plain read of the damaged block fails; it never returns other bytes.
        let mut failed = 0;
        for i in 0..KEYS {
            match engine.db().get_cf(engine.cf(CF_KV), format!("key-{i:06}")) {
                Ok(Some(value)) => assert_eq!(value, [7u8; 100]),
                Ok(None) => panic!("key {i} silently missing"),
                Err(_) => failed += 1,
            }
        }
        assert!(failed > 0, "the damaged block was read back as data");
    }
}

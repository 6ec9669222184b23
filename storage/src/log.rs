//! A durable, checksummed, append-only log of opaque entries indexed by u64.
//!
//! Every entry is stored as `crc32(payload) ++ payload` and verified on every read: a mismatch is
//! reported as corruption, never returned as data. Appends are written at once (readable as soon
//! as `append` returns) and made durable by [`LogStore::sync`], which callers run off the hot path
//! so that many appends share one fsync.

use std::ops::RangeBounds;

use rocksdb::{IteratorMode, WriteBatch, WriteOptions};

use crate::engine::{Engine, CF_LOG, CF_LOG_META};
use crate::StorageError;

#[derive(Clone)]
pub struct LogStore {
    engine: Engine,
}

impl LogStore {
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }

    /// Writes entries (without waiting for durability). Indexes must be consecutive.
    pub fn append<'a>(
        &self,
        entries: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Result<(), StorageError> {
        let cf = self.engine.cf(CF_LOG);
        let mut batch = WriteBatch::default();
        let mut previous: Option<u64> = None;
        for (index, payload) in entries {
            if let Some(previous) = previous {
                assert_eq!(index, previous + 1, "log append must be consecutive");
            }
            previous = Some(index);
            batch.put_cf(cf, index.to_be_bytes(), frame(payload));
        }
        self.engine.db().write(batch)?;
        Ok(())
    }

    /// Makes every write so far durable (one fsync for all of them).
    pub fn sync(&self) -> Result<(), StorageError> {
        self.engine.sync_wal()
    }

    /// Reads entries in `range`, verifying each checksum; stops at the first missing index.
    pub fn read(&self, range: impl RangeBounds<u64>) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let cf = self.engine.cf(CF_LOG);
        let start_key = start.to_be_bytes();
        let iter = self.engine.db().iterator_cf(
            cf,
            IteratorMode::From(&start_key, rocksdb::Direction::Forward),
        );
        let mut out = Vec::new();
        let mut expected = start;
        for item in iter {
            let (key, value) = item?;
            let index = decode_index(&key)?;
            if !range.contains(&index) {
                break;
            }
            if index != expected && !out.is_empty() {
                return Err(StorageError::Corrupt(format!(
                    "hole in log: expected index {expected}, found {index}"
                )));
            }
            out.push((index, unframe(index, &value)?));
            expected = index + 1;
        }
        Ok(out)
    }

    /// Reads every entry and metadata value and checks each checksum and that the indexes
    /// have no hole: what a node does at start, so that damage in a part of the log it would
    /// only read later (to send to a lagging follower) stops it now. Returns the number of
    /// entries. The log is bounded by the snapshot policy, so this is too.
    pub fn verify(&self) -> Result<u64, StorageError> {
        let db = self.engine.db();
        let mut expected: Option<u64> = None;
        let mut entries = 0u64;
        for item in db.iterator_cf(self.engine.cf(CF_LOG), IteratorMode::Start) {
            let (key, value) = item?;
            let index = decode_index(&key)?;
            if expected.is_some_and(|expected| expected != index) {
                let hole = StorageError::Corrupt(format!(
                    "a hole: expected index {}, found {index}",
                    expected.unwrap_or_default()
                ));
                return Err(in_raft_log(hole, "entries"));
            }
            check(index, &value).map_err(|error| in_raft_log(error, "entry"))?;
            expected = Some(index + 1);
            entries += 1;
        }
        for item in db.iterator_cf(self.engine.cf(CF_LOG_META), IteratorMode::Start) {
            let (key, value) = item?;
            check(0, &value).map_err(|error| {
                in_raft_log(
                    error,
                    &format!("metadata {:?}", String::from_utf8_lossy(&key)),
                )
            })?;
        }
        Ok(entries)
    }

    /// The highest index present, if any.
    pub fn last_index(&self) -> Result<Option<u64>, StorageError> {
        let cf = self.engine.cf(CF_LOG);
        match self.engine.db().iterator_cf(cf, IteratorMode::End).next() {
            Some(item) => Ok(Some(decode_index(&item?.0)?)),
            None => Ok(None),
        }
    }

    /// Reads and verifies the entry at `index`.
    pub fn get(&self, index: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let cf = self.engine.cf(CF_LOG);
        match self.engine.db().get_cf(cf, index.to_be_bytes())? {
            Some(value) => Ok(Some(unframe(index, &value)?)),
            None => Ok(None),
        }
    }

    /// Removes entries from `index` on (a conflicting suffix), durably.
    pub fn truncate_from(&self, index: u64) -> Result<(), StorageError> {
        let cf = self.engine.cf(CF_LOG);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, index.to_be_bytes(), u64::MAX.to_be_bytes());
        batch.delete_cf(cf, u64::MAX.to_be_bytes());
        self.write_synced(batch)
    }

    /// Removes entries up to and including `index`, recording `meta` (the last purged id) in the
    /// same durable write. Everything written before (state-machine data included) is synced
    /// first, so the purged entries are never the only copy of what they carried.
    pub fn purge_upto(&self, index: u64, meta_key: &str, meta: &[u8]) -> Result<(), StorageError> {
        self.engine.sync_wal()?;
        let cf = self.engine.cf(CF_LOG);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, 0u64.to_be_bytes(), (index + 1).to_be_bytes());
        batch.put_cf(self.engine.cf(CF_LOG_META), meta_key, frame(meta));
        self.write_synced(batch)
    }

    /// Stores a metadata value durably before returning.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.engine.cf(CF_LOG_META), key, frame(value));
        self.write_synced(batch)
    }

    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        match self.engine.db().get_cf(self.engine.cf(CF_LOG_META), key)? {
            Some(value) => Ok(Some(unframe(0, &value)?)),
            None => Ok(None),
        }
    }

    fn write_synced(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.engine.db().write_opt(batch, &options)?;
        Ok(())
    }
}

/// `crc32 (little-endian) ++ payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Verifies and strips the checksum written by [`frame`].
pub fn unframe(index: u64, stored: &[u8]) -> Result<Vec<u8>, StorageError> {
    check(index, stored)?;
    Ok(stored[4..].to_vec())
}

fn in_raft_log(error: StorageError, what: &str) -> StorageError {
    match error {
        StorageError::Corrupt(detail) => StorageError::Corrupt(format!(
            "raft log ({what}): {detail}; see {}",
            crate::integrity::DAMAGE_GUIDE
        )),
        other => other,
    }
}

/// Verifies the checksum written by [`frame`].
fn check(index: u64, stored: &[u8]) -> Result<(), StorageError> {
    if stored.len() < 4 {
        return Err(StorageError::Corrupt(format!(
            "entry {index} is shorter than its checksum"
        )));
    }
    let (crc, payload) = stored.split_at(4);
    let expected = u32::from_le_bytes(crc.try_into().expect("split at 4"));
    if crc32fast::hash(payload) != expected {
        return Err(StorageError::Corrupt(format!(
            "entry {index} fails its crc32 check"
        )));
    }
    Ok(())
}

fn decode_index(key: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StorageError::Corrupt(format!("log key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LogStore) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        (dir, LogStore::new(engine))
    }

    /// Appends `payloads` at indexes 1, 2, ….
    fn append_from_one(log: &LogStore, payloads: &[Vec<u8>]) {
        log.append(
            payloads
                .iter()
                .enumerate()
                .map(|(i, p)| (i as u64 + 1, p.as_slice())),
        )
        .unwrap();
    }

    #[test]
    fn append_read_truncate_purge() {
        let (_dir, log) = store();
        let payloads: Vec<Vec<u8>> = (1..=10u8).map(|i| vec![i; i as usize]).collect();
        append_from_one(&log, &payloads);
        log.sync().unwrap();
        assert_eq!(log.last_index().unwrap(), Some(10));
        let read = log.read(3..6).unwrap();
        assert_eq!(
            read.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(read[0].1, vec![3u8; 3]);

        log.truncate_from(8).unwrap();
        assert_eq!(log.last_index().unwrap(), Some(7));
        log.purge_upto(4, "purged", b"4").unwrap();
        assert_eq!(log.read(..).unwrap().first().map(|(i, _)| *i), Some(5));
        assert_eq!(log.get_meta("purged").unwrap().as_deref(), Some(&b"4"[..]));
    }

    #[test]
    fn detects_corruption() {
        let (_dir, log) = store();
        log.append([(1, &b"hello"[..])]).unwrap();
        // Flip a payload byte behind the store's back.
        let mut stored = frame(b"hello");
        stored[5] ^= 0x01;
        let engine = &log.engine;
        engine
            .db()
            .put_cf(engine.cf(CF_LOG), 1u64.to_be_bytes(), stored)
            .unwrap();
        assert!(matches!(log.get(1), Err(StorageError::Corrupt(_))));
        assert!(matches!(log.read(..), Err(StorageError::Corrupt(_))));
        let error = log.verify().unwrap_err().to_string();
        assert!(
            error.contains("raft log (entry)") && error.contains("entry 1"),
            "{error}"
        );
    }

    #[test]
    fn verify_reads_the_whole_log_and_its_metadata() {
        let (_dir, log) = store();
        let payloads: Vec<Vec<u8>> = (1..=50u8).map(|i| vec![i; 10]).collect();
        append_from_one(&log, &payloads);
        log.put_meta("vote", b"term 3").unwrap();
        assert_eq!(log.verify().unwrap(), 50);
        // Damage far from both ends, where no start-up read would look.
        let engine = &log.engine;
        let mut stored = frame(&payloads[24]);
        stored[7] ^= 0x10;
        engine
            .db()
            .put_cf(engine.cf(CF_LOG), 25u64.to_be_bytes(), stored)
            .unwrap();
        let error = log.verify().unwrap_err().to_string();
        assert!(error.contains("entry 25"), "{error}");
        engine
            .db()
            .put_cf(engine.cf(CF_LOG), 25u64.to_be_bytes(), frame(&payloads[24]))
            .unwrap();
        // A hole.
        engine
            .db()
            .delete_cf(engine.cf(CF_LOG), 30u64.to_be_bytes())
            .unwrap();
        let error = log.verify().unwrap_err().to_string();
        assert!(error.contains("expected index 30, found 31"), "{error}");
        engine
            .db()
            .put_cf(engine.cf(CF_LOG), 30u64.to_be_bytes(), frame(&payloads[29]))
            .unwrap();
        // The vote.
        let mut vote = frame(b"term 3");
        vote[4] ^= 1;
        engine
            .db()
            .put_cf(engine.cf(CF_LOG_META), "vote", vote)
            .unwrap();
        let error = log.verify().unwrap_err().to_string();
        assert!(error.contains("metadata \"vote\""), "{error}");
    }

    #[test]
    #[should_panic(expected = "consecutive")]
    fn refuses_holes() {
        let (_dir, log) = store();
        log.append([(1, &b"a"[..]), (3, &b"b"[..])]).unwrap();
    }
}

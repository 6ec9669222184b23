//! The RocksDB instance and its column families.
//!
//! One instance holds both the log and the state machine so that a single WAL sync makes both
//! durable (group commit), and so that state-machine writes, which are not synced themselves,
//! become durable with the next log sync.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

use crate::StorageError;

/// Replicated log entries: u64 big-endian index -> crc32 + payload.
pub const CF_LOG: &str = "log";
/// Log metadata: vote, committed, last purged.
pub const CF_LOG_META: &str = "log_meta";
/// Key-value records: tuple(subsystem, namespace, database, table, key) -> record.
pub const CF_KV: &str = "kv";
/// Expiry index: expires_at_ms big-endian ++ record key -> mod revision.
pub const CF_KV_EXPIRY: &str = "kv_expiry";
/// Live-key counts per tuple(namespace, database, table).
pub const CF_KV_CATALOG: &str = "kv_catalog";
/// Watch history: revision big-endian -> events of that revision.
pub const CF_KV_HISTORY: &str = "kv_history";
/// State-machine metadata: last applied log id, membership, history bounds.
pub const CF_SM_META: &str = "sm_meta";

/// Column families that make up the state machine, in snapshot order.
pub const STATE_CFS: &[&str] = &[
    CF_KV,
    CF_KV_EXPIRY,
    CF_KV_CATALOG,
    CF_KV_HISTORY,
    CF_SM_META,
];

const ALL_CFS: &[&str] = &[
    CF_LOG,
    CF_LOG_META,
    CF_KV,
    CF_KV_EXPIRY,
    CF_KV_CATALOG,
    CF_KV_HISTORY,
    CF_SM_META,
];

/// A handle to the open database; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    db: Arc<DB>,
}

impl Engine {
    /// Opens (creating if needed) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // Verify block checksums on every read, not only during compaction.
        options.set_paranoid_checks(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let descriptors = ALL_CFS
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&options, dir, descriptors)?;
        Ok(Self { db: Arc::new(db) })
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    pub fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| panic!("column family {name} is created at open"))
    }

    /// Prepares for process exit: syncs the WAL and stops RocksDB's background threads (and
    /// waits for running jobs). Exiting with them still running lets them race the C++ static
    /// destructors and abort the process ("pthread lock: Invalid argument"). Reads keep
    /// working afterwards; writes still succeed but nothing compacts any more.
    pub fn quiesce(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true)?;
        self.db.cancel_all_background_work(true);
        Ok(())
    }

    /// Makes every write issued so far durable.
    pub fn sync_wal(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true)?;
        Ok(())
    }
}

/// Values of the requested metadata keys, in request order (`None`: absent).
pub type MetaValues = Vec<Option<Vec<u8>>>;

const SNAPSHOT_MAGIC: &[u8; 8] = b"STRSNAP1";

impl Engine {
    /// Serialises every state-machine column family from one consistent RocksDB snapshot:
    /// `magic ++ (cf u8, key len u32 LE, key, value len u32 LE, value)* ++ crc32 LE` where the
    /// checksum covers everything before it.
    /// Also returns the values of `meta_keys` in [`CF_SM_META`] as of that same snapshot.
    pub fn export_state(&self, meta_keys: &[&[u8]]) -> Result<(Vec<u8>, MetaValues), StorageError> {
        let snapshot = self.db.snapshot();
        let mut meta = Vec::with_capacity(meta_keys.len());
        for key in meta_keys {
            meta.push(snapshot.get_cf(self.cf(CF_SM_META), key)?);
        }
        let mut out = SNAPSHOT_MAGIC.to_vec();
        for (cf_index, name) in STATE_CFS.iter().enumerate() {
            for item in snapshot.iterator_cf(self.cf(name), rocksdb::IteratorMode::Start) {
                let (key, value) = item?;
                out.push(cf_index as u8);
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(&key);
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(&value);
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok((out, meta))
    }

    /// Replaces the whole state machine with an exported snapshot, atomically. The snapshot is
    /// verified completely before anything is changed.
    pub fn import_state(&self, data: &[u8]) -> Result<(), StorageError> {
        let corrupt = |what: &str| StorageError::Corrupt(format!("snapshot: {what}"));
        if data.len() < SNAPSHOT_MAGIC.len() + 4 || &data[..8] != SNAPSHOT_MAGIC {
            return Err(corrupt("bad header"));
        }
        let (body, crc) = data.split_at(data.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(corrupt("crc32 mismatch"));
        }
        let mut batch = rocksdb::WriteBatch::default();
        for name in STATE_CFS {
            for item in self
                .db
                .iterator_cf(self.cf(name), rocksdb::IteratorMode::Start)
            {
                batch.delete_cf(self.cf(name), item?.0);
            }
        }
        let mut rest = &body[8..];
        let mut take = |n: usize| -> Result<&[u8], StorageError> {
            if rest.len() < n {
                return Err(corrupt("truncated"));
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        while let Ok(cf_index) = take(1) {
            let name = STATE_CFS
                .get(cf_index[0] as usize)
                .ok_or_else(|| corrupt("unknown cf"))?;
            let key_len = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
            let key = take(key_len)?.to_vec();
            let value_len = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
            let value = take(value_len)?;
            batch.put_cf(self.cf(name), key, value);
        }
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }
}

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
/// Stream messages: seg(namespace) seg(topic) sequence (u64 BE) -> message.
pub const CF_STREAM_MSG: &str = "stream_msg";
/// Stream topics, consumer groups, pending deliveries and dedup ids (see `strata-stream`).
pub const CF_STREAM_META: &str = "stream_meta";
/// Registry services and nodes, and config documents (see `strata-registry`).
pub const CF_REGISTRY: &str = "registry";
/// Registry and config watch history: revision big-endian -> events of that revision.
pub const CF_REGISTRY_HISTORY: &str = "registry_history";
/// Accounts, rules, the token signing key, refresh tokens and revocations (see `strata-auth`).
pub const CF_AUTH: &str = "auth";
/// Usage and limits per namespace (see `quota`).
pub const CF_QUOTA: &str = "quota";

/// Column families that make up the state machine, in snapshot order. A snapshot names each
/// family by its index here: append only.
pub const STATE_CFS: &[&str] = &[
    CF_KV,
    CF_KV_EXPIRY,
    CF_KV_CATALOG,
    CF_KV_HISTORY,
    CF_SM_META,
    CF_STREAM_MSG,
    CF_STREAM_META,
    CF_REGISTRY,
    CF_REGISTRY_HISTORY,
    CF_AUTH,
    CF_QUOTA,
];

pub(crate) const ALL_CFS: &[&str] = &[
    CF_LOG,
    CF_LOG_META,
    CF_KV,
    CF_KV_EXPIRY,
    CF_KV_CATALOG,
    CF_KV_HISTORY,
    CF_SM_META,
    CF_STREAM_MSG,
    CF_STREAM_META,
    CF_REGISTRY,
    CF_REGISTRY_HISTORY,
    CF_AUTH,
    CF_QUOTA,
];

/// Most bytes of write-ahead log kept: past it, RocksDB writes the oldest log's memtables out
/// as tables. Bounds what an open after a crash replays and writes out (the space a start
/// needs: see `strata_raft::disk::StartReserve`).
pub const MAX_WAL_BYTES: u64 = 64 * 1024 * 1024;

/// A handle to the open database; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    db: Arc<DB>,
    path: Arc<std::path::PathBuf>,
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
        // A torn last record may go (it was never acknowledged); damage anywhere before it
        // fails the open (see `integrity`).
        options.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        options.set_max_total_wal_size(MAX_WAL_BYTES);
        let descriptors = ALL_CFS
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&options, dir, descriptors)
            .map_err(|error| crate::integrity::classify(dir, error))?;
        Ok(Self {
            db: Arc::new(db),
            path: Arc::new(dir.to_path_buf()),
        })
    }

    /// The directory the database lives in.
    pub fn path(&self) -> &Path {
        &self.path
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

/// The RocksDB properties [`Engine::stats`] reads per column family (names without
/// `rocksdb.`).
pub const STATS_PER_CF: &[&str] = &[
    "total-sst-files-size",
    "live-sst-files-size",
    "cur-size-all-mem-tables",
    "estimate-pending-compaction-bytes",
    "estimate-num-keys",
    "num-files-at-level0",
];

/// The RocksDB properties [`Engine::stats`] reads for the whole database.
pub const STATS_DB_WIDE: &[&str] = &[
    "is-write-stopped",
    "actual-delayed-write-rate",
    "num-running-compactions",
    "num-running-flushes",
    "background-errors",
];

/// Values of the requested metadata keys, in request order (`None`: absent).
pub type MetaValues = Vec<Option<Vec<u8>>>;

const SNAPSHOT_MAGIC: &[u8; 8] = b"STRSNAP1";

/// Largest write batch an import builds before writing it.
const IMPORT_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// A checksumming writer: everything written also feeds the running crc32.
struct Crc32Writer<'a, W: std::io::Write> {
    out: &'a mut W,
    crc: crc32fast::Hasher,
}

impl<W: std::io::Write> Crc32Writer<'_, W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.crc.update(bytes);
        self.out.write_all(bytes)
    }
}

/// Writes the snapshot format: `magic ++ (cf u8, key len u32 LE, key, value len u32 LE,
/// value)* ++ crc32 LE`, where the checksum covers everything before it. Entries may come in
/// any order; an import writes them all before anything reads them.
pub struct SnapshotWriter<'a, W: std::io::Write> {
    out: Crc32Writer<'a, W>,
}

impl<'a, W: std::io::Write> SnapshotWriter<'a, W> {
    pub fn new(out: &'a mut W) -> std::io::Result<Self> {
        let mut out = Crc32Writer {
            out,
            crc: crc32fast::Hasher::new(),
        };
        out.put(SNAPSHOT_MAGIC)?;
        Ok(Self { out })
    }

    /// One entry of the state column family `cf_index` (an index into [`STATE_CFS`]).
    pub fn put(&mut self, cf_index: usize, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        assert!(cf_index < STATE_CFS.len(), "column family index {cf_index}");
        self.out.put(&[cf_index as u8])?;
        self.out.put(&(key.len() as u32).to_le_bytes())?;
        self.out.put(key)?;
        self.out.put(&(value.len() as u32).to_le_bytes())?;
        self.out.put(value)
    }

    /// Writes the checksum and flushes.
    pub fn finish(self) -> std::io::Result<()> {
        let crc = self.out.crc.finalize();
        self.out.out.write_all(&crc.to_le_bytes())?;
        self.out.out.flush()
    }
}

/// A consistent view of the state machine, taken by [`Engine::begin_export`]: its metadata
/// can be read before its entries are written out.
pub struct StateExport<'a> {
    engine: &'a Engine,
    snapshot: rocksdb::SnapshotWithThreadMode<'a, DB>,
}

impl StateExport<'_> {
    /// The value of `key` in [`CF_SM_META`] as of this view.
    pub fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.snapshot.get_cf(self.engine.cf(CF_SM_META), key)?)
    }

    /// Streams every state entry of this view into `out` in the snapshot format, counting
    /// them in `entries` as it goes (for progress reports).
    pub fn write_to<W: std::io::Write>(
        &self,
        out: &mut W,
        entries: &std::sync::atomic::AtomicU64,
    ) -> Result<(), StorageError> {
        let mut writer = SnapshotWriter::new(out)?;
        for (cf_index, name) in STATE_CFS.iter().enumerate() {
            let cf = self.engine.cf(name);
            for item in self.snapshot.iterator_cf(cf, rocksdb::IteratorMode::Start) {
                let (key, value) = item?;
                writer.put(cf_index, &key, &value)?;
                entries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        writer.finish()?;
        Ok(())
    }
}

impl Engine {
    /// A consistent view of every state-machine column family; writes go on meanwhile.
    pub fn begin_export(&self) -> StateExport<'_> {
        StateExport {
            engine: self,
            snapshot: self.db.snapshot(),
        }
    }

    /// RocksDB's own figures for the metrics: per column family (sizes on disk and in memory,
    /// compaction debt, keys) as `(Some(cf), name, value)`, and for the whole database (write
    /// stalls, running compactions, background errors) as `(None, name, value)`. Names are
    /// RocksDB's property names without the `rocksdb.` prefix.
    pub fn stats(&self) -> Vec<(Option<&'static str>, &'static str, u64)> {
        let mut out = Vec::new();
        for name in ALL_CFS {
            for property in STATS_PER_CF {
                let key = format!("rocksdb.{property}");
                if let Ok(Some(value)) = self.db.property_int_value_cf(self.cf(name), key.as_str())
                {
                    out.push((Some(*name), *property, value));
                }
            }
        }
        for property in STATS_DB_WIDE {
            let key = format!("rocksdb.{property}");
            if let Ok(Some(value)) = self.db.property_int_value(key.as_str()) {
                out.push((None, *property, value));
            }
        }
        out
    }

    /// RocksDB's estimate of how many entries the state machine holds (for progress bars:
    /// it may be off either way).
    pub fn estimate_state_entries(&self) -> u64 {
        STATE_CFS
            .iter()
            .filter_map(|name| {
                self.db
                    .property_int_value_cf(self.cf(name), "rocksdb.estimate-num-keys")
                    .ok()
                    .flatten()
            })
            .sum()
    }

    /// Serialises every state-machine column family from one consistent RocksDB snapshot into
    /// `out`, streaming, in the [`SnapshotWriter`] format. Writes continue meanwhile. Also
    /// returns the values of `meta_keys` in [`CF_SM_META`] as of that same snapshot.
    pub fn export_state_to<W: std::io::Write>(
        &self,
        out: &mut W,
        meta_keys: &[&[u8]],
    ) -> Result<MetaValues, StorageError> {
        let export = self.begin_export();
        let meta = meta_keys
            .iter()
            .map(|key| export.meta(key))
            .collect::<Result<_, _>>()?;
        export.write_to(out, &std::sync::atomic::AtomicU64::new(0))?;
        Ok(meta)
    }

    /// [`Engine::export_state_to`] into memory.
    pub fn export_state(&self, meta_keys: &[&[u8]]) -> Result<(Vec<u8>, MetaValues), StorageError> {
        let mut out = Vec::new();
        let meta = self.export_state_to(&mut out, meta_keys)?;
        Ok((out, meta))
    }

    /// Replaces the whole state machine with an exported snapshot of `len` bytes read from
    /// `open()` (called
    /// twice: once to verify the checksum and structure completely, before anything changes,
    /// once to load). Memory stays bounded: the load is written in batches of a few MiB, so it
    /// is atomic only against readers of the engine, not against a crash; the caller must be
    /// able to redo an interrupted import (the state machine keeps the snapshot file and a
    /// marker until the import is synced).
    pub fn import_state_from<R: std::io::Read>(
        &self,
        len: u64,
        mut open: impl FnMut() -> std::io::Result<R>,
    ) -> Result<(), StorageError> {
        self.verify_snapshot(len, open()?)?;
        self.import_verified_state_from(len, open()?)
    }

    /// Checks an exported snapshot of `len` bytes completely (structure and checksum) without
    /// changing anything; returns how many entries it holds.
    pub fn verify_snapshot<R: std::io::Read>(
        &self,
        len: u64,
        reader: R,
    ) -> Result<u64, StorageError> {
        let mut entries = 0u64;
        read_snapshot(reader, len, |_, _, _| {
            entries += 1;
            Ok(())
        })?;
        Ok(entries)
    }

    /// The load half of [`Engine::import_state_from`], for a snapshot already verified with
    /// [`Engine::verify_snapshot`]. A corruption found now fails the import half-way.
    pub fn import_verified_state_from<R: std::io::Read>(
        &self,
        len: u64,
        reader: R,
    ) -> Result<(), StorageError> {
        // Clear, then load in bounded batches, then sync.
        for name in STATE_CFS {
            let mut batch = rocksdb::WriteBatch::default();
            for item in self
                .db
                .iterator_cf(self.cf(name), rocksdb::IteratorMode::Start)
            {
                batch.delete_cf(self.cf(name), item?.0);
                if batch.size_in_bytes() >= IMPORT_BATCH_BYTES {
                    self.db.write(std::mem::take(&mut batch))?;
                }
            }
            self.db.write(batch)?;
        }
        let mut batch = rocksdb::WriteBatch::default();
        let mut entries = 0u64;
        read_snapshot(reader, len, |cf_index, key, value| {
            entries += 1;
            batch.put_cf(self.cf(STATE_CFS[cf_index]), key, value);
            if batch.size_in_bytes() >= IMPORT_BATCH_BYTES {
                self.db.write(std::mem::take(&mut batch))?;
            }
            Ok(())
        })?;
        self.db.write(batch)?;
        self.sync_wal()?;
        tracing::debug!(entries, "imported a state snapshot");
        Ok(())
    }

    /// [`Engine::import_state_from`] from memory.
    pub fn import_state(&self, data: &[u8]) -> Result<(), StorageError> {
        self.import_state_from(data.len() as u64, || Ok(data))
    }
}

/// The checksummed part of a snapshot being read: everything but the final crc32.
struct SnapshotBody<R> {
    reader: R,
    crc: crc32fast::Hasher,
    remaining: u64,
}

impl<R: std::io::Read> SnapshotBody<R> {
    /// Reads exactly `n` body bytes into `buf`.
    fn read(&mut self, buf: &mut Vec<u8>, n: usize) -> Result<(), StorageError> {
        let truncated = || StorageError::Corrupt("snapshot: truncated".into());
        if n as u64 > self.remaining {
            return Err(truncated());
        }
        buf.resize(n, 0);
        self.reader.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => truncated(),
            _ => StorageError::Io(e),
        })?;
        self.remaining -= n as u64;
        self.crc.update(buf);
        Ok(())
    }
}

/// Reads an exported snapshot of `len` bytes, calling `each(cf index into [`STATE_CFS`], key,
/// value)` for every entry, and fails on any corruption. `each` may have been called for
/// entries before the corruption was found.
pub fn read_snapshot<R: std::io::Read>(
    reader: R,
    len: u64,
    mut each: impl FnMut(usize, &[u8], &[u8]) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    use std::io::Read;
    let corrupt = |what: &str| StorageError::Corrupt(format!("snapshot: {what}"));
    if len < (SNAPSHOT_MAGIC.len() + 4) as u64 {
        return Err(corrupt("bad header"));
    }
    let mut body = SnapshotBody {
        reader: std::io::BufReader::with_capacity(1 << 20, reader),
        crc: crc32fast::Hasher::new(),
        remaining: len - 4,
    };
    let (mut head, mut key, mut value) = (Vec::new(), Vec::new(), Vec::new());
    body.read(&mut head, SNAPSHOT_MAGIC.len())?;
    if head.as_slice() != SNAPSHOT_MAGIC {
        return Err(corrupt("bad header"));
    }
    while body.remaining > 0 {
        body.read(&mut head, 5)?;
        let cf_index = head[0] as usize;
        if cf_index >= STATE_CFS.len() {
            return Err(corrupt("unknown cf"));
        }
        let key_len = u32::from_le_bytes(head[1..5].try_into().expect("4")) as usize;
        body.read(&mut key, key_len)?;
        body.read(&mut head, 4)?;
        let value_len = u32::from_le_bytes(head[..4].try_into().expect("4")) as usize;
        body.read(&mut value, value_len)?;
        each(cf_index, &key, &value)?;
    }
    let mut stored = [0u8; 4];
    body.reader
        .read_exact(&mut stored)
        .map_err(|_| corrupt("truncated"))?;
    if body.crc.finalize() != u32::from_le_bytes(stored) {
        return Err(corrupt("crc32 mismatch"));
    }
    Ok(())
}

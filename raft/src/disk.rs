//! Free disk space: writes that grow the data stop while the disk is nearly full, before the
//! log's fsync would fail (which stops Raft and the node). Reads, deletes, acks, keepalives and
//! expiry go on, and growth resumes by itself once space returns, as in etcd's NOSPACE alarm.
//!
//! The leader checks its own data directory before proposing, and what each other member
//! (voter or learner) said of its own in the last [`PEER_REPORT_LIFE`] (asked every
//! [`PEER_ASK_EVERY`] by `RaftNode::run_disk_watch`): growth stops while any member's disk is
//! nearly full, before that member's fsync would fail and stop it.
//!
//! [`StartReserve`] keeps space for the next start: opening the database after a crash writes
//! the write-ahead log's contents out as tables (bounded by `strata_storage::MAX_WAL_BYTES`), and
//! a disk that something else filled meanwhile would refuse that. A file of that size is kept
//! in the data directory and deleted just before the open.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a measurement of free space is reused.
const MEASURE_EVERY: Duration = Duration::from_millis(100);
/// How often the leader asks the other members about their disks.
pub const PEER_ASK_EVERY: Duration = Duration::from_secs(1);
/// How long a member's "my disk is nearly full" counts without being said again.
pub const PEER_REPORT_LIFE: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct DiskGuard {
    dir: PathBuf,
    /// Writes that grow the data are refused below this many free bytes (0: never).
    reserve: u64,
    free: AtomicU64,
    measured: Mutex<Option<Instant>>,
    /// Other members whose disks are below their reserve: when they said so, and their words.
    peers_low: Mutex<BTreeMap<u64, (Instant, String)>>,
}

impl DiskGuard {
    pub fn new(dir: PathBuf, reserve: u64) -> Self {
        Self {
            dir,
            reserve,
            free: AtomicU64::new(u64::MAX),
            measured: Mutex::new(None),
            peers_low: Mutex::default(),
        }
    }

    /// `Err` naming the node, directory and numbers when this node's disk or, recently, another
    /// member's is below its reserve.
    pub fn check(&self) -> Result<(), String> {
        self.check_own()?;
        let peers = self.peers_low.lock().unwrap_or_else(|p| p.into_inner());
        match peers
            .iter()
            .find(|(_, (said, _))| said.elapsed() < PEER_REPORT_LIFE)
        {
            Some((node_id, (_, message))) => Err(format!("node {node_id}: {message}")),
            None => Ok(()),
        }
    }

    /// What member `node_id` said of its disk: `Some(message)` when it is below its reserve.
    pub fn record_peer(&self, node_id: u64, low: Option<String>) {
        let mut peers = self.peers_low.lock().unwrap_or_else(|p| p.into_inner());
        match low {
            Some(message) => {
                // Bounded: a peer's message is cut, and there is one entry per member.
                let message: String = message.chars().take(512).collect();
                peers.insert(node_id, (Instant::now(), message));
            }
            None => {
                peers.remove(&node_id);
            }
        }
    }

    /// `Err` naming the directory and the numbers when this node's free space is below its
    /// reserve.
    pub fn check_own(&self) -> Result<(), String> {
        if self.reserve == 0 {
            return Ok(());
        }
        let free = self.free_bytes();
        if free >= self.reserve {
            return Ok(());
        }
        Err(format!(
            "the disk holding {} has {free} bytes free, below the reserve of {} \
             (--min-free-bytes): writes that add data are refused until space returns; reads, \
             deletes and acks go on",
            self.dir.display(),
            self.reserve
        ))
    }

    /// Free bytes for an unprivileged writer, measured at most every 100 ms (one `statvfs`:
    /// a metadata call that does not wait on the disk).
    pub fn free_bytes(&self) -> u64 {
        let mut measured = self.measured.lock().unwrap_or_else(|p| p.into_inner());
        if measured.is_none_or(|at| at.elapsed() >= MEASURE_EVERY) {
            match available(&self.dir) {
                Ok(free) => self.free.store(free, Ordering::Relaxed),
                Err(error) => {
                    tracing::warn!(dir = %self.dir.display(), %error, "measuring free disk space")
                }
            }
            *measured = Some(Instant::now());
        }
        self.free.load(Ordering::Relaxed)
    }
}

/// Space kept for the next start (see the module notes): a preallocated file in the data
/// directory, deleted before the database opens and made again after.
#[derive(Debug, Clone)]
pub struct StartReserve {
    path: PathBuf,
    bytes: u64,
}

impl StartReserve {
    pub const FILE: &'static str = "start-reserve";

    pub fn new(data_dir: &std::path::Path, bytes: u64) -> Self {
        Self {
            path: data_dir.join(Self::FILE),
            bytes,
        }
    }

    /// Frees the reserved space for the open that follows.
    pub fn release(&self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// Whether the reserve is in place (or none is wanted).
    pub fn is_held(&self) -> bool {
        self.bytes == 0 || std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.bytes)
    }

    /// Reserves the space again if it is not held, only if `keep_free` bytes stay free after
    /// it (so making it never fills the disk under the writes going on): `Ok(false)` if the
    /// disk has too little free space now (nothing is left behind; try again later). Blocking:
    /// call off the async workers.
    pub fn restore(&self, keep_free: u64) -> std::io::Result<bool> {
        use std::os::unix::io::AsRawFd;
        if self.is_held() {
            return Ok(true);
        }
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        if available(dir)? < self.bytes.saturating_add(keep_free) {
            return Ok(false);
        }
        let temporary = self.path.with_extension("tmp");
        let file = std::fs::File::create(&temporary)?;
        let length = libc::off_t::try_from(self.bytes)
            .map_err(|_| std::io::Error::other("a reserve too large for this platform"))?;
        // SAFETY: `file` is an open descriptor for the duration of the call.
        let result = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, length) };
        if result != 0 {
            drop(file);
            let _ = std::fs::remove_file(&temporary);
            if result == libc::ENOSPC {
                return Ok(false);
            }
            return Err(std::io::Error::from_raw_os_error(result));
        }
        file.sync_all()?;
        std::fs::rename(&temporary, &self.path)?;
        Ok(true)
    }
}

fn available(dir: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("a path with a NUL byte"))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stats` is written by statvfs before it is read.
    let result = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `stats`.
    let stats = unsafe { stats.assume_init() };
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_the_disk_and_refuses_below_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let free = DiskGuard::new(dir.path().into(), 1).free_bytes();
        assert!(free > 0 && free < u64::MAX, "{free}");
        assert!(DiskGuard::new(dir.path().into(), 0).check().is_ok());
        assert!(DiskGuard::new(dir.path().into(), 1).check().is_ok());
        let error = DiskGuard::new(dir.path().into(), u64::MAX)
            .check()
            .unwrap_err();
        assert!(error.contains(&dir.path().display().to_string()), "{error}");
    }

    #[test]
    fn a_voter_that_says_its_disk_is_low_stops_growth_until_it_says_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let guard = DiskGuard::new(dir.path().into(), 1);
        guard.record_peer(2, Some("the disk holding /d2 has 5 bytes free".into()));
        let error = guard.check().unwrap_err();
        assert!(error.starts_with("node 2: the disk holding /d2"), "{error}");
        assert!(guard.check_own().is_ok());
        guard.record_peer(2, None);
        assert!(guard.check().is_ok());
        // A report too old to count (the voter stopped answering) no longer refuses.
        guard.record_peer(3, Some("low".into()));
        guard.peers_low.lock().unwrap().get_mut(&3).unwrap().0 -= PEER_REPORT_LIFE;
        assert!(guard.check().is_ok());
    }

    #[test]
    fn the_start_reserve_is_released_and_restored() {
        let dir = tempfile::tempdir().unwrap();
        let reserve = StartReserve::new(dir.path(), 1 << 20);
        assert!(!reserve.is_held());
        assert!(
            !reserve.restore(u64::MAX).unwrap(),
            "made with no room to spare"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(reserve.restore(0).unwrap());
        assert!(reserve.is_held());
        let file = dir.path().join(StartReserve::FILE);
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 1 << 20);
        reserve.release().unwrap();
        assert!(!file.exists() && !reserve.is_held());
        reserve.release().unwrap();
        assert!(StartReserve::new(dir.path(), 0).is_held());
    }
}

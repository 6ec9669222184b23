//! Crash points for the chaos suite (`strata-jepsen --nemesis failpoint`): where a crash is
//! most dangerous, the process can be made to abort (no destructors, no flushing: as kill -9
//! at that instant). Compiled in only with the `failpoints` feature, and then armed only by the
//! `FAILPOINTS` environment variable in the `fail` crate's syntax, e.g.
//! `FAILPOINTS="log-after-fsync=5%return"`. The points:
//! - `log-before-fsync`, `log-after-fsync`: around the log flusher's group fsync (before it,
//!   the entries are written but not durable; after it, durable but not yet acknowledged to
//!   Raft);
//! - `apply-before-commit`: an entry Raft has committed, applied in memory but not yet written
//!   to the state machine;
//! - `snapshot-build`: a snapshot exported to its temporary file but not yet made current;
//! - `snapshot-install`: a received snapshot verified and made current but not yet loaded.
//!
//! And one error point, which fails as a broken disk would instead of crashing:
//! - `apply-error`: writing an applied entry to the state machine fails (openraft stops on
//!   it; the node must then exit, not serve on without Raft).

/// Whether this build has the crash points.
pub const BUILT: bool = cfg!(feature = "failpoints");

/// Arms the points `FAILPOINTS` names, for the life of the process. An error when the variable
/// is set but this build has no failpoints (a chaos run would otherwise silently test nothing).
pub fn setup() -> Result<(), String> {
    #[cfg(feature = "failpoints")]
    {
        // The scenario must outlive the process; tearing it down would disarm the points.
        std::mem::forget(fail::FailScenario::setup());
        Ok(())
    }
    #[cfg(not(feature = "failpoints"))]
    match std::env::var_os("FAILPOINTS") {
        Some(_) => Err(
            "FAILPOINTS is set, but this strata was built without failpoints \
             (build strata-node with --features failpoints)"
                .into(),
        ),
        None => Ok(()),
    }
}

/// Aborts the process when the armed point `name` fires; does nothing otherwise.
#[inline]
pub fn crash_point(name: &'static str) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |_| {
        eprintln!("failpoint {name} fired: aborting");
        std::process::abort()
    });
    let _ = name;
}

/// An I/O error, as from a failing disk, when the armed point `name` fires; `Ok` otherwise.
#[inline]
pub fn error_point(name: &'static str) -> std::io::Result<()> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |_| Err(std::io::Error::other(format!(
        "failpoint {name} fired"
    ))));
    let _ = name;
    Ok(())
}

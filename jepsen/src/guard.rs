//! Keeping a run bounded and leaving nothing behind.
//!
//! - Every `strata` node is started so that the kernel kills it when this process dies, however
//!   it dies (`PR_SET_PDEATHSIG`), so no node outlives a run.
//! - SIGINT and SIGTERM remove this run's namespaces and bridge before exiting.
//! - A watchdog ends a run that passes its bound (the time limit plus the heal, recovery, drain
//!   and check allowances), naming the phase it was stuck in, instead of hanging.
//! - At start, namespaces and bridges of earlier runs whose process is gone (a kill -9, a
//!   crashed runner) are removed, with any process still inside them.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// What a run is doing, for the watchdog's report.
static PHASE: Mutex<&str> = Mutex::new("starting");
/// The namespaces of this run, to remove on an abnormal exit: (tag, nodes).
static NAMESPACES: Mutex<Option<(String, u64)>> = Mutex::new(None);

/// Set once the watchdog or a signal is ending the run: its exit code is the one that counts.
static ABANDONING: AtomicBool = AtomicBool::new(false);

/// Exit code of a run the watchdog ended.
pub const EXIT_OVERRAN: i32 = 4;

pub fn phase(name: &'static str) {
    *PHASE.lock().unwrap_or_else(|p| p.into_inner()) = name;
}

fn current_phase() -> &'static str {
    *PHASE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Names the namespaces `net.rs` made, for removal on an abnormal exit (`None`: removed).
pub fn namespaces(made: Option<(String, u64)>) {
    *NAMESPACES.lock().unwrap_or_else(|p| p.into_inner()) = made;
}

/// The kernel sends SIGKILL to the child when the thread that spawned it ends; nodes are
/// spawned by the main thread, which lives as long as the process. Preserved across `exec`
/// (of `ip netns exec`, then of `strata`).
pub fn die_with_parent(command: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Removes this run's namespaces and bridge and exits at once with `code`; the nodes die with
/// this process.
fn abandon(code: i32, why: &str) -> ! {
    ABANDONING.store(true, Ordering::SeqCst);
    println!("strata-jepsen: {why}");
    let made = NAMESPACES.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some((tag, nodes)) = made {
        crate::net::remove_namespaces(&tag, nodes);
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: ends the process; no Rust state is used afterwards.
    unsafe { libc::_exit(code) }
}

/// Called before the process ends on its own: if the run is being abandoned (whose removal of
/// the namespaces may itself be what made the run fail), waits for the abandoning thread to end
/// the process with its code instead of racing it with another.
pub fn settle() {
    if ABANDONING.load(Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
}

/// Starts the watchdog (ends the run `bound` from now) and the SIGINT/SIGTERM handler.
pub fn install(bound: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(bound);
        abandon(
            EXIT_OVERRAN,
            &format!(
                "the run passed its bound of {} s while {}; ending it (a hang: the node logs \
                 and what was printed so far are the evidence)",
                bound.as_secs(),
                current_phase()
            ),
        );
    });
    tokio::spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        let (code, name) = tokio::select! {
            _ = interrupt.recv() => (130, "SIGINT"),
            _ = terminate.recv() => (143, "SIGTERM"),
        };
        abandon(
            code,
            &format!("{name} while {}; cleaned up and stopped", current_phase()),
        );
    });
}

/// Removes the namespaces and bridges of earlier runs whose `strata-jepsen` is gone, killing
/// any process left inside them. Returns how many runs' leftovers were removed.
pub fn sweep_leftovers() -> usize {
    let Ok(listed) = Command::new("ip").args(["-o", "link", "show"]).output() else {
        return 0;
    };
    let namespaces = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let links = String::from_utf8_lossy(&listed.stdout).into_owned();
    let pids: std::collections::BTreeSet<u32> = links
        .split_whitespace()
        .chain(namespaces.split_whitespace())
        .filter_map(|word| crate::net::pid_in(word.trim_end_matches(':')))
        .collect();
    let mut removed = 0;
    for pid in pids {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim() == "strata-jepsen");
        if alive || pid == std::process::id() {
            continue;
        }
        // Removing what is not there fails quietly: every node a run can have.
        crate::net::remove_namespaces(&crate::net::tag(pid), crate::net::MAX_NODES);
        removed += 1;
    }
    removed
}

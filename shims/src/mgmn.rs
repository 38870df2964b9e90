//! The MPI leader and workers: one real MPI world serving tasks from the proxy.
//!
//! Stand-in for TensorRT-LLM's `mgmn_leader_node` / `mgmn_worker_node`. The leader is MPI rank
//! 0 (beside the task under `rank-launch`); workers are ranks 1..N-1.
//!
//! - The leader binds the proxy address *before* `MPI_Init` (the task connects as soon as it
//!   starts; it retries, bounded, until then), accepts connections on a thread, and runs each
//!   authenticated client on its own thread. Only the main thread calls MPI
//!   (`MPI_THREAD_FUNNELED`): client threads hand it [`Job`]s over a channel and wait for the
//!   reply.
//! - A task is sent to every worker as a two-int command (point-to-point, tag [`TAG_CMD`]);
//!   then every rank takes part in the collective.
//! - Workers wait for commands with `MPI_Iprobe` and a short sleep ([`IDLE_POLL`]): a blocking
//!   broadcast would spin a core per idle rank (Open MPI busy-polls), and these machines are
//!   oversubscribed.
//! - Fault injection: `SHIM_FAIL_RANK=<ROLE>:<rank>[:<task>]` ([`fault_for`]) makes that worker
//!   abort right after that task (default the first: the server's world check at start; 2: the
//!   first request's); `SHIM_HANG=<ROLE>:<rank>:freeze` ([`crate::hang`]) makes it
//!   stop itself with `SIGSTOP` there instead, so the leader waits in the next collective until
//!   the worker gets a `SIGCONT` (or `SHIM_HANG_LIMIT` passes, and it fails).
//! - Stop (from an authenticated `--action stop` client, or `SIGTERM` to the leader): the
//!   leader tells every worker to exit, then every rank finalizes MPI (Open MPI's finalize is
//!   a fence: all ranks must reach it) and exits 0. A `SIGTERM` that arrives while the leader
//!   is sending a task to the workers or inside its collective (neither returns once a rank
//!   died) ends it at once; after a `SIGTERM` the caller stops the workers under a short bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use crate::hang::{Hang, Mode};
use crate::proxy::{self, Key, Listener, Reply, Request};
use crate::say;

/// MPI tag of leader → worker commands.
pub const TAG_CMD: i32 = 0x5ead;
/// Sleep between probes of an idle worker (also bounds how late it sees a command).
pub const IDLE_POLL: Duration = Duration::from_millis(5);
/// Time a client has to complete the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many client connections are served at once; more are closed.
pub const MAX_CLIENTS: usize = 32;

const CMD_ALLREDUCE: i32 = 1;
const CMD_STOP: i32 = 2;

/// What a worker does when told to fail (`SHIM_FAIL_RANK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Abort right after taking part in this task (1: the first, the server's world check at
    /// start; 2: the first request's).
    AbortAfterTask(u64),
}

/// Parses `SHIM_FAIL_RANK=<ROLE>:<rank>[:<task>]` (task 1 when left out) and says whether it
/// names this worker.
pub fn fault_for(spec: Option<&str>, role: Option<&str>, rank: i32) -> Result<Fault, String> {
    let Some(spec) = spec.filter(|s| !s.trim().is_empty()) else {
        return Ok(Fault::None);
    };
    let bad = || {
        format!(
            "`SHIM_FAIL_RANK` is `{spec}`: expected `<ROLE>:<rank>[:<task>]`, e.g. `GEN_0:1` or `GEN_0:1:2`"
        )
    };
    let mut parts = spec.trim().split(':');
    let want_role = parts.next().filter(|r| !r.is_empty()).ok_or_else(bad)?;
    let want_rank: i32 = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let task: u64 = match parts.next() {
        None => 1,
        Some(t) => t.parse().ok().filter(|&t| t > 0).ok_or_else(bad)?,
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(if Some(want_role) == role && want_rank == rank {
        Fault::AbortAfterTask(task)
    } else {
        Fault::None
    })
}

/// The worker loop: serve commands from rank 0 until told to stop. `hang` is this worker's
/// `SHIM_HANG` (only `freeze` applies to a worker).
pub fn run_worker(
    world: &SimpleCommunicator,
    fault: Fault,
    hang: Option<&Hang>,
) -> Result<u64, String> {
    let rank = world.rank();
    let root = world.process_at_rank(0);
    let mut tasks = 0u64;
    loop {
        if root.immediate_probe_with_tag(TAG_CMD).is_none() {
            std::thread::sleep(IDLE_POLL);
            continue;
        }
        let mut cmd = [0i32; 2];
        root.receive_into_with_tag(&mut cmd[..], TAG_CMD);
        match cmd[0] {
            CMD_ALLREDUCE => {
                let mine = i64::from(rank);
                let mut sum = 0i64;
                world.all_reduce_into(&mine, &mut sum, SystemOperation::sum());
                tasks += 1;
                if fault == Fault::AbortAfterTask(tasks) {
                    say!(
                        "fault injection (SHIM_FAIL_RANK): aborting after task {}",
                        cmd[1]
                    );
                    std::process::abort();
                }
                if let Some(hang) = hang.filter(|h| h.mode == Mode::Freeze && tasks == 1) {
                    hang.freeze()?;
                }
            }
            CMD_STOP => return Ok(tasks),
            other => return Err(format!("unknown command {other} from the leader")),
        }
    }
}

/// A request from a client thread to the MPI thread.
pub struct Job {
    pub request: Request,
    pub reply: Sender<Reply>,
    /// Signalled once the reply is on the wire (the leader waits for it, bounded, before
    /// exiting on stop).
    pub written: Receiver<()>,
}

/// Set by the leader's `SIGTERM`/`SIGINT` handler.
static TERMINATE: AtomicBool = AtomicBool::new(false);
/// True while the leader's main thread sends a task to the workers or runs its collective.
static IN_WORLD_CALL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(signal: nix::libc::c_int) {
    if IN_WORLD_CALL.load(Ordering::SeqCst) {
        // Neither a collective nor a send to a rank that died returns (seen under Slurm: the
        // workers of the other node ended first, Open MPI's TCP transport reported
        // "writev failed: Connection reset by peer" and the send never completed). Exit now
        // (`_exit` is async-signal-safe) so the step ends at once instead of after the
        // launcher's grace period.
        // SAFETY: `_exit` is async-signal-safe and takes no pointers.
        unsafe { nix::libc::_exit(128 + signal) }
    }
    TERMINATE.store(true, Ordering::SeqCst);
}

/// Makes `SIGTERM`/`SIGINT` ask the leader to stop its world cleanly instead of killing it
/// (which would leave the workers of a `srun` step waiting forever); inside a collective,
/// which may never return, the signal ends the leader at once.
pub fn install_term_handler() -> Result<(), String> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_term),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }
            .map_err(|e| format!("failed to install the {signal} handler: {e}"))?;
    }
    Ok(())
}

/// Accepts proxy clients on a thread; each authenticated one gets its own thread that turns
/// its requests into [`Job`]s.
pub fn spawn_acceptor(listener: Listener, key: Key, jobs: Sender<Job>) {
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        loop {
            let stream = match listener.accept() {
                Ok(s) => s,
                Err(e) => {
                    say!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            if active.load(Ordering::SeqCst) >= MAX_CLIENTS {
                say!("refusing a client: {MAX_CLIENTS} connections already open");
                continue;
            }
            active.fetch_add(1, Ordering::SeqCst);
            let (key, jobs, active) = (key.clone(), jobs.clone(), active.clone());
            std::thread::spawn(move || {
                serve_client(stream, &key, &jobs);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
}

fn serve_client(stream: proxy::Stream, key: &Key, jobs: &Sender<Job>) {
    let peer = stream.peer();
    let mut session = match proxy::server_handshake(stream, key, HANDSHAKE_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            say!("refused client {peer}: {e}");
            return;
        }
    };
    // An idle client may wait long between requests; replies are small and bounded.
    if session.set_timeout(None).is_err() {
        return;
    }
    loop {
        let request: Request = match session.recv() {
            Ok(r) => r,
            Err(proxy::ProxyError::Closed { .. }) => return,
            Err(e) => {
                say!("dropping client {peer}: {e}");
                return;
            }
        };
        let (reply_tx, reply_rx) = mpsc::channel();
        let (written_tx, written_rx) = mpsc::channel::<()>();
        let job = Job {
            request,
            reply: reply_tx,
            written: written_rx,
        };
        if jobs.send(job).is_err() {
            return;
        }
        let Ok(reply) = reply_rx.recv() else { return };
        let _ = session.set_timeout(Some(HANDSHAKE_TIMEOUT));
        let sent = session.send(&reply);
        let _ = session.set_timeout(None);
        let _ = written_tx.send(());
        if let Err(e) = sent {
            say!("failed to answer client {peer}: {e}");
            return;
        }
        if request == Request::Stop {
            return;
        }
    }
}

/// Tells every worker to exit (they then finalize MPI, as the caller must).
pub fn stop_workers(world: &SimpleCommunicator) {
    for r in 1..world.size() {
        world
            .process_at_rank(r)
            .send_with_tag(&[CMD_STOP, 0][..], TAG_CMD);
    }
}

/// Why the leader loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderEnd {
    /// An authenticated client asked to stop.
    Stopped,
    /// `SIGTERM`/`SIGINT`.
    Terminated,
}

/// The leader's MPI loop: runs jobs on every rank until stop. Returns the number of tasks run.
/// After a stop request the workers have been told to exit; after a termination signal the
/// caller does that, under a bound (a worker may be gone).
pub fn run_leader(world: &SimpleCommunicator, jobs: &Receiver<Job>) -> (LeaderEnd, u64) {
    let size = world.size();
    let world_size = size as u32;
    let mut tasks = 0u64;
    let tell_workers = |cmd: [i32; 2]| {
        for r in 1..size {
            world.process_at_rank(r).send_with_tag(&cmd[..], TAG_CMD);
        }
    };
    loop {
        let job = match jobs.recv_timeout(Duration::from_millis(100)) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                if TERMINATE.load(Ordering::SeqCst) {
                    say!("termination signal: stopping {} worker(s)", size - 1);
                    return (LeaderEnd::Terminated, tasks);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                // The acceptor never ends on its own; treat it like a termination signal.
                return (LeaderEnd::Terminated, tasks);
            }
        };
        // From here on a TERM during a task (its send to the workers, the collective) exits at
        // once: neither returns once a rank died. One that came before is handled here.
        IN_WORLD_CALL.store(matches!(job.request, Request::Allreduce), Ordering::SeqCst);
        if TERMINATE.load(Ordering::SeqCst) {
            IN_WORLD_CALL.store(false, Ordering::SeqCst);
            let _ = job.reply.send(Reply::Error {
                message: "the leader is stopping".into(),
            });
            return (LeaderEnd::Terminated, tasks);
        }
        match job.request {
            Request::Ping => {
                let _ = job.reply.send(Reply::Pong { world_size });
            }
            Request::Allreduce => {
                tasks += 1;
                tell_workers([CMD_ALLREDUCE, tasks as i32]);
                let mut sum = 0i64;
                world.all_reduce_into(&0i64, &mut sum, SystemOperation::sum());
                IN_WORLD_CALL.store(false, Ordering::SeqCst);
                let _ = job.reply.send(Reply::Sum { sum, world_size });
            }
            Request::Stop => {
                say!("stop requested: stopping {} worker(s)", size - 1);
                stop_workers(world);
                let _ = job.reply.send(Reply::Stopping);
                // Bounded: let the client read "stopping" before this process goes away.
                let _ = job.written.recv_timeout(Duration::from_secs(2));
                return (LeaderEnd::Stopped, tasks);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_spec() {
        let f = |spec, role, rank| fault_for(spec, role, rank);
        assert_eq!(f(None, Some("GEN_0"), 1), Ok(Fault::None));
        assert_eq!(
            f(Some("GEN_0:1"), Some("GEN_0"), 1),
            Ok(Fault::AbortAfterTask(1))
        );
        assert_eq!(
            f(Some("GEN_0:1:2"), Some("GEN_0"), 1),
            Ok(Fault::AbortAfterTask(2))
        );
        assert_eq!(f(Some("GEN_0:1"), Some("GEN_0"), 2), Ok(Fault::None));
        assert_eq!(f(Some("GEN_0:1"), Some("CTX_0"), 1), Ok(Fault::None));
        assert_eq!(f(Some("GEN_0:1"), None, 1), Ok(Fault::None));
        for bad in [
            "GEN_0",
            "GEN_0:x",
            ":1",
            "GEN_0:1:0",
            "GEN_0:1:x",
            "GEN_0:1:2:3",
        ] {
            let err = f(Some(bad), Some("GEN_0"), 1).unwrap_err();
            assert!(err.contains("SHIM_FAIL_RANK"), "{err}");
        }
    }
}

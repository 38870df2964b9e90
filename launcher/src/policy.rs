//! When rank-launch signals its children, and how their ends become its exit code.
//!
//! Pure state machines, fed with what happened (a child ended, a signal arrived, a deadline
//! passed) and answering with orders ([`Order`]) that [`crate::run`] carries out through the
//! supervisor. No clock is read here: every input carries `now`.
//!
//! - [`Ending`] is the one shutdown policy, used by every mode, by the install gate and by the
//!   supervisor's final sweep: a termination signal to every group that may still have members,
//!   `SIGKILL` after the grace period, then at most [`KILL_WAIT`] for the kernel to hand the
//!   processes back; what survives that is reported as stuck, never waited for. A second
//!   termination signal skips the rest of the grace period.
//! - [`Single`] is one main child (no role, `DISAGG_SERVER`, `BENCHMARK`, an MPI worker).
//! - [`Rank0`] is rank 0 of the MPI path: the task beside the MPI leader, the leader's stop
//!   helper once the task ends, and the exit-code rules of upstream's `trtllm-llmapi-launch`:
//!   - the task ends first: the stop helper runs, and the leader and the helper get the stop
//!     timeout to end; the task's own non-zero code wins; else 124 when they did not end within
//!     it, the stop helper's code when the helper failed (the leader is then terminated at
//!     once), the leader's code when it failed while stopping, else 0;
//!   - the leader ends first: the task may still end on its own within the stop timeout; its
//!     non-zero code wins, else the leader's code, else 1 (a leader that leaves early is a
//!     failure even when it says 0).
//!
//! Bounds (documented against Slurm's `KillWait`, 30 s by default): from the first termination
//! signal to the last child reaped takes at most `grace + KILL_WAIT`.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::exit::{ChildEnd, LaunchExit};

/// How long after `SIGKILL` the kernel gets to end and hand back the children: a process that
/// is still there then is stuck in the kernel (or cannot be signalled) and is left behind.
pub const KILL_WAIT: Duration = Duration::from_secs(2);

/// What the caller must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Send `signal` to every group that may still have members (and to re-parented
    /// descendants); `why` is for the log line.
    SignalAll { signal: Signal, why: Why },
    /// Start the leader's stop command.
    StartStopHelper,
}

/// Why an [`Order::SignalAll`] was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// rank-launch received this termination signal.
    Forwarded,
    /// rank-launch received this notice (`SIGHUP`, `SIGUSR1`, `SIGUSR2`).
    Notice,
    /// A second termination signal: no more grace.
    SecondSignal,
    /// The grace period after the termination signal is over.
    GraceOver,
    /// The leader did not stop within the stop timeout after the task's end.
    StopOverran,
    /// The stop helper failed (or could not start) while the leader still ran.
    StopHelperFailed,
    /// The leader ended first and the task did not end within the stop timeout.
    TaskOverran,
    /// The main work is over; what is left of it is ended (the final sweep).
    Leftovers,
    /// A readiness or progress deadline passed ([`crate::watch`]).
    Deadline,
}

/// The shutdown policy's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Nothing is being ended.
    Idle,
    /// Every group got a termination signal; `SIGKILL` follows at `kill_at`.
    Terminating { kill_at: Instant },
    /// Every group got `SIGKILL`; what is not reaped by `give_up_at` is stuck.
    Killed { give_up_at: Instant },
    /// Children survived [`KILL_WAIT`] after `SIGKILL`.
    Stuck,
}

/// `SIGTERM`, `SIGINT` and `SIGQUIT` end the run; every other handled signal is a notice.
pub fn is_termination(signal: Signal) -> bool {
    matches!(signal, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT)
}

impl Ending {
    /// The next instant at which [`Ending::on_tick`] has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        match *self {
            Ending::Terminating { kill_at } => Some(kill_at),
            Ending::Killed { give_up_at } => Some(give_up_at),
            Ending::Idle | Ending::Stuck => None,
        }
    }

    pub fn is_idle(&self) -> bool {
        *self == Ending::Idle
    }

    pub fn is_stuck(&self) -> bool {
        *self == Ending::Stuck
    }

    /// Ends everything with `signal`: the first time it is sent and the grace period starts;
    /// once ending is under way, `SIGKILL` at once.
    pub fn terminate(&mut self, signal: Signal, why: Why, now: Instant, grace: Duration) -> Order {
        match *self {
            Ending::Idle => {
                *self = Ending::Terminating {
                    kill_at: now + grace,
                };
                Order::SignalAll { signal, why }
            }
            Ending::Terminating { .. } | Ending::Stuck => {
                *self = Ending::Killed {
                    give_up_at: now + KILL_WAIT,
                };
                Order::SignalAll {
                    signal: Signal::SIGKILL,
                    why: Why::SecondSignal,
                }
            }
            // Already killed: the bound does not move.
            Ending::Killed { .. } => Order::SignalAll {
                signal: Signal::SIGKILL,
                why: Why::SecondSignal,
            },
        }
    }

    /// A signal rank-launch received: termination signals end the run, the others are passed
    /// on and change nothing.
    pub fn on_signal(&mut self, signal: Signal, now: Instant, grace: Duration) -> Order {
        if is_termination(signal) {
            self.terminate(signal, Why::Forwarded, now, grace)
        } else {
            Order::SignalAll {
                signal,
                why: Why::Notice,
            }
        }
    }

    /// Time passed: `SIGKILL` once the grace period is over, and "stuck" once that did not
    /// help within [`KILL_WAIT`].
    pub fn on_tick(&mut self, now: Instant) -> Option<Order> {
        match *self {
            Ending::Terminating { kill_at } if now >= kill_at => {
                *self = Ending::Killed {
                    give_up_at: now + KILL_WAIT,
                };
                Some(Order::SignalAll {
                    signal: Signal::SIGKILL,
                    why: Why::GraceOver,
                })
            }
            Ending::Killed { give_up_at } if now >= give_up_at => {
                *self = Ending::Stuck;
                None
            }
            _ => None,
        }
    }
}

/// The exit code and, when it is not simply the child's, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub code: u8,
    pub reason: Option<String>,
}

/// The message for children that survived `SIGKILL`.
fn stuck_reason(what: &str) -> String {
    format!(
        "the {what} did not end within {}s after SIGKILL (stuck in the kernel, or not ours to \
         signal); leaving it behind",
        KILL_WAIT.as_secs()
    )
}

/// One main child: it ends, or rank-launch ends it on a signal.
#[derive(Debug, Clone)]
pub struct Single {
    grace: Duration,
    pub ending: Ending,
    end: Option<ChildEnd>,
}

impl Single {
    pub fn new(grace: Duration) -> Self {
        Single {
            grace,
            ending: Ending::Idle,
            end: None,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.ending.deadline()
    }

    pub fn on_ended(&mut self, end: ChildEnd) {
        self.end = Some(end);
    }

    pub fn on_signal(&mut self, signal: Signal, now: Instant) -> Order {
        self.ending.on_signal(signal, now, self.grace)
    }

    pub fn on_tick(&mut self, now: Instant) -> Option<Order> {
        self.ending.on_tick(now)
    }

    /// A readiness or progress deadline passed: the child is ended like on a signal (the
    /// caller decides the exit code).
    pub fn on_deadline(&mut self, now: Instant) -> Order {
        self.ending
            .terminate(Signal::SIGTERM, Why::Deadline, now, self.grace)
    }

    /// `Some` once the child ended or could not be ended.
    pub fn verdict(&self, name: &str) -> Option<Verdict> {
        match self.end {
            Some(end) => Some(Verdict {
                code: end.code(),
                reason: None,
            }),
            None if self.ending.is_stuck() => Some(Verdict {
                code: LaunchExit::SETUP_FAILED,
                reason: Some(stuck_reason(name)),
            }),
            None => None,
        }
    }
}

/// The members of rank 0's trio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    Task,
    Leader,
    StopHelper,
}

/// Where rank 0 stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Task and leader run.
    Serving,
    /// The task ended and the stop helper was started; the leader must end by `deadline`.
    StoppingLeader { deadline: Instant },
    /// The leader ended first; the task may end on its own until `deadline`.
    AwaitingTask { deadline: Instant },
    /// Everything left is being ended ([`Rank0::ending`]).
    Ending,
}

/// Why rank 0 started ending its children before they ended on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Signal,
    /// The stop timeout ran out; `leader`: the leader itself was still running (else only the
    /// stop helper was).
    StopOverran {
        leader: bool,
    },
    StopHelperFailed(u8),
    TaskOverran,
}

/// The leader's stop helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Helper {
    NotStarted,
    Running,
    Ended,
}

/// Rank 0 of the MPI path: the task beside the leader.
#[derive(Debug, Clone)]
pub struct Rank0 {
    stop_timeout: Duration,
    grace: Duration,
    phase: Phase,
    pub ending: Ending,
    task: Option<ChildEnd>,
    leader: Option<ChildEnd>,
    helper: Helper,
    /// Who of task and leader ended first, while both were serving.
    first: Option<Member>,
    cause: Option<Cause>,
}

impl Rank0 {
    pub fn new(stop_timeout: Duration, grace: Duration) -> Self {
        Rank0 {
            stop_timeout,
            grace,
            phase: Phase::Serving,
            ending: Ending::Idle,
            task: None,
            leader: None,
            helper: Helper::NotStarted,
            first: None,
            cause: None,
        }
    }

    /// The next instant at which [`Rank0::on_tick`] has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::StoppingLeader { deadline } | Phase::AwaitingTask { deadline } => Some(deadline),
            Phase::Serving | Phase::Ending => self.ending.deadline(),
        }
    }

    fn begin_ending(&mut self, cause: Cause, why: Why, now: Instant) -> Order {
        self.cause.get_or_insert(cause);
        self.phase = Phase::Ending;
        self.ending.terminate(Signal::SIGTERM, why, now, self.grace)
    }

    /// A member's main process ended (`code` for a stop helper that could not start at all).
    pub fn on_ended(&mut self, member: Member, end: ChildEnd, now: Instant) -> Vec<Order> {
        match member {
            Member::Task => {
                self.task = Some(end);
                if self.phase == Phase::Serving {
                    self.first = Some(Member::Task);
                    self.phase = Phase::StoppingLeader {
                        deadline: now + self.stop_timeout,
                    };
                    self.helper = Helper::Running;
                    return vec![Order::StartStopHelper];
                }
            }
            Member::Leader => {
                self.leader = Some(end);
                if self.phase == Phase::Serving {
                    self.first = Some(Member::Leader);
                    self.phase = Phase::AwaitingTask {
                        deadline: now + self.stop_timeout,
                    };
                }
            }
            Member::StopHelper => {
                self.helper = Helper::Ended;
                let leader_running = self.leader.is_none();
                if !end.success()
                    && leader_running
                    && matches!(self.phase, Phase::StoppingLeader { .. })
                {
                    return vec![self.begin_ending(
                        Cause::StopHelperFailed(end.code()),
                        Why::StopHelperFailed,
                        now,
                    )];
                }
            }
        }
        Vec::new()
    }

    /// A readiness or progress deadline passed while task and leader serve: both are ended
    /// like on a signal (the caller decides the exit code).
    pub fn on_deadline(&mut self, now: Instant) -> Order {
        self.cause.get_or_insert(Cause::Signal);
        self.phase = Phase::Ending;
        self.ending
            .terminate(Signal::SIGTERM, Why::Deadline, now, self.grace)
    }

    /// A signal rank-launch received.
    pub fn on_signal(&mut self, signal: Signal, now: Instant) -> Order {
        if is_termination(signal) {
            self.cause.get_or_insert(Cause::Signal);
            self.phase = Phase::Ending;
        }
        self.ending.on_signal(signal, now, self.grace)
    }

    /// Time passed.
    pub fn on_tick(&mut self, now: Instant) -> Option<Order> {
        match self.phase {
            Phase::StoppingLeader { deadline } if now >= deadline => {
                let leader = self.leader.is_none();
                Some(self.begin_ending(Cause::StopOverran { leader }, Why::StopOverran, now))
            }
            Phase::AwaitingTask { deadline } if now >= deadline => {
                Some(self.begin_ending(Cause::TaskOverran, Why::TaskOverran, now))
            }
            _ => self.ending.on_tick(now),
        }
    }

    /// `Some` once task and leader have both ended (and, while the leader is being stopped,
    /// the stop helper too), or could not be ended.
    pub fn verdict(&self) -> Option<Verdict> {
        let stopping = matches!(self.phase, Phase::StoppingLeader { .. });
        if stopping && self.helper == Helper::Running {
            return None;
        }
        let (task, leader) = match (self.task, self.leader) {
            (Some(task), Some(leader)) => (task, leader),
            _ if self.ending.is_stuck() => {
                let what = match (self.task, self.leader) {
                    (None, None) => "task and the MPI leader",
                    (None, Some(_)) => "task",
                    _ => "MPI leader",
                };
                return Some(Verdict {
                    code: LaunchExit::SETUP_FAILED,
                    reason: Some(stuck_reason(what)),
                });
            }
            _ => return None,
        };
        let secs = self.stop_timeout.as_secs_f64();
        let plain = |code: u8| Verdict { code, reason: None };
        let because = |code: u8, reason: String| Verdict {
            code,
            reason: Some(reason),
        };
        Some(match self.first {
            // A termination signal while both were serving: the task's own answer to it.
            None => plain(task.code()),
            // (`first` is only ever the task or the leader.)
            Some(Member::Task) | Some(Member::StopHelper) => {
                if !task.success() {
                    plain(task.code())
                } else {
                    match self.cause {
                        Some(Cause::StopOverran {
                            leader: leader_overran,
                        }) => because(
                            LaunchExit::SHUTDOWN_OVERRAN,
                            format!(
                                "MPI leader shutdown exceeded {secs}s after the task's end \
                                 (TLLM_LLMAPI_LAUNCH_STOP_TIMEOUT / --leader-stop-timeout): the \
                                 leader{} did not end; terminated",
                                if leader_overran {
                                    ""
                                } else {
                                    "'s stop command"
                                }
                            ),
                        ),
                        Some(Cause::StopHelperFailed(code)) => because(
                            code,
                            format!(
                                "the leader's stop command failed (stop helper exit code: \
                                 {code}); the MPI leader was terminated"
                            ),
                        ),
                        None if !leader.success() => because(
                            leader.code(),
                            format!(
                                "the MPI leader failed while stopping (exit code {})",
                                leader.code()
                            ),
                        ),
                        _ => plain(0),
                    }
                }
            }
            Some(Member::Leader) => {
                let natural = self.cause.is_none();
                if natural && !task.success() {
                    plain(task.code())
                } else {
                    let code = if leader.success() { 1 } else { leader.code() };
                    let mut reason = format!(
                        "the MPI leader ended (exit code {}) before the task",
                        leader.code()
                    );
                    if self.cause == Some(Cause::TaskOverran) {
                        reason.push_str(&format!(
                            ", and the task did not end within {secs}s; it was terminated"
                        ));
                    }
                    because(code, reason)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(5);
    const STOP: Duration = Duration::from_secs(120);

    fn at(t0: Instant, secs: f64) -> Instant {
        t0 + Duration::from_secs_f64(secs)
    }

    fn term(why: Why) -> Order {
        Order::SignalAll {
            signal: Signal::SIGTERM,
            why,
        }
    }

    fn kill(why: Why) -> Order {
        Order::SignalAll {
            signal: Signal::SIGKILL,
            why,
        }
    }

    #[test]
    fn ending_terminates_then_kills_then_gives_up() {
        let t0 = Instant::now();
        let mut e = Ending::Idle;
        assert_eq!(e.deadline(), None);
        assert_eq!(e.on_tick(at(t0, 100.0)), None, "idle: nothing to do");
        assert_eq!(e.on_signal(Signal::SIGUSR1, t0, GRACE), {
            Order::SignalAll {
                signal: Signal::SIGUSR1,
                why: Why::Notice,
            }
        });
        assert!(e.is_idle(), "a notice changes nothing");
        assert_eq!(
            e.on_signal(Signal::SIGINT, t0, GRACE),
            Order::SignalAll {
                signal: Signal::SIGINT,
                why: Why::Forwarded
            }
        );
        assert_eq!(e.deadline(), Some(at(t0, 5.0)));
        assert_eq!(e.on_tick(at(t0, 4.9)), None);
        assert_eq!(e.on_tick(at(t0, 5.0)), Some(kill(Why::GraceOver)));
        assert_eq!(e.deadline(), Some(at(t0, 5.0) + KILL_WAIT));
        assert_eq!(e.on_tick(at(t0, 6.0)), None);
        assert!(!e.is_stuck());
        assert_eq!(e.on_tick(at(t0, 7.0)), None);
        assert!(e.is_stuck());
        assert_eq!(e.deadline(), None, "stuck: nothing more is waited for");
    }

    #[test]
    fn a_second_termination_signal_kills_at_once_and_the_bound_holds() {
        let t0 = Instant::now();
        let mut e = Ending::Idle;
        e.on_signal(Signal::SIGTERM, t0, GRACE);
        assert_eq!(
            e.on_signal(Signal::SIGTERM, at(t0, 1.0), GRACE),
            kill(Why::SecondSignal)
        );
        assert_eq!(e.deadline(), Some(at(t0, 1.0) + KILL_WAIT));
        // A third one does not push the bound out.
        e.on_signal(Signal::SIGQUIT, at(t0, 2.0), GRACE);
        assert_eq!(e.deadline(), Some(at(t0, 1.0) + KILL_WAIT));
        // Worst case from the first signal: grace + KILL_WAIT.
        let mut e = Ending::Idle;
        e.on_signal(Signal::SIGTERM, t0, GRACE);
        e.on_tick(at(t0, 5.0));
        e.on_tick(at(t0, 5.0) + KILL_WAIT);
        assert!(e.is_stuck());
    }

    #[test]
    fn single_keeps_the_child_code_or_says_it_is_stuck() {
        let t0 = Instant::now();
        let mut s = Single::new(GRACE);
        assert_eq!(s.verdict("task"), None);
        s.on_ended(ChildEnd::Signaled(15));
        assert_eq!(s.verdict("task").unwrap().code, 143);

        let mut s = Single::new(GRACE);
        assert_eq!(s.on_signal(Signal::SIGTERM, t0), term(Why::Forwarded));
        assert_eq!(s.on_tick(at(t0, 5.0)), Some(kill(Why::GraceOver)));
        s.on_tick(at(t0, 7.0));
        let v = s.verdict("task").unwrap();
        assert_eq!(v.code, LaunchExit::SETUP_FAILED);
        assert!(
            v.reason
                .unwrap()
                .contains("did not end within 2s after SIGKILL")
        );
    }

    /// One scripted run of rank 0: inputs at times, the orders each produced, the verdict.
    enum In {
        End(Member, ChildEnd),
        Sig(Signal),
        Tick,
    }

    fn play(script: &[(f64, In)]) -> (Vec<(f64, Order)>, Option<Verdict>) {
        let t0 = Instant::now();
        let mut r = Rank0::new(STOP, GRACE);
        let mut orders = Vec::new();
        for (t, input) in script {
            let now = at(t0, *t);
            let got = match input {
                In::End(m, e) => r.on_ended(*m, *e, now),
                In::Sig(s) => vec![r.on_signal(*s, now)],
                In::Tick => {
                    assert!(
                        r.deadline().is_some_and(|d| d <= now),
                        "tick at {t}s before the deadline {:?}",
                        r.deadline().map(|d| d - t0)
                    );
                    r.on_tick(now).into_iter().collect()
                }
            };
            orders.extend(got.into_iter().map(|o| (*t, o)));
        }
        (orders, r.verdict())
    }

    use ChildEnd::{Exited, Signaled};
    use Member::{Leader, StopHelper, Task};

    #[test]
    fn rank0_exit_codes_follow_upstream() {
        struct Case {
            name: &'static str,
            script: Vec<(f64, In)>,
            orders: Vec<(f64, Order)>,
            code: u8,
            reason: Option<&'static str>,
        }
        let stop = (1.0, Order::StartStopHelper);
        let cases = vec![
            Case {
                name: "task 0, leader stops",
                script: vec![
                    (1.0, In::End(Task, Exited(0))),
                    (1.3, In::End(StopHelper, Exited(0))),
                    (1.4, In::End(Leader, Exited(0))),
                ],
                orders: vec![stop],
                code: 0,
                reason: None,
            },
            Case {
                name: "task 7, leader stops",
                script: vec![
                    (1.0, In::End(Task, Exited(7))),
                    (1.4, In::End(Leader, Exited(0))),
                    (1.5, In::End(StopHelper, Exited(0))),
                ],
                orders: vec![stop],
                code: 7,
                reason: None,
            },
            Case {
                name: "task 0, leader never stops: 124",
                script: vec![
                    (1.0, In::End(Task, Exited(0))),
                    (1.3, In::End(StopHelper, Exited(0))),
                    (121.0, In::Tick),
                    (121.5, In::End(Leader, Signaled(15))),
                ],
                orders: vec![stop, (121.0, term(Why::StopOverran))],
                code: 124,
                reason: Some("MPI leader shutdown exceeded 120s"),
            },
            Case {
                name: "task 7, leader never stops: the task's code",
                script: vec![
                    (1.0, In::End(Task, Exited(7))),
                    (121.0, In::Tick),
                    (126.0, In::Tick),
                    (126.1, In::End(Leader, Signaled(9))),
                ],
                orders: vec![
                    stop,
                    (121.0, term(Why::StopOverran)),
                    (126.0, kill(Why::GraceOver)),
                ],
                code: 7,
                reason: None,
            },
            Case {
                name: "stop helper fails: the leader is ended at once, its code",
                script: vec![
                    (1.0, In::End(Task, Exited(0))),
                    (1.3, In::End(StopHelper, Exited(23))),
                    (1.4, In::End(Leader, Signaled(15))),
                ],
                orders: vec![stop, (1.3, term(Why::StopHelperFailed))],
                code: 23,
                reason: Some("stop helper exit code: 23"),
            },
            Case {
                name: "stop helper fails, task 7",
                script: vec![
                    (1.0, In::End(Task, Exited(7))),
                    (1.3, In::End(StopHelper, Exited(23))),
                    (1.4, In::End(Leader, Signaled(15))),
                ],
                orders: vec![stop, (1.3, term(Why::StopHelperFailed))],
                code: 7,
                reason: None,
            },
            Case {
                name: "stop helper fails after the leader ended: no matter",
                script: vec![
                    (1.0, In::End(Task, Exited(0))),
                    (1.3, In::End(Leader, Exited(0))),
                    (1.4, In::End(StopHelper, Exited(1))),
                ],
                orders: vec![stop],
                code: 0,
                reason: None,
            },
            Case {
                name: "the leader ended, the stop helper is still finishing: it is waited for",
                script: vec![
                    (1.0, In::End(Task, Exited(0))),
                    (1.3, In::End(Leader, Exited(0))),
                    (1.5, In::End(StopHelper, Exited(0))),
                ],
                orders: vec![stop],
                code: 0,
                reason: None,
            },
            Case {
                name: "the stop helper hangs after the leader ended: 124",
                script: vec![
                    (1.0, In::End(Task, Exited(0))),
                    (1.3, In::End(Leader, Exited(0))),
                    (121.0, In::Tick),
                    (121.1, In::End(StopHelper, Signaled(15))),
                ],
                orders: vec![stop, (121.0, term(Why::StopOverran))],
                code: 124,
                reason: Some("the leader's stop command did not end"),
            },
            Case {
                name: "leader fails while stopping",
                script: vec![
                    (1.0, In::End(Task, Exited(0))),
                    (1.3, In::End(StopHelper, Exited(0))),
                    (1.4, In::End(Leader, Exited(6))),
                ],
                orders: vec![stop],
                code: 6,
                reason: Some("the MPI leader failed while stopping (exit code 6)"),
            },
            Case {
                name: "leader 17 first, task never ends: 17",
                script: vec![
                    (1.0, In::End(Leader, Exited(17))),
                    (121.0, In::Tick),
                    (121.2, In::End(Task, Signaled(15))),
                ],
                orders: vec![(121.0, term(Why::TaskOverran))],
                code: 17,
                reason: Some("and the task did not end within 120s"),
            },
            Case {
                name: "leader 0 first, task never ends: 1",
                script: vec![
                    (1.0, In::End(Leader, Exited(0))),
                    (121.0, In::Tick),
                    (121.2, In::End(Task, Exited(0))),
                ],
                orders: vec![(121.0, term(Why::TaskOverran))],
                code: 1,
                reason: Some("the MPI leader ended (exit code 0) before the task"),
            },
            Case {
                name: "leader 17 first, task ends on its own with 7: 7",
                script: vec![
                    (1.0, In::End(Leader, Exited(17))),
                    (1.3, In::End(Task, Exited(7))),
                ],
                orders: vec![],
                code: 7,
                reason: None,
            },
            Case {
                name: "leader 17 first, task ends on its own with 143: 143",
                script: vec![
                    (1.0, In::End(Leader, Exited(17))),
                    (1.3, In::End(Task, Exited(143))),
                ],
                orders: vec![],
                code: 143,
                reason: None,
            },
            Case {
                name: "leader 17 first, task ends on its own with 0: 17",
                script: vec![
                    (1.0, In::End(Leader, Exited(17))),
                    (1.3, In::End(Task, Exited(0))),
                ],
                orders: vec![],
                code: 17,
                reason: Some("the MPI leader ended (exit code 17) before the task"),
            },
            Case {
                name: "leader 0 first, task 0: 1",
                script: vec![
                    (1.0, In::End(Leader, Exited(0))),
                    (1.3, In::End(Task, Exited(0))),
                ],
                orders: vec![],
                code: 1,
                reason: Some("before the task"),
            },
            Case {
                name: "SIGTERM while serving: the task's answer",
                script: vec![
                    (1.0, In::Sig(Signal::SIGTERM)),
                    (1.1, In::End(Task, Exited(0))),
                    (1.2, In::End(Leader, Exited(0))),
                ],
                orders: vec![(1.0, term(Why::Forwarded))],
                code: 0,
                reason: None,
            },
            Case {
                name: "SIGTERM, task killed by it",
                script: vec![
                    (1.0, In::Sig(Signal::SIGTERM)),
                    (1.1, In::End(Leader, Exited(0))),
                    (1.2, In::End(Task, Signaled(15))),
                ],
                orders: vec![(1.0, term(Why::Forwarded))],
                code: 143,
                reason: None,
            },
            Case {
                name: "SIGTERM while stopping the leader: no new grace",
                script: vec![
                    (1.0, In::End(Task, Exited(0))),
                    (2.0, In::Sig(Signal::SIGTERM)),
                    (7.0, In::Tick),
                    (7.1, In::End(Leader, Signaled(9))),
                ],
                orders: vec![
                    stop,
                    (2.0, term(Why::Forwarded)),
                    (7.0, kill(Why::GraceOver)),
                ],
                code: 0,
                reason: None,
            },
            Case {
                name: "USR1 is a notice",
                script: vec![
                    (0.5, In::Sig(Signal::SIGUSR1)),
                    (1.0, In::End(Task, Exited(0))),
                    (1.1, In::End(StopHelper, Exited(0))),
                    (1.2, In::End(Leader, Exited(0))),
                ],
                orders: vec![
                    (
                        0.5,
                        Order::SignalAll {
                            signal: Signal::SIGUSR1,
                            why: Why::Notice,
                        },
                    ),
                    stop,
                ],
                code: 0,
                reason: None,
            },
        ];
        for case in cases {
            let (orders, verdict) = play(&case.script);
            assert_eq!(orders, case.orders, "{}", case.name);
            let verdict = verdict.unwrap_or_else(|| panic!("{}: no verdict", case.name));
            assert_eq!(verdict.code, case.code, "{}: {verdict:?}", case.name);
            match (case.reason, &verdict.reason) {
                (None, None) => {}
                (Some(want), Some(got)) => assert!(got.contains(want), "{}: {got}", case.name),
                (want, got) => panic!("{}: reason {got:?}, expected {want:?}", case.name),
            }
        }
    }

    #[test]
    fn rank0_stuck_leader_is_a_verdict_not_a_hang() {
        let (orders, verdict) = play(&[
            (1.0, In::End(Task, Exited(0))),
            (121.0, In::Tick),
            (126.0, In::Tick),
            (128.0, In::Tick),
        ]);
        assert_eq!(orders.len(), 3, "{orders:?}");
        let v = verdict.unwrap();
        assert_eq!(v.code, LaunchExit::SETUP_FAILED);
        assert!(v.reason.unwrap().contains("MPI leader did not end"));
    }

    #[test]
    fn rank0_waits_for_both_before_a_verdict() {
        let t0 = Instant::now();
        let mut r = Rank0::new(STOP, GRACE);
        assert_eq!(r.deadline(), None);
        r.on_ended(Task, Exited(0), t0);
        assert_eq!(r.verdict(), None);
        assert_eq!(r.deadline(), Some(t0 + STOP));
        r.on_ended(StopHelper, Exited(0), t0);
        assert_eq!(r.verdict(), None, "the helper's end is not the leader's");
        r.on_ended(Leader, Exited(0), t0);
        assert_eq!(r.verdict().map(|v| v.code), Some(0));
        // The other order: the leader first, then the stop helper.
        let mut r = Rank0::new(STOP, GRACE);
        r.on_ended(Task, Exited(0), t0);
        r.on_ended(Leader, Exited(0), t0);
        assert_eq!(r.verdict(), None, "the stop helper is still finishing");
        r.on_ended(StopHelper, Exited(0), t0);
        assert_eq!(r.verdict().map(|v| v.code), Some(0));
    }
}

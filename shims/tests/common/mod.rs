//! Helpers for the shims' process-level tests: the real binaries, `mpirun` with the flags this
//! machine needs, and child processes whose output can be waited on with a bound.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The directory of this package's binaries (and, in a workspace build, rank-launch's).
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_shim-role"))
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

/// `rank-launch`, built with `cargo build -p rank-launch` when the workspace build did not
/// produce it (e.g. under `cargo test -p shims`).
pub fn rank_launch() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let path = bin_dir().join("rank-launch");
            if path.exists() {
                return Ok(path);
            }
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
            let status = Command::new(&cargo)
                .args(["build", "-p", "rank-launch", "--manifest-path"])
                .arg(&manifest)
                .status()
                .map_err(|e| format!("failed to run `{cargo} build -p rank-launch`: {e}"))?;
            if !status.success() || !path.exists() {
                return Err(format!(
                    "`{cargo} build -p rank-launch` did not produce `{}` ({status}); build it first",
                    path.display()
                ));
            }
            Ok(path)
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Variables a test must not inherit: launcher, MPI and role settings of whatever ran the tests.
const INHERITED_NOISE: &[&str] = &[
    "OMPI_",
    "PMIX_",
    "PMI_",
    "SLURM_",
    "MPI_",
    "HYDRA_",
    "I_MPI_",
    "MV2_",
    "TLLM_",
    "RANK_LAUNCH_",
    "SHIM_",
    "TRTLLM_",
    "DISAGG_",
    "tllm_",
    "jobWorkspace",
    "numCtxServers",
    "numGenServers",
    "LAUNCH_GEN_CONFIG",
    "pytestCommand",
];

/// A command with a clean launcher environment, the binaries first on `PATH`, and what
/// Open MPI needs here (root, 2 cores).
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if INHERITED_NOISE.iter().any(|p| name_text.starts_with(p)) {
            cmd.env_remove(&name);
        }
    }
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd.env("PATH", path)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1");
    cmd
}

/// `mpirun --oversubscribe -np N` (more arguments follow).
pub fn mpirun(np: u32) -> Command {
    let mut cmd = command("mpirun");
    cmd.args(["--oversubscribe", "-np", &np.to_string()]);
    cmd
}

/// The rank-launch contract with the shims, as in the demo.
pub fn with_shim_leader(cmd: &mut Command) -> &mut Command {
    cmd.env("RANK_LAUNCH_LEADER_CMD", "shim-leader")
        .env("RANK_LAUNCH_WORKER_CMD", "shim-worker")
        .env("RANK_LAUNCH_LEADER_STOP_CMD", "shim-leader --action stop")
}

#[derive(Default)]
struct Captured {
    stdout: String,
    stderr: String,
}

/// A running child (in its own process group) with its output captured.
pub struct Proc {
    name: String,
    child: Child,
    output: Arc<(Mutex<Captured>, Condvar)>,
    readers: Vec<std::thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        use std::os::unix::process::CommandExt;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {name} ({cmd:?}): {e}"));
        let output = Arc::new((Mutex::new(Captured::default()), Condvar::new()));
        let mut readers = Vec::new();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("stdout"));
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("stderr"));
        for (stream, is_err) in [(out, false), (err, true)] {
            let output = output.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let (lock, cvar) = &*output;
                    let mut captured = lock.lock().expect("capture lock");
                    let text = if is_err {
                        &mut captured.stderr
                    } else {
                        &mut captured.stdout
                    };
                    text.push_str(&line);
                    text.push('\n');
                    cvar.notify_all();
                }
            }));
        }
        Proc {
            name: name.to_string(),
            child,
            output,
            readers,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        self.output.0.lock().expect("capture lock").stdout.clone()
    }

    pub fn stderr(&self) -> String {
        self.output.0.lock().expect("capture lock").stderr.clone()
    }

    /// Both streams, for failure messages.
    pub fn all(&self) -> String {
        format!(
            "--- {} stdout:\n{}--- {} stderr:\n{}",
            self.name,
            self.stdout(),
            self.name,
            self.stderr()
        )
    }

    /// Waits until stdout or stderr contains `needle`; panics after `limit`.
    pub fn wait_for(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        let (lock, cvar) = &*self.output;
        let mut captured = lock.lock().expect("capture lock");
        while !captured.stdout.contains(needle) && !captured.stderr.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{}: no `{needle}` within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                self.name,
                captured.stdout,
                captured.stderr
            );
            captured = cvar.wait_timeout(captured, left).expect("capture lock").0;
        }
    }

    /// Checks that stdout gets nothing more for `window`: a negative check, so keep the window
    /// short. Returns what arrived, if anything did.
    pub fn stdout_quiet_for(&self, window: Duration) -> Result<(), String> {
        let deadline = Instant::now() + window;
        let (lock, cvar) = &*self.output;
        let mut captured = lock.lock().expect("capture lock");
        let before = captured.stdout.len();
        loop {
            if captured.stdout.len() != before {
                return Err(captured.stdout[before..].to_string());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            captured = cvar.wait_timeout(captured, left).expect("capture lock").0;
        }
    }

    /// True while the child has not exited (nor been reaped).
    pub fn running(&mut self) -> bool {
        self.status.is_none() && self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for the exit; kills the group and panics after `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!("{} did not end within {limit:?}\n{}", self.name, self.all());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.status = Some(status);
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status
    }

    fn kill(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
        }
    }
}

/// Runs a command to its end within `limit`.
pub fn run(name: &str, cmd: &mut Command, limit: Duration) -> (ExitStatus, Proc) {
    let mut proc = Proc::spawn(name, cmd);
    let status = proc.wait(limit);
    (status, proc)
}

/// True when `text` holds a run of 64 hex digits: what a leaked HMAC key looks like.
pub fn has_hex64(text: &str) -> bool {
    let mut run = 0;
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            run += 1;
            if run >= 64 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// The direct children of `parent` named `comm`.
pub fn children_named(parent: u32, comm: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Some((name, _, ppid)) = proc_stat(pid) else {
            continue;
        };
        if name == comm && ppid == parent {
            found.push(pid);
        }
    }
    found
}

/// `(comm, state, ppid)` from `/proc/<pid>/stat`, if the process exists.
pub fn proc_stat(pid: i32) -> Option<(String, char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces, so split at the last `)`.
    let (head, tail) = stat.rsplit_once(')')?;
    let name = head.split_once('(').map_or("", |(_, n)| n).to_string();
    let mut fields = tail.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((name, state, ppid))
}

/// The line of `text` that contains `needle`.
pub fn line_with<'a>(text: &'a str, needle: &str) -> Option<&'a str> {
    text.lines().find(|l| l.contains(needle))
}

/// A loopback port that was free a moment ago (what rank-launch does for the proxy).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

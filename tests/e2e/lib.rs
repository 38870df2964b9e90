//! Helpers for the end-to-end tests: where the binaries are, running commands with a bound,
//! and a private Slurm cluster that is stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The directory with the binaries under test: `$E2E_BIN_DIR` when set (`scripts/test` points
/// it at `target/dist`, the deployable build with a static rank-launch), else the workspace's
/// debug binaries, built if any is missing.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("E2E_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/<test> → target/debug
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    let wanted = [
        "rank-launch",
        "launch-gen",
        "shim-leader",
        "shim-worker",
        "shim-role",
        "shim-task",
        "rank-check",
    ];
    if wanted.iter().any(|b| !dir.join(b).exists()) {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--workspace", "--bins", "--manifest-path"])
            .arg(root().join("Cargo.toml"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --workspace --bins failed");
    }
    dir
}

/// The deployable folder: the binaries under test with the drop-in scripts (`slurm_run.sh`,
/// `trtllm-llmapi-launch`) beside them, as `scripts/build` lays out `target/dist`. When the
/// binaries are the workspace's debug build, a folder of links to them and to the scripts in
/// `shims/` is made under `scratch`.
pub fn dist_dir(scratch: &Path) -> PathBuf {
    let bin = bin_dir();
    if bin.join("slurm_run.sh").exists() {
        return bin;
    }
    let dist = scratch.join("dist");
    std::fs::create_dir_all(&dist).expect("create the dist folder");
    for entry in std::fs::read_dir(&bin).expect("read the binaries folder") {
        let path = entry.expect("entry").path();
        let executable = std::fs::metadata(&path).is_ok_and(|m| {
            m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
        });
        if executable {
            std::os::unix::fs::symlink(&path, dist.join(path.file_name().expect("name")))
                .expect("link a binary");
        }
    }
    for script in ["slurm_run.sh", "trtllm-llmapi-launch"] {
        std::os::unix::fs::symlink(root().join("shims").join(script), dist.join(script))
            .expect("link a drop-in script");
    }
    dist
}

/// The stand-in `tensorrt_llm` package: `target/dist/python` beside the deployable binaries,
/// else the source tree's.
pub fn python_path() -> PathBuf {
    let dist = bin_dir().join("python");
    if dist.is_dir() {
        dist
    } else {
        root().join("shims/python")
    }
}

/// Live processes whose environment holds `SHIM_TEST_MARK=<mark>`: what a test's processes
/// carry, so that what is left of them can be counted whoever their parent is.
pub fn marked_processes(mark: &str) -> Vec<i32> {
    let needle = format!("SHIM_TEST_MARK={mark}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
            .unwrap_or(true);
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !zombie && environ.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// What a finished command printed.
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Runs `cmd` to its end, killing it after `limit`.
pub fn run(cmd: &mut Command, limit: Duration) -> Output {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    assert!(
        status.is_some(),
        "`{cmd:?}` did not end within {limit:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    Output {
        code: status.and_then(|s| s.code()),
        stdout,
        stderr,
        took,
    }
}

/// A private Slurm cluster (tests/cluster/local.sh) in a temp dir; stopped on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    pub fn up(n_nodes: u32) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("rank-launch-e2e.")
            .tempdir()
            .expect("tempdir");
        // munged runs as `munge`: it must reach its socket directory.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod the cluster directory");
        let out = run(
            Command::new(root().join("tests/cluster/local.sh"))
                .args(["up", &n_nodes.to_string()])
                .env("RANK_LAUNCH_CLUSTER_DIR", dir.path().join("cluster")),
            Duration::from_secs(60),
        );
        if out.code != Some(0) {
            // Keep the logs for a look; local.sh printed their last lines.
            let kept = dir.keep();
            let _ = Command::new(root().join("tests/cluster/local.sh"))
                .arg("down")
                .env("RANK_LAUNCH_CLUSTER_DIR", kept.join("cluster"))
                .status();
            panic!(
                "cluster did not come up (logs kept in {}):\n{}{}",
                kept.join("cluster/log").display(),
                out.stdout,
                out.stderr
            );
        }
        Cluster { dir }
    }

    pub fn slurm_conf(&self) -> PathBuf {
        self.dir.path().join("cluster/slurm.conf")
    }

    /// A command with this cluster's configuration and the binaries on PATH.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let path = format!(
            "{}:{}",
            bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("SLURM_CONF", self.slurm_conf()).env("PATH", path);
        cmd
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(root().join("tests/cluster/local.sh"))
            .arg("down")
            .env("RANK_LAUNCH_CLUSTER_DIR", self.dir.path().join("cluster"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

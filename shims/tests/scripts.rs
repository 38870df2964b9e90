//! The drop-in scripts: syntax, shellcheck, and that they hand their arguments to
//! rank-launch unchanged (spaces and quotes included).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{command, run};

const SCRIPTS: [&str; 2] = ["trtllm-llmapi-launch", "slurm_run.sh"];

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

#[test]
fn scripts_are_executable_bash_and_shellcheck_clean() {
    use std::os::unix::fs::PermissionsExt;
    for name in SCRIPTS {
        let path = script(name);
        let mode = std::fs::metadata(&path).expect(name).permissions().mode();
        assert_ne!(mode & 0o111, 0, "{name} is not executable");
        let status = Command::new("bash")
            .arg("-n")
            .arg(&path)
            .status()
            .expect("bash");
        assert!(status.success(), "bash -n {name}");
        let out = Command::new("shellcheck")
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("shellcheck not runnable ({e}): scripts/setup installs it"));
        assert!(
            out.status.success(),
            "shellcheck {name}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn arguments_reach_rank_launch_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    // A stand-in rank-launch that prints each argument on its own line.
    let fake = tmp.path().join("fake-rank-launch");
    std::fs::write(
        &fake,
        "#!/bin/sh\nfor a in \"$@\"; do printf '<%s>\\n' \"$a\"; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let args = ["trtllm-serve", "a b", "$HOME", "'q'", "--port", ""];
    let cases = [
        ("trtllm-llmapi-launch", "<mpi>\n<-->\n"),
        ("slurm_run.sh", ""),
    ];
    for (name, prefix) in cases {
        let mut cmd = command(script(name));
        cmd.args(args).env("RANK_LAUNCH", &fake);
        let (status, proc) = run(name, &mut cmd, Duration::from_secs(10));
        assert!(status.success(), "{}", proc.all());
        let expected = format!("{prefix}<trtllm-serve>\n<a b>\n<$HOME>\n<'q'>\n<--port>\n<>\n");
        assert_eq!(proc.stdout(), expected, "{name}");
    }
    // Without RANK_LAUNCH, the one on PATH runs: here the real one.
    let mut cmd = command(script("slurm_run.sh"));
    let dir = common::rank_launch().parent().unwrap().to_path_buf();
    cmd.env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
        .args(["whoami", "--json"]);
    let (status, proc) = run("slurm_run.sh whoami", &mut cmd, Duration::from_secs(10));
    assert!(status.success(), "{}", proc.all());
    assert!(
        proc.stdout().contains("\"source\":\"single\""),
        "{}",
        proc.all()
    );
}

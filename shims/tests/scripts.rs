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

/// The reference `slurm_run.sh`'s per-task duties, through the drop-in and the real
/// rank-launch: working directory, library path (without importing the package), the UCX/PMIx
/// fix-ups, the install step; and rank-launch found next to the script.
#[test]
fn the_drop_in_does_the_per_task_duties() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // A deployed directory: the drop-in beside rank-launch, as in target/dist.
    let dist = t.join("dist");
    std::fs::create_dir(&dist).unwrap();
    std::fs::copy(script("slurm_run.sh"), dist.join("slurm_run.sh")).unwrap();
    std::fs::copy(common::rank_launch(), dist.join("rank-launch")).unwrap();
    // A source tree and an installed tensorrt_llm whose import must not run.
    let src = t.join("src");
    std::fs::create_dir_all(src.join("tests/integration/defs")).unwrap();
    let site = t.join("site");
    let libs = site.join("tensorrt_llm/libs");
    std::fs::create_dir_all(&libs).unwrap();
    let imported = t.join("imported");
    std::fs::write(
        site.join("tensorrt_llm/__init__.py"),
        format!("open({:?}, 'w').close()\n", imported.display().to_string()),
    )
    .unwrap();
    let installed = t.join("installed");
    let install = t.join("slurm_install.sh");
    std::fs::write(
        &install,
        format!(
            "slurm_install_setup() {{ echo \"$SLURM_JOB_ID\" >> {}; }}\n",
            installed.display()
        ),
    )
    .unwrap();
    let report = t.join("report");
    let task = format!(
        "{{ pwd; echo \"LD=$LD_LIBRARY_PATH\"; echo \"UCX=${{UCX_TLS-unset}}\"; \
         echo \"GDS=$PMIX_MCA_gds\"; }} > {}",
        report.display()
    );
    let run_task = |ucx: &str, role: Option<&str>| {
        let _ = std::fs::remove_file(&report);
        let mut cmd = command(dist.join("slurm_run.sh"));
        cmd.env("PATH", "/usr/bin:/bin")
            .env("llmSrcNode", &src)
            .env("PYTHONPATH", &site)
            .env("LD_LIBRARY_PATH", "/opt/x")
            .env("UCX_TLS", ucx)
            .env("installScript", &install)
            .env("RANK_LAUNCH_INSTALL_DIR", t)
            .env("pytestCommand", &task);
        if let Some(role) = role {
            cmd.env("DISAGG_SERVING_TYPE", role).env("jobWorkspace", t);
        }
        let (status, proc) = run("slurm_run.sh", &mut cmd, Duration::from_secs(20));
        assert!(status.success(), "{}", proc.all());
        std::fs::read_to_string(&report).unwrap()
    };
    let text = run_task("tcp", None);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        src.join("tests/integration/defs").display().to_string()
    );
    assert_eq!(lines[1], format!("LD={}:/opt/x", libs.display()));
    assert_eq!(lines[2], "UCX=unset", "UCX_TLS=tcp is dropped");
    assert_eq!(lines[3], "GDS=hash");
    assert!(
        !imported.exists(),
        "the package was imported (MPI would start)"
    );
    assert!(installed.exists(), "local rank 0 ran the install");
    // Another transport stays; a disaggregated role does not install here.
    let _ = std::fs::remove_file(&installed);
    let text = run_task("rc,cuda", Some("BENCHMARK"));
    assert!(text.contains("UCX=rc,cuda"), "{text}");
    assert!(
        !installed.exists(),
        "disaggregated roles install in the install step"
    );
    // --help says what it does and what it drops.
    let (status, proc) = run(
        "help",
        command(dist.join("slurm_run.sh")).arg("--help"),
        Duration::from_secs(10),
    );
    assert!(status.success());
    for word in [
        "working directory",
        "library path",
        "UCX/PMIx",
        "install",
        "Dropped on purpose",
    ] {
        assert!(proc.stdout().contains(word), "{word}: {}", proc.stdout());
    }
}

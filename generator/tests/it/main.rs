//! Integration tests of `launch-gen`, run through the real binary.

mod compat;
mod compat_g2;
mod errors;
mod explain;
mod fuzz;
mod native;
mod native_g2;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `tests/fixtures` of this repository.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The real configs of `tests/fixtures/configs`, sorted by name.
fn real_configs() -> Vec<PathBuf> {
    let dir = fixtures().join("configs");
    let mut configs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("fixtures at {}: {error}", dir.display()))
        .map(|entry| entry.expect("readable fixture dir").path())
        .filter(|path| path.extension() == Some(OsStr::new("yaml")))
        .collect();
    configs.sort();
    assert_eq!(configs.len(), 5, "the five real configs");
    configs
}

/// The last component of `path`, as text.
fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned()
}

/// The outcome of one run of the binary.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `launch-gen ARGS` in `dir`.
fn launch_gen<I, S>(dir: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = Command::new(env!("CARGO_BIN_EXE_launch-gen"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("launch-gen runs");
    Run {
        code: output.status.code().expect("launch-gen exits, not killed"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes `files` (relative path, content) under `dir`, creating folders.
fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create folders");
        std::fs::write(&path, content).expect("write fixture");
    }
}

//! Security of the MPI worker path, checked on a real run (`mpirun -np 2 rank-launch mpi` with
//! the shim leader and worker): while the leader serves, the task looks at the listening socket
//! of the proxy port in `/proc/net/tcp{,6}` (it must be bound to 127.0.0.1 only) and at the
//! command line of every process on the machine (the HMAC key must be in none); afterwards the
//! key must be in no output, at the most verbose log level.

mod common;

use std::time::Duration;

use common::{has_hex64, mpirun, rank_launch, run, with_shim_leader};

/// The task: finds the proxy's listening socket and scans all command lines for the key.
const TASK: &str = r#"
port=${TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR##*:}
hexport=$(printf '%04X' "$port")
key=$TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY
for _ in $(seq 1 200); do
    listeners=$(awk -v p=":$hexport" '$4 == "0A" && substr($2, length($2) - 4) == p { print $2 }' /proc/net/tcp /proc/net/tcp6)
    [ -n "$listeners" ] && break
    sleep 0.05
done
echo "listeners: $listeners"
leaks=0
for f in /proc/[0-9]*/cmdline; do
    # The pattern comes from a file descriptor: the key must not be in grep's own argv.
    if tr '\0' ' ' < "$f" 2>/dev/null | grep -qFf <(printf '%s\n' "$key"); then leaks=$((leaks + 1)); fi
done
echo "cmdline-leaks: $leaks"
"#;

#[test]
fn the_proxy_listens_on_loopback_only_and_the_key_stays_in_the_environment() {
    let mut cmd = mpirun(2);
    cmd.arg(rank_launch())
        .args(["mpi", "--", "bash", "-c", TASK]);
    with_shim_leader(&mut cmd).env("RANK_LAUNCH_LOG", "trace");
    let (status, proc) = run("security", &mut cmd, Duration::from_secs(120));
    let all = proc.all();
    assert!(status.success(), "{all}");
    let listeners: Vec<&str> = all
        .lines()
        .find_map(|l| l.split_once("listeners: ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no listener report: {all}"))
        .split_whitespace()
        .collect();
    assert!(
        !listeners.is_empty(),
        "the leader was never seen listening: {all}"
    );
    for listener in &listeners {
        // /proc/net/tcp prints 127.0.0.1 as 0100007F (little-endian).
        assert!(
            listener.starts_with("0100007F:"),
            "proxy listening on {listener}, not loopback: {all}"
        );
    }
    assert!(
        all.contains("cmdline-leaks: 0"),
        "the key is in a command line: {all}"
    );
    assert!(
        !has_hex64(&all),
        "a 64-hex run (the key) appeared in the output"
    );
}

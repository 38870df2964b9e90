//! The proxy protocol between the rank-0 task and the MPI leader, authenticated with the
//! per-step HMAC key that `rank-launch` hands both of them.
//!
//! TensorRT-LLM's proxy talks ZMQ with HMAC-signed pickles; the stand-in keeps the contract
//! (`TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR`: loopback TCP `tcp://127.0.0.1:<port>`, or a Unix
//! socket `ipc://<path>` as ZMQ's ipc transport; key in `TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY`)
//! with a small protocol of its own:
//!
//! - frames are a 4-byte big-endian length and at most [`MAX_FRAME`] bytes;
//! - handshake (mutual challenge–response, so neither side learns anything without the key):
//!   server → `MAGIC ‖ s` (32 random bytes); client → `c ‖ HMAC(key, "client" ‖ s ‖ c)`;
//!   server checks it in constant time and answers `HMAC(key, "server" ‖ s ‖ c)`, or the frame
//!   `denied` and closes; the client checks the server's proof the same way;
//! - every later frame is `HMAC(session, direction ‖ seq ‖ payload) ‖ payload`, with
//!   `session = HMAC(key, "session" ‖ s ‖ c)` and a per-direction sequence number, so a frame
//!   cannot be forged, replayed or moved to another connection; payloads are JSON
//!   [`Request`]s and [`Reply`]s.
//!
//! Every read and write has a timeout (reference bug B20: a handshake without one hung jobs for
//! an hour). The key is never printed: [`Key`]'s `Debug` is redacted and it has no `Display`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The variables of TensorRT-LLM's proxy contract.
pub const SPAWN_VAR: &str = "TLLM_SPAWN_PROXY_PROCESS";
pub const ADDR_VAR: &str = "TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR";
pub const KEY_VAR: &str = "TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY";
/// The MPI world size `rank-launch` exports (the task cannot ask MPI: its env is stripped).
pub const SIZE_VAR: &str = "tllm_mpi_size";

/// First bytes of the server's hello.
pub const MAGIC: &[u8] = b"shim-proxy/1";
/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 1 << 20;
const DENIED: &[u8] = b"denied";
const NONCE: usize = 32;
const MAC: usize = 32;

/// What went wrong on a proxy connection.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("`{var}` is not set: {why}")]
    MissingVar {
        var: &'static str,
        why: &'static str,
    },
    #[error(
        "`{KEY_VAR}` is not a valid key: expected 64 hex characters (32 bytes), got {len} characters{detail}"
    )]
    BadKey { len: usize, detail: &'static str },
    #[error(
        "`{ADDR_VAR}` is `{value}`: expected `tcp://<loopback ip>:<port>` (the proxy never listens beyond this host) or `ipc://<path>`"
    )]
    BadAddr { value: String },
    #[error("{what} timed out after {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("{what} failed")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the peer closed the connection during {what}")]
    Closed { what: &'static str },
    #[error("the leader refused the key (HMAC challenge failed)")]
    Denied,
    #[error("the peer failed the HMAC check ({what})")]
    BadMac { what: &'static str },
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ProxyError {
    fn io(what: &'static str, source: io::Error, timeout: Duration) -> Self {
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ProxyError::Timeout {
                what,
                after: timeout,
            },
            io::ErrorKind::UnexpectedEof => ProxyError::Closed { what },
            _ => ProxyError::Io { what, source },
        }
    }
}

/// The 32-byte step key. `Debug` never shows it.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    /// Parses 64 hex characters (either case).
    pub fn from_hex(text: &str) -> Result<Key, ProxyError> {
        let text = text.trim();
        let bad = |detail| ProxyError::BadKey {
            len: text.len(),
            detail,
        };
        if text.len() != 64 {
            return Err(bad(""));
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(hi), Some(lo)) => bytes[i] = (hi * 16 + lo) as u8,
                _ => return Err(bad(", some not hex")),
            }
        }
        Ok(Key(bytes))
    }

    /// Reads the key from [`KEY_VAR`].
    pub fn from_env() -> Result<Key, ProxyError> {
        match std::env::var(KEY_VAR) {
            Ok(text) => Key::from_hex(&text),
            Err(_) => Err(ProxyError::MissingVar {
                var: KEY_VAR,
                why: "the proxy requires the HMAC key rank-launch generates",
            }),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; MAC] {
        mac_with(&self.0, parts)
    }

    fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        verify_with(&self.0, parts, tag)
    }
}

fn hmac_of(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    mac
}

fn mac_with(key: &[u8], parts: &[&[u8]]) -> [u8; MAC] {
    hmac_of(key, parts).finalize().into_bytes().into()
}

/// Constant-time check of `tag` against the HMAC of `parts`.
fn verify_with(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    hmac_of(key, parts).verify_slice(tag).is_ok()
}

/// Where the leader listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// A loopback TCP address.
    Tcp(SocketAddr),
    /// A Unix socket (ZMQ's `ipc://` transport).
    Ipc(PathBuf),
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Tcp(addr) => write!(f, "tcp://{addr}"),
            Addr::Ipc(path) => write!(f, "ipc://{}", path.display()),
        }
    }
}

/// Parses the proxy address: `tcp://<loopback ip>:<port>` (the proxy carries the task's
/// requests to the MPI world and must not be reachable from another host) or `ipc://<path>`.
pub fn parse_addr(text: &str) -> Result<Addr, ProxyError> {
    let text = text.trim();
    let bad = || ProxyError::BadAddr {
        value: text.to_string(),
    };
    if let Some(path) = text.strip_prefix("ipc://") {
        if path.is_empty() {
            return Err(bad());
        }
        return Ok(Addr::Ipc(PathBuf::from(path)));
    }
    text.strip_prefix("tcp://")
        .and_then(|rest| rest.parse::<SocketAddr>().ok())
        .filter(|addr| addr.ip().is_loopback())
        .map(Addr::Tcp)
        .ok_or_else(bad)
}

/// Reads [`ADDR_VAR`].
pub fn addr_from_env() -> Result<Addr, ProxyError> {
    match std::env::var(ADDR_VAR) {
        Ok(text) => parse_addr(&text),
        Err(_) => Err(ProxyError::MissingVar {
            var: ADDR_VAR,
            why: "run under `rank-launch` (MPI worker path), which sets the proxy address",
        }),
    }
}

/// A connection, over either transport.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t)),
            Stream::Unix(s) => s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t)),
        }
    }

    /// The peer, for logs.
    pub fn peer(&self) -> String {
        match self {
            Stream::Tcp(s) => s
                .peer_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string()),
            Stream::Unix(_) => "a local client".to_string(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// The leader's listening socket.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Binds `addr`. A stale Unix socket at the path is replaced (as ZMQ's ipc bind does);
    /// anything else there is an error.
    pub fn bind(addr: &Addr) -> io::Result<Listener> {
        match addr {
            Addr::Tcp(a) => TcpListener::bind(a).map(Listener::Tcp),
            Addr::Ipc(path) => {
                use std::os::unix::fs::FileTypeExt;
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if meta.file_type().is_socket() {
                        std::fs::remove_file(path)?;
                    }
                }
                UnixListener::bind(path).map(Listener::Unix)
            }
        }
    }

    /// The next connection.
    pub fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }
}

fn random_nonce() -> Result<[u8; NONCE], ProxyError> {
    let mut nonce = [0u8; NONCE];
    getrandom::fill(&mut nonce).map_err(|e| ProxyError::Io {
        what: "reading random bytes for the nonce",
        source: io::Error::other(e.to_string()),
    })?;
    Ok(nonce)
}

fn write_frame(
    stream: &mut Stream,
    parts: &[&[u8]],
    what: &'static str,
    t: Duration,
) -> Result<(), ProxyError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > MAX_FRAME {
        return Err(ProxyError::Protocol(format!(
            "{what}: frame of {len} bytes is over the {MAX_FRAME}-byte limit"
        )));
    }
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    for part in parts {
        buf.extend_from_slice(part);
    }
    stream
        .write_all(&buf)
        .map_err(|e| ProxyError::io(what, e, t))
}

fn read_frame(stream: &mut Stream, what: &'static str, t: Duration) -> Result<Vec<u8>, ProxyError> {
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .map_err(|e| ProxyError::io(what, e, t))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ProxyError::Protocol(format!(
            "{what}: the peer announced a {len}-byte frame (limit {MAX_FRAME})"
        )));
    }
    let mut buf = vec![0u8; len];
    stream
        .read_exact(&mut buf)
        .map_err(|e| ProxyError::io(what, e, t))?;
    Ok(buf)
}

fn set_timeouts(stream: &Stream, t: Option<Duration>) -> Result<(), ProxyError> {
    let t = t.map(|d| d.max(Duration::from_millis(1)));
    stream.set_timeouts(t).map_err(|source| ProxyError::Io {
        what: "setting socket timeouts",
        source,
    })
}

/// An authenticated connection, either side.
pub struct Session {
    stream: Stream,
    key: [u8; MAC],
    send_dir: u8,
    recv_dir: u8,
    send_seq: u64,
    recv_seq: u64,
    /// Current I/O timeout, for error messages.
    timeout: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.stream.peer())
            .finish_non_exhaustive()
    }
}

impl Session {
    fn new(stream: Stream, key: &Key, s: &[u8], c: &[u8], server: bool) -> Session {
        let (send_dir, recv_dir) = if server { (b'S', b'C') } else { (b'C', b'S') };
        Session {
            stream,
            key: key.mac(&[b"session", s, c]),
            send_dir,
            recv_dir,
            send_seq: 0,
            recv_seq: 0,
            timeout: Duration::ZERO,
        }
    }

    /// Sets the timeout of every later read and write (`None`: wait without limit, for a
    /// server waiting on an idle client).
    pub fn set_timeout(&mut self, t: Option<Duration>) -> Result<(), ProxyError> {
        set_timeouts(&self.stream, t)?;
        self.timeout = t.unwrap_or(Duration::MAX);
        Ok(())
    }

    /// Sends one authenticated message.
    pub fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), ProxyError> {
        let payload = serde_json::to_vec(msg)
            .map_err(|e| ProxyError::Protocol(format!("encoding a message: {e}")))?;
        let seq = self.send_seq.to_be_bytes();
        let tag = mac_with(&self.key, &[&[self.send_dir], &seq, &payload]);
        write_frame(&mut self.stream, &[&tag, &payload], "sending", self.timeout)?;
        self.send_seq += 1;
        Ok(())
    }

    /// Receives one authenticated message.
    pub fn recv<T: for<'de> Deserialize<'de>>(&mut self) -> Result<T, ProxyError> {
        let frame = read_frame(&mut self.stream, "receiving", self.timeout)?;
        if frame.len() < MAC {
            return Err(ProxyError::Protocol("a frame shorter than its MAC".into()));
        }
        let (tag, payload) = frame.split_at(MAC);
        let seq = self.recv_seq.to_be_bytes();
        if !verify_with(&self.key, &[&[self.recv_dir], &seq, payload], tag) {
            return Err(ProxyError::BadMac { what: "message" });
        }
        self.recv_seq += 1;
        serde_json::from_slice(payload)
            .map_err(|e| ProxyError::Protocol(format!("decoding a message: {e}")))
    }

    /// The peer, for logs.
    pub fn peer(&self) -> String {
        self.stream.peer()
    }
}

/// Server side of the handshake on an accepted connection. On a failed proof the client gets
/// `denied` and the error is returned; the caller logs it and keeps serving others.
pub fn server_handshake(
    mut stream: Stream,
    key: &Key,
    timeout: Duration,
) -> Result<Session, ProxyError> {
    set_timeouts(&stream, Some(timeout))?;
    let s = random_nonce()?;
    write_frame(&mut stream, &[MAGIC, &s], "sending the challenge", timeout)?;
    let answer = read_frame(&mut stream, "reading the client's proof", timeout)?;
    if answer.len() != NONCE + MAC {
        let _ = write_frame(&mut stream, &[DENIED], "denying", timeout);
        return Err(ProxyError::Protocol(format!(
            "the client's proof is {} bytes, expected {}",
            answer.len(),
            NONCE + MAC
        )));
    }
    let (c, tag) = answer.split_at(NONCE);
    if !key.verify(&[b"client", &s, c], tag) {
        let _ = write_frame(&mut stream, &[DENIED], "denying", timeout);
        return Err(ProxyError::BadMac {
            what: "client proof",
        });
    }
    let proof = key.mac(&[b"server", &s, c]);
    write_frame(&mut stream, &[&proof], "sending the server proof", timeout)?;
    let mut session = Session::new(stream, key, &s, c, true);
    session.set_timeout(Some(timeout))?;
    Ok(session)
}

/// Client side of the handshake.
pub fn client_handshake(
    mut stream: Stream,
    key: &Key,
    timeout: Duration,
) -> Result<Session, ProxyError> {
    set_timeouts(&stream, Some(timeout))?;
    let hello = read_frame(&mut stream, "reading the leader's challenge", timeout)?;
    let s = hello
        .strip_prefix(MAGIC)
        .filter(|s| s.len() == NONCE)
        .ok_or_else(|| {
            ProxyError::Protocol("the leader's hello is not a shim-proxy/1 challenge".into())
        })?
        .to_vec();
    let c = random_nonce()?;
    let tag = key.mac(&[b"client", &s, &c]);
    write_frame(&mut stream, &[&c, &tag], "sending the proof", timeout)?;
    let reply = read_frame(&mut stream, "reading the leader's proof", timeout)?;
    if reply == DENIED {
        return Err(ProxyError::Denied);
    }
    if !key.verify(&[b"server", &s, &c], &reply) {
        return Err(ProxyError::BadMac {
            what: "leader proof",
        });
    }
    let mut session = Session::new(stream, key, &s, &c, false);
    session.set_timeout(Some(timeout))?;
    Ok(session)
}

/// What a client asks the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Answered by the leader alone: is it up, and how large is its world?
    Ping,
    /// A task on every rank: each contributes its MPI rank; the reply is the sum.
    Allreduce,
    /// Stop every worker, finalize MPI, exit 0.
    Stop,
}

/// The leader's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Reply {
    Pong { world_size: u32 },
    Sum { sum: i64, world_size: u32 },
    Stopping,
    Error { message: String },
}

/// A connected, authenticated client.
#[derive(Debug)]
pub struct Client {
    session: Session,
}

impl Client {
    /// Connects to the leader, retrying while it is not listening yet (it starts at the same
    /// time as the task), then authenticates. Everything within `timeout`.
    pub fn connect(addr: &Addr, key: &Key, timeout: Duration) -> Result<Client, ProxyError> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(10);
        let stream = loop {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(ProxyError::Timeout {
                    what: "connecting to the MPI leader",
                    after: timeout,
                });
            }
            let attempt = match addr {
                Addr::Tcp(a) => TcpStream::connect_timeout(a, left).map(|s| {
                    let _ = s.set_nodelay(true);
                    Stream::Tcp(s)
                }),
                Addr::Ipc(path) => UnixStream::connect(path).map(Stream::Unix),
            };
            match attempt {
                Ok(stream) => break stream,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::NotFound
                    ) =>
                {
                    std::thread::sleep(delay.min(left));
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(ProxyError::io("connecting to the MPI leader", e, left)),
            }
        };
        let left = timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(100));
        let session = client_handshake(stream, key, left)?;
        Ok(Client { session })
    }

    /// Sends a request and waits at most `timeout` for the reply.
    pub fn call(&mut self, request: Request, timeout: Duration) -> Result<Reply, ProxyError> {
        self.session.set_timeout(Some(timeout))?;
        self.session.send(&request)?;
        self.session.recv()
    }

    /// Runs an allreduce on every rank; returns `(sum, world_size)`.
    pub fn allreduce(&mut self, timeout: Duration) -> Result<(i64, u32), ProxyError> {
        match self.call(Request::Allreduce, timeout)? {
            Reply::Sum { sum, world_size } => Ok((sum, world_size)),
            Reply::Error { message } => Err(ProxyError::Protocol(format!(
                "the leader failed the allreduce: {message}"
            ))),
            other => Err(ProxyError::Protocol(format!(
                "unexpected reply to an allreduce: {other:?}"
            ))),
        }
    }
}

/// `0 + 1 + … + (n-1)`: what an allreduce of the ranks of an `n`-rank world must give.
pub fn expected_rank_sum(n: u32) -> i64 {
    let n = i64::from(n);
    n * (n - 1) / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

    #[test]
    fn keys_are_64_hex_and_never_shown() {
        let key = Key::from_hex(HEX).unwrap();
        assert_eq!(format!("{key:?}"), "Key(<redacted>)");
        let short = Key::from_hex("abcd").unwrap_err().to_string();
        assert!(
            short.contains("TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY"),
            "{short}"
        );
        assert!(short.contains("got 4 characters"), "{short}");
        let nothex = Key::from_hex(&"zz".repeat(32)).unwrap_err().to_string();
        assert!(nothex.contains("some not hex"), "{nothex}");
        assert!(
            !nothex.contains("zz"),
            "the bad key itself must not be echoed: {nothex}"
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("tcp://127.0.0.1:5555").unwrap(),
            Addr::Tcp("127.0.0.1:5555".parse().unwrap())
        );
        assert_eq!(
            parse_addr("ipc:///tmp/x").unwrap(),
            Addr::Ipc("/tmp/x".into())
        );
        for bad in [
            "127.0.0.1:5",
            "tcp://localhost:5",
            "ipc://",
            "tcp://1.2.3.4",
            "tcp://0.0.0.0:5555",
            "tcp://10.0.0.1:5555",
            "tcp://[::]:5555",
        ] {
            assert!(parse_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rank_sums() {
        assert_eq!(expected_rank_sum(1), 0);
        assert_eq!(expected_rank_sum(4), 6);
    }

    fn serve_once(key: Key) -> (Addr, std::thread::JoinHandle<Result<(), ProxyError>>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = Addr::Tcp(listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let stream = Listener::Tcp(listener).accept().unwrap();
            let mut session = server_handshake(stream, &key, Duration::from_secs(5))?;
            let request: Request = session.recv()?;
            assert_eq!(request, Request::Allreduce);
            session.send(&Reply::Sum {
                sum: 6,
                world_size: 4,
            })
        });
        (addr, handle)
    }

    #[test]
    fn right_key_round_trip() {
        let key = Key::from_hex(HEX).unwrap();
        let (addr, server) = serve_once(key.clone());
        let mut client = Client::connect(&addr, &key, Duration::from_secs(5)).unwrap();
        assert_eq!(client.allreduce(Duration::from_secs(5)).unwrap(), (6, 4));
        server.join().unwrap().unwrap();
    }

    #[test]
    fn ipc_round_trip_replaces_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let addr = Addr::Ipc(dir.path().join("proxy.sock"));
        // A socket left by an earlier run.
        drop(Listener::bind(&addr).unwrap());
        let listener = Listener::bind(&addr).unwrap();
        let key = Key::from_hex(HEX).unwrap();
        let server_key = key.clone();
        let server = std::thread::spawn(move || {
            let stream = listener.accept().unwrap();
            let mut session = server_handshake(stream, &server_key, Duration::from_secs(5))?;
            let _: Request = session.recv()?;
            session.send(&Reply::Sum {
                sum: 1,
                world_size: 2,
            })
        });
        let mut client = Client::connect(&addr, &key, Duration::from_secs(5)).unwrap();
        assert_eq!(client.allreduce(Duration::from_secs(5)).unwrap(), (1, 2));
        server.join().unwrap().unwrap();
        // Anything but a socket at the path is not removed.
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(Listener::bind(&Addr::Ipc(file.clone())).is_err());
        assert!(file.exists());
    }

    #[test]
    fn wrong_key_is_denied_on_both_sides() {
        let key = Key::from_hex(HEX).unwrap();
        let other = Key::from_hex(&"ab".repeat(32)).unwrap();
        let (addr, server) = serve_once(key);
        let err = Client::connect(&addr, &other, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, ProxyError::Denied), "{err}");
        let server_err = server.join().unwrap().unwrap_err();
        assert!(
            matches!(server_err, ProxyError::BadMac { .. }),
            "{server_err}"
        );
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = Addr::Tcp(listener.local_addr().unwrap());
        let key = Key::from_hex(HEX).unwrap();
        let started = Instant::now();
        let err = Client::connect(&addr, &key, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, ProxyError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(listener);
    }

    #[test]
    fn tampered_messages_are_rejected() {
        let key = Key::from_hex(HEX).unwrap();
        let s = [1u8; 32];
        let c = [2u8; 32];
        let session = Key(mac_with(&key.0, &[b"session", &s, &c]));
        let payload = br#"{"op":"stop"}"#;
        let tag = mac_with(&session.0, &[b"C", &0u64.to_be_bytes(), payload]);
        assert!(verify_with(
            &session.0,
            &[b"C", &0u64.to_be_bytes(), payload],
            &tag
        ));
        // Replayed with the next sequence number, or in the other direction: rejected.
        assert!(!verify_with(
            &session.0,
            &[b"C", &1u64.to_be_bytes(), payload],
            &tag
        ));
        assert!(!verify_with(
            &session.0,
            &[b"S", &0u64.to_be_bytes(), payload],
            &tag
        ));
    }
}

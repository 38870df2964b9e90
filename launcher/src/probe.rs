//! The probes that may block: an HTTP GET and a look at a file, run on a thread of their own
//! so that the supervisor's loop never waits on a server or a slow file system.
//!
//! The thread starts after supervision is set up, so it inherits the blocked signal mask and
//! never takes a signal meant for the loop; it touches no child. Each result is sent on a
//! channel and announced by one byte on a non-blocking pipe the loop polls. The thread ends at
//! its next probe once [`Prober`] is dropped (the send fails), and it is not joined: a probe
//! stuck in the kernel must not hold rank-launch's exit.
//!
//! URLs are `http://HOST[:PORT][/PATH]` with an IP address or `localhost`: rank-launch's
//! static build does no name lookups.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::OFlag;

/// How often a probe runs.
pub const INTERVAL: Duration = Duration::from_millis(500);
/// The most one HTTP probe may take (connect, send, first line of the answer).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// A parsed probe URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub addr: SocketAddr,
    /// `host[:port]` as written, for the Host header.
    pub authority: String,
    pub path: String,
}

/// Parses `http://HOST[:PORT][/PATH]`; HOST is an IPv4 address, `[IPv6]` or `localhost`.
pub fn parse_url(text: &str) -> Result<Url, String> {
    let bad = |why: &str| {
        format!(
            "`{}`: expected `http://HOST[:PORT][/PATH]` with an IP address or `localhost` ({why})",
            text.escape_debug()
        )
    };
    let rest = text
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// is probed"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("the path has a space or a control character"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
    };
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse()
            .map_err(|_| bad("the host is not an IP address"))?
    };
    Ok(Url {
        addr: SocketAddr::new(ip, port),
        authority: authority.to_string(),
        path: path.to_string(),
    })
}

/// One HTTP GET: true when the status is 2xx.
pub fn http_ok(url: &Url, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let Ok(mut stream) = TcpStream::connect_timeout(&url.addr, timeout) else {
        return false;
    };
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let _ = stream.set_write_timeout(Some(left()));
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: rank-launch\r\nConnection: close\r\n\r\n",
        url.path, url.authority
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let _ = stream.set_read_timeout(Some(left()));
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    status_is_2xx(&head)
}

/// `HTTP/1.x 2xx ...` on the first line.
fn status_is_2xx(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    matches!(words.next(), Some(v) if v.starts_with(b"HTTP/"))
        && matches!(words.next(), Some(code) if code.len() == 3 && code[0] == b'2' && code.iter().all(u8::is_ascii_digit))
}

/// What a probe looks at.
#[derive(Debug, Clone)]
pub enum Target {
    /// 2xx from a GET.
    Http(Url),
    /// The file exists; its (size, modification time) when it does.
    File(PathBuf),
}

/// One probe's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Http(bool),
    /// `None`: the file does not exist (or cannot be read).
    File(Option<(u64, Option<SystemTime>)>),
}

fn look(target: &Target) -> Answer {
    match target {
        Target::Http(url) => Answer::Http(http_ok(url, HTTP_TIMEOUT)),
        Target::File(path) => Answer::File(
            std::fs::metadata(path)
                .ok()
                .map(|m| (m.len(), m.modified().ok())),
        ),
    }
}

/// A probe thread's receiving end.
pub struct Prober {
    rx: mpsc::Receiver<(usize, Answer)>,
    wake: OwnedFd,
}

impl Prober {
    /// Starts one thread that probes every target every [`INTERVAL`], the first time at once.
    pub fn start(targets: Vec<Target>) -> std::io::Result<Prober> {
        let (wake, poke) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("probe".into())
            .spawn(move || {
                loop {
                    for (i, target) in targets.iter().enumerate() {
                        if tx.send((i, look(target))).is_err() {
                            return;
                        }
                        // Full pipe: the loop has a wakeup pending already.
                        let _ = nix::unistd::write(&poke, &[1u8]);
                    }
                    std::thread::sleep(INTERVAL);
                }
            })?;
        Ok(Prober { rx, wake })
    }

    /// The fd the loop polls: readable when answers wait.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Every answer that arrived, by target index.
    pub fn answers(&mut self) -> Vec<(usize, Answer)> {
        let mut drain = [0u8; 64];
        while matches!(nix::unistd::read(self.wake.as_fd(), &mut drain), Ok(n) if n > 0) {}
        self.rx.try_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let ok = |text: &str, addr: &str, path: &str| {
            let url = parse_url(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(url.addr, addr.parse::<SocketAddr>().unwrap(), "{text}");
            assert_eq!(url.path, path, "{text}");
        };
        ok("http://127.0.0.1:8000/health", "127.0.0.1:8000", "/health");
        ok("http://localhost:9/", "127.0.0.1:9", "/");
        ok("http://LOCALHOST", "127.0.0.1:80", "/");
        ok("http://[::1]:8080/v1/models", "[::1]:8080", "/v1/models");
        for (bad, why) in [
            ("https://127.0.0.1/", "only http://"),
            ("http://node1:8000/health", "not an IP address"),
            ("http://127.0.0.1:0/", "port"),
            ("http://127.0.0.1:x/", "port"),
            ("http://[::1/", "unclosed"),
            ("http://127.0.0.1/a b", "space"),
        ] {
            let err = parse_url(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn status_lines() {
        for (head, ok) in [
            (&b"HTTP/1.1 200 OK\r\n"[..], true),
            (b"HTTP/1.0 204 No Content\r\n", true),
            (b"HTTP/1.1 503 Service Unavailable\r\n", false),
            (b"HTTP/1.1 2000\r\n", false),
            (b"SSH-2.0-OpenSSH\r\n", false),
            (b"", false),
        ] {
            assert_eq!(status_is_2xx(head), ok, "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn http_probe_against_a_real_socket() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 512];
                let _ = conn.read(&mut buf);
                let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let url = parse_url(&format!("http://127.0.0.1:{port}/health")).unwrap();
        assert!(http_ok(&url, Duration::from_secs(5)));
        assert!(!http_ok(&url, Duration::from_secs(5)));
        server.join().unwrap();
        // Nobody listens any more.
        assert!(!http_ok(&url, Duration::from_secs(5)));
    }
}

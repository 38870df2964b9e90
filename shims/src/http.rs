//! A minimal HTTP/1.1 server and client over `std::net`, enough for the stand-in servers.
//!
//! One request per connection (`Connection: close`), `Content-Length` bodies only, JSON
//! payloads, bounded sizes and timeouts on every read and write. The servers run a thread per
//! connection (capped) and wake from `poll(2)` on the listener at least every
//! [`STOP_CHECK`] to look at their stop condition, so an idle server uses no CPU and stops
//! promptly. A handler that blocks holds only its own connection's thread (and one of the
//! `MAX_CONNECTIONS` slots): the server goes on answering other requests, as a wedged
//! server's `/health` must (`SHIM_HANG=…:wedged`), and still stops on its condition. Pulling in a full async HTTP stack for this would cost more build time than the
//! whole shim.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Longest request or response head.
const MAX_HEAD: usize = 16 * 1024;
/// Largest body either side accepts.
const MAX_BODY: usize = 1 << 20;
/// How often a waiting server looks at its stop condition.
pub const STOP_CHECK: Duration = Duration::from_millis(100);
/// Connections served at once; more are answered 503 on the accepting thread.
const MAX_CONNECTIONS: usize = 256;
/// Read/write timeout of a server connection.
const SERVER_IO_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot resolve `{addr}`: expected `host:port`")]
    Resolve { addr: String },
    #[error("{what} `{addr}` failed")]
    Io {
        what: &'static str,
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} `{addr}` timed out after {after:?}")]
    Timeout {
        what: &'static str,
        addr: String,
        after: Duration,
    },
    #[error("malformed HTTP from `{addr}`: {why}")]
    Malformed { addr: String, why: String },
}

impl HttpError {
    fn io(what: &'static str, addr: &str, source: io::Error, after: Duration) -> Self {
        let addr = addr.to_string();
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                HttpError::Timeout { what, addr, after }
            }
            _ => HttpError::Io { what, addr, source },
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// A response: status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            body: value.to_string().into_bytes(),
        }
    }

    /// `{"error": message}` with the given status.
    pub fn error(status: u16, message: impl Into<String>) -> Response {
        Response::json(status, &serde_json::json!({ "error": message.into() }))
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Splits `head ‖ \r\n\r\n ‖ rest` once the blank line has arrived.
fn split_head(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((&buf[..at], &buf[at + 4..]))
}

/// The value of `Content-Length` in a head, if any.
fn content_length(head: &str) -> Result<Option<usize>, String> {
    for line in head.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                let n: usize = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad Content-Length `{}`", value.trim()))?;
                if n > MAX_BODY {
                    return Err(format!("a {n}-byte body is over the {MAX_BODY}-byte limit"));
                }
                return Ok(Some(n));
            }
        }
    }
    Ok(None)
}

/// Reads a head and a `Content-Length` body (or, for responses without one, up to EOF).
fn read_message(
    stream: &mut TcpStream,
    addr: &str,
    until_eof: bool,
    timeout: Duration,
) -> Result<(String, Vec<u8>), HttpError> {
    let malformed = |why: String| HttpError::Malformed {
        addr: addr.to_string(),
        why,
    };
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let (head, mut body) = loop {
        if let Some((head, rest)) = split_head(&buf) {
            let head = String::from_utf8(head.to_vec())
                .map_err(|_| malformed("the head is not UTF-8".into()))?;
            break (head, rest.to_vec());
        }
        if buf.len() > MAX_HEAD {
            return Err(malformed(format!("head over {MAX_HEAD} bytes")));
        }
        let n = stream
            .read(&mut chunk)
            .map_err(|e| HttpError::io("reading from", addr, e, timeout))?;
        if n == 0 {
            return Err(malformed(
                "connection closed before the end of the head".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    match content_length(&head).map_err(malformed)? {
        Some(len) => {
            while body.len() < len {
                let n = stream
                    .read(&mut chunk)
                    .map_err(|e| HttpError::io("reading from", addr, e, timeout))?;
                if n == 0 {
                    return Err(malformed(format!(
                        "body ended after {} of {len} bytes",
                        body.len()
                    )));
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        }
        None if until_eof => {
            let limit = (MAX_BODY - body.len().min(MAX_BODY)) as u64;
            stream
                .take(limit)
                .read_to_end(&mut body)
                .map_err(|e| HttpError::io("reading from", addr, e, timeout))?;
        }
        None => body.clear(),
    }
    Ok((head, body))
}

/// Reads one request from a server connection.
pub fn read_request(stream: &mut TcpStream, peer: &str) -> Result<Request, HttpError> {
    let (head, body) = read_message(stream, peer, false, SERVER_IO_TIMEOUT)?;
    let line = head.lines().next().unwrap_or_default();
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(method), Some(path), Some(version)) if version.starts_with("HTTP/1.") => {
            Ok(Request {
                method: method.to_string(),
                path: path.to_string(),
                body,
            })
        }
        _ => Err(HttpError::Malformed {
            addr: peer.to_string(),
            why: format!(
                "bad request line `{}`",
                line.chars().take(80).collect::<String>()
            ),
        }),
    }
}

/// Writes a response and closes the write side.
pub fn write_response(stream: &mut TcpStream, response: &Response) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(&response.body);
    stream.write_all(&out)?;
    stream.flush()
}

/// Sends one request to `addr` (`host:port`) and returns the status and body.
pub fn call(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), HttpError> {
    let targets: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|_| HttpError::Resolve {
            addr: addr.to_string(),
        })?
        .collect();
    let mut last = None;
    let mut stream = None;
    for target in &targets {
        match TcpStream::connect_timeout(target, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(mut stream) = stream else {
        return Err(match last {
            Some(e) => HttpError::io("connecting to", addr, e, timeout),
            None => HttpError::Resolve {
                addr: addr.to_string(),
            },
        });
    };
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| HttpError::io("configuring", addr, e, timeout))?;
    let body = body.unwrap_or_default();
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    stream
        .write_all(&out)
        .map_err(|e| HttpError::io("sending to", addr, e, timeout))?;
    let (head, body) = read_message(&mut stream, addr, true, timeout)?;
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| HttpError::Malformed {
            addr: addr.to_string(),
            why: "no status code in the response".into(),
        })?;
    Ok((status, body))
}

/// A JSON request: `call` with a JSON body, returning the status and the parsed body.
pub fn call_json(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<(u16, serde_json::Value), HttpError> {
    let bytes = body.map(|v| v.to_string().into_bytes());
    let (status, body) = call(addr, method, path, bytes.as_deref(), timeout)?;
    let value = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| HttpError::Malformed {
            addr: addr.to_string(),
            why: format!("the body is not JSON: {e}"),
        })?
    };
    Ok((status, value))
}

/// A bound listener.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
}

/// What a server does with a request.
pub type Handler = dyn Fn(&Request) -> Response + Send + Sync;

impl Server {
    /// Binds `ip` on a port the kernel chooses.
    pub fn bind(ip: IpAddr) -> io::Result<Server> {
        Ok(Server {
            listener: TcpListener::bind((ip, 0))?,
        })
    }

    pub fn port(&self) -> io::Result<u16> {
        Ok(self.listener.local_addr()?.port())
    }

    /// Serves until `stop` returns `Ok(true)` (checked at least every [`STOP_CHECK`]) or an
    /// error, which is returned.
    pub fn serve<E>(
        &self,
        handler: Arc<Handler>,
        mut stop: impl FnMut() -> Result<bool, E>,
    ) -> Result<(), E> {
        let active = Arc::new(AtomicUsize::new(0));
        let wait = PollTimeout::try_from(STOP_CHECK.as_millis() as u64).unwrap_or(PollTimeout::MAX);
        loop {
            if stop()? {
                return Ok(());
            }
            let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, wait) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => {
                    crate::say!("poll on the HTTP listener failed: {e}");
                    std::thread::sleep(STOP_CHECK);
                    continue;
                }
            }
            let (stream, peer) = match self.listener.accept() {
                Ok(pair) => pair,
                Err(e) => {
                    crate::say!("accept failed: {e}");
                    continue;
                }
            };
            if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                handle(stream, peer, &|_| {
                    Response::error(503, "too many connections")
                });
                continue;
            }
            active.fetch_add(1, Ordering::SeqCst);
            let (handler, active) = (handler.clone(), active.clone());
            std::thread::spawn(move || {
                handle(stream, peer, &*handler);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }
}

fn handle(mut stream: TcpStream, peer: SocketAddr, handler: &Handler) {
    let peer = peer.to_string();
    let _ = stream.set_nodelay(true);
    if stream
        .set_read_timeout(Some(SERVER_IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(SERVER_IO_TIMEOUT)))
        .is_err()
    {
        return;
    }
    let response = match read_request(&mut stream, &peer) {
        Ok(request) => handler(&request),
        Err(e) => Response::error(400, e.to_string()),
    };
    let _ = write_response(&mut stream, &response);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn heads_and_lengths() {
        assert_eq!(
            split_head(b"GET / HTTP/1.1\r\n\r\nxy"),
            Some((&b"GET / HTTP/1.1"[..], &b"xy"[..]))
        );
        assert_eq!(split_head(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(
            content_length("POST / HTTP/1.1\r\ncontent-length: 12"),
            Ok(Some(12))
        );
        assert_eq!(content_length("GET / HTTP/1.1\r\nHost: x"), Ok(None));
        assert!(content_length("POST / HTTP/1.1\r\nContent-Length: x").is_err());
        assert!(content_length("POST / HTTP/1.1\r\nContent-Length: 99999999").is_err());
    }

    #[test]
    fn serve_and_call_round_trip_then_stop() {
        let server = Server::bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        let addr = format!("127.0.0.1:{}", server.port().unwrap());
        let done = Arc::new(AtomicBool::new(false));
        let done_in = done.clone();
        let thread = std::thread::spawn(move || {
            let handler: Arc<Handler> =
                Arc::new(|r: &Request| match (r.method.as_str(), r.path.as_str()) {
                    ("POST", "/echo") => Response {
                        status: 200,
                        body: r.body.clone(),
                    },
                    _ => Response::error(404, "no such path"),
                });
            server.serve::<()>(handler, || Ok(done_in.load(Ordering::SeqCst)))
        });
        let t = Duration::from_secs(5);
        let (status, body) = call_json(
            &addr,
            "POST",
            "/echo",
            Some(&serde_json::json!({"n": 3})),
            t,
        )
        .unwrap();
        assert_eq!((status, body), (200, serde_json::json!({"n": 3})));
        let (status, body) = call_json(&addr, "GET", "/nope", None, t).unwrap();
        assert_eq!(status, 404);
        assert_eq!(body["error"], "no such path");
        done.store(true, Ordering::SeqCst);
        thread.join().unwrap().unwrap();
    }

    #[test]
    fn a_blocked_handler_does_not_block_other_requests_nor_the_stop() {
        use std::sync::Mutex;
        use std::sync::mpsc;
        let server = Server::bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        let addr = format!("127.0.0.1:{}", server.port().unwrap());
        let (entered_tx, entered) = mpsc::channel::<()>();
        let (release, released) = mpsc::channel::<()>();
        let (entered_tx, released) = (Mutex::new(entered_tx), Mutex::new(released));
        let done = Arc::new(AtomicBool::new(false));
        let done_in = done.clone();
        let thread = std::thread::spawn(move || {
            let handler: Arc<Handler> = Arc::new(move |r: &Request| {
                if r.method == "POST" {
                    let _ = entered_tx.lock().unwrap().send(());
                    let _ = released
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(10));
                }
                Response::json(200, &serde_json::json!({"path": r.path}))
            });
            server.serve::<()>(handler, || Ok(done_in.load(Ordering::SeqCst)))
        });
        let t = Duration::from_secs(5);
        let blocked = {
            let addr = addr.clone();
            std::thread::spawn(move || call(&addr, "POST", "/slow", Some(b"{}"), t))
        };
        entered
            .recv_timeout(t)
            .expect("the POST reached its handler");
        let (status, _) = call(&addr, "GET", "/health", None, t).unwrap();
        assert_eq!(status, 200);
        assert!(!blocked.is_finished());
        release.send(()).unwrap();
        assert_eq!(blocked.join().unwrap().unwrap().0, 200);
        // A handler still blocked does not keep the server from stopping.
        let still_blocked = {
            let addr = addr.clone();
            std::thread::spawn(move || call(&addr, "POST", "/slow", Some(b"{}"), t))
        };
        entered
            .recv_timeout(t)
            .expect("the second POST reached its handler");
        done.store(true, Ordering::SeqCst);
        thread.join().unwrap().unwrap();
        drop(release);
        let _ = still_blocked.join();
    }

    #[test]
    fn unreachable_and_unresolvable_addresses_fail_cleanly() {
        let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = format!("127.0.0.1:{}", closed.local_addr().unwrap().port());
        drop(closed);
        let err = call(&addr, "GET", "/", None, Duration::from_secs(2)).unwrap_err();
        assert!(matches!(err, HttpError::Io { .. }), "{err}");
        let err = call("no-port", "GET", "/", None, Duration::from_secs(2)).unwrap_err();
        assert!(matches!(err, HttpError::Resolve { .. }), "{err}");
    }
}

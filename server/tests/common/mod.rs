//! Starts the real `kubewire` binary on a free loopback port and talks DNS
//! to it over real UDP and TCP sockets, with hickory-proto building and
//! parsing the messages.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

pub mod netns;
pub mod relay;
pub mod tls;
pub mod upstream;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// The startup line, logged once every core holds the first full state.
pub const READY_LINE: &str = " ready cores=";

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    logs: Receiver<String>,
    pub seen: Vec<String>,
    /// Directories the server reads while it runs, removed after it stops.
    files: Vec<TempDir>,
}

/// A port free for both UDP and TCP on loopback.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Server {
    /// Starts kubewire with `args` plus `--listen` on a free port, and waits
    /// for its "ready" line.
    pub fn start(args: &[&str]) -> Server {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut server = Server::spawn(args, addr);
        server.wait_for_log(READY_LINE, Duration::from_secs(20));
        server
    }

    /// Starts kubewire without waiting for anything.
    pub fn spawn(args: &[&str], addr: SocketAddr) -> Server {
        Server::spawn_with_env(args, addr, &[])
    }

    /// Starts kubewire with extra environment variables (`None` removes one).
    pub fn spawn_with_env(args: &[&str], addr: SocketAddr, env: &[(&str, Option<&str>)]) -> Server {
        Server::spawn_with(args, addr, |command| {
            for (key, value) in env {
                match value {
                    Some(value) => command.env(key, value),
                    None => command.env_remove(key),
                };
            }
        })
    }

    /// Starts kubewire with the command adjusted by `configure` (its
    /// environment, say) before the arguments are added.
    pub fn spawn_with(
        args: &[&str],
        addr: SocketAddr,
        configure: impl FnOnce(&mut Command),
    ) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kubewire"));
        // The test's own variables come after this default, and win.
        command.env("RUST_LOG", "info");
        configure(&mut command);
        let mut child = command
            .args(args)
            .arg("--listen")
            .arg(addr.to_string())
            // HTTP endpoints on free ports, reported in the log, unless the
            // test sets them.
            .args(
                ["--health-addr", "--ready-addr", "--metrics-addr"]
                    .into_iter()
                    .filter(|flag| !args.contains(flag))
                    .flat_map(|flag| [flag, "127.0.0.1:0"]),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kubewire");
        let stderr = child.stderr.take().unwrap();
        let (sender, logs) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Server {
            child,
            addr,
            logs,
            seen: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Whether a log line containing `needle` appears within `timeout`.
    pub fn logged(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if self.seen.iter().any(|l| l.contains(needle)) {
            return true;
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.logs.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return true;
                    }
                }
                Err(_) => break,
            }
        }
        false
    }

    /// Waits for a log line containing `needle`; panics with the log so far.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.logs.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no log line with {needle:?}; log so far:\n{}",
            self.seen.join("\n")
        );
    }

    /// Every log line so far, for a failure's message.
    pub fn log_so_far(&mut self) -> String {
        while let Ok(line) = self.logs.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    /// Waits for the process to exit and returns its status and whole log.
    pub fn wait_exit(mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.logs.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return (status, self.seen.join("\n"));
            }
            assert!(
                Instant::now() < deadline,
                "kubewire did not exit; log:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child process.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// The address an HTTP endpoint (`"health"` or `"ready"`) listens on,
    /// from its log line.
    /// Keeps `dir` until the server has stopped.
    pub fn keeping(mut self, dir: TempDir) -> Server {
        self.files.push(dir);
        self
    }

    pub fn http_addr(&mut self, what: &str) -> SocketAddr {
        let line = self.wait_for_log(
            &format!("{what} endpoint listening"),
            Duration::from_secs(10),
        );
        let at = line.find("addr=").expect("addr field") + 5;
        line[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn udp(&self, name: &str, qtype: RecordType) -> Message {
        udp_query(self.addr, &build_query(name, qtype, None))
    }

    pub fn tcp(&self, name: &str, qtype: RecordType) -> Message {
        tcp_query(self.addr, &build_query(name, qtype, None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A query with RD set, and EDNS with `payload` if given.
pub fn build_query(name: &str, qtype: RecordType, payload: Option<u16>) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = rand_id();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(payload) = payload {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        message.set_edns(edns);
    }
    message.to_vec().unwrap()
}

fn rand_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(Instant::now().elapsed().as_nanos() as u64);
    hasher.finish() as u16
}

pub fn udp_query(addr: SocketAddr, query: &[u8]) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp_query_from(&socket, addr, query)
}

pub fn udp_query_from(socket: &UdpSocket, addr: SocketAddr, query: &[u8]) -> Message {
    let bytes = udp_exchange(socket, addr, query).expect("no UDP reply");
    let message = Message::from_vec(&bytes).unwrap();
    assert_eq!(&bytes[..2], &query[..2], "reply ID");
    message
}

/// Sends a datagram and returns the reply bytes, or `None` after a timeout.
pub fn udp_exchange(socket: &UdpSocket, addr: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    socket
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    for _ in 0..3 {
        socket.send_to(query, addr).unwrap();
        let mut buf = vec![0u8; 65535];
        if let Ok((len, _)) = socket.recv_from(&mut buf) {
            return Some(buf[..len].to_vec());
        }
    }
    None
}

pub fn tcp_query(addr: SocketAddr, query: &[u8]) -> Message {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    tcp_exchange(&mut stream, query)
}

pub fn tcp_exchange(stream: &mut TcpStream, query: &[u8]) -> Message {
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).unwrap();
    Message::from_vec(&reply).unwrap()
}

pub fn rcode(message: &Message) -> u16 {
    u16::from(message.metadata.response_code)
}

pub fn answers(message: &Message) -> Vec<String> {
    let mut list: Vec<String> = message
        .answers
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect();
    list.sort();
    list
}

/// GET a path over plain HTTP/1.1; returns the status code.
pub fn http_status(addr: SocketAddr, path: &str) -> u16 {
    http_get(addr, path).0
}

/// GET a path over plain HTTP/1.1; returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None)
}

/// A request with no body over plain HTTP/1.1, with a bearer token if
/// given; returns the status code and the body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: kubewire\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of one series in a Prometheus exposition, by its exact name
/// and labels as written (`coredns_panics_total`, `x{a="b"}`); 0 if absent.
pub fn metric(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0.0)
}

/// Polls `check` every 10 ms until it holds; panics after 10 s.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A fresh directory under the system temp dir, removed with what it holds
/// when dropped.
pub fn tempdir(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!(
        "kubewire-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// Writes `body` as `kubewire.toml` in a new directory: the directory
/// (keep it while the server runs; removed when dropped) and the file's path.
pub fn config_file(tag: &str, body: &str) -> (TempDir, String) {
    let dir = tempdir(tag);
    let path = dir.join("kubewire.toml");
    std::fs::write(&path, body).unwrap();
    (dir, path.display().to_string())
}

/// A directory of one test's files; see [`tempdir`].
pub struct TempDir(std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Asks a stable name from a thread, every 200 µs, until `finish`; counts
/// the replies that are not exactly right (any RCODE but NOERROR, other
/// records, or none).
pub struct Prober {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    wrong: std::sync::Arc<std::sync::atomic::AtomicU64>,
    asked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    pub fn start(addr: SocketAddr, name: &'static str, want: Vec<String>) -> Prober {
        use std::sync::atomic::Ordering;
        let prober = Prober {
            stop: Default::default(),
            wrong: Default::default(),
            asked: Default::default(),
            handle: None,
        };
        let (stop, wrong, asked) = (
            std::sync::Arc::clone(&prober.stop),
            std::sync::Arc::clone(&prober.wrong),
            std::sync::Arc::clone(&prober.asked),
        );
        let handle = std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            while !stop.load(Ordering::Relaxed) {
                let query = build_query(name, RecordType::A, None);
                let ok = udp_exchange(&socket, addr, &query)
                    .and_then(|bytes| Message::from_vec(&bytes).ok())
                    .is_some_and(|m| rcode(&m) == 0 && answers(&m) == want);
                if !ok {
                    wrong.fetch_add(1, Ordering::Relaxed);
                }
                asked.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        Prober {
            handle: Some(handle),
            ..prober
        }
    }

    /// Stops it: (asked, wrong).
    pub fn finish(mut self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            handle.join().unwrap();
        }
        (
            self.asked.load(Ordering::Relaxed),
            self.wrong.load(Ordering::Relaxed),
        )
    }
}

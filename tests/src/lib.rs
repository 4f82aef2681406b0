//! Helpers for shoal's end-to-end tests: run the real `shoal` binary against
//! a throw-away repo, measure its peak memory, make test content.

pub mod chain;
pub mod hostile;
pub mod lab;
pub mod lab_live;
pub mod live;
pub mod origin;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};

/// The `shoal` binary built next to the test executable
/// (`target/<profile>/shoal`). `scripts/test` builds it first.
pub fn shoal_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/shoal
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = dir.join("shoal");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --workspace --bins` (scripts/test does)",
        bin.display()
    );
    bin
}

/// A throw-away folder holding a repo (`repo/`) and test files.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// The network namespace its commands run in (a lab host's), if any.
    pub netns: Option<String>,
}

/// What a finished `shoal` process did.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    /// Peak resident memory of the process, in bytes.
    pub max_rss: u64,
}

impl Run {
    /// Asserts success and returns stdout without its trailing newline.
    pub fn ok(&self) -> &str {
        assert_eq!(self.status, 0, "shoal failed: {}", self.stderr);
        self.stdout.trim_end()
    }

    /// Asserts the failure every bad input must give: status 1, one line on
    /// stderr, and that line mentions `needle`.
    pub fn fails_with(&self, needle: &str) {
        assert_eq!(
            self.status, 1,
            "expected failure, got {}: {}",
            self.status, self.stdout
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one line on stderr, got {:?}",
            self.stderr
        );
        assert!(
            lines[0].starts_with("shoal: ") && lines[0].contains(needle),
            "stderr {:?} does not mention {needle:?}",
            self.stderr
        );
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("shoal-test-")
                .tempdir()
                .expect("temp dir"),
            netns: None,
        }
    }

    /// A sandbox whose repo is initialised.
    pub fn with_repo() -> Self {
        let s = Self::new();
        s.shoal(&["init"]).ok();
        s
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    /// A `shoal` command on this sandbox's repo, not yet started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(shoal_bin());
                c
            }
            None => Command::new(shoal_bin()),
        };
        c.args(args)
            .env("SHOAL_REPO", self.repo())
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    /// Runs `shoal` to completion and measures it.
    pub fn shoal(&self, args: &[&str]) -> Run {
        run_measured(self.command(args))
    }

    /// Writes `len` bytes of deterministic pseudo-random content, streaming,
    /// and returns its sha256.
    pub fn write_random_file(&self, name: &str, len: u64, seed: u64) -> (PathBuf, [u8; 32]) {
        let path = self.path(name);
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        let mut hasher = Sha256::new();
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut buf = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            for chunk in buf.chunks_exact_mut(8) {
                // xorshift64*: fast, and every byte differs between seeds.
                rng ^= rng >> 12;
                rng ^= rng << 25;
                rng ^= rng >> 27;
                chunk.copy_from_slice(&rng.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
            }
            let n = left.min(buf.len() as u64) as usize;
            file.write_all(&buf[..n]).expect("write");
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        file.flush().expect("flush");
        (path, hasher.finalize().into())
    }

    /// Names of the entries of the sandbox folder, sorted.
    pub fn entries(&self, dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// The sha256 of a file, read in pieces.
pub fn sha256_file(path: &Path) -> [u8; 32] {
    use std::io::Read;
    let mut file = std::fs::File::open(path).expect("open");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.finalize().into()
}

/// Runs a command to completion, reaping it with `wait4` to learn its peak
/// resident memory.
pub fn run_measured(mut command: Command) -> Run {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().expect("spawn shoal");
    let pid = child.id() as libc::pid_t;
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let mut child = child;
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut s).ok();
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut s).ok();
        s
    });
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data, zeroed is a valid value; pid is our child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4 failed");
    // The child is reaped; std's Child must not wait for it again.
    std::mem::forget(child);
    let stdout = String::from_utf8_lossy(&out_thread.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_thread.join().unwrap_or_default()).into_owned();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    Run {
        status: code,
        stdout,
        stderr,
        max_rss: usage.ru_maxrss as u64 * 1024,
    }
}

/// Output of a plain command, asserting it succeeded.
pub fn check_output(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Asserts a tool the tests need is installed (`scripts/test` installs it).
pub fn require_tool(name: &str) {
    let found = Command::new(name)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "{name} is not installed; run ./scripts/test, which installs it"
    );
}

/// A `shoal daemon` running as a child process on a sandbox's repo. Dropping
/// it sends SIGTERM and waits (SIGKILL after ten seconds).
pub struct DaemonProcess {
    child: Option<std::process::Child>,
    /// A listen address with `/p2p/<peer id>`.
    pub addr: String,
    pub peer_id: String,
    pub api: String,
}

impl Sandbox {
    /// Starts `shoal daemon` on this sandbox's repo, on loopback with free
    /// ports, and waits (at most 30 s) until it is ready.
    pub fn start_daemon(&self, bootstrap: Option<&str>) -> DaemonProcess {
        let mut args = vec![
            "daemon",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
            "--no-mdns",
        ];
        if let Some(b) = bootstrap {
            args.extend(["--bootstrap", b]);
        }
        self.start_daemon_with(&args)
    }

    /// Starts `shoal` with `args` (a `daemon` command) and waits (at most
    /// 30 s) until it is ready.
    pub fn start_daemon_with(&self, args: &[&str]) -> DaemonProcess {
        self.start_daemon_logged(args, Stdio::inherit())
    }

    /// [`Sandbox::start_daemon_with`], the daemon's log going to `stderr`.
    pub fn start_daemon_logged(&self, args: &[&str], stderr: Stdio) -> DaemonProcess {
        use std::io::BufRead;
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn shoal daemon");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut daemon = DaemonProcess {
            child: Some(child),
            addr: String::new(),
            peer_id: String::new(),
            api: String::new(),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("the daemon became ready within 30 s");
            if let Some(rest) = line.strip_prefix("listening on ") {
                if daemon.addr.is_empty() {
                    daemon.addr = rest.to_owned();
                }
            } else if let Some(rest) = line.strip_prefix("peer id: ") {
                daemon.peer_id = rest.to_owned();
            } else if let Some(rest) = line.strip_prefix("api: ") {
                daemon.api = rest.to_owned();
            } else if line == "daemon ready" {
                break;
            }
        }
        daemon
    }
}

impl DaemonProcess {
    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the daemon outright (SIGKILL), as a crash or an out-of-memory
    /// kill would, and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit status (SIGKILL after 10 s).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An HTTP answer as a raw client saw it.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    /// Header lines, as sent (`Name: value`).
    pub headers: Vec<String>,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request to `addr` (`host:port`) the way a browser or
/// an attacker's script would: every header as given (`Host` too), and
/// reads the whole answer (the request asks the server to close). Waits at
/// most `timeout` for it.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: std::time::Duration,
) -> std::io::Result<HttpReply> {
    let s = std::net::TcpStream::connect(addr)?;
    http_request_on(s, method, path, headers, timeout)
}

/// [`http_request`] on a connection already made (from inside a lab
/// host's namespace, say).
pub fn http_request_on(
    mut s: std::net::TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: std::time::Duration,
) -> std::io::Result<HttpReply> {
    use std::io::Read;
    s.set_read_timeout(Some(timeout))?;
    let mut raw = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(raw.as_bytes())?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    let end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no complete answer"))?;
    let head = String::from_utf8_lossy(&reply[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {head:?}")))?;
    let headers: Vec<String> = lines.map(str::to_owned).collect();
    let mut body = reply[end + 4..].to_vec();
    if headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("transfer-encoding: chunked"))
    {
        body = dechunk(&body);
    }
    Ok(HttpReply {
        status,
        headers,
        body,
    })
}

/// The payload of a chunked body.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        body = &body[line_end + 2..];
        if size == 0 || body.len() < size {
            break;
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or_default();
    }
    out
}

/// Busy and total CPU time of the machine so far (`/proc/stat`), in ticks.
pub fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle and iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The machine's busy share between two [`cpu_ticks`] readings.
pub fn cpu_share(from: (u64, u64), to: (u64, u64)) -> f64 {
    let busy = to.0.saturating_sub(from.0) as f64;
    let total = to.1.saturating_sub(from.1).max(1) as f64;
    busy / total
}

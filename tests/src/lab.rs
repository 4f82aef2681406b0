//! A network lab: hosts in network namespaces around a core router, for
//! running real `shoal` daemons across links with delay, loss, limited
//! rate, NAT and partitions.
//!
//! - **Topology.** A core namespace routes between hosts. A public host
//!   is one namespace whose link goes straight to the core; a host behind
//!   NAT sits behind a home router namespace of its own, which
//!   masquerades it onto the core and drops new inbound connections (a
//!   home router: address-and-port dependent filtering, Linux's
//!   port-preserving mapping). Host `i` is `10.77.i.2` on the core's
//!   side (its home router's address when behind NAT; the host itself is
//!   `192.168.i.2` then).
//! - **Links.** A host's link is a pair of TUN devices, one in the host's
//!   namespace and one upstream (core or home router), with two threads of
//!   this process carrying packets between them: that is where the
//!   one-way delay and its jitter are made, since this kernel has no
//!   netem. Packets keep their order (a late draw waits for the packet
//!   before it, as on a wire). The rate is the kernel's: a token bucket
//!   (`tbf`) on each end's egress. Loss and partitions are nftables rules
//!   in the core (`numgen random`), changeable while the lab runs.
//! - **Clean-up.** Dropping the lab stops the links (their TUN devices go
//!   with the file descriptors), kills every process started in it and
//!   deletes its namespaces, also when a test panics. Namespaces are named
//!   after this process's id, and a new lab first deletes those of
//!   processes that no longer run (a test killed outright).
//! - **Where it cannot run** (not root, no `ip`, `nft` or `tc`),
//!   [`Lab::new`] says why and returns `None`: the test skips.
//! - **One lab at a time** in a process: a lab holds a lock from
//!   [`Lab::new`] to its drop, since each runs many daemons.
//!
//! Limits, and why: 200 hosts per lab (one `/24` octet each); a link's
//! queue holds at most 4 MiB (beyond it packets are dropped, like a full
//! router buffer), so a stalled reader cannot grow this process.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most hosts in one lab.
pub const MAX_HOSTS: usize = 200;

/// Bytes a link direction may hold in flight before it drops.
const LINK_QUEUE_BYTES: usize = 4 << 20;

/// How often a link's threads look at the stop flag when idle.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// What a host's link to the network is like, each way.
#[derive(Clone, Copy, Debug)]
pub struct LinkSpec {
    /// One-way delay (the round trip is twice this).
    pub delay: Duration,
    /// Each packet's delay is drawn from `delay ± jitter`.
    pub jitter: Duration,
    /// The host's upload rate, kbit/s (`None`: as fast as the machine).
    pub up_kbit: Option<u32>,
    /// The host's download rate, kbit/s.
    pub down_kbit: Option<u32>,
    /// Packets lost, in percent, each way.
    pub loss_percent: f64,
    /// Behind a home router with NAT.
    pub nat: bool,
}

impl Default for LinkSpec {
    fn default() -> Self {
        LinkSpec {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            up_kbit: None,
            down_kbit: None,
            loss_percent: 0.0,
            nat: false,
        }
    }
}

/// A host of the lab.
#[derive(Clone, Debug)]
pub struct Host {
    pub index: usize,
    /// Its network namespace.
    pub ns: String,
    /// Its own address.
    pub addr: Ipv4Addr,
    /// Where the rest of the network sees it (its home router's address
    /// when behind NAT).
    pub public: Ipv4Addr,
    pub spec: LinkSpec,
}

impl Host {
    /// `program` run inside this host's namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// A TCP listener bound inside this host's namespace.
    pub fn listen(&self, addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
        in_namespace(&self.ns, move || std::net::TcpListener::bind(addr))?
    }

    /// A TCP connection made from inside this host's namespace (the test
    /// reaches a daemon's loopback API or gateway this way).
    pub fn connect(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        in_namespace(&self.ns, move || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        })?
    }
}

/// Runs `f` on a thread that has joined namespace `ns`: what it opens
/// (sockets, TUN devices) belongs to that namespace for good.
fn in_namespace<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let path = format!("/var/run/netns/{ns}");
    let handle = File::open(&path)?;
    std::thread::spawn(move || {
        // SAFETY: setns(2) on an open namespace file; it affects only this
        // thread, which ends after `f`.
        if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
}

/// Opens a TUN device named `name` (no packet information header) in
/// namespace `ns`. The device lives as long as the descriptor.
fn open_tun(ns: &str, name: &str) -> std::io::Result<OwnedFd> {
    let name = name.to_owned();
    in_namespace(ns, move || {
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        // struct ifreq: the name (16 bytes), then a union whose first
        // member here is the flags.
        let mut ifreq = [0u8; 40];
        let bytes = name.as_bytes();
        if bytes.len() > 15 {
            return Err(std::io::Error::other(format!("{name}: too long")));
        }
        ifreq[..bytes.len()].copy_from_slice(bytes);
        let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as u16;
        ifreq[16..18].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: TUNSETIFF reads and writes an ifreq of this size.
        if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, ifreq.as_mut_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: F_SETFL on a descriptor this thread owns.
        unsafe {
            let fl = libc::fcntl(tun.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(tun.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        Ok(OwnedFd::from(tun))
    })?
}

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Runs `ip`, `nft`, `tc` or `sysctl`, failing with its stderr.
fn run(program: &str, args: &[&str]) -> std::io::Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn ip_in(ns: &str, args: &[&str]) -> std::io::Result<()> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

fn in_ns(ns: &str, program: &str, args: &[&str]) -> std::io::Result<()> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// A host's default route, via `via`. SHOAL_LAB_INITCWND=N starts every
/// TCP flight from the host at N segments (Linux: 10, about 14 KB): the
/// model's window starts from Linux's, and a live shard is larger than
/// that first flight, so the cross-check can tell how much of a gap
/// TCP's window makes.
fn host_route(ns: &str, via: Ipv4Addr) -> std::io::Result<()> {
    let via = via.to_string();
    let initcwnd = match std::env::var("SHOAL_LAB_INITCWND") {
        Ok(v) if !v.trim().is_empty() => match v.trim().parse::<u32>() {
            Ok(n @ 1..=1000) => Some(n.to_string()),
            _ => {
                return Err(std::io::Error::other(format!(
                    "SHOAL_LAB_INITCWND={v:?}: give a number of segments from 1 to 1000"
                )));
            }
        },
        _ => None,
    };
    let mut route = vec!["route", "add", "default", "via", &via];
    if let Some(n) = &initcwnd {
        route.extend(["initcwnd", n, "initrwnd", n]);
    }
    ip_in(ns, &route)
}

/// A small generator for jitter draws (no need for a crate).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// How late the links' threads wrote packets against the delay drawn for
/// them: what the machine (threads waiting for a core) adds to the
/// links, summed over every link of a lab.
#[derive(Default)]
struct Lateness {
    packets: AtomicU64,
    over_2ms: AtomicU64,
    over_10ms: AtomicU64,
    over_50ms: AtomicU64,
    total_us: AtomicU64,
    max_us: AtomicU64,
}

impl Lateness {
    fn add(&self, late: Duration) {
        let us = late.as_micros() as u64;
        self.packets.fetch_add(1, Ordering::Relaxed);
        for (limit, counter) in [
            (2_000, &self.over_2ms),
            (10_000, &self.over_10ms),
            (50_000, &self.over_50ms),
        ] {
            if us > limit {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.total_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The counts so far, and the largest lateness since the last take.
    fn take(&self) -> WireLateness {
        WireLateness {
            packets: self.packets.load(Ordering::Relaxed),
            over_2ms: self.over_2ms.load(Ordering::Relaxed),
            over_10ms: self.over_10ms.load(Ordering::Relaxed),
            over_50ms: self.over_50ms.load(Ordering::Relaxed),
            total_us: self.total_us.load(Ordering::Relaxed),
            max_us: self.max_us.swap(0, Ordering::Relaxed),
        }
    }
}

/// Packets the lab's links carried, and how late their threads wrote
/// them (see [`Lab::wire_lateness`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct WireLateness {
    pub packets: u64,
    pub over_2ms: u64,
    pub over_10ms: u64,
    pub over_50ms: u64,
    pub total_us: u64,
    pub max_us: u64,
}

impl WireLateness {
    /// What happened between `before` and `self` (the largest lateness
    /// is since `before` was taken).
    pub fn since(&self, before: &WireLateness) -> WireLateness {
        WireLateness {
            packets: self.packets.saturating_sub(before.packets),
            over_2ms: self.over_2ms.saturating_sub(before.over_2ms),
            over_10ms: self.over_10ms.saturating_sub(before.over_10ms),
            over_50ms: self.over_50ms.saturating_sub(before.over_50ms),
            total_us: self.total_us.saturating_sub(before.total_us),
            max_us: self.max_us,
        }
    }

    pub fn mean_us(&self) -> f64 {
        self.total_us as f64 / self.packets.max(1) as f64
    }
}

/// Carries packets from `from` to `to`, each after `delay ± jitter`, in
/// order, until `stop`.
fn carry(
    from: Arc<OwnedFd>,
    to: Arc<OwnedFd>,
    spec: LinkSpec,
    seed: u64,
    stop: Arc<AtomicBool>,
    lateness: Arc<Lateness>,
) {
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut queued = 0usize;
    let mut last_due = Instant::now();
    let mut rng = XorShift(seed | 1);
    let mut buf = vec![0u8; 65536];
    let jitter_us = spec.jitter.as_micros() as u64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = queue
            .front()
            .map_or(IDLE_POLL, |(due, _)| due.saturating_duration_since(now))
            .min(IDLE_POLL);
        let mut pfd = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        // SAFETY: one pollfd, a valid timespec, no signal mask.
        let ready = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        if ready > 0 {
            loop {
                // SAFETY: reading into a buffer of its own length.
                let n = unsafe { libc::read(from.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    break;
                }
                let n = n as usize;
                if queued + n > LINK_QUEUE_BYTES {
                    continue;
                }
                let mut delay = spec.delay;
                if jitter_us > 0 {
                    let draw = rng.next() % (2 * jitter_us + 1);
                    let us = (spec.delay.as_micros() as u64 + draw).saturating_sub(jitter_us);
                    delay = Duration::from_micros(us);
                }
                let due = (Instant::now() + delay).max(last_due);
                last_due = due;
                queued += n;
                queue.push_back((due, buf[..n].to_vec()));
            }
        }
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _)| *due <= now) {
            let Some((due, packet)) = queue.pop_front() else {
                break;
            };
            lateness.add(now.duration_since(due));
            queued -= packet.len();
            // SAFETY: writing a whole packet from a valid buffer; a full
            // device queue drops it, as a wire would.
            unsafe {
                libc::write(to.as_raw_fd(), packet.as_ptr().cast(), packet.len());
            }
        }
    }
}

/// A running network lab. See the module documentation.
pub struct Lab {
    prefix: String,
    core: String,
    namespaces: Vec<String>,
    hosts: Vec<Host>,
    stop: Arc<AtomicBool>,
    wires: Vec<JoinHandle<()>>,
    lateness: Arc<Lateness>,
    /// Descriptors of the TUN devices, closed after the wires stop.
    tuns: Vec<Arc<OwnedFd>>,
    processes: std::sync::Mutex<Vec<std::process::Child>>,
    /// Labs run one at a time: each runs many daemons on a small machine.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Why the lab cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("the network lab needs root (network namespaces, TUN, nftables)".into());
    }
    for tool in ["ip", "nft", "tc"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!(
                "the network lab needs `{tool}` (Debian: iproute2, nftables)"
            ));
        }
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("the network lab needs /dev/net/tun".into());
    }
    None
}

/// Deletes the namespaces of labs whose process is gone.
fn delete_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("shoallab")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

impl Lab {
    /// A lab with its core router and no hosts, or `None` (and a message
    /// on stderr saying why) where the lab cannot run.
    pub fn new(name: &str) -> Option<Lab> {
        if let Some(why) = unavailable() {
            eprintln!("skipped: {why}");
            return None;
        }
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        delete_stale();
        static LABS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("shoallab{}-{n}-{name}", std::process::id());
        let core = format!("{prefix}-core");
        let mut lab = Lab {
            prefix,
            core: core.clone(),
            namespaces: Vec::new(),
            hosts: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            wires: Vec::new(),
            lateness: Arc::default(),
            tuns: Vec::new(),
            processes: Default::default(),
            _one_at_a_time: guard,
        };
        lab.namespace(&core).expect("the core namespace");
        in_ns(&core, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]).expect("forwarding");
        lab.nft(
            &core,
            "table inet lab {\n\
             chain loss { type filter hook forward priority -10; policy accept; }\n\
             chain partition { type filter hook forward priority 0; policy accept; }\n\
             }",
        )
        .expect("the core's rules");
        Some(lab)
    }

    fn namespace(&mut self, ns: &str) -> std::io::Result<()> {
        run("ip", &["netns", "add", ns])?;
        self.namespaces.push(ns.to_owned());
        ip_in(ns, &["link", "set", "lo", "up"])
    }

    /// Loads nftables rules into a namespace.
    fn nft(&self, ns: &str, rules: &str) -> std::io::Result<()> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("nft's stdin"))?
            .write_all(rules.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "nft: {}: {rules}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// A TUN link between `a` and `b` (each a namespace, a device name
    /// and an address), with the delay carried by this process; the
    /// spec's `up_kbit` limits `a`'s egress, `down_kbit` `b`'s.
    fn wire(
        &mut self,
        a: (&str, &str, Ipv4Addr),
        b: (&str, &str, Ipv4Addr),
        spec: LinkSpec,
        seed: u64,
    ) -> std::io::Result<()> {
        let fa = Arc::new(open_tun(a.0, a.1)?);
        let fb = Arc::new(open_tun(b.0, b.1)?);
        for ((ns, dev, addr), kbit) in [(a, spec.up_kbit), (b, spec.down_kbit)] {
            // A /24 rather than a point-to-point peer address: with `peer`,
            // the kernel reports the peer's address as the interface's,
            // and a node listening on 0.0.0.0 would announce it.
            ip_in(ns, &["addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip_in(ns, &["link", "set", dev, "up"])?;
            if let Some(kbit) = kbit {
                // A burst of a few packets and a queue of about 50 ms at
                // the rate: a home router's uplink.
                let burst = (kbit as usize * 1000 / 8 / 100).max(16 * 1024);
                let limit = (kbit as usize * 1000 / 8 / 20).max(32 * 1024);
                in_ns(
                    ns,
                    "tc",
                    &[
                        "qdisc",
                        "add",
                        "dev",
                        dev,
                        "root",
                        "tbf",
                        "rate",
                        &format!("{kbit}kbit"),
                        "burst",
                        &burst.to_string(),
                        "limit",
                        &limit.to_string(),
                    ],
                )?;
            }
        }
        for (from, to, s) in [(&fa, &fb, seed), (&fb, &fa, seed.rotate_left(17))] {
            let (from, to, stop) = (from.clone(), to.clone(), self.stop.clone());
            let lateness = self.lateness.clone();
            self.wires.push(std::thread::spawn(move || {
                carry(from, to, spec, s, stop, lateness)
            }));
        }
        self.tuns.extend([fa, fb]);
        Ok(())
    }

    /// Adds a host with `spec`'s link.
    pub fn host(&mut self, spec: LinkSpec) -> Host {
        let i = self.hosts.len() + 1;
        assert!(i <= MAX_HOSTS, "at most {MAX_HOSTS} hosts in a lab");
        let ns = format!("{}-h{i}", self.prefix);
        self.namespace(&ns).expect("a host namespace");
        // SHOAL_LAB_SLOW_START_AFTER_IDLE=0 keeps a TCP connection's window
        // across idle spells (Linux shrinks it after an RTO of silence by
        // default): the model sends at the uplink's rate from the first
        // byte, so the cross-check can tell how much of a gap this is.
        if let Ok(v) = std::env::var("SHOAL_LAB_SLOW_START_AFTER_IDLE") {
            let setting = format!("net.ipv4.tcp_slow_start_after_idle={v}");
            in_ns(&ns, "sysctl", &["-qw", &setting]).expect("tcp_slow_start_after_idle");
        }
        let public = Ipv4Addr::new(10, 77, i as u8, 2);
        let core_side = Ipv4Addr::new(10, 77, i as u8, 1);
        let core_dev = format!("h{i}");
        let core = self.core.clone();
        let addr = if spec.nat {
            let home = format!("{}-nat{i}", self.prefix);
            self.namespace(&home).expect("a home router namespace");
            let lan_host = Ipv4Addr::new(192, 168, i as u8, 2);
            let lan_router = Ipv4Addr::new(192, 168, i as u8, 1);
            self.wire(
                (&ns, "eth0", lan_host),
                (&home, "lan", lan_router),
                spec,
                i as u64,
            )
            .expect("the host's link to its home router");
            run(
                "ip",
                &[
                    "link", "add", "wan", "netns", &home, "type", "veth", "peer", "name",
                    &core_dev, "netns", &core,
                ],
            )
            .expect("the home router's uplink");
            ip_in(
                &home,
                &["addr", "add", &format!("{public}/24"), "dev", "wan"],
            )
            .unwrap();
            ip_in(&home, &["link", "set", "wan", "up"]).unwrap();
            ip_in(
                &core,
                &["addr", "add", &format!("{core_side}/24"), "dev", &core_dev],
            )
            .unwrap();
            ip_in(&core, &["link", "set", &core_dev, "up"]).unwrap();
            ip_in(
                &home,
                &["route", "add", "default", "via", &core_side.to_string()],
            )
            .unwrap();
            in_ns(&home, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]).unwrap();
            self.nft(
                &home,
                "table ip nat {\n\
                 chain post { type nat hook postrouting priority srcnat; oifname \"wan\" masquerade; }\n\
                 }\n\
                 table inet filter {\n\
                 chain inbound { type filter hook forward priority 0; policy accept;\n\
                 iifname \"wan\" ct state new drop; }\n\
                 }",
            )
            .expect("the home router's NAT");
            host_route(&ns, lan_router).expect("the host's default route");
            lan_host
        } else {
            self.wire(
                (&ns, "eth0", public),
                (&core, &core_dev, core_side),
                spec,
                i as u64,
            )
            .expect("the host's link to the core");
            host_route(&ns, core_side).expect("the host's default route");
            public
        };
        // The host's loss chain, reached from both directions of its link.
        self.nft(
            &core,
            &format!(
                "add chain inet lab loss{i}\n\
                 add rule inet lab loss iifname \"{core_dev}\" jump loss{i}\n\
                 add rule inet lab loss oifname \"{core_dev}\" jump loss{i}\n"
            ),
        )
        .expect("the host's loss chain");
        let host = Host {
            index: i,
            ns,
            addr,
            public,
            spec,
        };
        self.hosts.push(host.clone());
        self.set_loss(&host, spec.loss_percent);
        host
    }

    /// Sets the share of packets `host`'s link loses, each way.
    pub fn set_loss(&self, host: &Host, percent: f64) {
        let per_10k = (percent * 100.0).round().clamp(0.0, 10_000.0) as u32;
        let chain = format!("loss{}", host.index);
        let mut rules = format!("flush chain inet lab {chain}\n");
        if per_10k >= 10_000 {
            rules.push_str(&format!("add rule inet lab {chain} drop\n"));
        } else if per_10k > 0 {
            rules.push_str(&format!(
                "add rule inet lab {chain} numgen random mod 10000 < {per_10k} drop\n"
            ));
        }
        self.nft(&self.core, &rules).expect("loss rules");
    }

    /// Cuts every path between the hosts of `a` and those of `b`, both
    /// ways, until [`Lab::heal`].
    pub fn partition(&self, a: &[&Host], b: &[&Host]) {
        let set = |hosts: &[&Host]| {
            hosts
                .iter()
                .map(|h| h.public.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (a, b) = (set(a), set(b));
        self.nft(
            &self.core,
            &format!(
                "add rule inet lab partition ip saddr {{ {a} }} ip daddr {{ {b} }} drop\n\
                 add rule inet lab partition ip saddr {{ {b} }} ip daddr {{ {a} }} drop\n"
            ),
        )
        .expect("partition rules");
    }

    /// Lifts every partition.
    pub fn heal(&self) {
        self.nft(&self.core, "flush chain inet lab partition\n")
            .expect("flush the partitions");
    }

    /// Starts `command` (made by [`Host::command`]) and keeps it, to be
    /// killed when the lab ends; returns its process id.
    pub fn spawn(&self, mut command: Command) -> std::io::Result<u32> {
        let child = command.spawn()?;
        let pid = child.id();
        self.processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        Ok(pid)
    }

    /// How late the links' threads have written packets so far, against
    /// the delay drawn for each: on a busy machine they wait for a core,
    /// and that wait adds to every link's delay. Resets the largest.
    pub fn wire_lateness(&self) -> WireLateness {
        self.lateness.take()
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }
}

impl Lab {
    /// Kills every process [`Lab::spawn`] started (before the daemons
    /// they talk to go, so that they do not report them gone).
    pub fn stop_processes(&self) {
        for mut child in self
            .processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_processes();
        self.stop.store(true, Ordering::Relaxed);
        for wire in self.wires.drain(..) {
            let _ = wire.join();
        }
        self.tuns.clear();
        for ns in self.namespaces.drain(..).rev() {
            let _ = run("ip", &["netns", "del", &ns]);
        }
    }
}

/// The TCP port daemons listen on for peers in the lab (each host has
/// its own addresses, so all use the same).
pub const PEER_PORT: u16 = 4101;

/// Where a daemon's gateway and API listen, on its host's own loopback.
pub const API: &str = "127.0.0.1:5080";

/// `text` (a config.toml) with `line` (`key = value`) in `[section]`,
/// in place of the key's line (set or commented out) if it has one.
fn set_key(text: &str, section: &str, line: &str) -> String {
    let key = line.split('=').next().unwrap_or(line).trim();
    let header = format!("[{section}]");
    let mut out = Vec::new();
    let (mut inside, mut done) = (false, false);
    for l in text.lines() {
        if l.trim_start().starts_with('[') {
            if inside && !done {
                out.push(line.to_owned());
                done = true;
            }
            inside = l.trim() == header;
        }
        let bare = l.trim_start().trim_start_matches('#').trim_start();
        let is_key = bare
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if inside && !done && is_key {
            out.push(line.to_owned());
            done = true;
            continue;
        }
        out.push(l.to_owned());
    }
    assert!(inside || done, "no [{section}] in config.toml");
    if !done {
        out.push(line.to_owned());
    }
    out.join("\n") + "\n"
}

/// A `shoal daemon` running on a lab host, with its repo.
pub struct LabNode {
    pub host: Host,
    pub sandbox: crate::Sandbox,
    pub daemon: crate::DaemonProcess,
}

impl LabNode {
    /// Initialises a repo and starts a daemon on `host`, joining through
    /// `bootstrap`; `config` sets keys of the repo's `config.toml` (per
    /// section: `[("node", "relay = true")]`).
    pub fn start(host: &Host, bootstrap: &[&str], config: &[(&str, &str)]) -> LabNode {
        let mut sandbox = crate::Sandbox::new();
        sandbox.netns = Some(host.ns.clone());
        sandbox.shoal(&["init"]).ok();
        if !config.is_empty() {
            let path = sandbox.repo().join("config.toml");
            let mut text = std::fs::read_to_string(&path).expect("config.toml");
            for (section, line) in config {
                text = set_key(&text, section, line);
            }
            std::fs::write(&path, text).expect("config.toml");
        }
        let listen = format!("/ip4/0.0.0.0/tcp/{PEER_PORT}");
        let mut args = vec!["daemon", "--listen", &listen, "--api", API, "--no-mdns"];
        for b in bootstrap {
            args.extend(["--bootstrap", b]);
        }
        // SHOAL_LAB_LOGS=DIR keeps each daemon's log as DIR/<host>.log
        // (SHOAL_LOG chooses what goes in) for reading after a run.
        let log = std::env::var_os("SHOAL_LAB_LOGS").and_then(|dir| {
            let dir = std::path::PathBuf::from(dir);
            std::fs::create_dir_all(&dir).ok()?;
            std::fs::File::create(dir.join(format!("{}.log", host.ns))).ok()
        });
        let daemon = match log {
            Some(file) => sandbox.start_daemon_logged(&args, file.into()),
            None => sandbox.start_daemon_with(&args),
        };
        LabNode {
            host: host.clone(),
            sandbox,
            daemon,
        }
    }

    /// The address other hosts dial (its public one; behind NAT, nobody
    /// can dial it there).
    pub fn addr(&self) -> String {
        format!(
            "/ip4/{}/tcp/{PEER_PORT}/p2p/{}",
            self.host.public, self.daemon.peer_id
        )
    }

    /// Runs `shoal` against this node's repo, on its host.
    pub fn shoal(&self, args: &[&str]) -> crate::Run {
        self.sandbox.shoal(args)
    }

    /// A GET on this node's gateway, as a player on its host makes it.
    pub fn get(&self, path: &str) -> std::io::Result<crate::HttpReply> {
        let addr: SocketAddr = API.parse().expect("the API address");
        let stream = self.host.connect(addr)?;
        crate::http_request_on(
            stream,
            "GET",
            path,
            &[("Host", API)],
            Duration::from_secs(30),
        )
    }
}

impl LabNode {
    /// Its connections: each peer and the address at the other end (a
    /// relayed one ends in `/p2p-circuit`).
    pub fn connections(&self) -> Vec<(String, String)> {
        self.shoal(&["peers"])
            .ok()
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(p, a)| (p.to_owned(), a.to_owned()))
            .collect()
    }
}

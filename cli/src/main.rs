//! `shoal`: the command-line interface of a shoal node.
//!
//! Every command works on a repo. While a daemon holds the repo, commands
//! go through its HTTP API (and `get`, `cat` and `export-hls` fetch what
//! the repo lacks from the network); otherwise they open the repo
//! themselves.

mod client;
mod demo;
mod progress;
mod rewards;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use shoal_node::api::{self, AddResult, IdResult, RepoStat};
use shoal_node::daemon::{Daemon, DaemonOptions};
use shoal_node::libp2p::Multiaddr;
use shoal_node::repo::{self, Repo, RepoPaths};
use shoal_protocol::block::{Cid, parse_cid};
use shoal_storage::assemble;

use crate::client::Client;

#[derive(Parser)]
#[command(name = "shoal", version, about = "A peer-to-peer video delivery node")]
struct Cli {
    /// Repo folder [default: the user's data folder, e.g. ~/.local/share/shoal]
    #[arg(long, global = true, env = "SHOAL_REPO", value_name = "DIR")]
    repo: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a live channel and its audience on this machine (nothing to set
    /// up): prints the URL to watch and live statistics
    Demo {
        /// Viewer nodes
        #[arg(long, default_value_t = 4)]
        viewers: usize,
        /// Stop after this many seconds [default: run until Ctrl-C]
        #[arg(long)]
        seconds: Option<u64>,
        /// Address of the gateway and player page (any free port if taken)
        #[arg(long, default_value = "127.0.0.1:5080", value_name = "HOST:PORT")]
        api: String,
        /// Low-latency live: ffmpeg pipes fragmented MP4, the swarm moves
        /// 200 ms parts, the gateway serves LL-HLS (needs ffmpeg)
        #[arg(long)]
        low_latency: bool,
    },
    /// Create a repo (does nothing to one that exists)
    Init,
    /// Run the node and its HTTP API until interrupted
    Daemon(DaemonArgs),
    /// Show this node's peer id and listen addresses
    Id {
        #[arg(long)]
        json: bool,
    },
    /// List connected peers, a line per connection with its address
    /// (needs a running daemon)
    Peers,
    /// Connect to a peer (needs a running daemon)
    Connect { multiaddr: String },
    /// Import a file, or an HLS VOD presentation with --hls; prints the root CID
    Add(AddArgs),
    /// Write a stream's bytes to a file
    Get {
        cid: String,
        /// Where to write
        #[arg(short, long, value_name = "PATH")]
        output: PathBuf,
    },
    /// Write a stream's bytes to stdout
    Cat { cid: String },
    /// Write an HLS presentation (playlists and segments) into a folder
    ExportHls {
        cid: String,
        /// A folder that does not exist yet or is empty
        dir: PathBuf,
    },
    /// Manage pins: pinned streams are never evicted or collected
    #[command(subcommand)]
    Pin(PinCommand),
    /// Inspect and maintain the repo
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Manage the live channels this repo can broadcast
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// The node's wallet (a secp256k1 key in the repo, apart from its
    /// network identity) for receipts, cheques and rewards
    #[command(subcommand)]
    Wallet(WalletCommand),
    /// What this node contributed and earned: accounts, receipts held,
    /// balances; claim, deposit and withdraw on chain
    Rewards {
        #[command(subcommand)]
        command: Option<RewardsCommand>,
        /// JSON-RPC endpoint of the chain (else rewards.rpc in config.toml)
        #[arg(long, global = true, value_name = "URL")]
        rpc: Option<String>,
    },
    /// Broadcast a live channel from the folder a live encoder writes
    /// (needs a running daemon)
    Broadcast(BroadcastArgs),
    /// Watch a live channel: prints the URL to open in any HLS player, then
    /// the session's statistics until interrupted (needs a running daemon)
    Watch {
        /// The channel id (`z…`)
        channel: String,
        /// URL of the channel's playlist at an HTTP origin (repeatable):
        /// played straight from there when no peer announces the channel
        #[arg(long = "origin", value_name = "URL")]
        origins: Vec<String>,
    },
    /// Statistics of the live sessions (needs a running daemon)
    Stats {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RewardsCommand {
    /// Claim on the reward pool with the receipts held, in batches
    Claim,
    /// Deposit tokens in the vault and lock the deposit for a day (receipts
    /// of viewers count only for epochs a locked deposit covers; cheques
    /// draw only on what is not locked)
    Deposit {
        /// Tokens, e.g. 10 or 0.5
        amount: String,
    },
    /// Withdraw from the vault: the first call requests it, a call after
    /// the unlock period withdraws
    Withdraw {
        /// Tokens, e.g. 10 or 0.5
        amount: String,
    },
}

#[derive(Subcommand)]
enum WalletCommand {
    /// Print the wallet's address (made on first use)
    Address,
}

#[derive(Subcommand)]
enum ChannelCommand {
    /// Make a new channel key; prints the channel id viewers watch
    Create { name: String },
    /// List this repo's channels and their ids
    Ls,
}

#[derive(Args)]
struct BroadcastArgs {
    /// The channel's name (see `shoal channel create`)
    name: String,
    /// The folder the encoder writes (e.g. `ffmpeg ... -f hls DIR/index.m3u8`)
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "fmp4",
        conflicts_with = "fmp4"
    )]
    hls_dir: Option<PathBuf>,
    /// Or a fragmented MP4 stream, from a FIFO the encoder writes into
    /// (`mkfifo F; ffmpeg ... -f mp4 -y -movflags
    /// +frag_keyframe+empty_moov+default_base_moof F`, `-y` because the
    /// FIFO exists); the broadcast cuts it into segments at keyframes.
    /// `-` reads it from this command's stdin (`ffmpeg ... pipe:1 |
    /// shoal broadcast NAME --fmp4 -`). Repeat it for more renditions, one
    /// stream each
    #[arg(long, value_name = "PATH")]
    fmp4: Vec<PathBuf>,
    /// With --fmp4: close a segment at the first keyframe past this many
    /// seconds
    #[arg(long, value_name = "S", default_value_t = 2.0, requires = "fmp4")]
    segment_seconds: f64,
    /// With --fmp4: low-latency live, each fragment the encoder writes
    /// (`-frag_duration`) goes to the viewers as a part the moment it is
    /// in, and gateways serve LL-HLS
    #[arg(long, requires = "fmp4")]
    low_latency: bool,
    /// The top playlist in that folder [default: the master playlist, or the only one]
    #[arg(long, value_name = "FILE")]
    playlist: Option<String>,
    /// HTTP origin serving the same folder, used by viewers when peers are
    /// too slow (repeatable); with --fmp4, one serving the channel as a
    /// gateway does (a CDN in front of http://HOST:PORT/live/<CHANNEL>)
    #[arg(long, value_name = "URL")]
    origin: Vec<String>,
    /// Data shards per segment [default: from config.toml]
    #[arg(long)]
    k: Option<u16>,
    /// Parity shards per segment [default: from config.toml]
    #[arg(long)]
    m: Option<u16>,
}

#[derive(Args)]
struct DaemonArgs {
    /// Address to listen on (repeatable) [default: from config.toml]
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// Peer to join the network through, with /p2p/<peer id> (repeatable)
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// Address of the HTTP API [default: from config.toml, 127.0.0.1:5080]
    #[arg(long, value_name = "HOST:PORT")]
    api: Option<String>,
    /// Do not look for peers on the local network
    #[arg(long)]
    no_mdns: bool,
}

#[derive(Args)]
struct AddArgs {
    /// The file, or with --hls the master or media playlist
    path: PathBuf,
    /// Import an HLS VOD presentation from its playlist
    #[arg(long)]
    hls: bool,
    /// Print details as JSON instead of the root CID alone
    #[arg(long)]
    json: bool,
    /// Data shards per segment [default: from config.toml]
    #[arg(long)]
    k: Option<u16>,
    /// Parity shards per segment [default: from config.toml]
    #[arg(long)]
    m: Option<u16>,
    /// Bytes per segment when cutting a file [default: from config.toml]
    #[arg(long, value_name = "BYTES")]
    segment_size: Option<usize>,
}

#[derive(Subcommand)]
enum PinCommand {
    /// Pin a stream and everything below it
    Add { cid: String },
    /// Remove a pin
    Rm { cid: String },
    /// List pinned roots
    Ls,
}

#[derive(Subcommand)]
enum RepoCommand {
    /// Block count, bytes, quota and pins
    Stat {
        #[arg(long)]
        json: bool,
    },
    /// Delete every block no pin protects
    Gc,
    /// Read every block and check it against its CID
    Verify,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("shoal: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Log lines go to stderr; `SHOAL_LOG` sets how many: a level (error,
/// warn, info, debug, trace) or per-module directives such as
/// `warn,shoal_protocol=debug`. Warnings by default.
fn init_logging() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    let asked = std::env::var("SHOAL_LOG").ok();
    let parsed = asked.as_deref().map(str::parse::<Targets>);
    let filter = match &parsed {
        Some(Ok(t)) => t.clone(),
        _ => Targets::new().with_default(tracing::Level::WARN),
    };
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(io::stderr)
        .with_target(false)
        .finish()
        .with(filter);
    let _ = tracing::subscriber::set_global_default(subscriber);
    if let Some(Err(e)) = parsed {
        tracing::warn!(
            error = %e,
            "SHOAL_LOG is neither a level nor directives like warn,shoal_protocol=debug; logging warnings"
        );
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// A reader that went away (`shoal cat X | head`) is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            || matches!(
                c.downcast_ref::<assemble::AssembleError>(),
                Some(assemble::AssembleError::Output(io)) if io.kind() == io::ErrorKind::BrokenPipe
            )
    })
}

/// Where a command is carried out.
enum Backend {
    Local(Box<Repo>),
    Daemon(Client),
}

fn backend(dir: &Path) -> Result<Backend> {
    let paths = RepoPaths::load(dir)?;
    if let Some(url) = paths.daemon_api()
        && let Some(client) = Client::connect(&url, paths.daemon_token())?
    {
        return Ok(Backend::Daemon(client));
    }
    Ok(Backend::Local(Box::new(Repo::open(dir)?)))
}

fn daemon_only(dir: &Path, what: &str) -> Result<Client> {
    match backend(dir)? {
        Backend::Daemon(client) => Ok(client),
        Backend::Local(_) => bail!("{what} needs a running daemon; start one with `shoal daemon`"),
    }
}

fn run(cli: Cli) -> Result<()> {
    // The repo folder, for the commands that use one.
    let repo_dir = cli.repo;
    let dir = move || -> Result<PathBuf> {
        match &repo_dir {
            Some(dir) => Ok(dir.clone()),
            None => repo::default_dir().context(
                "no data folder is known for this user; pass --repo DIR or set SHOAL_REPO",
            ),
        }
    };
    match cli.command {
        Command::Demo {
            viewers,
            seconds,
            api,
            low_latency,
        } => demo::run(demo::DemoOptions {
            viewers,
            seconds,
            api,
            low_latency,
        }),
        Command::Init => {
            let dir = dir()?;
            if Repo::init(&dir)? {
                println!("initialised shoal repo at {}", dir.display());
            } else {
                println!("shoal repo at {} is already initialised", dir.display());
            }
            Ok(())
        }
        Command::Daemon(args) => daemon(&dir()?, args),
        Command::Id { json } => id(&dir()?, json),
        Command::Peers => {
            let v: serde_json::Value = daemon_only(&dir()?, "peers")?.call("peers", &[])?;
            // A peer and the address of each connection with it (a
            // relayed one ends in /p2p-circuit).
            for c in v["connections"].as_array().into_iter().flatten() {
                let text = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
                println!("{}\t{}", text("peer"), text("addr"));
            }
            Ok(())
        }
        Command::Connect { multiaddr } => {
            multiaddr
                .parse::<Multiaddr>()
                .with_context(|| format!("invalid multiaddr {multiaddr:?}"))?;
            let v: serde_json::Value =
                daemon_only(&dir()?, "connect")?.call("connect", &[("arg", &multiaddr)])?;
            println!("connected to {}", v["peer_id"].as_str().unwrap_or_default());
            Ok(())
        }
        Command::Add(args) => add(&backend(&dir()?)?, args),
        Command::Get { cid, output } => {
            let cid = cid_arg(&cid)?;
            get(&backend(&dir()?)?, &cid, &output)
        }
        Command::Cat { cid } => {
            let cid = cid_arg(&cid)?;
            let mut out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
            match backend(&dir()?)? {
                Backend::Local(repo) => {
                    assemble::write_stream(&repo.store, &cid, &mut out, &mut |_| {})?;
                }
                Backend::Daemon(client) => {
                    client.cat(&cid.to_string(), &mut out, &mut |_| {})?;
                }
            }
            Ok(())
        }
        Command::ExportHls { cid, dir: out } => {
            let cid = cid_arg(&cid)?;
            match backend(&dir()?)? {
                Backend::Local(repo) => {
                    let stream = assemble::load_stream(&repo.store, &cid)?;
                    let bar = progress::bytes(stream.size, "exporting");
                    let entry = assemble::export_hls(&repo.store, &cid, &out, &mut |n| {
                        bar.set_position(n)
                    })?;
                    bar.finish_and_clear();
                    println!("{}", entry.display());
                }
                Backend::Daemon(client) => {
                    let out = absolute(&out)?;
                    let v: serde_json::Value = client.call(
                        "export-hls",
                        &[("arg", &cid.to_string()), ("dir", &out.to_string_lossy())],
                    )?;
                    println!("{}", v["entry"].as_str().unwrap_or_default());
                }
            }
            Ok(())
        }
        Command::Pin(cmd) => pin(&backend(&dir()?)?, cmd),
        Command::Repo(cmd) => repo_cmd(&backend(&dir()?)?, cmd),
        Command::Channel(ChannelCommand::Create { name }) => {
            let dir = dir()?;
            RepoPaths::load(&dir)?;
            let id = shoal_node::channel_keys::create(&dir, &name)?;
            println!("{id}");
            Ok(())
        }
        Command::Channel(ChannelCommand::Ls) => {
            let dir = dir()?;
            RepoPaths::load(&dir)?;
            for (name, id) in shoal_node::channel_keys::list(&dir)? {
                println!("{name}\t{id}");
            }
            Ok(())
        }
        Command::Wallet(WalletCommand::Address) => {
            let paths = RepoPaths::load(&dir()?)?;
            let wallet = shoal_node::wallet::load_or_create(&paths.wallet())?;
            println!("{}", wallet.address());
            Ok(())
        }
        Command::Rewards { command, rpc } => {
            let dir = dir()?;
            let rpc = rpc.as_deref();
            match command {
                None => rewards::status(&dir, rpc),
                Some(RewardsCommand::Claim) => rewards::claim(&dir, rpc),
                Some(RewardsCommand::Deposit { amount }) => rewards::deposit(&dir, &amount, rpc),
                Some(RewardsCommand::Withdraw { amount }) => rewards::withdraw(&dir, &amount, rpc),
            }
        }
        Command::Broadcast(args) => broadcast(&dir()?, args),
        Command::Watch { channel, origins } => watch(&dir()?, &channel, &origins),
        Command::Stats { json } => stats(&dir()?, json),
    }
}

/// `--fmp4 -`: the daemon reads files, not this command's stdin, so the
/// stream goes through a FIFO made for it in a private temporary folder
/// (removed when the folder is dropped), fed from stdin by a thread. The
/// daemon's end of file is stdin's.
fn stdin_fifo() -> Result<(tempfile::TempDir, PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    let folder = tempfile::Builder::new()
        .prefix("shoal-stdin-")
        .tempdir()
        .context("making a folder for the stdin FIFO")?;
    let path = folder.path().join("stream.fifo");
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .context("the temporary folder's path")?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the
    // call; mkfifo reads it and keeps nothing.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
        let e = io::Error::last_os_error();
        bail!("making a FIFO at {}: {e}", path.display());
    }
    let writer_path = path.clone();
    std::thread::spawn(move || {
        // Blocks until the daemon opens the FIFO; if it never does, the
        // command exits with the daemon's answer and takes the thread.
        let Ok(mut fifo) = std::fs::OpenOptions::new().write(true).open(&writer_path) else {
            return;
        };
        let _ = io::copy(&mut io::stdin().lock(), &mut fifo);
    });
    Ok((folder, path))
}

fn broadcast(dir: &Path, args: BroadcastArgs) -> Result<()> {
    let client = daemon_only(dir, "broadcast")?;
    // Checked here too, so a typo is reported before anything starts.
    shoal_node::channel_keys::load(dir, &args.name)?;
    let stdin_count = args.fmp4.iter().filter(|p| p.as_os_str() == "-").count();
    if stdin_count > 1 {
        bail!("--fmp4 - reads stdin, which holds one stream: give it once");
    }
    // Kept until the broadcast ends: the FIFO lives in it.
    let mut _stdin_folder = None;
    let mut fmp4 = Vec::with_capacity(args.fmp4.len());
    for p in &args.fmp4 {
        if p.as_os_str() == "-" {
            let (folder, fifo) = stdin_fifo()?;
            _stdin_folder = Some(folder);
            fmp4.push(fifo);
        } else {
            fmp4.push(absolute(p)?);
        }
    }
    let request = api::BroadcastRequest {
        name: args.name,
        dir: args.hls_dir.as_deref().map(absolute).transpose()?,
        fmp4,
        // The daemon checks the range (a NaN or a negative is 0 here).
        segment_ms: Some((args.segment_seconds * 1000.0).round() as u64),
        low_latency: args.low_latency,
        playlist: args.playlist,
        origins: args.origin,
        k: args.k,
        m: args.m,
    };
    let mut failure = None;
    // Written, not printed: a reader that goes away (`| head`) ends the
    // command quietly, and the broadcast with it, rather than a panic.
    let mut out = io::stdout();
    client.post_lines("broadcast", &request, &mut |line| {
        if let Some(channel) = line["channel"].as_str() {
            writeln!(out, "broadcasting channel {channel}")?;
        } else if let Some(e) = line["error"].as_str() {
            failure = Some(e.to_owned());
        } else if let Some(part) = line.get("part") {
            writeln!(
                out,
                "published rendition {} segment {} part {} ({} bytes)",
                line["rendition"], part["segment"], part["index"], line["bytes"]
            )?;
        } else {
            writeln!(
                out,
                "published rendition {} segment {} ({} bytes)",
                line["rendition"], line["sequence"], line["bytes"]
            )?;
        }
        out.flush()?;
        Ok(())
    })?;
    match failure {
        Some(e) => bail!("{e}"),
        None => {
            writeln!(io::stdout(), "the encoder ended the stream")?;
            Ok(())
        }
    }
}

fn watch(dir: &Path, channel: &str, origins: &[String]) -> Result<()> {
    let client = daemon_only(dir, "watch")?;
    let mut query = vec![("arg", channel)];
    query.extend(origins.iter().map(|o| ("origin", o.as_str())));
    let v: serde_json::Value = client.call("watch", &query)?;
    // Written, not printed: a reader that goes away ends the command.
    let mut out = io::stdout();
    writeln!(
        out,
        "{}{}",
        client.base(),
        v["url"].as_str().unwrap_or_default()
    )?;
    out.flush()?;
    loop {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let v: serde_json::Value = client.call("stats", &[("arg", channel)])?;
        let sessions: Vec<shoal_node::stats::LiveStatsReport> =
            serde_json::from_value(v["sessions"].clone()).unwrap_or_default();
        for r in sessions {
            writeln!(out, "{}", stats_line(&r))?;
        }
        out.flush()?;
    }
}

fn stats_line(r: &shoal_node::stats::LiveStatsReport) -> String {
    let ms = |v: Option<u64>| v.map_or("-".into(), |v| format!("{v} ms"));
    format!(
        "{} segments, {} missed, {} stalls, offload {}, peers {}, latency p50 {} p95 {}, startup {}",
        r.segments,
        r.missed,
        r.late,
        r.offload
            .map_or("-".into(), |o| format!("{:.1}%", o * 100.0)),
        r.peers,
        ms(r.latency_p50_ms),
        ms(r.latency_p95_ms),
        ms(r.startup_ms),
    ) + if r.proxying {
        " (no peers announce it: playing from the origin)"
    } else {
        ""
    }
}

fn stats(dir: &Path, json: bool) -> Result<()> {
    let client = daemon_only(dir, "stats")?;
    let v: serde_json::Value = client.call("stats", &[])?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let sessions: Vec<shoal_node::stats::LiveStatsReport> =
        serde_json::from_value(v["sessions"].clone()).context("reading the daemon's answer")?;
    println!("peers: {}", v["peers"]);
    if sessions.is_empty() {
        println!("no live sessions");
    }
    for r in sessions {
        println!(
            "{} ({}): {}",
            r.channel,
            r.name.as_deref().unwrap_or("?"),
            stats_line(&r)
        );
    }
    Ok(())
}

fn cid_arg(text: &str) -> Result<Cid> {
    parse_cid(text).map_err(anyhow::Error::msg)
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("{}", path.display()))
}

fn daemon(dir: &Path, args: DaemonArgs) -> Result<()> {
    let parse = |texts: &[String], what: &str| -> Result<Vec<Multiaddr>> {
        texts
            .iter()
            .map(|t| t.parse().with_context(|| format!("invalid {what} {t:?}")))
            .collect()
    };
    let options = DaemonOptions {
        listen: parse(&args.listen, "listen address")?,
        bootstrap: parse(&args.bootstrap, "bootstrap address")?,
        api: args.api,
        mdns: args.no_mdns.then_some(false),
    };
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(async {
        let daemon = Daemon::start(dir, options).await?;
        let addrs = daemon.node.listen_addrs().await?;
        let peer = daemon.node.peer_id();
        println!("peer id: {peer}");
        for addr in &addrs {
            println!("listening on {addr}/p2p/{peer}");
        }
        println!("api: http://{}", daemon.api_addr);
        println!("daemon ready");
        io::stdout().flush()?;
        daemon.run_until_signal().await?;
        anyhow::Ok(())
    })?;
    println!("daemon stopped");
    Ok(())
}

fn id(dir: &Path, json: bool) -> Result<()> {
    let result = match backend(dir)? {
        Backend::Daemon(client) => client.call::<IdResult>("id", &[])?,
        Backend::Local(repo) => {
            let key = shoal_node::identity::load_or_create(&repo.paths.identity())?;
            IdResult {
                peer_id: key.public().to_peer_id().to_string(),
                addrs: Vec::new(),
            }
        }
    };
    if json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!("{}", result.peer_id);
        for addr in &result.addrs {
            println!("{addr}");
        }
    }
    Ok(())
}

fn add(backend: &Backend, args: AddArgs) -> Result<()> {
    let result: AddResult = match backend {
        Backend::Local(repo) => {
            let mut options = repo.paths.import_options()?;
            options.k = args.k.unwrap_or(options.k);
            options.m = args.m.unwrap_or(options.m);
            options.segment_size = args.segment_size.unwrap_or(options.segment_size);
            if args.hls {
                options.validate_coding()?;
            } else {
                options.validate()?;
            }
            let total = if args.hls {
                0
            } else {
                std::fs::metadata(&args.path)
                    .with_context(|| format!("{}", args.path.display()))?
                    .len()
            };
            let bar = progress::bytes(total, "adding");
            let mut on_progress = |n: u64| {
                if n > bar.length().unwrap_or(0) {
                    bar.set_length(n);
                }
                bar.set_position(n);
            };
            let result = api::add(
                &repo.store,
                &args.path,
                args.hls,
                &options,
                &mut on_progress,
            )?;
            bar.finish_and_clear();
            result
        }
        Backend::Daemon(client) => {
            let path = absolute(&args.path)?;
            let path = path.to_string_lossy();
            let mut query: Vec<(&str, String)> = vec![("path", path.into_owned())];
            if args.hls {
                query.push(("hls", "true".into()));
            }
            if let Some(k) = args.k {
                query.push(("k", k.to_string()));
            }
            if let Some(m) = args.m {
                query.push(("m", m.to_string()));
            }
            if let Some(s) = args.segment_size {
                query.push(("segment_size", s.to_string()));
            }
            let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            client.call("add", &query)?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!("{}", result.root);
    }
    Ok(())
}

/// Writes into a hidden temporary file beside `output` (a random name,
/// created exclusively: see `shoal_storage::files`) and renames it into
/// place, so a failed `get` leaves no partial file and nothing planted
/// beside `output` is written through.
fn get(backend: &Backend, cid: &Cid, output: &Path) -> Result<()> {
    if output.file_name().is_none() {
        anyhow::bail!("{} is not a file path", output.display());
    }
    let size = match backend {
        Backend::Local(repo) => Some(assemble::load_stream(&repo.store, cid)?.size),
        Backend::Daemon(_) => None,
    };
    let (tmp, file) = shoal_storage::files::temp_file(output, false)
        .with_context(|| format!("creating a temporary file beside {}", output.display()))?;
    let bar = progress::bytes(size.unwrap_or(0), "getting");
    let result = (|| -> Result<()> {
        let mut out = io::BufWriter::with_capacity(1 << 20, file);
        let mut on_progress = |n: u64| {
            if n > bar.length().unwrap_or(0) {
                bar.set_length(n);
            }
            bar.set_position(n);
        };
        match backend {
            Backend::Local(repo) => {
                assemble::write_stream(&repo.store, cid, &mut out, &mut on_progress)?;
            }
            Backend::Daemon(client) => {
                client.cat(&cid.to_string(), &mut out, &mut on_progress)?;
            }
        }
        let file = out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, output).with_context(|| format!("writing {}", output.display()))?;
        Ok(())
    })();
    bar.finish_and_clear();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn pin(backend: &Backend, cmd: PinCommand) -> Result<()> {
    let (cid, add) = match cmd {
        PinCommand::Add { cid } => (cid, true),
        PinCommand::Rm { cid } => (cid, false),
        PinCommand::Ls => return pin_ls(backend),
    };
    let cid = cid_arg(&cid)?;
    match backend {
        Backend::Local(repo) if add => repo.store.pin(&cid)?,
        Backend::Local(repo) => repo.store.unpin(&cid)?,
        Backend::Daemon(c) => {
            let path = if add { "pin/add" } else { "pin/rm" };
            c.call::<serde_json::Value>(path, &[("arg", &cid.to_string())])?;
        }
    }
    println!("{} {cid}", if add { "pinned" } else { "unpinned" });
    Ok(())
}

fn pin_ls(backend: &Backend) -> Result<()> {
    let pins: Vec<String> = match backend {
        Backend::Local(repo) => repo.store.pins()?.iter().map(ToString::to_string).collect(),
        Backend::Daemon(c) => json_strings(&c.call("pin/ls", &[])?, "pins"),
    };
    let mut out = io::stdout().lock();
    for cid in pins {
        writeln!(out, "{cid}")?;
    }
    Ok(())
}

/// The strings of the list `key` in a daemon's JSON answer.
fn json_strings(v: &serde_json::Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect()
}

fn repo_cmd(backend: &Backend, cmd: RepoCommand) -> Result<()> {
    match cmd {
        RepoCommand::Stat { json } => {
            let s: RepoStat = match backend {
                Backend::Local(repo) => api::repo_stat(&repo.store, &repo.paths.dir)?,
                Backend::Daemon(c) => c.call("repo/stat", &[])?,
            };
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                println!("repo:          {}", s.path.display());
                println!("blocks:        {}", s.blocks);
                println!("block bytes:   {}", s.bytes);
                match s.quota_bytes {
                    Some(q) => println!("quota bytes:   {q}"),
                    None => println!("quota bytes:   none"),
                }
                println!("pinned roots:  {}", s.pinned_roots);
                println!("database size: {}", s.database_bytes);
            }
        }
        RepoCommand::Gc => {
            let (blocks, bytes) = match backend {
                Backend::Local(repo) => {
                    let g = repo.store.gc()?;
                    (g.blocks, g.bytes)
                }
                Backend::Daemon(c) => {
                    let v: serde_json::Value = c.call("repo/gc", &[])?;
                    (
                        v["blocks"].as_u64().unwrap_or(0),
                        v["bytes"].as_u64().unwrap_or(0),
                    )
                }
            };
            println!("removed {blocks} blocks ({bytes} bytes)");
        }
        RepoCommand::Verify => {
            let (damaged, path): (Vec<String>, String) = match backend {
                Backend::Local(repo) => (
                    repo.store
                        .verify_all()?
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    repo.store.path().display().to_string(),
                ),
                Backend::Daemon(c) => {
                    let v: serde_json::Value = c.call("repo/verify", &[])?;
                    (json_strings(&v, "damaged"), "the daemon's repo".into())
                }
            };
            if !damaged.is_empty() {
                bail!(
                    "{} damaged block(s) in {path}: {}",
                    damaged.len(),
                    damaged.join(", ")
                );
            }
            println!("every block matches its CID");
        }
    }
    Ok(())
}

//! `shoal`: the command-line interface of a shoal node.

mod progress;
mod repo;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use shoal_protocol::block::{Cid, parse_cid};
use shoal_storage::{assemble, import};

use crate::repo::Repo;

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
    /// Create a repo (does nothing to one that exists)
    Init,
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

/// Log lines go to stderr; `SHOAL_LOG` (error, warn, info, debug, trace)
/// sets how many, warnings by default.
fn init_logging() {
    let level = std::env::var("SHOAL_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::WARN);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(io::stderr)
        .with_target(false)
        .init();
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

fn run(cli: Cli) -> Result<()> {
    let dir = match cli.repo {
        Some(dir) => dir,
        None => repo::default_dir()?,
    };
    match cli.command {
        Command::Init => {
            if Repo::init(&dir)? {
                println!("initialised shoal repo at {}", dir.display());
            } else {
                println!("shoal repo at {} is already initialised", dir.display());
            }
            Ok(())
        }
        Command::Add(args) => add(&Repo::open(&dir)?, args),
        Command::Get { cid, output } => get(&Repo::open(&dir)?, &cid, &output),
        Command::Cat { cid } => {
            let cid = cid_arg(&cid)?;
            let repo = Repo::open(&dir)?;
            let mut out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
            assemble::write_stream(&repo.store, &cid, &mut out, &mut |_| {})?;
            Ok(())
        }
        Command::ExportHls { cid, dir: out } => {
            let cid = cid_arg(&cid)?;
            let repo = Repo::open(&dir)?;
            let stream = assemble::load_stream(&repo.store, &cid)?;
            let bar = progress::bytes(stream.size, "exporting");
            let entry =
                assemble::export_hls(&repo.store, &cid, &out, &mut |n| bar.set_position(n))?;
            bar.finish_and_clear();
            println!("{}", entry.display());
            Ok(())
        }
        Command::Pin(cmd) => pin(&Repo::open(&dir)?, cmd),
        Command::Repo(cmd) => repo_cmd(&Repo::open(&dir)?, cmd),
    }
}

fn cid_arg(text: &str) -> Result<Cid> {
    parse_cid(text).map_err(anyhow::Error::msg)
}

fn add(repo: &Repo, args: AddArgs) -> Result<()> {
    let mut options = repo.config.import.options();
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
    let imported = if args.hls {
        import::import_hls(&repo.store, &args.path, &options, &mut on_progress)?
    } else {
        import::import_file(&repo.store, &args.path, &options, &mut on_progress)?
    };
    bar.finish_and_clear();
    if args.json {
        let details = serde_json::json!({
            "root": imported.root.to_string(),
            "kind": if args.hls { "hls-vod" } else { "file" },
            "size": imported.size,
            "segments": imported.segments,
            "blocks": imported.blocks,
            "k": options.k,
            "m": options.m,
        });
        println!("{details}");
    } else {
        println!("{}", imported.root);
    }
    Ok(())
}

/// Writes into a hidden temporary file beside `output` and renames it into
/// place, so a failed `get` leaves no partial file.
fn get(repo: &Repo, cid: &str, output: &Path) -> Result<()> {
    let cid = cid_arg(cid)?;
    let stream = assemble::load_stream(&repo.store, &cid)?;
    let name = output
        .file_name()
        .with_context(|| format!("{} is not a file path", output.display()))?
        .to_string_lossy()
        .into_owned();
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let bar = progress::bytes(stream.size, "getting");
    let result = (|| -> Result<()> {
        let file =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut out = io::BufWriter::with_capacity(1 << 20, file);
        assemble::write_stream(&repo.store, &cid, &mut out, &mut |n| bar.set_position(n))?;
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

fn pin(repo: &Repo, cmd: PinCommand) -> Result<()> {
    match cmd {
        PinCommand::Add { cid } => {
            let cid = cid_arg(&cid)?;
            repo.store.pin(&cid)?;
            println!("pinned {cid}");
        }
        PinCommand::Rm { cid } => {
            let cid = cid_arg(&cid)?;
            repo.store.unpin(&cid)?;
            println!("unpinned {cid}");
        }
        PinCommand::Ls => {
            let mut out = io::stdout().lock();
            for cid in repo.store.pins()? {
                writeln!(out, "{cid}")?;
            }
        }
    }
    Ok(())
}

fn repo_cmd(repo: &Repo, cmd: RepoCommand) -> Result<()> {
    match cmd {
        RepoCommand::Stat { json } => {
            let s = repo.store.stat()?;
            if json {
                let details = serde_json::json!({
                    "path": repo.dir,
                    "blocks": s.blocks,
                    "bytes": s.bytes,
                    "quota_bytes": s.quota,
                    "pinned_roots": s.pinned_roots,
                    "database_bytes": s.file_bytes,
                });
                println!("{details}");
            } else {
                println!("repo:          {}", repo.dir.display());
                println!("blocks:        {}", s.blocks);
                println!("block bytes:   {}", s.bytes);
                match s.quota {
                    Some(q) => println!("quota bytes:   {q}"),
                    None => println!("quota bytes:   none"),
                }
                println!("pinned roots:  {}", s.pinned_roots);
                println!("database size: {}", s.file_bytes);
            }
        }
        RepoCommand::Gc => {
            let g = repo.store.gc()?;
            println!("removed {} blocks ({} bytes)", g.blocks, g.bytes);
        }
        RepoCommand::Verify => {
            let damaged = repo.store.verify_all()?;
            if !damaged.is_empty() {
                let list: Vec<String> = damaged.iter().map(Cid::to_string).collect();
                anyhow::bail!(
                    "{} damaged block(s) in {}: {}",
                    damaged.len(),
                    repo.store.path().display(),
                    list.join(", ")
                );
            }
            println!("every block matches its CID");
        }
    }
    Ok(())
}

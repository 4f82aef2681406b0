//! The repo folder: settings, identity and the block database.
//!
//! ```text
//! <repo>/config.toml    settings (written by `shoal init`)
//! <repo>/blocks.redb    every block, pin and counter
//! <repo>/identity.key   the node's ed25519 key (mode 0600)
//! <repo>/wallet.key     the node's secp256k1 wallet key (mode 0600)
//! <repo>/api            the address of the running daemon's API, if any
//! <repo>/api.token      the token its control API takes (mode 0600)
//! ```
//!
//! The folder is the owner's alone (mode 0700): the config can hold the
//! API token, and the database the receipts a relayer is paid for.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shoal_storage::{Blockstore, ImportOptions, StoreError, StoreOptions};

const CONFIG: &str = "config.toml";
const DATABASE: &str = "blocks.redb";
const IDENTITY: &str = "identity.key";
const WALLET: &str = "wallet.key";
const API_FILE: &str = "api";
const API_TOKEN: &str = "api.token";

/// The largest `config.toml` read: settings are a few KiB at most, and a
/// file this size is not one.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// What is wrong with a repo.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("no shoal repo at {0} (run `shoal init`, or point --repo / SHOAL_REPO at one)")]
    NotInitialised(PathBuf),
    #[error("{path} is invalid: {detail}")]
    Config { path: PathBuf, detail: String },
    #[error("the repo at {0} has no blocks.redb; it is damaged or was not initialised")]
    NoDatabase(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Config {
    /// Reads `config.toml`'s text and checks every setting; the error says
    /// which setting is wrong and what it may be.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config
            .import
            .options()
            .validate()
            .map_err(|e| e.to_string())?;
        config.limits().validate().map_err(|e| e.to_string())?;
        config.rewards.deployment()?;
        config.rewards.creator()?;
        config.api.validate()?;
        if let Some(rpc) = &config.rewards.rpc
            && !(rpc.starts_with("http://") || rpc.starts_with("https://"))
        {
            return Err(format!("rewards.rpc {rpc:?} is not an http(s) URL"));
        }
        if !(config.live.deadline_durations > 0.0 && config.live.deadline_durations <= 100.0) {
            return Err("live.deadline_durations must be above 0 and at most 100".into());
        }
        if config.live.ration_copies == 0 {
            return Err(
                "live.ration_copies must be at least 1 (ration_window_ms = 0 turns rationing off)"
                    .into(),
            );
        }
        if config.live.ration_window_ms > MAX_RATION_WINDOW_MS {
            return Err(format!(
                "live.ration_window_ms must be at most {MAX_RATION_WINDOW_MS}"
            ));
        }
        Ok(config)
    }

    /// The run-time limits this config starts a node with.
    pub fn limits(&self) -> crate::limits::Limits {
        crate::limits::Limits {
            upload_bytes_per_sec: self.node.upload_bytes_per_sec,
            no_upload: self.node.no_upload,
            max_peers: self.node.max_peers,
            cache_segments: self.live.cache_segments,
        }
    }
}

/// `config.toml`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub store: StoreConfig,
    pub import: ImportConfig,
    pub node: NetworkConfig,
    pub api: ApiConfig,
    pub live: LiveSettings,
    pub rewards: RewardsSettings,
}

/// The `[rewards]` section: the chain and contracts this node claims on.
/// All four of `chain_id`, `reward_pool`, `vault` and `token` or none
/// (then the node keeps accounts but asks nobody for receipts).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardsSettings {
    /// JSON-RPC endpoint of the chain (`shoal rewards` commands).
    pub rpc: Option<String>,
    pub chain_id: Option<u64>,
    pub reward_pool: Option<String>,
    pub vault: Option<String>,
    pub token: Option<String>,
    /// The address paid as the creator of what this node adds and
    /// broadcasts (written into root manifests and channel records).
    /// Absent: this node's own wallet.
    pub creator: Option<String>,
}

impl RewardsSettings {
    /// The creator address configured, if any.
    pub fn creator(&self) -> Result<Option<alloy_primitives::Address>, String> {
        self.creator
            .as_deref()
            .map(|s| {
                s.parse().map_err(|_| {
                    format!("rewards.creator {s:?} is not an address (0x and 40 hex digits)")
                })
            })
            .transpose()
    }

    /// The deployment named, if any.
    pub fn deployment(&self) -> Result<Option<shoal_protocol::receipt::Deployment>, String> {
        let address =
            |name: &str, v: &Option<String>| -> Result<Option<alloy_primitives::Address>, String> {
                v.as_deref()
                    .map(|s| {
                        s.parse().map_err(|_| {
                            format!("rewards.{name} {s:?} is not an address (0x and 40 hex digits)")
                        })
                    })
                    .transpose()
            };
        let pool = address("reward_pool", &self.reward_pool)?;
        let vault = address("vault", &self.vault)?;
        let token = address("token", &self.token)?;
        match (self.chain_id, pool, vault, token) {
            (None, None, None, None) => Ok(None),
            (Some(chain_id), Some(reward_pool), Some(vault), Some(token)) => {
                Ok(Some(shoal_protocol::receipt::Deployment {
                    chain_id,
                    reward_pool,
                    vault,
                    token,
                }))
            }
            _ => Err("rewards needs all of chain_id, reward_pool, vault and token, or none".into()),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Most bytes of blocks to keep; unpinned blocks are evicted, least
    /// recently used first. Absent: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImportConfig {
    pub k: u16,
    pub m: u16,
    pub segment_size: usize,
}

impl Default for ImportConfig {
    fn default() -> Self {
        let d = ImportOptions::default();
        ImportConfig {
            k: d.k,
            m: d.m,
            segment_size: d.segment_size,
        }
    }
}

impl ImportConfig {
    pub fn options(&self) -> ImportOptions {
        ImportOptions {
            k: self.k,
            m: self.m,
            segment_size: self.segment_size,
            creator: None,
        }
    }
}

/// The `[node]` section: how the daemon joins the network.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// Multiaddrs (with `/p2p/<peer id>`) of peers to join through.
    pub bootstrap: Vec<String>,
    /// Find peers on the local network.
    pub mdns: bool,
    /// Most connected peers.
    pub max_peers: u32,
    /// Most inbound connections from one IP address; 0: no limit.
    pub max_peers_per_ip: u32,
    /// Most bytes per second sent to peers. Absent: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_bytes_per_sec: Option<u64>,
    /// Serve nothing to peers (metered networks).
    pub no_upload: bool,
    /// Serve as a circuit relay for peers behind NAT (a node on a public
    /// address).
    pub relay: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            // A fixed port (not 4001, which IPFS daemons use) so that a
            // port forward or firewall rule keeps working across restarts.
            listen: if cfg!(feature = "quic") {
                vec![
                    "/ip4/0.0.0.0/tcp/4101".into(),
                    "/ip4/0.0.0.0/udp/4101/quic-v1".into(),
                ]
            } else {
                vec!["/ip4/0.0.0.0/tcp/4101".into()]
            },
            bootstrap: Vec::new(),
            mdns: true,
            max_peers: crate::NodeConfig::default().max_connections,
            max_peers_per_ip: crate::ip_limit::DEFAULT_PER_IP,
            upload_bytes_per_sec: None,
            no_upload: false,
            relay: false,
        }
    }
}

/// The `[api]` section: the daemon's HTTP API.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to serve on. Without a token only loopback addresses are
    /// accepted: the API can read and write files as the daemon's user.
    pub address: String,
    /// The token every control API call carries. Absent: the daemon draws
    /// one at each start. Set it to serve beyond loopback, for clients on
    /// other machines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Host names the daemon answers to besides IP literals and
    /// `localhost` (a LAN name, say); `"*"` for any. Requests naming
    /// another host get 403, which stops DNS rebinding.
    pub hosts: Vec<String>,
    /// Web origins (`https://tv.example`) whose pages may play through the
    /// gateway, with CORS. They never reach the control API.
    pub player_origins: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            address: "127.0.0.1:5080".into(),
            token: None,
            hosts: Vec::new(),
            player_origins: Vec::new(),
        }
    }
}

/// The shortest `[api] token` taken: it is all that stands between the
/// network and the node's files.
const MIN_TOKEN_LEN: usize = 16;

impl ApiConfig {
    fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.token
            && (t.len() < MIN_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(format!(
                "api.token must be at least {MIN_TOKEN_LEN} printable characters without spaces"
            ));
        }
        for h in &self.hosts {
            if h != "*" && (h.is_empty() || h.contains([':', '/', ' '])) {
                return Err(format!(
                    "api.hosts: {h:?} is not a host name (no scheme, port or path)"
                ));
            }
        }
        for o in &self.player_origins {
            let bad = || {
                format!("api.player_origins: {o:?} is not an origin like \"https://tv.example\"")
            };
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .ok_or_else(bad)?;
            let rest = rest.trim_end_matches('/');
            if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '*']) {
                return Err(bad());
            }
        }
        Ok(())
    }
}

/// The `[live]` section: how live channels are watched.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveSettings {
    /// Complete segments kept per rendition (5 is a typical phone setting).
    pub cache_segments: usize,
    /// Longest time peers get for a segment before HTTP origins fill in.
    pub p2p_budget_ms: u64,
    /// When a segment must be complete, in segment durations after its
    /// announcement.
    pub deadline_durations: f64,
    /// Broadcasting: viewers each new shard goes to while the ration lasts.
    pub ration_copies: usize,
    /// Broadcasting: how long the ration lasts after an announcement (0
    /// turns it off).
    pub ration_window_ms: u64,
    /// Fetch from origins on private addresses that only a channel record
    /// names (a broadcast inside a LAN). Origins named with `watch
    /// --origin` are always allowed.
    pub private_origins: bool,
}

/// A ration longer than this would keep viewers nobody served waiting past
/// any deadline.
const MAX_RATION_WINDOW_MS: u64 = 10_000;

impl Default for LiveSettings {
    fn default() -> Self {
        let d = shoal_protocol::live::LiveConfig::default();
        LiveSettings {
            cache_segments: d.window,
            p2p_budget_ms: d.p2p_budget.as_millis() as u64,
            deadline_durations: d.deadline_durations,
            ration_copies: d.ration_copies,
            ration_window_ms: d.ration_window.as_millis() as u64,
            private_origins: false,
        }
    }
}

impl LiveSettings {
    pub fn config(&self) -> shoal_protocol::live::LiveConfig {
        shoal_protocol::live::LiveConfig {
            window: self.cache_segments,
            p2p_budget: std::time::Duration::from_millis(self.p2p_budget_ms),
            deadline_durations: self.deadline_durations,
            ration_copies: self.ration_copies,
            ration_window: std::time::Duration::from_millis(self.ration_window_ms),
            ..shoal_protocol::live::LiveConfig::default()
        }
    }
}

/// The repo folder used when neither `--repo` nor `SHOAL_REPO` is given:
/// `$XDG_DATA_HOME/shoal` (`~/.local/share/shoal`) on Linux, the platform's
/// data folder elsewhere.
pub fn default_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("shoal"))
}

/// A repo's paths and settings, without opening the database.
#[derive(Clone, Debug)]
pub struct RepoPaths {
    pub dir: PathBuf,
    pub config: Config,
}

impl RepoPaths {
    /// Reads the settings of an initialised repo.
    pub fn load(dir: &Path) -> Result<RepoPaths, RepoError> {
        let config_path = dir.join(CONFIG);
        if !config_path.exists() {
            return Err(RepoError::NotInitialised(dir.to_owned()));
        }
        let invalid = |detail: String| RepoError::Config {
            path: config_path.clone(),
            detail: detail.replace('\n', " "),
        };
        let size = std::fs::metadata(&config_path)
            .map_err(io_err(&config_path))?
            .len();
        if size > MAX_CONFIG_BYTES {
            return Err(invalid(format!(
                "{size} bytes; a config is at most {MAX_CONFIG_BYTES} (the one `shoal init` writes is under 1 KiB)"
            )));
        }
        let text = std::fs::read_to_string(&config_path).map_err(io_err(&config_path))?;
        let config = Config::parse(&text).map_err(invalid)?;
        Ok(RepoPaths {
            dir: dir.to_owned(),
            config,
        })
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.join(CONFIG)
    }

    pub fn database(&self) -> PathBuf {
        self.dir.join(DATABASE)
    }

    pub fn identity(&self) -> PathBuf {
        self.dir.join(IDENTITY)
    }

    pub fn wallet(&self) -> PathBuf {
        self.dir.join(WALLET)
    }

    /// How this repo imports content: the configured coding, and the
    /// creator paid for it (`rewards.creator`, or the repo's wallet, made
    /// if there is none yet).
    pub fn import_options(&self) -> Result<ImportOptions, crate::wallet::WalletError> {
        let creator = match self.config.rewards.creator() {
            Ok(Some(c)) => c,
            // Checked when the config was read.
            Ok(None) | Err(_) => crate::wallet::load_or_create(&self.wallet())?.address(),
        };
        Ok(ImportOptions {
            creator: Some(creator.into_array()),
            ..self.config.import.options()
        })
    }

    pub fn api_file(&self) -> PathBuf {
        self.dir.join(API_FILE)
    }

    pub fn api_token(&self) -> PathBuf {
        self.dir.join(API_TOKEN)
    }

    /// The token the running daemon's control API takes, if it wrote one.
    pub fn daemon_token(&self) -> Option<String> {
        std::fs::read_to_string(self.api_token())
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// The API address a running daemon wrote, if any.
    pub fn daemon_api(&self) -> Option<String> {
        std::fs::read_to_string(self.api_file())
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// Opens the block database (exclusively: one process at a time).
    pub fn open_store(&self) -> Result<Blockstore, RepoError> {
        let db = self.database();
        if !db.exists() {
            return Err(RepoError::NoDatabase(self.dir.clone()));
        }
        let options = StoreOptions {
            quota: self.config.store.quota_bytes,
            ..StoreOptions::default()
        };
        Ok(Blockstore::open(&db, &options)?)
    }
}

/// An opened repo.
pub struct Repo {
    pub paths: RepoPaths,
    pub store: Arc<Blockstore>,
}

impl Repo {
    /// Creates the repo if it does not exist yet; returns whether it did.
    pub fn init(dir: &Path) -> Result<bool, RepoError> {
        let config_path = dir.join(CONFIG);
        if config_path.exists() {
            // Already a repo: make sure it opens, change nothing.
            Repo::open(dir)?;
            return Ok(false);
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        owner_only(dir, 0o700)?;
        let text = format!(
            "# shoal repo settings. Sizes are in bytes.\n{}",
            toml::to_string(&Config::default()).map_err(|e| RepoError::Config {
                path: config_path.clone(),
                detail: e.to_string(),
            })?
        );
        // The database and key first, the config last: a repo is
        // initialised once its config exists, so an interrupted init is
        // simply run again.
        Blockstore::create(&dir.join(DATABASE), &StoreOptions::default())?;
        owner_only(&dir.join(DATABASE), 0o600)?;
        crate::identity::load_or_create(&dir.join(IDENTITY)).map_err(|e| RepoError::Config {
            path: dir.join(IDENTITY),
            detail: e.to_string(),
        })?;
        crate::identity::write_private(&config_path, text.as_bytes())
            .map_err(io_err(&config_path))?;
        Ok(true)
    }

    /// Opens an initialised repo.
    pub fn open(dir: &Path) -> Result<Repo, RepoError> {
        let paths = RepoPaths::load(dir)?;
        let store = Arc::new(paths.open_store()?);
        Ok(Repo { paths, store })
    }
}

/// Sets `path`'s mode (owner only) where the platform has modes.
fn owner_only(path: &Path, mode: u32) -> Result<(), RepoError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err(path))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

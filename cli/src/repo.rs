//! The repo directory: `config.toml` and the block database.
//!
//! ```text
//! <repo>/config.toml    settings (written by `shoal init`)
//! <repo>/blocks.redb    every block, pin and counter
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use shoal_storage::{Blockstore, ImportOptions, StoreOptions};

const CONFIG: &str = "config.toml";
const DATABASE: &str = "blocks.redb";

/// `config.toml`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub store: StoreConfig,
    pub import: ImportConfig,
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
        }
    }
}

/// The repo folder used when neither `--repo` nor `SHOAL_REPO` is given:
/// `$XDG_DATA_HOME/shoal` (`~/.local/share/shoal`) on Linux, the platform's
/// data folder elsewhere.
pub fn default_dir() -> Result<PathBuf> {
    dirs::data_dir()
        .map(|d| d.join("shoal"))
        .context("no data folder is known for this user; pass --repo DIR or set SHOAL_REPO")
}

/// An opened repo.
pub struct Repo {
    pub dir: PathBuf,
    pub config: Config,
    pub store: Blockstore,
}

impl Repo {
    /// Creates the repo if it does not exist yet; returns whether it did.
    pub fn init(dir: &Path) -> Result<bool> {
        let config_path = dir.join(CONFIG);
        if config_path.exists() {
            // Already a repo: make sure it opens, change nothing.
            Repo::open(dir)?;
            return Ok(false);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let text = format!(
            "# shoal repo settings. Sizes are in bytes.\n{}",
            toml::to_string(&Config::default()).context("writing the default config")?
        );
        // The database first, the config last: a repo is initialised once
        // its config exists, so an interrupted init is simply run again.
        let options = StoreOptions::default();
        Blockstore::create(&dir.join(DATABASE), &options)?;
        let tmp = dir.join(format!(".{CONFIG}.tmp"));
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &config_path)
            .with_context(|| format!("writing {}", config_path.display()))?;
        Ok(true)
    }

    /// Opens an initialised repo.
    pub fn open(dir: &Path) -> Result<Repo> {
        let config_path = dir.join(CONFIG);
        let db_path = dir.join(DATABASE);
        if !config_path.exists() {
            bail!(
                "no shoal repo at {} (run `shoal init`, or point --repo / SHOAL_REPO at one)",
                dir.display()
            );
        }
        let text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let config: Config = toml::from_str(&text)
            .with_context(|| format!("{} is invalid", config_path.display()))?;
        config
            .import
            .options()
            .validate()
            .with_context(|| format!("{} is invalid", config_path.display()))?;
        if !db_path.exists() {
            bail!(
                "the repo at {} has no {DATABASE}; it is damaged or was not initialised",
                dir.display()
            );
        }
        let options = StoreOptions {
            quota: config.store.quota_bytes,
            ..StoreOptions::default()
        };
        let store = Blockstore::open(&db_path, &options)?;
        Ok(Repo {
            dir: dir.to_owned(),
            config,
            store,
        })
    }
}

//! A local chain for the settlement tests: anvil from `contracts/`'s npm
//! packages (`scripts/test` installs them), on 127.0.0.1, one per test,
//! stopped when dropped; and the contracts deployed on it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alloy_primitives::{Address, U256};
use shoal_node::settle::{DeployParams, Settlement};
use shoal_protocol::receipt::{Deployment, Wallet};

/// One token, in wei.
pub fn tokens(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18))
}

/// A running anvil.
pub struct Anvil {
    child: Child,
    pub rpc: String,
    http: reqwest::Client,
}

/// The anvil binary itself (npm's `.bin/anvil` is a Node wrapper, and
/// killing the wrapper would leave the chain running): the platform
/// package `@foundry-rs/anvil-<os>-<arch>` ships it.
fn anvil_bin() -> PathBuf {
    let scope =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../contracts/node_modules/@foundry-rs");
    std::fs::read_dir(&scope)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/anvil"))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "no anvil binary under {}: run `npm ci` in contracts/ (scripts/test does)",
                scope.display()
            )
        })
}

impl Anvil {
    pub async fn start() -> Anvil {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let child = Command::new(anvil_bin())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--chain-id", "31337", "--accounts", "1", "--silent"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("anvil starts");
        let anvil = Anvil {
            child,
            rpc: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        for _ in 0..100 {
            if anvil
                .call("eth_chainId", serde_json::json!([]))
                .await
                .is_ok()
            {
                return anvil;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("anvil did not answer on {}", anvil.rpc);
    }

    async fn call(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let v: serde_json::Value = self
            .http
            .post(&self.rpc)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match v.get("error") {
            Some(e) => Err(e.to_string()),
            None => Ok(v["result"].clone()),
        }
    }

    /// Gives `who` 100 ether for gas.
    pub async fn fund_gas(&self, who: Address) {
        let wei = U256::from(100u64) * U256::from(10u64).pow(U256::from(18));
        self.call(
            "anvil_setBalance",
            serde_json::json!([who.to_string(), format!("{wei:#x}")]),
        )
        .await
        .unwrap();
    }

    /// Moves the chain's clock forward and mines a block.
    pub async fn advance(&self, secs: u64) {
        self.call("evm_increaseTime", serde_json::json!([secs]))
            .await
            .unwrap();
        self.call("evm_mine", serde_json::json!([])).await.unwrap();
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new wallet (from a seed byte, so failures can be replayed) with gas.
pub async fn wallet(anvil: &Anvil, n: u8) -> Wallet {
    let w = Wallet::from_bytes(&[n; 32]).unwrap();
    anvil.fund_gas(w.address()).await;
    w
}

/// A new wallet from a number (for audiences beyond 256) with gas.
pub async fn numbered_wallet(anvil: &Anvil, n: u32) -> Wallet {
    let mut seed = [0x5A; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    let w = Wallet::from_bytes(&seed).unwrap();
    anvil.fund_gas(w.address()).await;
    w
}

/// Epochs of an hour; claims open for one epoch after each.
pub const EPOCH: u64 = shoal_protocol::receipt::EPOCH_SECS;

/// Deploys the contracts from `deployer` (who holds the whole supply),
/// with the 70/20/10 split, a one-day unlock period and a minimum deposit
/// of one token.
pub async fn deploy(anvil: &Anvil, deployer: &Wallet, treasury: Address) -> Deployment {
    deploy_on(anvil, deployer, treasury, None, 0).await
}

/// [`deploy`] on an ERC-20 already deployed (`Some`), or a new
/// `ShoalToken`, picking one viewer in 2^`draw_bits` for claims.
pub async fn deploy_on(
    anvil: &Anvil,
    deployer: &Wallet,
    treasury: Address,
    token: Option<Address>,
    draw_bits: u8,
) -> Deployment {
    Settlement::deploy(
        &anvil.rpc,
        deployer,
        &DeployParams {
            supply: tokens(1_000_000),
            token,
            unlock_period_secs: 86_400,
            treasury,
            split_bps: (7000, 2000, 1000),
            epoch_length_secs: EPOCH,
            claim_epochs: 1,
            min_deposit: tokens(1),
            max_viewer_bytes_per_epoch: shoal_protocol::receipt::MAX_VIEWER_BYTES_PER_EPOCH,
            draw_bits,
        },
    )
    .await
    .unwrap()
}

alloy::sol!(
    #[sol(rpc)]
    FeeOnTransferToken,
    "../contracts/artifacts/FeeOnTransferToken.json"
);

/// Deploys the test fixture `FeeOnTransferToken` (1% of every transfer
/// burnt), its `supply` minted to `holder`; returns its address.
pub async fn deploy_fee_token(anvil: &Anvil, holder: &Wallet, supply: U256) -> Address {
    let provider = shoal_node::settle::provider(&anvil.rpc, holder).unwrap();
    *FeeOnTransferToken::deploy(&provider, holder.address(), supply)
        .await
        .unwrap()
        .address()
}

/// `wallet` connected to the deployment.
pub async fn connect(anvil: &Anvil, wallet: &Wallet, d: Deployment) -> Settlement {
    Settlement::connect(&anvil.rpc, wallet, d).await.unwrap()
}

/// A fresh store holding `held` as a relayer's receipts (the node's
/// `settle::claim` reads them from there); the folder lives as long as
/// the returned guard.
pub fn receipt_store(
    held: &[shoal_protocol::receipt::SignedReceipt],
) -> (tempfile::TempDir, shoal_storage::Blockstore) {
    let dir = tempfile::tempdir().unwrap();
    let store = shoal_storage::Blockstore::create(
        &dir.path().join("store.redb"),
        &shoal_storage::StoreOptions::default(),
    )
    .unwrap();
    for r in held {
        store.put_receipt(&r.key(), &r.to_bytes()).unwrap();
    }
    (dir, store)
}

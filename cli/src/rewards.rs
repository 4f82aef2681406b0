//! `shoal rewards`: accounts, receipts held, balances on chain, claims,
//! deposits and withdrawals. Claims go through the daemon when one runs
//! (it holds the repo's database); the rest needs only the wallet and the
//! `[rewards]` section of `config.toml`.

use std::path::Path;

use alloy_primitives::U256;
use anyhow::{Context, Result, bail};
use shoal_node::api::RewardsReport;
use shoal_node::repo::{Repo, RepoPaths};
use shoal_node::settle::{self, Settlement};

use crate::{Backend, backend};

/// Token amounts are written in tokens with up to 18 decimals.
const DECIMALS: usize = 18;

/// Parses "1.5" (tokens) into wei.
pub fn parse_amount(text: &str) -> Result<U256> {
    let bad = || anyhow::anyhow!("invalid amount {text:?}: write tokens, e.g. 10 or 0.25");
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    if frac.len() > DECIMALS {
        bail!("invalid amount {text:?}: at most {DECIMALS} decimals");
    }
    let digits = format!("{whole}{frac:0<DECIMALS$}");
    let wei = U256::from_str_radix(&digits, 10).map_err(|_| bad())?;
    if wei.is_zero() {
        bail!("invalid amount {text:?}: must be more than zero");
    }
    Ok(wei)
}

/// Wei as tokens, trailing zeros trimmed.
pub fn format_amount(wei: U256) -> String {
    let s = format!("{wei:0>width$}", width = DECIMALS + 1);
    let (whole, frac) = s.split_at(s.len() - DECIMALS);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        whole.to_string()
    } else {
        format!("{whole}.{frac}")
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

async fn chain(dir: &Path, rpc: Option<&str>) -> Result<Settlement> {
    settle::from_repo(dir, rpc)
        .await
        .map_err(anyhow::Error::msg)
}

/// `shoal rewards`: what this node earned and holds.
pub fn status(dir: &Path, rpc: Option<&str>) -> Result<()> {
    let (wallet, accounts, receipts) = match backend(dir)? {
        Backend::Daemon(client) => {
            let r: RewardsReport = client.call("rewards", &[])?;
            (r.wallet, Some(r.accounts), r.receipts)
        }
        Backend::Local(repo) => {
            let wallet = shoal_node::wallet::load_or_create(&repo.paths.wallet())?;
            let receipts = shoal_node::rewards::receipt_reports(&repo.store)?;
            (wallet.address().to_string(), None, receipts)
        }
    };
    println!("wallet: {wallet}");
    match accounts {
        Some(accounts) if !accounts.is_empty() => {
            println!("peers (bytes served / received / acknowledged / owed):");
            for a in accounts {
                println!(
                    "  {}  {} / {} / {} / {}",
                    a.peer, a.served_bytes, a.received_bytes, a.acknowledged_bytes, a.owed_bytes
                );
            }
        }
        Some(_) => println!("peers: none yet"),
        None => println!("peers: the daemon is not running (accounts live in it)"),
    }
    println!("receipts held: {}", receipts.len());
    for r in &receipts {
        println!(
            "  viewer {} content {} epoch {}: {} bytes, {} segments, {} claimed",
            r.viewer, r.content, r.epoch, r.bytes, r.segments, r.claimed
        );
    }
    let paths = RepoPaths::load(dir)?;
    if rpc.is_none() && paths.config.rewards.rpc.is_none() {
        println!("chain: not configured (set [rewards] in config.toml, or give --rpc)");
        return Ok(());
    }
    runtime()?.block_on(async {
        let chain = chain(dir, rpc).await?;
        let me = chain.address();
        let balance = chain.token_balance(me).await?;
        let (deposit, unlock) = chain.deposit_of(me).await?;
        println!("tokens: {}", format_amount(balance));
        print!("vault deposit: {}", format_amount(deposit));
        if unlock > 0 {
            print!(" (withdrawal requested; unlocks at Unix time {unlock})");
        }
        println!();
        let (locked, since, until) = chain.lock_of(me).await?;
        if locked > U256::ZERO {
            println!(
                "locked: {} from Unix time {since} to {until}",
                format_amount(locked)
            );
        }
        let mut pools: Vec<(String, u64)> = receipts
            .iter()
            .map(|r| (r.content.clone(), r.epoch))
            .collect();
        pools.sort();
        pools.dedup();
        for (content, epoch) in pools {
            let id = content.parse().context("a stored content id")?;
            let claimable = chain.claimable(id, epoch).await?;
            println!(
                "claimable for content {content} epoch {epoch}: {}",
                format_amount(claimable)
            );
        }
        Ok(())
    })
}

/// `shoal rewards claim`.
pub fn claim(dir: &Path, rpc: Option<&str>) -> Result<()> {
    let outcome: settle::ClaimOutcome = match backend(dir)? {
        Backend::Daemon(client) => {
            let mut query = Vec::new();
            if let Some(rpc) = rpc {
                query.push(("rpc", rpc));
            }
            client.call("rewards/claim", &query)?
        }
        Backend::Local(repo) => claim_local(&repo, dir, rpc)?,
    };
    if outcome.unfunded + outcome.not_picked + outcome.no_deposit + outcome.expired > 0 {
        println!(
            "not sent: {} receipts for content nobody funded, {} from viewers their epoch's draw did not pick, {} from viewers without a deposit locked through the epoch; {} past their claim window forgotten",
            outcome.unfunded, outcome.not_picked, outcome.no_deposit, outcome.expired
        );
    }
    if outcome.rolled > 0 {
        println!(
            "{} pools that counted nothing rolled on into their content's current epoch",
            outcome.rolled
        );
    }
    if outcome.transactions == 0 {
        println!("nothing to claim now (receipts count after their epoch, for a limited time)");
    } else {
        println!(
            "claimed {} receipts ({} bytes) in {} transactions, {} gas; {} not counted (their viewers hold no deposit)",
            outcome.counted,
            outcome.bytes,
            outcome.transactions,
            outcome.gas_used,
            outcome.not_counted
        );
        if outcome.capped_bytes > 0 {
            println!(
                "{} bytes were beyond their viewers' limit for the epoch and do not count",
                outcome.capped_bytes
            );
        }
    }
    Ok(())
}

fn claim_local(repo: &Repo, dir: &Path, rpc: Option<&str>) -> Result<settle::ClaimOutcome> {
    runtime()?.block_on(async {
        let chain = chain(dir, rpc).await?;
        Ok(shoal_node::settle::claim(&repo.store, &chain).await?)
    })
}

/// Epochs a deposit is locked for (a day of hour-long epochs): a lock
/// covering an epoch from its start through its claim window is what
/// makes a viewer's receipts count, and a locked deposit cannot pay
/// cheques or be withdrawn.
const LOCK_EPOCHS: u64 = 24;

/// `shoal rewards deposit AMOUNT`: deposits, and locks what the pool asks
/// of a viewer for [`LOCK_EPOCHS`] more epochs.
pub fn deposit(dir: &Path, amount: &str, rpc: Option<&str>) -> Result<()> {
    let wei = parse_amount(amount)?;
    runtime()?.block_on(async {
        let chain = chain(dir, rpc).await?;
        chain.deposit(wei).await?;
        let (deposit, _) = chain.deposit_of(chain.address()).await?;
        let (first, until) = chain.lock_for_epochs(LOCK_EPOCHS).await?;
        let (locked, _, _) = chain.lock_of(chain.address()).await?;
        println!(
            "deposited {amount}; the vault holds {}, of which {} is locked until Unix time \
             {until}: receipts you sign count from epoch {first} on; the rest pays cheques",
            format_amount(deposit),
            format_amount(locked)
        );
        Ok(())
    })
}

/// `shoal rewards withdraw AMOUNT`: requests the withdrawal the first
/// time, withdraws once the unlock period has passed.
pub fn withdraw(dir: &Path, amount: &str, rpc: Option<&str>) -> Result<()> {
    let wei = parse_amount(amount)?;
    runtime()?.block_on(async {
        let chain = chain(dir, rpc).await?;
        let (_, unlock) = chain.deposit_of(chain.address()).await?;
        if unlock == 0 {
            let at = chain.request_withdrawal().await?;
            println!(
                "withdrawal requested: the deposit unlocks at Unix time {at}; run this again then (a deposit meanwhile cancels it)"
            );
            return Ok(());
        }
        chain.withdraw(wei).await?;
        println!("withdrew {amount}");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_in_tokens_and_print_back() {
        assert_eq!(
            parse_amount("1").unwrap(),
            U256::from(10u64).pow(U256::from(18))
        );
        assert_eq!(parse_amount("0.000000000000000001").unwrap(), U256::from(1));
        assert_eq!(format_amount(parse_amount("12.5").unwrap()), "12.5");
        assert_eq!(format_amount(U256::ZERO), "0");
        for bad in [
            "",
            ".",
            "-1",
            "1e3",
            "0",
            "0.0000000000000000001",
            "1,5",
            "abc",
        ] {
            assert!(parse_amount(bad).is_err(), "{bad:?}");
        }
    }
}

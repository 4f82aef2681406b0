//! Gas of claiming, per receipt a relayer holds, when the pool samples
//! its viewers (`RewardPool.drawBits`) — on anvil, with the node's own
//! claim (`shoal_node::settle::claim`).
//!
//! `cargo bench -p shoal-tests --bench claims` (`SHOAL_BENCH_DRAW_BITS`,
//! default 6: one viewer in 64; `SHOAL_BENCH_VIEWERS`, default 100,1000)
//!
//! Every viewer holds a locked deposit; each audience watches its own
//! content, served by its own relayer, which holds one receipt per viewer.
//! Gas is the chain's deterministic measure (no machine noise); what
//! varies from run to run is how many viewers the draw picks, so the
//! count is printed beside the gas. The baseline in the same run is the
//! same audience claimed whole (every receipt sent, in batches of
//! `CLAIM_BATCH`), on a pool that does not sample, for the smallest
//! audience.

use alloy_primitives::{Address, B256};
use futures::future::join_all;
use shoal_node::settle::{ClaimOutcome, Settlement, claim};
use shoal_protocol::receipt::{Deployment, Receipt, SignedReceipt, Wallet, content_id};
use shoal_tests::chain::{
    Anvil, EPOCH, connect, deploy_on, numbered_wallet, receipt_store, tokens, wallet,
};

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// Viewers with a deposit locked from now on: the bank sends each its
/// tokens, then each approves, deposits and locks (viewers in parallel).
async fn viewers(
    anvil: &Anvil,
    bank: &Settlement,
    d: Deployment,
    first: u32,
    n: usize,
) -> Vec<Wallet> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n as u32 {
        let w = numbered_wallet(anvil, first + i).await;
        bank.transfer(w.address(), tokens(1)).await.unwrap();
        out.push(w);
    }
    for chunk in out.chunks(32) {
        join_all(chunk.iter().map(|w| async move {
            let me = connect(anvil, w, d).await;
            me.deposit(tokens(1)).await.unwrap();
            me.lock_for_epochs(24).await.unwrap();
        }))
        .await;
    }
    out
}

fn receipts(
    viewers: &[Wallet],
    relayer: Address,
    d: &Deployment,
    content: B256,
    epoch: u64,
) -> Vec<SignedReceipt> {
    viewers
        .iter()
        .map(|v| {
            v.sign_receipt(
                Receipt {
                    viewer: v.address(),
                    relayer,
                    contentId: content,
                    epoch,
                    // Half an hour of a 2.2 Mb/s stream.
                    cumulativeBytes: 500_000_000,
                    cumulativeSegments: 900,
                },
                &d.receipt_domain(),
            )
        })
        .collect()
}

/// One relayer's claim with the node's code, from a fresh store.
async fn node_claim(chain: &Settlement, held: &[SignedReceipt]) -> ClaimOutcome {
    let (_dir, store) = receipt_store(held);
    claim(&store, chain).await.unwrap()
}

struct World {
    anvil: Anvil,
    d: Deployment,
    bank: Settlement,
    creator: Address,
}

async fn world(draw_bits: u8) -> World {
    let anvil = Anvil::start().await;
    let deployer = wallet(&anvil, 1).await;
    let treasury = Wallet::from_bytes(&[2; 32]).unwrap().address();
    let d = deploy_on(&anvil, &deployer, treasury, None, draw_bits).await;
    let bank = connect(&anvil, &deployer, d).await;
    World {
        anvil,
        d,
        bank,
        creator: Wallet::from_bytes(&[3; 32]).unwrap().address(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bits: u8 = std::env::var("SHOAL_BENCH_DRAW_BITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let audiences = env_list("SHOAL_BENCH_VIEWERS", &[100, 1000]);
    let started = std::time::Instant::now();

    // Baseline: the smallest audience claimed whole.
    let smallest = audiences.iter().copied().min().unwrap_or(100);
    let w = world(0).await;
    let audience = viewers(&w.anvil, &w.bank, w.d, 0, smallest).await;
    let relayer = numbered_wallet(&w.anvil, 1_000_000).await;
    let chain = connect(&w.anvil, &relayer, w.d).await;
    let epoch = w.bank.current_epoch().await.unwrap() + 1;
    w.anvil.advance(EPOCH).await;
    let subject = B256::repeat_byte(1);
    w.bank
        .fund(subject, w.creator, epoch, tokens(10))
        .await
        .unwrap();
    w.anvil.advance(EPOCH).await;
    let held = receipts(
        &audience,
        relayer.address(),
        &w.d,
        content_id(subject, w.creator),
        epoch,
    );
    let whole = node_claim(&chain, &held).await;
    assert_eq!(whole.counted, smallest, "{whole:?}");
    let baseline = whole.gas_used as f64 / smallest as f64;
    println!(
        "baseline: {smallest} receipts claimed whole (no draw): {} gas in {} transactions, {baseline:.0} gas per receipt",
        whole.gas_used, whole.transactions
    );
    drop(w);

    // Sampled: every audience in one epoch, each its own content and
    // relayer; the first relayer to claim draws the seed.
    let w = world(bits).await;
    let mut groups = Vec::new();
    let mut next = 0u32;
    for (i, n) in audiences.iter().enumerate() {
        let audience = viewers(&w.anvil, &w.bank, w.d, next, *n).await;
        next += *n as u32;
        let relayer = numbered_wallet(&w.anvil, 1_000_000 + i as u32).await;
        groups.push((audience, relayer, B256::repeat_byte(10 + i as u8)));
    }
    let epoch = w.bank.current_epoch().await.unwrap() + 1;
    w.anvil.advance(EPOCH).await;
    for (_, _, subject) in &groups {
        w.bank
            .fund(*subject, w.creator, epoch, tokens(10))
            .await
            .unwrap();
    }
    w.anvil.advance(EPOCH).await;
    // The draw, by whoever claims first: once per epoch, for every
    // content and relayer.
    let first = connect(&w.anvil, &groups[0].1, w.d).await;
    let (_, draw_gas) = first.draw_metered(epoch).await.unwrap();
    println!(
        "draw bits {bits} (one viewer in {}); drawing the epoch's seed: {draw_gas} gas, paid once per epoch by the first claimer",
        1u64 << bits
    );
    println!("receipts held | picked | claim gas | per receipt | with the draw | vs claimed whole");
    for (audience, relayer, subject) in &groups {
        let chain = connect(&w.anvil, relayer, w.d).await;
        let held = receipts(
            audience,
            relayer.address(),
            &w.d,
            content_id(*subject, w.creator),
            epoch,
        );
        let o = node_claim(&chain, &held).await;
        let n = held.len() as f64;
        let per = o.gas_used as f64 / n;
        println!(
            "{} | {} | {} | {per:.0} | {:.0} | {:.3}",
            held.len(),
            o.counted,
            o.gas_used,
            (o.gas_used + draw_gas) as f64 / n,
            per / baseline
        );
    }
    eprintln!("(ran in {:.0} s)", started.elapsed().as_secs_f64());
}

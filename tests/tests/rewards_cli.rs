//! `shoal wallet` and `shoal rewards` as a user runs them: the real binary
//! on a repo whose `[rewards]` section names contracts on a local anvil.

use shoal_protocol::receipt::Wallet;
use shoal_tests::Sandbox;
use shoal_tests::chain::{Anvil, connect, deploy, tokens, wallet};

#[tokio::test]
async fn a_wallet_deposits_withdraws_and_claims_through_the_cli() {
    let anvil = Anvil::start().await;
    let deployer = wallet(&anvil, 1).await;
    let treasury = Wallet::from_bytes(&[2; 32]).unwrap().address();
    let d = deploy(&anvil, &deployer, treasury).await;
    let s = Sandbox::with_repo();

    // The wallet is made once and kept.
    let address = s.shoal(&["wallet", "address"]).ok().to_owned();
    assert!(
        address.starts_with("0x") && address.len() == 42,
        "{address}"
    );
    assert_eq!(s.shoal(&["wallet", "address"]).ok(), address);

    // Without [rewards] the chain commands say what is missing.
    s.shoal(&["rewards", "deposit", "1"])
        .fails_with("no [rewards] deployment in config.toml");
    let status = s.shoal(&["rewards"]).ok().to_owned();
    assert!(
        status.contains(&address) && status.contains("chain: not configured"),
        "{status}"
    );

    let config = s.repo().join("config.toml");
    // `shoal init` wrote an empty [rewards] section to fill in.
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("[rewards]\n"), "{text}");
    let text = text.replace(
        "[rewards]\n",
        &format!(
            "[rewards]\nrpc = \"{}\"\nchain_id = {}\nreward_pool = \"{}\"\nvault = \"{}\"\ntoken = \"{}\"\n",
            anvil.rpc, d.chain_id, d.reward_pool, d.vault, d.token
        ),
    );
    std::fs::write(&config, &text).unwrap();

    // Gas and tokens for the node's wallet.
    let addr = address.parse().unwrap();
    anvil.fund_gas(addr).await;
    let bank = connect(&anvil, &deployer, d).await;
    bank.transfer(addr, tokens(5)).await.unwrap();

    s.shoal(&["rewards", "deposit", "abc"])
        .fails_with("invalid amount \"abc\"");
    s.shoal(&["rewards", "deposit", "9"])
        .fails_with("the wallet holds 5000000000000000000 wei of the token");
    let out = s.shoal(&["rewards", "deposit", "2.5"]).ok().to_owned();
    assert!(
        out.contains("the vault holds 2.5, of which 1 is locked until Unix time")
            && out.contains("receipts you sign count from epoch"),
        "{out}"
    );
    let status = s.shoal(&["rewards"]).ok().to_owned();
    assert!(
        status.contains("tokens: 2.5")
            && status.contains("vault deposit: 2.5")
            && status.contains("locked: 1 from Unix time"),
        "{status}"
    );

    let out = s.shoal(&["rewards", "withdraw", "1"]).ok().to_owned();
    assert!(out.contains("withdrawal requested"), "{out}");
    s.shoal(&["rewards", "withdraw", "1"])
        .fails_with("locked until");
    // The unlock period has passed, the lock (the pool's minimum of one
    // token, for 24 epochs and a claim window beyond this one) has not.
    anvil.advance(86_400).await;
    s.shoal(&["rewards", "withdraw", "2"])
        .fails_with("only 1500000000000000000 wei of the deposit are free");
    s.shoal(&["rewards", "withdraw", "1"]).ok();
    assert_eq!(
        bank.token_balance(addr).await.unwrap(),
        tokens(35) / alloy_primitives::U256::from(10)
    );

    let out = s.shoal(&["rewards", "claim"]).ok().to_owned();
    assert!(out.contains("nothing to claim now"), "{out}");
    s.shoal(&["rewards", "claim", "--rpc", "ftp://x"])
        .fails_with("invalid RPC URL");

    // A half-written [rewards] section is refused with the reason.
    std::fs::write(&config, text.replace("token = ", "# token = ")).unwrap();
    s.shoal(&["rewards"])
        .fails_with("rewards needs all of chain_id, reward_pool, vault and token");
}

//! Signed cheques as a payee receives and keeps them, through to the
//! signature check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocol::receipt::{Deployment, SignedCheque};

fuzz_target!(|data: &[u8]| {
    let Ok(cheque) = SignedCheque::from_bytes(data) else {
        return;
    };
    // Only the canonical encoding decodes.
    assert_eq!(cheque.to_bytes(), data);
    let deployment = Deployment {
        chain_id: 31337,
        reward_pool: [1; 20].into(),
        vault: [2; 20].into(),
        token: [3; 20].into(),
    };
    let _ = cheque.verify(&deployment.cheque_domain());
});

//! The receipt protocol's messages and stored receipts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocol::receipt::{ReceiptRequest, ReceiptResponse, SignedReceipt};

fuzz_target!(|data: &[u8]| {
    let _ = ReceiptRequest::from_bytes(data);
    let _ = ReceiptResponse::from_bytes(data);
    let _ = SignedReceipt::from_bytes(data);
});

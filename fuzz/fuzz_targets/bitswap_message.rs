//! Bitswap frames from a peer: the message decoder, and the frame
//! decoder fed the same bytes in pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocol::bitswap::Message;
use shoal_protocol::bitswap::wire::FrameDecoder;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::decode(data)
        && msg.unreadable_blocks == 0
    {
        // What decodes encodes again and decodes to the same message.
        let again = Message::decode(&msg.encode()).expect("a decoded message re-encodes");
        assert_eq!(again, msg);
    }
    let mut frames = FrameDecoder::default();
    for piece in data.chunks(97) {
        frames.extend(piece);
        while let Ok(Some(frame)) = frames.next_frame() {
            let _ = Message::decode(&frame);
        }
    }
});

//! The signed envelope, announcements and channel records, opened under
//! the golden vectors' channel (so that the seeds from `tests/vectors`
//! pass the signature and the fuzzer reaches the body), and DHT records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocol::channel::{Announcement, ChannelId, ChannelRecord, open_dht_record};

fuzz_target!(|data: &[u8]| {
    let channel: ChannelId = include_str!("../../tests/vectors/channel/CHANNEL")
        .trim()
        .parse()
        .expect("the vectors' channel id");
    let _ = Announcement::open(&channel, data);
    let _ = ChannelRecord::open(&channel, data);
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (key, value) = data.split_at(split);
    let _ = open_dht_record(key, value);
});

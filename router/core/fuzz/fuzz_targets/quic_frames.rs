//! The QUIC codec (`triggerfish/1`) on hostile bytes: publish-frame parsing and ack decoding
//! never panic; whatever parses re-encodes to the same bytes; an ack decoded for a frame of
//! N events never claims more than N.
#![no_main]

use libfuzzer_sys::fuzz_target;
use triggerfish_core::quic::publish::{HEADER_LEN, encode_publish_with_credential};
use triggerfish_core::quic::{Ack, FrameLimits, PublishHeader, decode_publish};

fuzz_target!(|data: &[u8]| {
    let limits = FrameLimits { max_body_bytes: 1 << 16 };
    if let Ok(p) = decode_publish(data, &limits) {
        assert_eq!(
            encode_publish_with_credential(p.target.key, p.credential, p.body).expect("re-encodes"),
            data
        );
    }
    if let Some(head) = data.first_chunk::<HEADER_LEN>()
        && let Ok(h) = PublishHeader::parse(head, &limits)
    {
        assert!(h.body_len() <= limits.max_body_bytes);
        assert_eq!(&h.to_bytes(), head);
    }
    // The first byte picks how many events the client claims to have sent.
    let (sent, rest) = match data.split_first() {
        Some((n, rest)) => (u32::from(*n), rest),
        None => (0, data),
    };
    if let Ok(ack) = Ack::decode(rest, sent) {
        assert!(u64::from(ack.accepted) + ack.rejected.len() as u64 <= u64::from(sent));
        assert_eq!(ack.encode(), rest);
    }
});

//! MNS documents and headers: ReceiveMessage and error XML, push notifications in every
//! format, base64 messages, certificate URLs, dates and PEM certificates never panic.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use triggerfish_core::sources::mns;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = mns::parse_message(data) {
        assert!(!message.message_id.is_empty() && !message.receipt_handle.is_empty());
        let _ = message.body_md5_matches();
    }
    let _ = mns::parse_error(data);
    if let Ok(notification) = mns::parse_notification(data) {
        let _ = mns::decode_message(&notification.message, true);
    }
    let _ = mns::signing_cert_url(data);
    let _ = mns::SigningKey::from_pem(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let _ = mns::check_date(Some(text), now, mns::MAX_CLOCK_SKEW);
        let _ = mns::string_to_sign("GET", "", "", text, [("x-mns-version", text)], text);
    }
});

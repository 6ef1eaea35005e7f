//! Request and response head parsing must never panic, and whatever it accepts must be
//! consistent: spans inside the head, the head split off exactly, framing one of the four.
//!
//! Run with `cargo +nightly fuzz run http_head` from the repository root.
#![no_main]

use bytes::BytesMut;
use keygate::http::{RequestHead, ResponseHead};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut fields = Vec::new();
    if let Ok(Some(head)) = RequestHead::parse(&mut buf, 16 * 1024, &mut fields) {
        assert_eq!(head.raw().len() + buf.len(), data.len());
        assert_eq!(&data[..head.raw().len()], &head.raw()[..]);
        for field in &head.fields {
            let _ = (head.name(field), head.value(field));
        }
        let _ = (head.path(), head.path_only(), head.host(), head.target());
    }

    let buf = BytesMut::from(data);
    for head_request in [false, true] {
        if let Ok(Some(head)) = ResponseHead::parse(&buf, head_request, 16 * 1024, &mut fields) {
            assert!(head.head_len <= data.len());
            let _ = head.reason(&buf);
            fields = head.fields;
        }
    }
});

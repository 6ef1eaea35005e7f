//! Chunked decoding must never panic, and must give the same data and the same end however
//! the input is split: the first byte picks the split point.
//!
//! Run with `cargo +nightly fuzz run chunked` from the repository root.
#![no_main]

use keygate::http::{ChunkError, ChunkedDecoder};
use libfuzzer_sys::fuzz_target;

/// Decodes `parts` in order; returns the data, whether the body ended and how much was used.
fn decode(parts: &[&[u8]]) -> Result<(Vec<u8>, bool, usize), ChunkError> {
    let mut decoder = ChunkedDecoder::new();
    let (mut data, mut used) = (Vec::new(), 0);
    for part in parts {
        let mut pos = 0;
        while pos < part.len() && !decoder.is_done() {
            let step = decoder.decode(&part[pos..])?;
            assert!(step.consumed > 0 && pos + step.consumed <= part.len());
            assert!(step.data.end <= step.consumed);
            data.extend_from_slice(&part[pos..][step.data.clone()]);
            pos += step.consumed;
        }
        used += pos;
        if decoder.is_done() {
            break;
        }
    }
    Ok((data, decoder.is_done(), used))
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, body)) = input.split_first() else { return };
    let split = usize::from(split).min(body.len());
    let whole = decode(&[body]);
    let halves = decode(&[&body[..split], &body[split..]]);
    assert_eq!(whole, halves);
});

//! The request mix: `--mix plain=8,stream=1,body=1` weights over the kinds of chat request a
//! run sends, the bodies of those kinds, and the weighted draw of a kind for each request.
//!
//! Sans-IO and allocation-free once built: a draw is one random number and a short scan.

use std::fmt;

use rand::Rng;

use super::request::DEFAULT_BODY;

/// The kinds of request a mix holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A plain JSON chat completion, answered with one JSON document.
    Plain,
    /// The same with `"stream": true`, answered with server-sent events read to the end.
    Stream,
    /// A chat completion whose message pads the body to `--body-bytes`.
    Body,
}

impl Kind {
    /// The name used in `--mix` and in the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Stream => "stream",
            Kind::Body => "body",
        }
    }

    fn parse(name: &str) -> Option<Kind> {
        match name {
            "plain" => Some(Kind::Plain),
            "stream" => Some(Kind::Stream),
            "body" => Some(Kind::Body),
            _ => None,
        }
    }

    /// The request body of this kind; `body_bytes` is the size of a [`Kind::Body`] body,
    /// raised to the least a chat request with a padded message needs.
    pub fn body(self, body_bytes: usize) -> Vec<u8> {
        match self {
            Kind::Plain => DEFAULT_BODY.as_bytes().to_vec(),
            Kind::Stream => STREAM_BODY.as_bytes().to_vec(),
            Kind::Body => padded_body(body_bytes),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The streamed chat request: the default body asking for server-sent events.
const STREAM_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16,"stream":true}"#;

/// The padded body around its message text.
const PADDED_START: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":""#;
const PADDED_END: &str = r#""}],"max_tokens":16}"#;

/// Words that fill a padded message, so that it reads as text to a token counter.
const FILLER: &[u8] = b"the quick brown fox jumps over the lazy dog ";

/// A chat request of `len` bytes (or the least such a request takes), its one message filled
/// with words.
fn padded_body(len: usize) -> Vec<u8> {
    let text = len.saturating_sub(PADDED_START.len() + PADDED_END.len());
    let mut body = Vec::with_capacity(PADDED_START.len() + text + PADDED_END.len());
    body.extend_from_slice(PADDED_START.as_bytes());
    body.extend(FILLER.iter().cycle().take(text));
    body.extend_from_slice(PADDED_END.as_bytes());
    body
}

/// `--mix`: each kind named once, with a weight; at least one weight above 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixSpec {
    /// The kinds with their weights, in the order given.
    pub weights: Vec<(Kind, u32)>,
}

impl MixSpec {
    /// Parses `kind=weight[,kind=weight...]`.
    pub fn parse(text: &str) -> Result<MixSpec, String> {
        let mut weights: Vec<(Kind, u32)> = Vec::new();
        for part in text.split(',') {
            let Some((name, weight)) = part.split_once('=') else {
                return Err(format!("{part:?} is not kind=weight"));
            };
            let name = name.trim();
            let kind = Kind::parse(name)
                .ok_or_else(|| format!("unknown kind {name:?} (plain, stream, body)"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("the weight of {name} is not a whole number"))?;
            if weights.iter().any(|(seen, _)| *seen == kind) {
                return Err(format!("{name} is named twice"));
            }
            weights.push((kind, weight));
        }
        let total: u64 = weights.iter().map(|(_, weight)| u64::from(*weight)).sum();
        if total == 0 {
            return Err("the weights add up to 0".to_owned());
        }
        if total > u64::from(u32::MAX) {
            return Err("the weights add up to more than 2^32 - 1".to_owned());
        }
        // A kind of weight 0 is never drawn: leaving it out keeps the summary to what ran.
        weights.retain(|(_, weight)| *weight > 0);
        Ok(MixSpec { weights })
    }

    /// Whether the mix holds `kind`.
    pub fn has(&self, kind: Kind) -> bool {
        self.weights.iter().any(|(held, _)| *held == kind)
    }
}

/// The weighted draw over a mix's kinds, by index in the order of the [`MixSpec`].
#[derive(Debug, Clone)]
pub struct Picker {
    /// Running sums of the weights; the last is the total.
    cumulative: Box<[u32]>,
}

impl Picker {
    /// A draw over `spec`'s kinds.
    pub fn new(spec: &MixSpec) -> Picker {
        let mut sum = 0;
        let cumulative = spec
            .weights
            .iter()
            .map(|(_, weight)| {
                sum += weight;
                sum
            })
            .collect();
        Picker { cumulative }
    }

    /// Draws the index of a kind, each with a chance of its weight over the total.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if self.cumulative.len() <= 1 || total == 0 {
            return 0;
        }
        let point = rng.random_range(0..total);
        self.cumulative.partition_point(|&sum| sum <= point)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn specs_are_parsed_and_checked() {
        let spec = MixSpec::parse("plain=8, stream=1,body=1").unwrap();
        assert_eq!(
            spec.weights,
            [(Kind::Plain, 8), (Kind::Stream, 1), (Kind::Body, 1)]
        );
        assert_eq!(
            MixSpec::parse("stream=1,plain=0").unwrap().weights,
            [(Kind::Stream, 1)]
        );
        for bad in [
            "",
            "plain",
            "plain=x",
            "plain=-1",
            "video=1",
            "plain=1,plain=2",
            "plain=0",
            "plain=4294967295,body=1",
        ] {
            assert!(MixSpec::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn draws_follow_the_weights() {
        let spec = MixSpec::parse("plain=8,stream=1,body=1").unwrap();
        let picker = Picker::new(&spec);
        let mut rng = SmallRng::seed_from_u64(3);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[picker.draw(&mut rng)] += 1;
        }
        // Expected 80,000 / 10,000 / 10,000; a standard deviation is under 130.
        assert!((79_000..81_000).contains(&counts[0]), "{counts:?}");
        assert!((9_500..10_500).contains(&counts[1]), "{counts:?}");
        assert!((9_500..10_500).contains(&counts[2]), "{counts:?}");

        let single = Picker::new(&MixSpec::parse("body=3").unwrap());
        assert!((0..100).all(|_| single.draw(&mut rng) == 0));
    }

    #[test]
    fn bodies_are_json_of_the_asked_size() {
        for len in [0, 100, 16 * 1024, 100_000] {
            let body = Kind::Body.body(len);
            let least = PADDED_START.len() + PADDED_END.len();
            assert_eq!(body.len(), len.max(least), "{len}");
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(value["max_tokens"], 16);
        }
        let stream: serde_json::Value = serde_json::from_slice(&Kind::Stream.body(0)).unwrap();
        assert_eq!(stream["stream"], true);
        let plain: serde_json::Value = serde_json::from_slice(&Kind::Plain.body(0)).unwrap();
        assert!(plain.get("stream").is_none());
    }
}

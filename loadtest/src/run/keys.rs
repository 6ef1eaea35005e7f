//! Client keys: the set a run draws from, and how each draw is made.
//!
//! Keys are addressed by index, rank 1 of a Zipf draw being index 0 (the first line of a keys
//! file, or `PREFIX0`). Numbered keys are written when a request is built, so a million of them
//! cost no memory. Drawing never allocates.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::BytesMut;
use rand::distr::{Distribution, Uniform};
use rand::Rng;
use rand_distr::Zipf;

/// The keys requests are sent with, as `Authorization: Bearer KEY`.
#[derive(Debug, Clone)]
pub enum KeySet {
    /// Keys read from a file, in its order.
    Listed(Arc<[Box<[u8]>]>),
    /// `PREFIX0` .. `PREFIX{count - 1}`.
    Numbered {
        /// What every key starts with.
        prefix: Arc<[u8]>,
        /// How many keys there are.
        count: u64,
    },
}

impl KeySet {
    /// The keys the options name: those in `file`, else `count` numbered ones after
    /// `prefix`, else none.
    pub fn chosen(
        file: Option<&Path>,
        count: Option<u64>,
        prefix: &str,
    ) -> anyhow::Result<Option<KeySet>> {
        Ok(match (file, count) {
            (Some(path), _) => Some(KeySet::from_file(path)?),
            (None, Some(count)) => Some(KeySet::numbered(prefix, count)?),
            (None, None) => None,
        })
    }

    /// Reads one key per line from `path`, skipping blank lines. Surrounding whitespace is
    /// trimmed; a key must be visible ASCII, to go unchanged in a header field.
    pub fn from_file(path: &Path) -> anyhow::Result<KeySet> {
        let text = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut keys = Vec::new();
        for (number, line) in text.split(|&byte| byte == b'\n').enumerate() {
            let key = line.trim_ascii();
            if key.is_empty() {
                continue;
            }
            if !key.iter().all(u8::is_ascii_graphic) {
                bail!(
                    "{} line {}: a key must be visible ASCII without spaces",
                    path.display(),
                    number + 1
                );
            }
            keys.push(Box::from(key));
        }
        if keys.is_empty() {
            bail!("{} holds no keys", path.display());
        }
        Ok(KeySet::Listed(keys.into()))
    }

    /// `count` keys named `prefix` followed by their index.
    pub fn numbered(prefix: &str, count: u64) -> anyhow::Result<KeySet> {
        if count == 0 {
            bail!("--keys must be at least 1");
        }
        if !prefix.bytes().all(|byte| byte.is_ascii_graphic()) {
            bail!("--keys-prefix must be visible ASCII without spaces");
        }
        Ok(KeySet::Numbered {
            prefix: Arc::from(prefix.as_bytes()),
            count,
        })
    }

    /// How many keys there are.
    pub fn len(&self) -> u64 {
        match self {
            KeySet::Listed(keys) => keys.len() as u64,
            KeySet::Numbered { count, .. } => *count,
        }
    }

    /// Appends key `index` (below [`KeySet::len`]) to `out`.
    pub fn write(&self, index: u64, out: &mut BytesMut) {
        match self {
            KeySet::Listed(keys) => out.extend_from_slice(&keys[index as usize]),
            KeySet::Numbered { prefix, .. } => {
                out.extend_from_slice(prefix);
                out.extend_from_slice(itoa::Buffer::new().format(index).as_bytes());
            }
        }
    }
}

/// How keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Key of rank k (index k - 1) drawn with a weight of 1 / k^s.
    Zipf,
}

/// When keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyScope {
    /// Once per connection, used by all its requests, as a real application's pool does.
    Connection,
    /// For every request: the worst case for a gateway that routes by key.
    Request,
}

/// Draws key indexes from a distribution over `0..count`.
#[derive(Debug, Clone)]
pub enum KeyPicker {
    /// Every index equally likely.
    Uniform(Uniform<u64>),
    /// Zipf over ranks `1..=count`.
    Zipf {
        /// The ranks' distribution.
        ranks: Zipf<f64>,
        /// The number of keys.
        count: u64,
    },
}

impl KeyPicker {
    /// A picker over `count` keys (at least 1); `s` is the Zipf exponent (at least 0).
    pub fn new(count: u64, dist: KeyDist, s: f64) -> anyhow::Result<KeyPicker> {
        if count == 0 {
            bail!("no keys to draw from");
        }
        match dist {
            KeyDist::Uniform => Ok(KeyPicker::Uniform(Uniform::new(0, count)?)),
            KeyDist::Zipf => {
                if !(s.is_finite() && s >= 0.0) {
                    bail!("--zipf-s must be a number of at least 0");
                }
                let ranks = Zipf::new(count as f64, s)?;
                Ok(KeyPicker::Zipf { ranks, count })
            }
        }
    }

    /// The index of the next key.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match self {
            KeyPicker::Uniform(uniform) => uniform.sample(rng),
            KeyPicker::Zipf { ranks, count } => {
                // Ranks are whole numbers in 1..=count; the clamp only guards the float edge.
                let rank = ranks.sample(rng) as u64;
                rank.clamp(1, *count) - 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    fn counts(picker: &KeyPicker, keys: usize, draws: usize) -> Vec<usize> {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = vec![0; keys];
        for _ in 0..draws {
            counts[picker.draw(&mut rng) as usize] += 1;
        }
        counts
    }

    #[test]
    fn zipf_one_follows_one_over_rank() {
        let keys = 10;
        let draws = 200_000;
        let picker = KeyPicker::new(keys as u64, KeyDist::Zipf, 1.0).unwrap();
        let counts = counts(&picker, keys, draws);

        // Rank 1 is the most frequent, and frequencies fall with rank.
        assert!(
            counts.windows(2).all(|pair| pair[0] > pair[1]),
            "{counts:?}"
        );
        // With s = 1, rank k has weight 1/k over the harmonic number H(10).
        let harmonic: f64 = (1..=keys).map(|k| 1.0 / k as f64).sum();
        for (index, &count) in counts.iter().enumerate() {
            let expected = draws as f64 / (index + 1) as f64 / harmonic;
            let error = (count as f64 - expected).abs() / expected;
            assert!(error < 0.05, "rank {}: {count} vs {expected:.0}", index + 1);
        }
    }

    #[test]
    fn zipf_zero_is_uniform_and_larger_s_is_steeper() {
        let flat = counts(&KeyPicker::new(4, KeyDist::Zipf, 0.0).unwrap(), 4, 40_000);
        assert!(
            flat.iter().all(|&count| (9_000..11_000).contains(&count)),
            "{flat:?}"
        );

        let steep = counts(&KeyPicker::new(4, KeyDist::Zipf, 2.0).unwrap(), 4, 40_000);
        // Weights 1, 1/4, 1/9, 1/16: rank 1 takes about 70%.
        assert!((27_000..30_000).contains(&steep[0]), "{steep:?}");
    }

    #[test]
    fn uniform_covers_every_key() {
        let counts = counts(
            &KeyPicker::new(5, KeyDist::Uniform, 1.0).unwrap(),
            5,
            50_000,
        );
        assert!(
            counts.iter().all(|&count| (9_000..11_000).contains(&count)),
            "{counts:?}"
        );
    }

    #[test]
    fn one_key_is_always_drawn() {
        for dist in [KeyDist::Uniform, KeyDist::Zipf] {
            let picker = KeyPicker::new(1, dist, 1.0).unwrap();
            assert_eq!(counts(&picker, 1, 100), [100]);
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(KeyPicker::new(0, KeyDist::Uniform, 1.0).is_err());
        assert!(KeyPicker::new(3, KeyDist::Zipf, -1.0).is_err());
        assert!(KeyPicker::new(3, KeyDist::Zipf, f64::NAN).is_err());
        assert!(KeySet::numbered("kg-", 0).is_err());
        assert!(KeySet::numbered("kg bench", 3).is_err());
    }

    #[test]
    fn keys_are_written_by_index() {
        let mut out = BytesMut::new();
        let numbered = KeySet::numbered("kg-bench-", 20).unwrap();
        numbered.write(17, &mut out);
        assert_eq!(&out[..], b"kg-bench-17");
        assert_eq!(numbered.len(), 20);

        let listed = KeySet::Listed(vec![Box::from(&b"a"[..]), Box::from(&b"bb"[..])].into());
        out.clear();
        listed.write(1, &mut out);
        assert_eq!(&out[..], b"bb");
    }

    #[test]
    fn keys_file_skips_blank_lines_and_refuses_spaces() {
        let dir = std::env::temp_dir().join(format!("loadtest-keys-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        fs::write(&good, "k1\n\n  k2\r\nk3").unwrap();
        let keys = KeySet::from_file(&good).unwrap();
        assert_eq!(keys.len(), 3);
        let mut out = BytesMut::new();
        keys.write(1, &mut out);
        assert_eq!(&out[..], b"k2");

        let bad = dir.join("bad");
        fs::write(&bad, "k1\nk 2\n").unwrap();
        let err = KeySet::from_file(&bad).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");

        let empty = dir.join("empty");
        fs::write(&empty, "\n\n").unwrap();
        assert!(KeySet::from_file(&empty).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! The provider keys of `--key`: what each allows, its limits as token buckets shared by every
//! worker, and the counters and request log that `GET /mock/stats` reports.
//!
//! Locking: a `Mutex` per key and one for the log, never held together, and only taken by
//! requests to a mock started with `--key`; a mock without keys never touches them.

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::bucket::TokenBucket;
use super::json;
use super::ratelimit::{Dimension, LimitState};
use super::style::Style;

/// How many keyed requests the log keeps, newest last.
pub const LOG_CAPACITY: usize = 10_000;

/// One `--key SECRET[:OPTS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// The key as clients send it.
    pub secret: String,
    /// Requests per minute, if limited (`rpm=N`).
    pub rpm: Option<u64>,
    /// Tokens per minute, if limited (`tpm=N`).
    pub tpm: Option<u64>,
    /// 401 or 403 to refuse every request with (`status=N`).
    pub status: Option<u16>,
    /// Extra delay before the response head (`latency-ms=N`); zero by default.
    pub latency: Duration,
}

impl FromStr for KeySpec {
    type Err = String;

    /// Reads `SECRET[:OPTS]`, OPTS comma-separated from `rpm=N`, `tpm=N`, `status=401|403`,
    /// `latency-ms=N`. The secret ends at the first `:`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (secret, options) = match text.split_once(':') {
            Some((secret, options)) => (secret, Some(options)),
            None => (text, None),
        };
        if secret.is_empty() || !secret.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(format!(
                "key {secret:?}: a secret is visible ASCII without spaces"
            ));
        }
        let mut spec = KeySpec {
            secret: secret.to_owned(),
            rpm: None,
            tpm: None,
            status: None,
            latency: Duration::ZERO,
        };
        for option in options.into_iter().flat_map(|options| options.split(',')) {
            spec.set(option)
                .map_err(|why| format!("key {secret:?}, option {option:?}: {why}"))?;
        }
        Ok(spec)
    }
}

impl KeySpec {
    /// Applies one `NAME=VALUE` option.
    fn set(&mut self, option: &str) -> Result<(), &'static str> {
        let (name, value) = option.split_once('=').ok_or("expected NAME=VALUE")?;
        let number = value
            .parse::<u64>()
            .map_err(|_| "expected a whole number")?;
        let unset = match name {
            "rpm" => self.rpm.replace(number).is_none(),
            "tpm" => self.tpm.replace(number).is_none(),
            "status" if matches!(number, 401 | 403) => self.status.replace(number as u16).is_none(),
            "status" => return Err("the status is 401 or 403"),
            "latency-ms" if self.latency.is_zero() => {
                self.latency = Duration::from_millis(number);
                true
            }
            "latency-ms" => false,
            _ => return Err("unknown option; known: rpm, tpm, status, latency-ms"),
        };
        if unset {
            Ok(())
        } else {
            Err("given twice")
        }
    }
}

/// A key of the table, by position in the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyId(usize);

/// Which limit a refused request is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
}

/// Why a request was refused by its key's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The limit it is over (requests first when both are).
    pub over: Over,
    /// That limit, per minute.
    pub limit: u64,
    /// What the request asked of it.
    pub requested: u64,
    /// Whether it asks for more than the limit, so that it never fits.
    pub too_large: bool,
    /// The wait until the request would fit both limits; when it is too large, the wait until
    /// its bucket is full.
    pub retry: Duration,
}

/// Where an endpoint asks whether a request may go ahead, once it knows the request's cost.
pub trait Gate {
    /// Takes one request and `tokens` tokens from the limits, or refuses and takes nothing.
    fn admit(&mut self, tokens: u64) -> Result<(), Refusal>;
}

/// The gate of a mock without keys: everything goes ahead.
#[derive(Debug, Clone, Copy, Default)]
pub struct Open;

impl Gate for Open {
    #[inline]
    fn admit(&mut self, _tokens: u64) -> Result<(), Refusal> {
        Ok(())
    }
}

/// The keys of `--key`, their limits and their counters, shared by all workers.
#[derive(Debug, Default)]
pub struct Keys {
    keys: Vec<Key>,
    by_secret: HashMap<Box<[u8]>, KeyId>,
    style: Option<Style>,
    unknown: AtomicU64,
    log: Mutex<VecDeque<LogEntry>>,
}

#[derive(Debug)]
struct Key {
    spec: KeySpec,
    state: Mutex<KeyState>,
}

#[derive(Debug)]
struct KeyState {
    requests: Option<TokenBucket>,
    tokens: Option<TokenBucket>,
    counts: Counts,
}

/// A key's counters, as `/mock/stats` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    ok: u64,
    limited: u64,
    denied: u64,
    tokens: u64,
}

#[derive(Debug, Clone, Copy)]
struct LogEntry {
    unix_ms: u64,
    key: KeyId,
    status: u16,
}

impl Keys {
    /// The table of `specs`, with full buckets at `now`; `style`, if given, is forced on every
    /// reply. Fails if a secret is given twice.
    pub fn new(specs: Vec<KeySpec>, style: Option<Style>, now: Instant) -> Result<Keys, String> {
        let mut keys = Keys {
            style,
            ..Keys::default()
        };
        for spec in specs {
            let id = KeyId(keys.keys.len());
            let secret: Box<[u8]> = spec.secret.as_bytes().into();
            if keys.by_secret.insert(secret, id).is_some() {
                return Err(format!("key {:?} is given twice", spec.secret));
            }
            let state = KeyState {
                requests: spec.rpm.map(|limit| TokenBucket::new(limit, now)),
                tokens: spec.tpm.map(|limit| TokenBucket::new(limit, now)),
                counts: Counts::default(),
            };
            keys.keys.push(Key {
                spec,
                state: Mutex::new(state),
            });
        }
        Ok(keys)
    }

    /// Whether requests are checked for a key: at least one `--key` was given.
    pub fn checks(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The style forced by `--style`, if any.
    pub fn forced_style(&self) -> Option<Style> {
        self.style
    }

    /// The key whose secret is `secret`.
    pub fn find(&self, secret: &[u8]) -> Option<KeyId> {
        self.by_secret.get(secret).copied()
    }

    /// What the command line says of key `id`.
    pub fn spec(&self, id: KeyId) -> &KeySpec {
        &self.keys[id.0].spec
    }

    /// Takes one request and `tokens` tokens from key `id` at `now` if both fit; otherwise
    /// takes nothing. Returns the limits as they then stand, and the refusal if refused.
    pub fn admit(&self, id: KeyId, tokens: u64, now: Instant) -> (LimitState, Option<Refusal>) {
        let mut state = self.lock(id);
        let mut refusal = state.refusal(tokens, now);
        if let Some(refusal) = &mut refusal {
            refusal.retry = state.retry_wait(refusal, tokens, now);
        }
        if refusal.is_none() {
            if let Some(bucket) = &mut state.requests {
                bucket.take(1, now);
            }
            if let Some(bucket) = &mut state.tokens {
                bucket.take(tokens, now);
            }
            state.counts.tokens += tokens;
        }
        let mut limits = state.limits(now);
        limits.retry = refusal.map(|refusal| refusal.retry);
        (limits, refusal)
    }

    /// The limits of key `id` as they stand at `now`.
    pub fn limits(&self, id: KeyId, now: Instant) -> LimitState {
        self.lock(id).limits(now)
    }

    /// Counts a reply to key `id` with `status` (429: limited; 401, 403: denied; any other: ok)
    /// and logs it.
    pub fn record(&self, id: KeyId, status: u16, unix_ms: u64) {
        {
            let counts = &mut self.lock(id).counts;
            match status {
                429 => counts.limited += 1,
                401 | 403 => counts.denied += 1,
                _ => counts.ok += 1,
            }
        }
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() == LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(LogEntry {
            unix_ms,
            key: id,
            status,
        });
    }

    /// Counts a request that named no key, or one not in the table.
    pub fn record_unknown(&self) {
        self.unknown.fetch_add(1, Ordering::Relaxed);
    }

    /// Zeroes the counters, empties the log and fills every bucket, at `now`.
    pub fn reset(&self, now: Instant) {
        for index in 0..self.keys.len() {
            let mut guard = self.lock(KeyId(index));
            let state = &mut *guard;
            state.counts = Counts::default();
            for bucket in [&mut state.requests, &mut state.tokens]
                .into_iter()
                .flatten()
            {
                bucket.reset(now);
            }
        }
        self.unknown.store(0, Ordering::Relaxed);
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Appends the `/mock/stats` document: `{"keys": {SECRET: {"ok", "limited", "denied",
    /// "tokens"}}, "unknown": N, "log": [[unix_ms, SECRET, status], ...]}`, keys in command-line
    /// order, the log oldest first.
    pub fn write_stats(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"keys":{"#);
        for (index, key) in self.keys.iter().enumerate() {
            let counts = self.lock(KeyId(index)).counts;
            if index > 0 {
                out.push(b',');
            }
            json::string(out, &key.spec.secret);
            let fields = [
                ("ok", counts.ok),
                ("limited", counts.limited),
                ("denied", counts.denied),
                ("tokens", counts.tokens),
            ];
            for (at, (name, value)) in fields.into_iter().enumerate() {
                out.extend_from_slice(if at == 0 { b":{\"" } else { b",\"" });
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\":");
                json::number(out, value);
            }
            out.push(b'}');
        }
        out.extend_from_slice(br#"},"unknown":"#);
        json::number(out, self.unknown.load(Ordering::Relaxed));
        out.extend_from_slice(br#","log":["#);
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        for (index, entry) in log.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.push(b'[');
            json::number(out, entry.unix_ms);
            out.push(b',');
            json::string(out, &self.keys[entry.key.0].spec.secret);
            out.push(b',');
            json::number(out, u64::from(entry.status));
            out.push(b']');
        }
        out.extend_from_slice(b"]}");
    }

    /// Key `id`'s state; a worker that panicked while holding it left nothing half-done that
    /// matters to a mock, so a poisoned lock is used as it is.
    fn lock(&self, id: KeyId) -> MutexGuard<'_, KeyState> {
        self.keys[id.0]
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl KeyState {
    /// Why a request of `tokens` does not fit at `now`, if it does not.
    fn refusal(&mut self, tokens: u64, now: Instant) -> Option<Refusal> {
        let over = [
            (Over::Requests, &mut self.requests, 1),
            (Over::Tokens, &mut self.tokens, tokens),
        ];
        for (over, bucket, cost) in over {
            let Some(bucket) = bucket else {
                continue;
            };
            if !bucket.fits(cost, now) {
                return Some(Refusal {
                    over,
                    limit: bucket.limit(),
                    requested: cost,
                    too_large: cost > bucket.limit(),
                    retry: Duration::ZERO,
                });
            }
        }
        None
    }

    /// How long until a refused request fits in both buckets; for one that never fits, the
    /// time until its bucket is full.
    fn retry_wait(&mut self, refusal: &Refusal, tokens: u64, now: Instant) -> Duration {
        if refusal.too_large {
            let bucket = match refusal.over {
                Over::Requests => &mut self.requests,
                Over::Tokens => &mut self.tokens,
            };
            return bucket
                .as_mut()
                .map_or(Duration::ZERO, |b| b.until_full(now));
        }
        let requests = self.requests.as_mut().and_then(|b| b.until_fits(1, now));
        let tokens = self.tokens.as_mut().and_then(|b| b.until_fits(tokens, now));
        requests.unwrap_or_default().max(tokens.unwrap_or_default())
    }

    /// The dimensions as they stand at `now`, without a retry.
    fn limits(&mut self, now: Instant) -> LimitState {
        let dimension = |bucket: &mut Option<TokenBucket>| {
            bucket.as_mut().map(|bucket| Dimension {
                limit: bucket.limit(),
                remaining: bucket.remaining(now),
                until_full: bucket.until_full(now),
            })
        };
        LimitState {
            requests: dimension(&mut self.requests),
            tokens: dimension(&mut self.tokens),
            retry: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn spec(text: &str) -> KeySpec {
        text.parse().unwrap()
    }

    #[test]
    fn specs() {
        assert_eq!(
            spec("sk-a:rpm=60,tpm=20000,latency-ms=5"),
            KeySpec {
                secret: "sk-a".into(),
                rpm: Some(60),
                tpm: Some(20_000),
                status: None,
                latency: Duration::from_millis(5),
            }
        );
        let plain = spec("sk-b");
        assert_eq!((plain.rpm, plain.tpm, plain.status), (None, None, None));
        assert_eq!(spec("sk-c:status=403").status, Some(403));
    }

    #[test]
    fn bad_specs_are_refused() {
        for text in [
            "",
            ":rpm=1",
            "sk a",
            "sk-a:",
            "sk-a:rpm",
            "sk-a:rpm=-1",
            "sk-a:rpm=1,rpm=2",
            "sk-a:status=500",
            "sk-a:burst=5",
            "sk-a:rpm=1,",
            "sk-a:latency-ms=1,latency-ms=2",
        ] {
            assert!(text.parse::<KeySpec>().is_err(), "{text:?}");
        }
    }

    fn table(specs: &[&str], now: Instant) -> Keys {
        Keys::new(specs.iter().map(|text| spec(text)).collect(), None, now).unwrap()
    }

    #[test]
    fn duplicate_secrets_are_refused() {
        let specs = vec![spec("sk-a"), spec("sk-a:rpm=1")];
        assert!(Keys::new(specs, None, Instant::now()).is_err());
    }

    #[test]
    fn a_refused_request_takes_nothing() {
        let now = Instant::now();
        let keys = table(&["sk-a:rpm=2,tpm=100"], now);
        let id = keys.find(b"sk-a").unwrap();

        let (limits, refusal) = keys.admit(id, 60, now);
        assert_eq!(refusal, None);
        assert_eq!(limits.requests.unwrap().remaining, 1);
        assert_eq!(limits.tokens.unwrap().remaining, 40);

        // Over the tokens: nothing is taken, not even the request.
        let (limits, refusal) = keys.admit(id, 41, now);
        let refusal = refusal.unwrap();
        assert_eq!(
            (refusal.over, refusal.limit, refusal.requested),
            (Over::Tokens, 100, 41)
        );
        // One token refills in 0.6 s at 100 a minute.
        assert_eq!(refusal.retry, Duration::from_millis(600));
        assert!(!refusal.too_large);
        assert_eq!(limits.retry, Some(Duration::from_millis(600)));
        assert_eq!(limits.requests.unwrap().remaining, 1);
        assert_eq!(limits.tokens.unwrap().remaining, 40);

        assert_eq!(keys.admit(id, 40, now).1, None);
        let (limits, refusal) = keys.admit(id, 0, now);
        assert_eq!(refusal.unwrap().over, Over::Requests);
        // A request refills in 30 s at 2 a minute.
        assert_eq!(limits.retry, Some(Duration::from_secs(30)));
    }

    #[test]
    fn the_wait_covers_both_limits() {
        let now = Instant::now();
        let keys = table(&["k:rpm=60,tpm=60"], now);
        let id = keys.find(b"k").unwrap();
        assert_eq!(keys.admit(id, 60, now).1, None);
        // The request fits again in 1 s, its 30 tokens in 30 s.
        let (limits, refusal) = keys.admit(id, 30, now);
        assert_eq!(refusal.unwrap().over, Over::Tokens);
        assert_eq!(limits.retry, Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_request_over_the_limit_never_fits() {
        let now = Instant::now();
        let keys = table(&["k:tpm=10"], now);
        let id = keys.find(b"k").unwrap();
        assert_eq!(keys.admit(id, 4, now).1, None);
        let (limits, refusal) = keys.admit(id, 11, now);
        assert!(refusal.unwrap().too_large);
        // Reported as the time until the bucket is full: 4 tokens at 10 a minute.
        assert_eq!(limits.retry, Some(Duration::from_secs(24)));
    }

    #[test]
    fn stats_log_and_reset() {
        let now = Instant::now();
        let keys = table(&["sk-a:rpm=1", "sk-\"b\""], now);
        let (a, b) = (keys.find(b"sk-a").unwrap(), keys.find(b"sk-\"b\"").unwrap());
        assert_eq!(keys.find(b"sk-c"), None);

        assert_eq!(keys.admit(a, 7, now).1, None);
        keys.record(a, 200, 1000);
        assert!(keys.admit(a, 7, now).1.is_some());
        keys.record(a, 429, 1001);
        keys.record(b, 403, 1002);
        keys.record_unknown();

        let stats = |keys: &Keys| -> Value {
            let mut out = Vec::new();
            keys.write_stats(&mut out);
            serde_json::from_slice(&out).unwrap()
        };
        assert_eq!(
            stats(&keys),
            json!({
                "keys": {
                    "sk-a": {"ok": 1, "limited": 1, "denied": 0, "tokens": 7},
                    "sk-\"b\"": {"ok": 0, "limited": 0, "denied": 1, "tokens": 0},
                },
                "unknown": 1,
                "log": [[1000, "sk-a", 200], [1001, "sk-a", 429], [1002, "sk-\"b\"", 403]],
            })
        );

        keys.reset(now);
        let after = stats(&keys);
        assert_eq!(after["unknown"], 0);
        assert_eq!(after["log"], json!([]));
        assert_eq!(after["keys"]["sk-a"]["ok"], 0);
        assert_eq!(keys.admit(a, 7, now).1, None, "the bucket is full again");
    }

    #[test]
    fn the_log_keeps_the_newest() {
        let now = Instant::now();
        let keys = table(&["k"], now);
        let id = keys.find(b"k").unwrap();
        for ms in 0..LOG_CAPACITY as u64 + 5 {
            keys.record(id, 200, ms);
        }
        let mut out = Vec::new();
        keys.write_stats(&mut out);
        let stats: Value = serde_json::from_slice(&out).unwrap();
        let log = stats["log"].as_array().unwrap();
        assert_eq!(log.len(), LOG_CAPACITY);
        assert_eq!(log[0][0], 5);
        assert_eq!(log[LOG_CAPACITY - 1][0], LOG_CAPACITY as u64 + 4);
    }
}

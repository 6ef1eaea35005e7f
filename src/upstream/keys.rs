//! The provider key pool of an upstream: which key carries the next request, how each key is
//! paced below the limits its provider announced, how it cools down after a 429 and comes
//! back, and when the next key will be ready if none is.
//!
//! # Shared by every shard
//!
//! A provider's limits belong to the key, not to a core: a key allowed 600 requests a minute
//! has 600 for the whole gateway. Splitting that into fixed per-shard shares would strand
//! capacity, because client keys are owned by shards and one busy client key puts all of its
//! traffic on one shard. So, unlike the client key counters, a pool is shared by all shards
//! and its per-key state lives in atomics: a cooldown set by one shard is seen by the others
//! at their next pick, without any message, and pacing counts every shard's requests
//! exactly. The cost is a few uncontended atomic operations per upstream attempt, against an
//! upstream call that takes milliseconds to minutes.
//!
//! # Time
//!
//! Times are wall-clock nanoseconds since the Unix epoch, read from the shard's
//! [`Clock`](crate::quota::Clock), so that cooldowns can be persisted and mean the same after
//! a restart.
//!
//! # Pacing
//!
//! A known per-minute limit (`rpm`, `tpm`, configured or announced by the provider, the lower
//! of the two) is enforced with GCRA on a theoretical arrival time: a key holds at most a
//! minute's worth, refilled continuously, which is how providers count. What the provider
//! last said is left (`remaining` with its reset) is honoured too: a key with no requests
//! left, or fewer tokens left than a request may use, waits for the reset.

use std::sync::atomic::{
    AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed,
};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::learn::{Learned, Window};
use crate::config::{self, Provider, Strategy};
use crate::quota::SECOND;

/// Nanoseconds in a minute: the window of every per-minute limit.
const MINUTE: u64 = 60 * SECOND;

/// How long a key that came back from a cooldown and is probing (one request in flight
/// until one succeeds) is counted as unavailable, when computing the soonest ready time.
const PROBE_WAIT: u64 = SECOND;

/// The longest cooldown a restored state may hold: a day, as for any stated wait.
const MAX_COOLDOWN: u64 = 86_400 * SECOND;

/// How many times a pick is retried when another shard took the chosen key's last capacity
/// between the look and the take.
const PICK_RACES: usize = 4;

/// The disabling status of a key the operator took out of use (the others are the
/// provider's 401 or 403).
pub const DISABLED_BY_OPERATOR: u16 = 1;

/// One key's state as a reader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// May be chosen now, as far as cooldowns go (pacing may still hold it back).
    Ready,
    /// Resting after a 429 until this time (ns since the epoch).
    Cooling(u64),
    /// Refused by the provider with this status (401 or 403), or taken out of use by the
    /// operator ([`DISABLED_BY_OPERATOR`]); out of use until enabled again.
    Disabled(u16),
}

/// Why no key can take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    /// When the soonest key can take it (ns since the epoch); `None` when every key is
    /// disabled and none will come back on its own.
    pub ready_at: Option<u64>,
}

/// What a key's response was, as far as the key is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The provider accepted the key (any status but 401, 403 and 429).
    Accepted,
    /// 429: the key is over a limit; it cools down.
    Throttled,
    /// 401 or 403: the provider refused the key itself; it is disabled.
    Refused(u16),
}

impl Verdict {
    /// The verdict of a response status.
    pub fn of(status: u16) -> Verdict {
        match status {
            429 => Verdict::Throttled,
            401 | 403 => Verdict::Refused(status),
            _ => Verdict::Accepted,
        }
    }
}

/// A key's persisted state: what must survive a restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRecord {
    /// The key's id in the config.
    pub id: String,
    /// The first 8 bytes of the SHA-256 of its secret, in hex: a key whose secret changed
    /// starts afresh.
    pub fingerprint: String,
    /// End of its cooldown, ns since the epoch; 0 for none.
    pub cool_until: u64,
    /// 429s in a row without a stated wait.
    pub strikes: u32,
    /// The status that disabled it, or 0.
    pub disabled: u16,
}

/// An upstream's provider keys, shared by all shards.
pub struct KeyPool {
    /// The upstream's name, for logs.
    pub upstream: Box<str>,
    keys: Box<[PoolKey]>,
    strategy: Strategy,
    /// Header that carries a key, as the provider expects it.
    header_name: Box<[u8]>,
    cooldown_initial: u64,
    cooldown_max: u64,
    /// Bumped at every change of a persisted state, so a writer knows when to save.
    version: AtomicU64,
    /// State of the jitter generator.
    seed: AtomicU64,
    /// Requests waiting for a key to come back (`key_wait`).
    waiting: AtomicUsize,
}

/// A request's place among those waiting for a key; given back when dropped.
pub struct WaitTurn<'a> {
    pool: &'a KeyPool,
}

impl Drop for WaitTurn<'_> {
    fn drop(&mut self) {
        self.pool.waiting.fetch_sub(1, Relaxed);
    }
}

/// One provider key and its state.
pub struct PoolKey {
    /// The key's id in the config; safe to log.
    pub id: Box<str>,
    /// The whole header value, e.g. `Bearer sk-…`. Never logged.
    header_value: Box<[u8]>,
    fingerprint: String,
    weight: u64,
    rpm: Option<u64>,
    tpm: Option<u64>,
    state: KeyState,
}

/// Per-key state, changed by any shard.
#[derive(Default)]
struct KeyState {
    /// Status that disabled the key, 0 while enabled.
    disabled: AtomicU16,
    cool_until: AtomicU64,
    strikes: AtomicU32,
    /// Back from a cooldown: one request at a time until one is accepted.
    probing: AtomicBool,
    in_flight: AtomicU32,
    request_tat: AtomicU64,
    token_tat: AtomicU64,
    /// Per-minute limits the provider announced; 0 when unknown.
    learned_rpm: AtomicU64,
    learned_tpm: AtomicU64,
    /// What the provider last said is left, until when; `u64::MAX` when unknown.
    requests_left: AtomicU64,
    requests_reset: AtomicU64,
    tokens_left: AtomicU64,
    tokens_reset: AtomicU64,
    /// What the provider last said is left of each window, whatever paces the key, and
    /// when that window is full again (0: not said); for metrics. `u64::MAX`: never said.
    requests_announced_left: AtomicU64,
    requests_full_at: AtomicU64,
    tokens_announced_left: AtomicU64,
    tokens_full_at: AtomicU64,
    sent: AtomicU64,
    throttled: AtomicU64,
    refused: AtomicU64,
}

/// A shard's own selection state for one pool: the smooth weighted round-robin counters and
/// a rotating start for ties. Not shared, so plain cells.
pub struct Picker {
    current: Box<[std::cell::Cell<i64>]>,
    cursor: std::cell::Cell<usize>,
}

impl Picker {
    /// Selection state for `pool`.
    pub fn new(pool: &KeyPool) -> Picker {
        Picker {
            current: (0..pool.keys.len())
                .map(|_| std::cell::Cell::new(0))
                .collect(),
            cursor: std::cell::Cell::new(0),
        }
    }
}

/// A key chosen for one attempt. Holds its place in the key's in-flight count until dropped.
pub struct Lease<'a> {
    pool: &'a KeyPool,
    index: usize,
    /// Tokens charged to the key's token pacing for this attempt.
    tokens: u64,
}

impl KeyPool {
    /// The pool of `upstream`'s keys, all ready; `None` when it has none.
    pub fn new(upstream: &config::Upstream) -> Option<KeyPool> {
        if upstream.keys.is_empty() {
            return None;
        }
        let (header_name, scheme): (&[u8], &[u8]) = match upstream.provider {
            Provider::OpenAi => (b"Authorization", b"Bearer "),
            Provider::Anthropic => (b"x-api-key", b""),
            Provider::Gemini => (b"x-goog-api-key", b""),
            Provider::Http => match upstream.key_header.as_deref() {
                None | Some("authorization") => (b"Authorization", b"Bearer "),
                Some(other) => (other.as_bytes(), b""),
            },
        };
        let keys = upstream
            .keys
            .iter()
            .map(|key| {
                let secret = key.secret.expose().as_bytes();
                let mut header_value = Vec::with_capacity(scheme.len() + secret.len());
                header_value.extend_from_slice(scheme);
                header_value.extend_from_slice(secret);
                PoolKey {
                    id: key.id.as_str().into(),
                    header_value: header_value.into(),
                    fingerprint: hex::encode(&Sha256::digest(secret)[..8]),
                    weight: u64::from(key.weight),
                    rpm: key.rpm,
                    tpm: key.tpm,
                    state: KeyState {
                        requests_left: AtomicU64::new(u64::MAX),
                        tokens_left: AtomicU64::new(u64::MAX),
                        requests_announced_left: AtomicU64::new(u64::MAX),
                        tokens_announced_left: AtomicU64::new(u64::MAX),
                        ..KeyState::default()
                    },
                }
            })
            .collect();
        let mut seed = [0u8; 8];
        // Jitter needs no strong randomness; a failed read leaves a fixed seed.
        let _ = getrandom::getrandom(&mut seed);
        Some(KeyPool {
            upstream: upstream.name.as_str().into(),
            keys,
            strategy: upstream.strategy,
            header_name: header_name.into(),
            cooldown_initial: nanos(upstream.cooldown_initial),
            cooldown_max: nanos(upstream.cooldown_max),
            version: AtomicU64::new(0),
            seed: AtomicU64::new(u64::from_le_bytes(seed) | 1),
            waiting: AtomicUsize::new(0),
        })
    }

    /// The keys, in config order.
    pub fn keys(&self) -> &[PoolKey] {
        &self.keys
    }

    /// Whether any key's tokens are paced, so requests need a token estimate.
    pub fn counts_tokens(&self) -> bool {
        self.keys.iter().any(|key| {
            key.tpm.is_some()
                || key.state.learned_tpm.load(Relaxed) != 0
                || key.state.tokens_left.load(Relaxed) != u64::MAX
        })
    }

    /// Chooses a key for a request that may use `tokens` tokens, other than those in
    /// `avoid` (keys this request was already refused with), and charges it to the key's
    /// pacing; or says when the soonest key will be able to take it.
    pub fn acquire(
        &self,
        picker: &Picker,
        now: u64,
        tokens: u64,
        avoid: &[usize],
    ) -> Result<Lease<'_>, Exhausted> {
        for _ in 0..PICK_RACES {
            let index = self.choose(picker, now, tokens, avoid)?;
            if self.take(index, now, tokens) {
                let state = &self.keys[index].state;
                state.in_flight.fetch_add(1, Relaxed);
                state.sent.fetch_add(1, Relaxed);
                return Ok(Lease {
                    pool: self,
                    index,
                    tokens,
                });
            }
        }
        // Other shards keep taking what this one sees as free; what is left is their share.
        Err(Exhausted {
            ready_at: self.soonest(now, tokens, avoid),
        })
    }

    /// The ready key the strategy prefers, or when the soonest will be ready.
    fn choose(
        &self,
        picker: &Picker,
        now: u64,
        tokens: u64,
        avoid: &[usize],
    ) -> Result<usize, Exhausted> {
        let count = self.keys.len();
        let start = picker.cursor.get();
        picker.cursor.set(start.wrapping_add(1));
        let ready = |index: usize| {
            !avoid.contains(&index)
                && self
                    .ready_at(index, now, tokens)
                    .is_some_and(|at| at <= now)
        };

        let chosen = match self.strategy {
            Strategy::RoundRobin => {
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for index in (0..count).filter(|&i| ready(i)) {
                    let weight = self.keys[index].weight as i64;
                    let current = &picker.current[index];
                    current.set(current.get() + weight);
                    total += weight;
                    if best.is_none_or(|b| current.get() > picker.current[b].get()) {
                        best = Some(index);
                    }
                }
                if let Some(best) = best {
                    let current = &picker.current[best];
                    current.set(current.get() - total);
                }
                best
            }
            Strategy::LeastLoaded => (0..count)
                .map(|step| (start + step) % count)
                .filter(|&i| ready(i))
                .min_by(|&a, &b| {
                    let load = |i: usize| u64::from(self.keys[i].state.in_flight.load(Relaxed));
                    // in_flight(a) / weight(a) against in_flight(b) / weight(b)
                    (load(a) * self.keys[b].weight).cmp(&(load(b) * self.keys[a].weight))
                }),
            Strategy::QuotaAware => {
                let mut best: Option<(usize, f64)> = None;
                for index in (0..count).map(|step| (start + step) % count) {
                    if !ready(index) {
                        continue;
                    }
                    let score = self.headroom(index, now) * self.keys[index].weight as f64;
                    let load = self.keys[index].state.in_flight.load(Relaxed);
                    let better = match best {
                        None => true,
                        Some((b, best_score)) => {
                            score > best_score
                                || (score == best_score
                                    && load < self.keys[b].state.in_flight.load(Relaxed))
                        }
                    };
                    if better {
                        best = Some((index, score));
                    }
                }
                best.map(|(index, _)| index)
            }
        };
        chosen.ok_or(Exhausted {
            ready_at: self.soonest(now, tokens, avoid),
        })
    }

    /// When key `index` can take a request of `tokens` tokens; `None` while it is disabled.
    fn ready_at(&self, index: usize, now: u64, tokens: u64) -> Option<u64> {
        let key = &self.keys[index];
        let state = &key.state;
        if state.disabled.load(Relaxed) != 0 {
            return None;
        }
        let mut at = state.cool_until.load(Relaxed);
        if state.probing.load(Relaxed) && state.in_flight.load(Relaxed) > 0 {
            at = at.max(now + PROBE_WAIT);
        }
        if state.requests_left.load(Relaxed) == 0 {
            at = at.max(state.requests_reset.load(Relaxed));
        }
        if state.tokens_left.load(Relaxed) < tokens {
            at = at.max(state.tokens_reset.load(Relaxed));
        }
        if let Some(rpm) = key.rpm_limit() {
            at = at.max(conforms_at(state.request_tat.load(Relaxed), 1, rpm));
        }
        if let Some(tpm) = key.tpm_limit() {
            at = at.max(conforms_at(state.token_tat.load(Relaxed), tokens, tpm));
        }
        Some(at)
    }

    /// The soonest any key can take a request of `tokens` tokens.
    fn soonest(&self, now: u64, tokens: u64, avoid: &[usize]) -> Option<u64> {
        (0..self.keys.len())
            .filter(|index| !avoid.contains(index))
            .filter_map(|index| self.ready_at(index, now, tokens))
            .min()
            .map(|at| at.max(now))
    }

    /// Share of its known limits key `index` has left now, from 0 to 1; 1 when none is
    /// known.
    fn headroom(&self, index: usize, now: u64) -> f64 {
        let key = &self.keys[index];
        let state = &key.state;
        let mut headroom: f64 = 1.0;
        let mut gcra = |tat: &AtomicU64, limit: Option<u64>| {
            if limit.is_some() {
                let used = tat.load(Relaxed).saturating_sub(now).min(MINUTE);
                headroom = headroom.min((MINUTE - used) as f64 / MINUTE as f64);
            }
        };
        gcra(&state.request_tat, key.rpm_limit());
        gcra(&state.token_tat, key.tpm_limit());
        let mut announced = |left: &AtomicU64, reset: &AtomicU64, limit: Option<u64>| {
            let left = left.load(Relaxed);
            if let Some(limit) = limit {
                if left != u64::MAX && reset.load(Relaxed) > now {
                    headroom = headroom.min(left.min(limit) as f64 / limit as f64);
                }
            }
        };
        announced(&state.requests_left, &state.requests_reset, key.rpm_limit());
        announced(&state.tokens_left, &state.tokens_reset, key.tpm_limit());
        headroom
    }

    /// Charges one request of `tokens` tokens to key `index`, unless another shard took what
    /// it needs first.
    fn take(&self, index: usize, now: u64, tokens: u64) -> bool {
        let key = &self.keys[index];
        let state = &key.state;
        if let Some(rpm) = key.rpm_limit() {
            if !gcra_take(&state.request_tat, now, 1, rpm) {
                return false;
            }
        }
        if let Some(tpm) = key.tpm_limit() {
            if !gcra_take(&state.token_tat, now, tokens, tpm) {
                if let Some(rpm) = key.rpm_limit() {
                    gcra_give_back(&state.request_tat, 1, rpm);
                }
                return false;
            }
        }
        // What the provider said is left goes down with each request, until it says again.
        let _ = state
            .requests_left
            .fetch_update(Relaxed, Relaxed, |left| match left {
                u64::MAX => None,
                left => Some(left.saturating_sub(1)),
            });
        let _ = state
            .tokens_left
            .fetch_update(Relaxed, Relaxed, |left| match left {
                u64::MAX => None,
                left => Some(left.saturating_sub(tokens)),
            });
        true
    }

    /// Each key's status at `now`.
    pub fn status(&self, index: usize, now: u64) -> KeyStatus {
        let state = &self.keys[index].state;
        match state.disabled.load(Relaxed) {
            0 => match state.cool_until.load(Relaxed) {
                until if until > now => KeyStatus::Cooling(until),
                _ => KeyStatus::Ready,
            },
            status => KeyStatus::Disabled(status),
        }
    }

    /// Puts a disabled key back in use (a reload or the admin API). Returns whether it was
    /// disabled.
    pub fn enable(&self, index: usize) -> bool {
        let state = &self.keys[index].state;
        let was = state.disabled.swap(0, Relaxed) != 0;
        if was {
            state.probing.store(true, Relaxed);
            self.version.fetch_add(1, Relaxed);
        }
        was
    }

    /// Disables a key the provider refused (`status`, 401 or 403) once that refusal is known
    /// to be about the key: another key was accepted for the same request.
    pub fn confirm_refused(&self, index: usize, status: u16) {
        self.keys[index].state.disabled.store(status, Relaxed);
        self.version.fetch_add(1, Relaxed);
    }

    /// A place among the requests waiting for a key, while fewer wait than there are keys:
    /// when the soonest key comes back it serves one of them, so a longer queue would only
    /// hold clients until they get the same 429 later.
    pub fn wait_turn(&self) -> Option<WaitTurn<'_>> {
        let waiting = self.waiting.fetch_add(1, Relaxed);
        let turn = WaitTurn { pool: self };
        (waiting < self.keys.len()).then_some(turn)
    }

    /// Takes a key out of use by the operator's hand ([`DISABLED_BY_OPERATOR`]) until it is
    /// enabled again. Returns whether it was in use.
    pub fn disable(&self, index: usize) -> bool {
        let state = &self.keys[index].state;
        let was = state.disabled.swap(DISABLED_BY_OPERATOR, Relaxed) == 0;
        self.version.fetch_add(1, Relaxed);
        was
    }

    /// Position of the key called `id`.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.keys.iter().position(|key| &*key.id == id)
    }

    /// A number that changes whenever a persisted state does.
    pub fn version(&self) -> u64 {
        self.version.load(Relaxed)
    }

    /// The persisted state of every key.
    pub fn records(&self) -> Vec<KeyRecord> {
        self.keys
            .iter()
            .map(|key| KeyRecord {
                id: key.id.to_string(),
                fingerprint: key.fingerprint.clone(),
                cool_until: key.state.cool_until.load(Relaxed),
                strikes: key.state.strikes.load(Relaxed),
                disabled: key.state.disabled.load(Relaxed),
            })
            .collect()
    }

    /// Takes back persisted states: a record applies to the key with its id and the same
    /// secret. Cooldowns already over are ignored, and none lasts more than a day from `now`
    /// (no provider asks for longer); a disabling status other than 401, 403 or the
    /// operator's is ignored. Returns the ids of the keys restored disabled.
    pub fn restore(&self, records: &[KeyRecord], now: u64) -> Vec<&str> {
        let mut disabled = Vec::new();
        for record in records {
            let Some(key) = self
                .keys
                .iter()
                .find(|key| *key.id == *record.id && key.fingerprint == record.fingerprint)
            else {
                continue;
            };
            let state = &key.state;
            if matches!(record.disabled, DISABLED_BY_OPERATOR | 401 | 403) {
                state.disabled.store(record.disabled, Relaxed);
                disabled.push(&*key.id);
            }
            if record.cool_until > now {
                let until = record.cool_until.min(now.saturating_add(MAX_COOLDOWN));
                state.cool_until.store(until, Relaxed);
                state.probing.store(true, Relaxed);
                key.hold_back_until(until);
            }
            state.strikes.store(record.strikes.min(32), Relaxed);
        }
        disabled
    }

    /// Takes over the state of `old`'s keys (same id and secret): what [`KeyPool::restore`]
    /// restores, and what a restart would lose: pacing, what the provider announced, and
    /// the counters. For a pool rebuilt because its upstream changed (a reload, an added key).
    pub fn take_over(&self, old: &KeyPool, now: u64) {
        self.restore(&old.records(), now);
        for key in self.keys.iter() {
            let Some(before) = old
                .keys
                .iter()
                .find(|k| k.id == key.id && k.fingerprint == key.fingerprint)
            else {
                continue;
            };
            let (to, from) = (&key.state, &before.state);
            let pairs = [
                (&to.request_tat, &from.request_tat),
                (&to.token_tat, &from.token_tat),
                (&to.learned_rpm, &from.learned_rpm),
                (&to.learned_tpm, &from.learned_tpm),
                (&to.requests_left, &from.requests_left),
                (&to.requests_reset, &from.requests_reset),
                (&to.tokens_left, &from.tokens_left),
                (&to.tokens_reset, &from.tokens_reset),
                (&to.requests_announced_left, &from.requests_announced_left),
                (&to.requests_full_at, &from.requests_full_at),
                (&to.tokens_announced_left, &from.tokens_announced_left),
                (&to.tokens_full_at, &from.tokens_full_at),
                (&to.sent, &from.sent),
                (&to.throttled, &from.throttled),
                (&to.refused, &from.refused),
            ];
            for (to, from) in pairs {
                to.store(from.load(Relaxed), Relaxed);
            }
        }
    }

    /// The next jitter factor, uniform in [0.5, 1).
    fn jitter(&self) -> f64 {
        // splitmix64: plenty for spreading retries apart.
        let mut z = self
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        0.5 + (z >> 11) as f64 / (1u64 << 53) as f64 / 2.0
    }
}

impl PoolKey {
    /// The lower of the configured and the announced requests per minute.
    pub fn rpm_limit(&self) -> Option<u64> {
        lower(self.rpm, self.state.learned_rpm.load(Relaxed))
    }

    /// The lower of the configured and the announced tokens per minute.
    pub fn tpm_limit(&self) -> Option<u64> {
        lower(self.tpm, self.state.learned_tpm.load(Relaxed))
    }

    /// The requests the provider last said the key has left in its window, as of `now`;
    /// once that window's stated reset has passed, the whole announced limit. `None` when
    /// the provider never said, or its window reset and it announced no limit.
    pub fn requests_remaining(&self, now: u64) -> Option<u64> {
        let state = &self.state;
        let (left, full_at) = (&state.requests_announced_left, &state.requests_full_at);
        remaining(left, full_at, &state.learned_rpm, now)
    }

    /// The tokens the provider last said the key has left, as
    /// [`PoolKey::requests_remaining`] says requests.
    pub fn tokens_remaining(&self, now: u64) -> Option<u64> {
        let state = &self.state;
        let (left, full_at) = (&state.tokens_announced_left, &state.tokens_full_at);
        remaining(left, full_at, &state.learned_tpm, now)
    }

    /// Requests (and, without a stated wait, retries) sent with this key.
    pub fn sent(&self) -> u64 {
        self.state.sent.load(Relaxed)
    }

    /// 429s this key received.
    pub fn throttled(&self) -> u64 {
        self.state.throttled.load(Relaxed)
    }

    /// 401s and 403s this key received.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Relaxed)
    }

    /// After a cooldown the key starts with room for one request, refilling at its pace:
    /// no burst at the moment it comes back.
    fn hold_back_until(&self, until: u64) {
        if let Some(rpm) = self.rpm_limit() {
            let tat = until.saturating_add(MINUTE - interval(1, rpm));
            self.state.request_tat.fetch_max(tat, Relaxed);
        }
    }
}

impl<'a> Lease<'a> {
    /// The key's id, for logs.
    pub fn id(&self) -> &'a str {
        &self.pool.keys[self.index].id
    }

    /// The key's position in its pool.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The header field that carries the key upstream, name and value.
    pub fn header(&self) -> (&'a [u8], &'a [u8]) {
        (
            &self.pool.header_name,
            &self.pool.keys[self.index].header_value,
        )
    }

    /// Learns from a response to this attempt: what the provider announced, and what its
    /// status says about the key. For a 429, returns how long the key now rests.
    pub fn report(&self, status: u16, learned: &Learned, now: u64) -> Option<Duration> {
        let pool = self.pool;
        let key = &pool.keys[self.index];
        let state = &key.state;
        let requests = Dimension {
            configured: key.rpm,
            announced: &state.learned_rpm,
            tat: &state.request_tat,
            left: &state.requests_left,
            reset: &state.requests_reset,
            announced_left: &state.requests_announced_left,
            full_at: &state.requests_full_at,
        };
        requests.learn(learned.requests, now);
        let tokens = Dimension {
            configured: key.tpm,
            announced: &state.learned_tpm,
            tat: &state.token_tat,
            left: &state.tokens_left,
            reset: &state.tokens_reset,
            announced_left: &state.tokens_announced_left,
            full_at: &state.tokens_full_at,
        };
        tokens.learn(learned.tokens, now);
        match Verdict::of(status) {
            Verdict::Accepted => {
                state.probing.store(false, Relaxed);
                if state.strikes.swap(0, Relaxed) != 0 {
                    pool.version.fetch_add(1, Relaxed);
                }
                None
            }
            Verdict::Throttled => Some(self.cool(learned, now)),
            Verdict::Refused(_) => {
                state.refused.fetch_add(1, Relaxed);
                None
            }
        }
    }

    /// Cools the key down after a 429, for as long as the provider said, or by exponential
    /// backoff with jitter when it did not. A longer cooldown already running stands.
    fn cool(&self, learned: &Learned, now: u64) -> Duration {
        let pool = self.pool;
        let key = &pool.keys[self.index];
        let state = &key.state;
        state.throttled.fetch_add(1, Relaxed);
        let strikes = state.strikes.load(Relaxed);
        // "Wait zero" says nothing about how long the key needs: back off as if unsaid.
        let stated = learned.retry_after.map(nanos).or_else(|| {
            let exhausted = |window: Option<Window>| {
                window
                    .filter(|w| w.remaining == Some(0))
                    .and_then(|w| w.reset_in)
                    .map(nanos)
            };
            exhausted(learned.requests).max(exhausted(learned.tokens))
        });
        let stated = stated.filter(|&rest| rest > 0);
        let rest = match stated {
            Some(rest) => {
                state.strikes.store(0, Relaxed);
                rest
            }
            None => {
                state.strikes.store(strikes.saturating_add(1), Relaxed);
                let doubled = pool
                    .cooldown_initial
                    .saturating_mul(1u64 << strikes.min(32))
                    .min(pool.cooldown_max);
                (doubled as f64 * pool.jitter()) as u64
            }
        };
        let until = now.saturating_add(rest);
        let previous = state.cool_until.fetch_max(until, Relaxed);
        state.probing.store(true, Relaxed);
        key.hold_back_until(until.max(previous));
        pool.version.fetch_add(1, Relaxed);
        Duration::from_nanos(until.max(previous) - now)
    }

    /// Settles the token charge against what the response reported using.
    pub fn used_tokens(&self, used: u64) {
        let key = &self.pool.keys[self.index];
        let Some(tpm) = key.tpm_limit() else { return };
        let tat = &key.state.token_tat;
        if used < self.tokens {
            gcra_give_back(tat, self.tokens - used, tpm);
        } else if used > self.tokens {
            tat.fetch_add(interval(used - self.tokens, tpm), Relaxed);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.pool.keys[self.index]
            .state
            .in_flight
            .fetch_sub(1, Relaxed);
    }
}

/// One pacing dimension of a key (requests or tokens): its configured limit and its state.
struct Dimension<'k> {
    configured: Option<u64>,
    announced: &'k AtomicU64,
    tat: &'k AtomicU64,
    left: &'k AtomicU64,
    reset: &'k AtomicU64,
    /// What the provider said is left and when the window is full, kept for metrics only.
    announced_left: &'k AtomicU64,
    full_at: &'k AtomicU64,
}

impl Dimension<'_> {
    /// Records what a provider announced for this window. With a limit known, what the
    /// provider says is used moves the pacing state forward (never back: requests in flight
    /// may not be counted by the provider yet); without one, what is left and when it resets
    /// are kept to wait on.
    fn learn(&self, window: Option<Window>, now: u64) {
        let Some(window) = window else { return };
        if let Some(announced) = window.limit.filter(|&l| l > 0) {
            self.announced.store(announced, Relaxed);
        }
        let Some(remaining) = window.remaining else {
            return;
        };
        let full_at = window
            .reset_in
            .map_or(0, |reset_in| now.saturating_add(nanos(reset_in)));
        self.announced_left.store(remaining, Relaxed);
        self.full_at.store(full_at, Relaxed);
        let limit = lower(self.configured, self.announced.load(Relaxed));
        match (limit, window.limit) {
            (Some(limit), Some(announced)) => {
                let used = announced.saturating_sub(remaining);
                let tat = now.saturating_add(interval(used, limit).min(MINUTE));
                self.tat.fetch_max(tat, Relaxed);
            }
            _ => {
                if let Some(reset_in) = window.reset_in {
                    self.left.store(remaining, Relaxed);
                    self.reset
                        .store(now.saturating_add(nanos(reset_in)), Relaxed);
                }
            }
        }
    }
}

/// What a window has left at `now`: what was announced, or, once the window's stated reset
/// (`full_at`) has passed, the announced limit (0: none).
fn remaining(left: &AtomicU64, full_at: &AtomicU64, limit: &AtomicU64, now: u64) -> Option<u64> {
    let left = left.load(Relaxed);
    if left == u64::MAX {
        return None;
    }
    match full_at.load(Relaxed) {
        at if at != 0 && at <= now => Some(limit.load(Relaxed)).filter(|&limit| limit != 0),
        _ => Some(left),
    }
}

/// The lower of a configured limit and an announced one (0: none announced).
fn lower(configured: Option<u64>, announced: u64) -> Option<u64> {
    match (configured, announced) {
        (Some(c), 0) => Some(c),
        (Some(c), a) => Some(c.min(a)),
        (None, 0) => None,
        (None, a) => Some(a),
    }
}

/// The time `cost` units take under a per-minute `limit`, at most a minute: a request larger
/// than a whole minute's allowance still fits an idle key.
fn interval(cost: u64, limit: u64) -> u64 {
    let per_unit = MINUTE / limit.max(1);
    cost.saturating_mul(per_unit.max(1)).min(MINUTE)
}

/// When a request of `cost` conforms to a per-minute `limit`, given the theoretical arrival
/// time `tat`: when `max(tat, t) + cost ≤ t + MINUTE`.
fn conforms_at(tat: u64, cost: u64, limit: u64) -> u64 {
    (tat + interval(cost, limit)).saturating_sub(MINUTE)
}

/// Advances `tat` by `cost` if the request conforms at `now`.
fn gcra_take(tat: &AtomicU64, now: u64, cost: u64, limit: u64) -> bool {
    let step = interval(cost, limit);
    tat.fetch_update(Relaxed, Relaxed, |old| {
        let new = old.max(now) + step;
        (new <= now + MINUTE).then_some(new)
    })
    .is_ok()
}

/// Gives back `cost` charged to `tat`.
fn gcra_give_back(tat: &AtomicU64, cost: u64, limit: u64) {
    let step = interval(cost, limit);
    let _ = tat.fetch_update(Relaxed, Relaxed, |old| Some(old.saturating_sub(step)));
}

fn nanos(duration: Duration) -> u64 {
    duration.as_nanos().min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const NOW: u64 = 1_800_000_000 * SECOND;

    /// A pool of an `openai` upstream with `extra` upstream settings and one key per entry
    /// of `keys`, each the rest of an `[[upstream.key]]` table.
    fn pool_with(extra: &str, keys: &[&str]) -> KeyPool {
        let mut text = format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\n[[upstream]]\nname = \"up\"\n\
             provider = \"openai\"\nendpoints = [\"http://127.0.0.1:9\"]\n{extra}\n"
        );
        for (i, key) in keys.iter().enumerate() {
            text += &format!("[[upstream.key]]\nid = \"k{i}\"\nsecret = \"sk-{i}\"\n{key}\n");
        }
        let config = Config::parse(&text, Path::new("t.toml"), Path::new("/")).unwrap();
        KeyPool::new(&config.upstreams[0]).unwrap()
    }

    fn pool(keys: &[&str]) -> KeyPool {
        pool_with("", keys)
    }

    fn pick(pool: &KeyPool, picker: &Picker, now: u64, tokens: u64) -> Result<usize, Exhausted> {
        pool.acquire(picker, now, tokens, &[])
            .map(|lease| lease.index())
    }

    fn retry_after(secs: u64) -> Learned {
        Learned {
            retry_after: Some(Duration::from_secs(secs)),
            ..Learned::default()
        }
    }

    #[test]
    fn round_robin_follows_the_weights_smoothly() {
        let pool = pool_with(
            "strategy = \"round_robin\"",
            &["weight = 2", "", "weight = 3"],
        );
        let picker = Picker::new(&pool);
        let picks: Vec<usize> = (0..600)
            .map(|_| pick(&pool, &picker, NOW, 0).unwrap())
            .collect();
        let count = |k| picks.iter().filter(|&&p| p == k).count();
        assert_eq!((count(0), count(1), count(2)), (200, 100, 300));
        // Smooth: the heaviest key never runs three times in a row.
        assert!(picks
            .windows(3)
            .all(|w| !(w[0] == 2 && w[1] == 2 && w[2] == 2)));
    }

    #[test]
    fn least_loaded_takes_the_key_with_fewest_in_flight_per_weight() {
        let pool = pool_with("strategy = \"least_loaded\"", &["", "weight = 2"]);
        let picker = Picker::new(&pool);
        let first = pool.acquire(&picker, NOW, 0, &[]).unwrap();
        let second = pool.acquire(&picker, NOW, 0, &[]).unwrap();
        assert_ne!(first.index(), second.index());
        // k0 has 1 in flight at weight 1, k1 has 1 at weight 2: k1 is less loaded.
        let third = pool.acquire(&picker, NOW, 0, &[]).unwrap();
        assert_eq!(third.index(), 1);
        drop((first, second, third));
        assert!(pool
            .keys
            .iter()
            .all(|k| k.state.in_flight.load(Relaxed) == 0));
    }

    #[test]
    fn quota_aware_prefers_the_key_with_most_headroom() {
        let pool = pool(&["rpm = 10", "rpm = 10"]);
        let picker = Picker::new(&pool);
        // Use k0 three times directly, k1 once: k1 has more room left.
        for _ in 0..3 {
            assert!(pool.take(0, NOW, 0));
        }
        assert!(pool.take(1, NOW, 0));
        assert_eq!(pick(&pool, &picker, NOW, 0), Ok(1));
        assert_eq!(pick(&pool, &picker, NOW, 0), Ok(1));
        // Now both have used three: either may go, and the next goes to the other.
        let a = pick(&pool, &picker, NOW, 0).unwrap();
        let b = pick(&pool, &picker, NOW, 0).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn requests_per_minute_pace_a_key() {
        let pool = pool(&["rpm = 2"]);
        let picker = Picker::new(&pool);
        assert!(pick(&pool, &picker, NOW, 0).is_ok());
        assert!(pick(&pool, &picker, NOW, 0).is_ok());
        // A third request fits once half a minute has refilled one.
        let refused = pick(&pool, &picker, NOW, 0).unwrap_err();
        assert_eq!(refused.ready_at, Some(NOW + 30 * SECOND));
        assert!(pick(&pool, &picker, NOW + 30 * SECOND - 1, 0).is_err());
        assert!(pick(&pool, &picker, NOW + 30 * SECOND, 0).is_ok());
    }

    #[test]
    fn tokens_per_minute_pace_a_key_and_settle_to_usage() {
        let pool = pool(&["tpm = 1000"]);
        let picker = Picker::new(&pool);
        let lease = pool.acquire(&picker, NOW, 600, &[]).unwrap();
        let refused = pick(&pool, &picker, NOW, 600).unwrap_err();
        // 200 more tokens must refill: 200 * 60 s / 1000 = 12 s.
        assert_eq!(refused.ready_at, Some(NOW + 12 * SECOND));
        // The first request used only 100: 500 come back, and 600 fit again.
        lease.used_tokens(100);
        assert!(pick(&pool, &picker, NOW, 600).is_ok());
        assert!(pool.counts_tokens());
    }

    #[test]
    fn a_request_larger_than_a_minute_of_tokens_still_fits_an_idle_key() {
        let pool = pool(&["tpm = 100"]);
        let picker = Picker::new(&pool);
        assert!(pick(&pool, &picker, NOW, 5_000).is_ok());
        assert_eq!(
            pick(&pool, &picker, NOW, 5_000).unwrap_err().ready_at,
            Some(NOW + MINUTE)
        );
    }

    #[test]
    fn a_throttled_key_rests_as_long_as_told_and_others_take_over() {
        let pool = pool(&["", ""]);
        let picker = Picker::new(&pool);
        let lease = pool.acquire(&picker, NOW, 0, &[]).unwrap();
        let cooled = lease.index();
        assert_eq!(
            lease.report(429, &retry_after(5), NOW),
            Some(Duration::from_secs(5))
        );
        drop(lease);
        assert_eq!(
            pool.status(cooled, NOW),
            KeyStatus::Cooling(NOW + 5 * SECOND)
        );
        // A second picker stands for another shard: it sees the cooldown at once.
        let other_shard = Picker::new(&pool);
        for picker in [&picker, &other_shard] {
            for _ in 0..10 {
                assert_ne!(pick(&pool, picker, NOW + SECOND, 0).unwrap(), cooled);
            }
        }
        // Back when the rest ends, one request at a time until one succeeds.
        let later = NOW + 5 * SECOND;
        assert_eq!(pool.status(cooled, later), KeyStatus::Ready);
        let probe = loop {
            let lease = pool.acquire(&picker, later, 0, &[]).unwrap();
            if lease.index() == cooled {
                break lease;
            }
        };
        assert!((0..10).all(|_| pick(&pool, &picker, later, 0) != Ok(cooled)));
        assert_eq!(probe.report(200, &Learned::default(), later), None);
        drop(probe);
        assert!((0..10).any(|_| pick(&pool, &picker, later, 0) == Ok(cooled)));
    }

    #[test]
    fn a_wait_of_zero_backs_off_as_if_unsaid() {
        let pool = pool_with("cooldown_initial = \"1s\"", &[""]);
        let picker = Picker::new(&pool);
        let lease = pool.acquire(&picker, NOW, 0, &[]).unwrap();
        let first = lease.report(429, &retry_after(0), NOW).unwrap();
        let second = lease.report(429, &retry_after(0), NOW).unwrap();
        assert!(first >= Duration::from_millis(500), "{first:?}");
        assert!(second >= Duration::from_secs(1), "{second:?}");
    }

    #[test]
    fn waiting_for_a_key_is_for_as_many_requests_as_keys() {
        let pool = pool(&["", ""]);
        let first = pool.wait_turn().expect("a turn");
        let second = pool.wait_turn().expect("a turn");
        assert!(pool.wait_turn().is_none());
        drop(first);
        let third = pool.wait_turn();
        assert!(third.is_some());
        drop((second, third));
        assert_eq!(pool.waiting.load(Relaxed), 0);
    }

    #[test]
    fn a_longer_cooldown_is_not_shortened() {
        let pool = pool(&[""]);
        let picker = Picker::new(&pool);
        let lease = pool.acquire(&picker, NOW, 0, &[]).unwrap();
        lease.report(429, &retry_after(10), NOW);
        assert_eq!(
            lease.report(429, &retry_after(2), NOW + SECOND),
            Some(Duration::from_secs(9))
        );
        assert_eq!(pool.status(0, NOW), KeyStatus::Cooling(NOW + 10 * SECOND));
        lease.report(429, &retry_after(20), NOW + SECOND);
        assert_eq!(pool.status(0, NOW), KeyStatus::Cooling(NOW + 21 * SECOND));
    }

    #[test]
    fn without_a_stated_wait_cooldowns_double_with_jitter_up_to_the_cap() {
        let pool = pool_with("cooldown_initial = \"1s\"\ncooldown_max = \"8s\"", &[""]);
        let picker = Picker::new(&pool);
        let lease = pool.acquire(&picker, NOW, 0, &[]).unwrap();
        let mut now = NOW;
        for full in [1u64, 2, 4, 8, 8, 8] {
            let rest = lease.report(429, &Learned::default(), now).unwrap();
            let full = Duration::from_secs(full);
            assert!(
                rest >= full / 2 && rest < full,
                "{rest:?} not in [{full:?}/2, {full:?})"
            );
            now += nanos(full);
        }
        // A success ends the streak.
        lease.report(200, &Learned::default(), now);
        let rest = lease.report(429, &Learned::default(), now).unwrap();
        assert!(rest < Duration::from_secs(1));
    }

    #[test]
    fn an_exhausted_window_names_the_cooldown_when_no_retry_after_does() {
        let pool = pool(&[""]);
        let picker = Picker::new(&pool);
        let lease = pool.acquire(&picker, NOW, 0, &[]).unwrap();
        let learned = Learned {
            requests: Some(Window {
                limit: Some(60),
                remaining: Some(0),
                reset_in: Some(Duration::from_millis(7_250)),
            }),
            tokens: Some(Window {
                limit: Some(1000),
                remaining: Some(10),
                reset_in: Some(Duration::from_secs(30)),
            }),
            retry_after: None,
        };
        assert_eq!(
            lease.report(429, &learned, NOW),
            Some(Duration::from_millis(7_250))
        );
    }

    fn window(limit: Option<u64>, remaining: u64, reset_secs: u64) -> Option<Window> {
        Some(Window {
            limit,
            remaining: Some(remaining),
            reset_in: Some(Duration::from_secs(reset_secs)),
        })
    }

    #[test]
    fn announced_limits_and_usage_pace_a_key() {
        let pool = pool(&[""]);
        let picker = Picker::new(&pool);
        let lease = pool.acquire(&picker, NOW, 0, &[]).unwrap();
        // 60 requests a minute, none left; 10,000 tokens a minute, 500 left.
        let learned = Learned {
            requests: window(Some(60), 0, 60),
            tokens: window(Some(10_000), 500, 57),
            retry_after: None,
        };
        assert_eq!(lease.report(200, &learned, NOW), None);
        drop(lease);
        assert_eq!(pool.keys[0].rpm_limit(), Some(60));
        assert_eq!(pool.keys[0].tpm_limit(), Some(10_000));
        assert!(pool.counts_tokens());
        // One request comes back each second; 800 tokens need 300 more than are left, which
        // come back in 1.8 s at 10,000 a minute.
        assert_eq!(
            pick(&pool, &picker, NOW, 100).unwrap_err().ready_at,
            Some(NOW + SECOND)
        );
        assert_eq!(
            pick(&pool, &picker, NOW, 800).unwrap_err().ready_at,
            Some(NOW + 1_800_000_000)
        );
        assert!(pick(&pool, &picker, NOW + SECOND, 100).is_ok());
    }

    #[test]
    fn what_a_provider_says_is_left_is_kept_until_its_window_resets() {
        let pool = pool(&["", ""]);
        let picker = Picker::new(&pool);
        let lease = pool.acquire(&picker, NOW, 0, &[]).unwrap();
        let key = &pool.keys[lease.index()];
        assert_eq!(key.requests_remaining(NOW), None);
        // Requests with a limit (which paces the key), tokens without one.
        let learned = Learned {
            requests: window(Some(600), 412, 30),
            tokens: window(None, 9_000, 20),
            retry_after: None,
        };
        lease.report(200, &learned, NOW);
        assert_eq!(key.requests_remaining(NOW), Some(412));
        assert_eq!(key.tokens_remaining(NOW + 19 * SECOND), Some(9_000));
        // Once a window is full again: its limit, if one was announced.
        assert_eq!(key.requests_remaining(NOW + 30 * SECOND), Some(600));
        assert_eq!(key.tokens_remaining(NOW + 20 * SECOND), None);
        // A later answer replaces what an earlier one said.
        let learned = Learned {
            requests: window(Some(600), 598, 1),
            ..Learned::default()
        };
        lease.report(200, &learned, NOW + 40 * SECOND);
        assert_eq!(key.requests_remaining(NOW + 40 * SECOND), Some(598));
        // The other key heard nothing.
        let other = &pool.keys[1 - lease.index()];
        assert_eq!(other.requests_remaining(NOW), None);
        assert_eq!(other.tokens_remaining(NOW), None);
    }

    #[test]
    fn announced_usage_never_moves_pacing_back() {
        let pool = pool(&["rpm = 60"]);
        let picker = Picker::new(&pool);
        for _ in 0..60 {
            assert!(pick(&pool, &picker, NOW, 0).is_ok());
        }
        let lease = pool.acquire(&picker, NOW + SECOND, 0, &[]).unwrap();
        // The provider has not counted most of them yet: the gateway's count stands.
        let learned = Learned {
            requests: window(Some(60), 50, 10),
            ..Learned::default()
        };
        lease.report(200, &learned, NOW + SECOND);
        drop(lease);
        assert_eq!(
            pick(&pool, &picker, NOW + SECOND, 0).unwrap_err().ready_at,
            Some(NOW + 2 * SECOND)
        );
    }

    #[test]
    fn without_a_limit_announced_what_is_left_holds_a_key_until_its_reset() {
        let pool = pool(&[""]);
        let picker = Picker::new(&pool);
        let lease = pool.acquire(&picker, NOW, 0, &[]).unwrap();
        let learned = Learned {
            requests: window(None, 1, 3),
            tokens: window(None, 500, 6),
            retry_after: None,
        };
        assert_eq!(lease.report(200, &learned, NOW), None);
        drop(lease);
        // 500 tokens left: a request that may use 800 waits for the token reset.
        assert_eq!(
            pick(&pool, &picker, NOW, 800).unwrap_err().ready_at,
            Some(NOW + 6 * SECOND)
        );
        // One request left: it goes, the next waits for the request reset.
        assert!(pick(&pool, &picker, NOW, 100).is_ok());
        assert_eq!(
            pick(&pool, &picker, NOW, 100).unwrap_err().ready_at,
            Some(NOW + 3 * SECOND)
        );
        assert!(pool.counts_tokens());
    }

    #[test]
    fn refused_keys_are_disabled_once_confirmed_until_enabled() {
        let pool = pool(&["", ""]);
        let picker = Picker::new(&pool);
        // A refusal alone is counted, not acted on: it may be about the request.
        for status in [401, 403] {
            let lease = pool.acquire(&picker, NOW, 0, &[]).unwrap();
            assert_eq!(lease.report(status, &Learned::default(), NOW), None);
            pool.confirm_refused(lease.index(), status);
        }
        let statuses = [pool.status(0, NOW), pool.status(1, NOW)];
        assert!(statuses.contains(&KeyStatus::Disabled(401)));
        assert!(statuses.contains(&KeyStatus::Disabled(403)));
        assert_eq!(
            pick(&pool, &picker, NOW, 0),
            Err(Exhausted { ready_at: None })
        );
        assert!(pool.enable(1));
        assert!(!pool.enable(1));
        assert_eq!(pick(&pool, &picker, NOW, 0), Ok(1));
        assert_eq!(pool.keys[0].refused() + pool.keys[1].refused(), 2);
        // The operator's hand works the same way.
        assert!(pool.disable(1));
        assert_eq!(
            pool.status(1, NOW),
            KeyStatus::Disabled(DISABLED_BY_OPERATOR)
        );
        assert_eq!(
            pick(&pool, &picker, NOW, 0),
            Err(Exhausted { ready_at: None })
        );
        assert_eq!(pool.position("k1"), Some(1));
        assert_eq!(pool.position("nope"), None);
    }

    #[test]
    fn all_keys_resting_gives_the_soonest_return() {
        let pool = pool(&["", "", ""]);
        let picker = Picker::new(&pool);
        let rests = [30, 4, 12];
        for _ in 0..3 {
            let lease = pool.acquire(&picker, NOW, 0, &[]).unwrap();
            lease.report(429, &retry_after(rests[lease.index()]), NOW);
        }
        assert_eq!(
            pick(&pool, &picker, NOW + SECOND, 0),
            Err(Exhausted {
                ready_at: Some(NOW + 4 * SECOND)
            })
        );
        // A disabled key does not count; the cooling ones still do.
        pool.keys[1].state.disabled.store(401, Relaxed);
        assert_eq!(
            pick(&pool, &picker, NOW, 0).unwrap_err().ready_at,
            Some(NOW + 12 * SECOND)
        );
    }

    #[test]
    fn a_key_back_from_cooling_starts_without_a_burst() {
        let pool = pool(&["rpm = 60"]);
        let picker = Picker::new(&pool);
        let lease = pool.acquire(&picker, NOW, 0, &[]).unwrap();
        lease.report(429, &retry_after(10), NOW);
        drop(lease);
        let back = NOW + 10 * SECOND;
        let probe = pool.acquire(&picker, back, 0, &[]).unwrap();
        probe.report(200, &Learned::default(), back);
        drop(probe);
        // Room for one a second from then on, not sixty at once.
        assert_eq!(
            pick(&pool, &picker, back, 0).unwrap_err().ready_at,
            Some(back + SECOND)
        );
    }

    #[test]
    fn states_survive_through_records_for_the_same_secret_only() {
        let pool_a = pool(&["", "", ""]);
        let picker = Picker::new(&pool_a);
        while pool_a.status(0, NOW) == KeyStatus::Ready {
            let lease = pool_a.acquire(&picker, NOW, 0, &[]).unwrap();
            if lease.index() == 0 {
                lease.report(429, &retry_after(60), NOW);
            }
        }
        pool_a.confirm_refused(1, 401);
        let records = pool_a.records();
        assert!(records.iter().all(|r| r.fingerprint.len() == 16));
        let json = serde_json::to_string(&records).unwrap();
        assert!(!json.contains("sk-"), "a secret was persisted: {json}");

        let pool_b = pool(&["", "", ""]);
        assert_eq!(pool_b.restore(&records, NOW + SECOND), vec!["k1"]);
        assert_eq!(
            pool_b.status(0, NOW + SECOND),
            KeyStatus::Cooling(NOW + 60 * SECOND)
        );
        assert_eq!(pool_b.status(1, NOW + SECOND), KeyStatus::Disabled(401));
        assert_eq!(pool_b.status(2, NOW + SECOND), KeyStatus::Ready);
        // After the cooldown ended, only the disabled state remains.
        let pool_c = pool(&["", "", ""]);
        pool_c.restore(&records, NOW + 61 * SECOND);
        assert_eq!(pool_c.status(0, NOW + 61 * SECOND), KeyStatus::Ready);
        // A key whose secret changed starts afresh.
        let mut changed = records.clone();
        changed[1].fingerprint = "0000000000000000".into();
        let pool_d = pool(&["", "", ""]);
        assert!(pool_d.restore(&changed, NOW).is_empty());
        assert_eq!(pool_d.status(1, NOW), KeyStatus::Ready);
        assert_eq!(pool_d.status(0, NOW), KeyStatus::Cooling(NOW + 60 * SECOND));

        // A hand-edited file cannot rest a key for more than a day, nor disable it with a
        // status that never disables.
        let mut absurd = records.clone();
        absurd[0].cool_until = u64::MAX;
        absurd[2].disabled = 200;
        let pool_e = pool(&["rpm = 60", "", ""]);
        assert!(pool_e.restore(&absurd, NOW).contains(&"k1"));
        assert_eq!(
            pool_e.status(0, NOW),
            KeyStatus::Cooling(NOW + MAX_COOLDOWN)
        );
        assert_eq!(pool_e.status(2, NOW), KeyStatus::Ready);
    }

    #[test]
    fn keys_go_in_the_header_each_provider_expects() {
        let header = |provider: &str, extra: &str| {
            let text = format!(
                "[gateway]\nlisten = \"127.0.0.1:0\"\n[[upstream]]\nname = \"up\"\n\
                 provider = \"{provider}\"\nendpoints = [\"http://127.0.0.1:9\"]\n{extra}\n\
                 [[upstream.key]]\nid = \"k\"\nsecret = \"s3cret\"\n"
            );
            let config = Config::parse(&text, Path::new("t.toml"), Path::new("/")).unwrap();
            let pool = KeyPool::new(&config.upstreams[0]).unwrap();
            let lease = pool.acquire(&Picker::new(&pool), NOW, 0, &[]).unwrap();
            let (name, value) = lease.header();
            format!(
                "{}: {}",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(value)
            )
        };
        assert_eq!(header("openai", ""), "Authorization: Bearer s3cret");
        assert_eq!(header("anthropic", ""), "x-api-key: s3cret");
        assert_eq!(header("gemini", ""), "x-goog-api-key: s3cret");
        assert_eq!(header("http", ""), "Authorization: Bearer s3cret");
        assert_eq!(header("http", "key_header = \"X-Key\""), "x-key: s3cret");
    }
}

//! The provider-key check of a mock started with `--key`: which key a request carries and
//! where, hence the style of its reply; refusals of missing, unknown and refused keys; the
//! key's limits, asked by the endpoint once it knows the cost; and the count and log of every
//! reply to a known key.
//!
//! Only keyed requests come here. A mock without keys routes with [`super::keys::Open`] and
//! never reads a key, takes a lock or looks at the clock for it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keygate::http::RequestHead;

use super::keys::{Gate, KeyId, Keys, Refusal};
use super::ratelimit::LimitState;
use super::route::{self, Exchange, Reply};
use super::style::{masked_key, Style};

/// A key as a request carries it, and the provider whose way of carrying it that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credential<'a> {
    /// The key's bytes.
    pub secret: &'a [u8],
    /// The provider that reads the key from that field.
    pub style: Style,
}

impl<'a> Credential<'a> {
    /// The key of `head`: from `Authorization: Bearer KEY` (OpenAI), else `x-api-key`
    /// (Anthropic), else `x-goog-api-key` (Gemini); the first field of each name counts.
    pub fn find(head: &'a RequestHead) -> Option<Credential<'a>> {
        let mut found: [Option<&[u8]>; 3] = [None; 3];
        for field in &head.fields {
            let name = head.name(field);
            let slot = if name.eq_ignore_ascii_case(b"authorization") {
                0
            } else if name.eq_ignore_ascii_case(b"x-api-key") {
                1
            } else if name.eq_ignore_ascii_case(b"x-goog-api-key") {
                2
            } else {
                continue;
            };
            found[slot].get_or_insert(head.value(field));
        }

        // The scheme is case-insensitive (RFC 9110 §11.1); other schemes carry no key here.
        let bearer = found[0].and_then(|value| {
            let (scheme, rest) = value.split_at_checked(7)?;
            scheme
                .eq_ignore_ascii_case(b"bearer ")
                .then(|| rest.trim_ascii())
        });
        let styles = [Style::OpenAi, Style::Anthropic, Style::Gemini];
        [bearer, found[1], found[2]]
            .into_iter()
            .zip(styles)
            .find_map(|(secret, style)| {
                Some(Credential {
                    secret: secret?,
                    style,
                })
            })
    }
}

/// What the head of a reply to a keyed request adds to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keyed {
    /// The key's limits after the request, for a known key that was not refused outright.
    pub limits: Option<LimitState>,
    /// The key's extra delay before the head.
    pub latency: Duration,
}

/// The style of the reply to `head`: the one `--style` forces, else, when keys are checked, the
/// one of the field carrying the key, else OpenAI's.
pub fn style_for(keys: &Keys, head: &RequestHead) -> Style {
    if let Some(style) = keys.forced_style() {
        return style;
    }
    if !keys.checks() {
        return Style::OpenAi;
    }
    Credential::find(head).map_or(Style::OpenAi, |credential| credential.style)
}

/// Answers a request to a provider endpoint of a mock with keys: 401 without a known key, the
/// key's own status if it has one, else the endpoint's reply within the key's limits.
pub fn answer(
    keys: &Keys,
    exchange: &Exchange<'_>,
    body: &mut Vec<u8>,
    model: &mut String,
) -> (Reply, Keyed) {
    let style = exchange.style;
    let credential = Credential::find(exchange.head);
    let known = credential.and_then(|credential| keys.find(credential.secret));
    let Some(id) = known else {
        keys.record_unknown();
        let secret = credential.map(|credential| credential.secret);
        let reply = route::error(body, style, 401, &unauthorized(style, secret));
        return (reply, Keyed::default());
    };

    let spec = keys.spec(id);
    let mut keyed = Keyed {
        limits: None,
        latency: spec.latency,
    };
    if let Some(status) = spec.status {
        let message = match status {
            401 => unauthorized(style, Some(spec.secret.as_bytes())),
            _ => "This API key is not allowed to make this request.".to_owned(),
        };
        keys.record(id, status, unix_millis());
        return (route::error(body, style, status, &message), keyed);
    }

    let now = Instant::now();
    let mut gate = KeyGate {
        keys,
        id,
        now,
        limits: None,
    };
    let reply = route::route(exchange, body, model, &mut gate);
    keyed.limits = Some(gate.limits.unwrap_or_else(|| keys.limits(id, now)));
    keys.record(id, reply.status(), unix_millis());
    (reply, keyed)
}

/// Admits against one key's limits, keeping what they were after the decision.
struct KeyGate<'k> {
    keys: &'k Keys,
    id: KeyId,
    now: Instant,
    limits: Option<LimitState>,
}

impl Gate for KeyGate<'_> {
    fn admit(&mut self, tokens: u64) -> Result<(), Refusal> {
        let (limits, refusal) = self.keys.admit(self.id, tokens, self.now);
        self.limits = Some(limits);
        refusal.map_or(Ok(()), Err)
    }
}

/// The message of a 401. OpenAI names the key it refuses, masked, as a gateway must not
/// forward it.
fn unauthorized(style: Style, secret: Option<&[u8]>) -> String {
    match (style, secret) {
        (Style::OpenAi, Some(secret)) => {
            format!("Incorrect API key provided: {}.", masked_key(secret))
        }
        (_, Some(_)) => "Invalid API key.".to_owned(),
        (Style::OpenAi, None) => "No API key provided; send Authorization: Bearer KEY.".to_owned(),
        (Style::Anthropic, None) => "No API key provided; send x-api-key: KEY.".to_owned(),
        (Style::Gemini, None) => "No API key provided; send x-goog-api-key: KEY.".to_owned(),
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    fn head(fields: &str) -> RequestHead {
        let text = format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n");
        RequestHead::parse(&mut BytesMut::from(text.as_bytes()), 8192, &mut Vec::new())
            .unwrap()
            .unwrap()
    }

    fn credential(fields: &str) -> Option<(String, Style)> {
        let head = head(fields);
        Credential::find(&head).map(|credential| {
            let secret = String::from_utf8(credential.secret.to_vec()).unwrap();
            (secret, credential.style)
        })
    }

    #[test]
    fn keys_are_found_where_each_provider_puts_them() {
        let table = [
            (
                "Authorization: Bearer sk-a\r\n",
                Some(("sk-a", Style::OpenAi)),
            ),
            (
                "authorization: bearer  sk-a \r\n",
                Some(("sk-a", Style::OpenAi)),
            ),
            ("X-Api-Key: ant-1\r\n", Some(("ant-1", Style::Anthropic))),
            ("x-goog-api-key: g-1\r\n", Some(("g-1", Style::Gemini))),
            (
                "x-goog-api-key: g-1\r\nx-api-key: ant-1\r\n",
                Some(("ant-1", Style::Anthropic)),
            ),
            (
                "x-api-key: ant-1\r\nAuthorization: Bearer sk-a\r\n",
                Some(("sk-a", Style::OpenAi)),
            ),
            (
                "Authorization: Basic dTpw\r\nx-api-key: ant-1\r\n",
                Some(("ant-1", Style::Anthropic)),
            ),
            ("x-api-key: \r\n", Some(("", Style::Anthropic))),
            ("Authorization: Basic dTpw\r\n", None),
            ("Authorization: Bearer\r\n", None),
            ("", None),
        ];
        for (fields, expected) in table {
            let expected = expected.map(|(secret, style)| (secret.to_owned(), style));
            assert_eq!(credential(fields), expected, "{fields:?}");
        }
    }

    #[test]
    fn styles_follow_the_key_only_when_keys_are_checked() {
        let now = Instant::now();
        let anthropic = head("x-api-key: k\r\n");
        let unkeyed = Keys::default();
        assert_eq!(style_for(&unkeyed, &anthropic), Style::OpenAi);

        let keyed = Keys::new(vec!["k".parse().unwrap()], None, now).unwrap();
        assert_eq!(style_for(&keyed, &anthropic), Style::Anthropic);
        assert_eq!(style_for(&keyed, &head("")), Style::OpenAi);

        let forced = Keys::new(vec![], Some(Style::Gemini), now).unwrap();
        assert_eq!(style_for(&forced, &anthropic), Style::Gemini);
    }

    #[test]
    fn openai_names_the_refused_key_masked() {
        let message = unauthorized(Style::OpenAi, Some(b"sk-abcdefxyz"));
        assert_eq!(message, "Incorrect API key provided: sk-a***xyz.");
        assert!(!unauthorized(Style::Anthropic, Some(b"sk-abcdefxyz")).contains("sk-"));
    }
}

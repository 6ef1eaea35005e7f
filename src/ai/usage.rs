//! Token usage read from a response body as it streams through the gateway.
//!
//! Owns [`Usage`] and [`UsageScanner`], which is fed the de-chunked body in whatever pieces
//! the network delivers. A whole JSON reply is kept up to a limit and parsed once at the end;
//! an event stream is handed to [`Events`], which parses only the lines that report usage.
//! It must never keep more than its limit, allocate per byte, block, or panic on any input.

use super::events::Events;
use super::wire::{self, Reading};
use crate::config::Provider;

/// Tokens one exchange used, as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens, cached and cache-write tokens included.
    pub prompt_tokens: u64,
    /// Output tokens, reasoning (thinking) tokens included.
    pub completion_tokens: u64,
}

impl Usage {
    /// Input and output tokens together, saturating at `u64::MAX`.
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// Finds the usage a provider reports in one response body, fed piece by piece.
///
/// - Not streamed: the body is one JSON document, kept up to `limit` bytes and parsed by
///   [`finish`](Self::finish). A longer body reports no usage.
/// - Streamed: server-sent events. OpenAI reports usage only when the request set
///   `stream_options.include_usage`; Anthropic and Gemini always do. A line longer than
///   `limit` bytes is skipped.
///
/// Gemini's `:streamGenerateContent` without `alt=sse` answers with a JSON array instead of
/// events, so a streamed Gemini body that starts with `[` is read as one document.
/// [`Provider::Http`] bodies are ignored.
#[derive(Debug)]
pub struct UsageScanner {
    provider: Provider,
    limit: usize,
    /// A streamed Gemini body whose first byte (whitespace aside) is still to come.
    sniffing: bool,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    /// Nothing to find.
    Off,
    /// One JSON document, kept until the end.
    Document(Document),
    /// Server-sent events, read as they pass.
    Events(Events),
}

#[derive(Debug)]
struct Document {
    body: Vec<u8>,
    /// The body outgrew the limit; what was kept has been released.
    overflowed: bool,
}

impl UsageScanner {
    /// A scanner for one response body from `provider`, keeping at most `limit` bytes
    /// (1 MiB is ample: usage lines are short, and whole replies rarely larger).
    pub fn new(provider: Provider, streaming: bool, limit: usize) -> Self {
        let mode = match (provider, streaming) {
            (Provider::Http, _) => Mode::Off,
            (_, false) => Mode::Document(Document::new()),
            (_, true) => Mode::Events(Events::new(provider, limit)),
        };
        UsageScanner {
            provider,
            limit,
            sniffing: provider == Provider::Gemini && streaming,
            mode,
        }
    }

    /// Takes the next piece of the body, in order; pieces may split anything anywhere.
    pub fn feed(&mut self, mut data: &[u8]) {
        if self.sniffing {
            // Leading whitespace is the same in either form: drop it and wait for a byte.
            let Some(start) = data.iter().position(|b| !b.is_ascii_whitespace()) else {
                return;
            };
            self.sniffing = false;
            data = &data[start..];
            if data[0] == b'[' {
                self.mode = Mode::Document(Document::new());
            }
        }

        match &mut self.mode {
            Mode::Off => {}
            Mode::Document(document) => document.keep(data, self.limit),
            Mode::Events(events) => events.feed(data),
        }
    }

    /// Ends the body and returns the usage it reported, if it reported any.
    pub fn finish(self) -> Option<Usage> {
        let reading = match self.mode {
            Mode::Off => None,
            Mode::Document(document) if document.overflowed => None,
            Mode::Document(document) => wire::read_document(self.provider, &document.body),
            Mode::Events(events) => Some(events.finish()),
        };
        match reading {
            Some(Reading {
                prompt: None,
                completion: None,
            })
            | None => None,
            Some(Reading { prompt, completion }) => Some(Usage {
                prompt_tokens: prompt.unwrap_or(0),
                completion_tokens: completion.unwrap_or(0),
            }),
        }
    }
}

impl Document {
    fn new() -> Self {
        Document {
            body: Vec::new(),
            overflowed: false,
        }
    }

    fn keep(&mut self, data: &[u8], limit: usize) {
        if self.overflowed {
            return;
        }
        if self.body.len().saturating_add(data.len()) > limit {
            self.overflowed = true;
            self.body = Vec::new();
        } else {
            self.body.extend_from_slice(data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::samples::*;
    use super::*;

    const MIB: usize = 1 << 20;

    fn usage(prompt_tokens: u64, completion_tokens: u64) -> Option<Usage> {
        Some(Usage {
            prompt_tokens,
            completion_tokens,
        })
    }

    fn scan(provider: Provider, streaming: bool, limit: usize, pieces: &[&[u8]]) -> Option<Usage> {
        let mut scanner = UsageScanner::new(provider, streaming, limit);
        for piece in pieces {
            scanner.feed(piece);
        }
        scanner.finish()
    }

    #[test]
    fn bodies_in_usage_out_at_every_split_lf_and_crlf() {
        use Provider::*;
        let table: &[(Provider, bool, &str, Option<Usage>)] = &[
            (OpenAi, true, OPENAI_STREAM, usage(9, 12)),
            (Anthropic, true, ANTHROPIC_STREAM, usage(35, 15)),
            (Gemini, true, GEMINI_STREAM, usage(5, 7)),
            (Gemini, true, GEMINI_ARRAY_STREAM, usage(5, 9)),
            (OpenAi, false, OPENAI_BODY, usage(19, 10)),
            (Anthropic, false, ANTHROPIC_BODY, usage(15, 20)),
            (Gemini, false, GEMINI_BODY, usage(8, 7)),
            (Gemini, false, GEMINI_ARRAY_STREAM, usage(5, 9)),
            // No usage reported, or a body of the other kind: no usage.
            (
                OpenAi,
                false,
                r#"{"error":{"message":"usage limit reached"}}"#,
                None,
            ),
            (Gemini, false, "not json at all", None),
            (Gemini, true, "  \r\n ", None),
            (OpenAi, true, OPENAI_BODY, None),
            (OpenAi, false, OPENAI_STREAM, None),
            (Anthropic, false, "", None),
            (Http, false, OPENAI_BODY, None),
            (Http, true, OPENAI_STREAM, None),
        ];
        for &(provider, streaming, input, want) in table {
            let crlf = input.replace('\n', "\r\n");
            for input in [input.as_bytes(), crlf.as_bytes()] {
                let label = format!("{provider:?} streaming={streaming} {input:?}");
                assert_eq!(scan(provider, streaming, MIB, &[input]), want, "{label}");
                for split in 0..=input.len() {
                    let (head, tail) = input.split_at(split);
                    let got = scan(provider, streaming, MIB, &[head, tail]);
                    assert_eq!(got, want, "{label} split at {split}");
                }
            }
        }
    }

    #[test]
    fn a_whole_body_over_the_limit_reports_nothing() {
        let body = OPENAI_BODY.as_bytes();
        assert_eq!(
            scan(Provider::OpenAi, false, body.len(), &[body]),
            usage(19, 10)
        );
        for split in 0..=body.len() {
            let (head, tail) = body.split_at(split);
            assert_eq!(
                scan(Provider::OpenAi, false, body.len() - 1, &[head, tail]),
                None
            );
        }

        let mut scanner = UsageScanner::new(Provider::OpenAi, false, 64);
        for _ in 0..10_000 {
            scanner.feed(body);
        }
        assert!(matches!(&scanner.mode, Mode::Document(d) if d.body.capacity() == 0));
        assert_eq!(scanner.finish(), None);
    }

    #[test]
    fn total_adds_and_saturates() {
        assert_eq!(usage(2, 3).map(|u| u.total()), Some(5));
        assert_eq!(usage(u64::MAX, 3).map(|u| u.total()), Some(u64::MAX));
    }

    /// A deterministic generator (Knuth's MMIX constants) for reproducible garbage.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as usize
        }
    }

    #[test]
    fn garbage_never_panics_and_never_depends_on_the_split() {
        // Pieces that matter to the scanner, so garbage reaches the JSON parser; `|` splits.
        const PIECES: &str = concat!(
            "data: |data:|event: x|\n|\r\n|\n\n|[|]|{|}|,|:|\"|1|42|-3|1e3|null|[DONE]| |\\u00|",
            r#"{"usage":|"usage":|"usageMetadata":|"message":|"response":|"prompt_tokens":|"#,
            r#""completion_tokens":|"input_tokens":|"output_tokens":|"promptTokenCount":"#,
        );
        const SAMPLES: &[&str] = &[
            OPENAI_STREAM,
            OPENAI_RESPONSES_STREAM,
            ANTHROPIC_STREAM,
            ANTHROPIC_STREAM_INPUT_IN_DELTA,
            GEMINI_STREAM,
            GEMINI_ARRAY_STREAM,
            OPENAI_BODY,
            ANTHROPIC_BODY,
            GEMINI_BODY,
        ];
        let pieces: Vec<&str> = PIECES.split('|').collect();
        let mut rng = Lcg(0x006b_6579_6761_7465);
        let mut input = Vec::new();
        let mut found = 0;
        for round in 0..10_000 {
            input.clear();
            if round % 2 == 0 {
                // A real body with a few bytes overwritten, so usage is sometimes still found.
                input.extend_from_slice(SAMPLES[rng.next() % SAMPLES.len()].as_bytes());
                for _ in 0..rng.next() % 4 {
                    let at = rng.next() % input.len();
                    input[at] = rng.next() as u8;
                }
            }
            for _ in 0..rng.next() % 40 {
                match rng.next() {
                    r if r % 8 == 0 => input.push((r >> 8) as u8),
                    r => input.extend_from_slice(pieces[(r >> 8) % pieces.len()].as_bytes()),
                }
            }

            let (head, tail) = input.split_at(rng.next() % (input.len() + 1));
            let limit = 16 + rng.next() % 1024;
            for provider in [Provider::OpenAi, Provider::Anthropic, Provider::Gemini] {
                for streaming in [false, true] {
                    let whole = scan(provider, streaming, limit, &[&input]);
                    let split = scan(provider, streaming, limit, &[head, tail]);
                    assert_eq!(whole, split, "{provider:?} {streaming} {input:?}");
                    found += usize::from(whole.is_some());
                }
            }
        }
        assert!(
            found > 1000,
            "garbage reached a usage report only {found} times"
        );
    }
}

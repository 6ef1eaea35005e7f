//! Usage in a server-sent event stream, read line by line as the stream passes.
//!
//! Owns [`Events`]: a line splitter, and the usage reported so far. Only `data:` lines that
//! contain the word `usage` are parsed, so the many content deltas of a stream cost a prefix
//! test and one substring search each, and are never copied unless a feed cut them in two.
//! It must never keep more than one line of bounded length, allocate per byte, or panic.

use std::sync::LazyLock;

use memchr::memmem::Finder;

use super::lines::LineSplitter;
use super::wire::{self, Reading};
use crate::config::Provider;

/// The word every provider's usage field contains (`usage`, `usageMetadata`); built once.
static USAGE_WORD: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"usage"));

/// Reads usage out of one response's event stream.
///
/// The latest report wins: OpenAI sends usage once, in the last chunk; Gemini repeats it in
/// every chunk with the output so far. Anthropic splits it: `message_start` has the input,
/// each `message_delta` the output so far (and, in newer API versions, the input again), so
/// for Anthropic the largest input seen wins.
#[derive(Debug)]
pub(super) struct Events {
    provider: Provider,
    lines: LineSplitter,
    seen: Reading,
}

impl Events {
    /// A reader for a stream from `provider`, skipping lines longer than `limit` bytes.
    pub(super) fn new(provider: Provider, limit: usize) -> Self {
        Events {
            provider,
            lines: LineSplitter::new(limit),
            seen: Reading::default(),
        }
    }

    /// Reads the next piece of the stream.
    pub(super) fn feed(&mut self, data: &[u8]) {
        let Events {
            provider,
            lines,
            seen,
        } = self;
        lines.feed(data, |line| read_line(*provider, seen, line));
    }

    /// Ends the stream, reading a last line that had no line end, and returns what was seen.
    pub(super) fn finish(mut self) -> Reading {
        let Events {
            provider,
            lines,
            seen,
        } = &mut self;
        lines.finish(|line| read_line(*provider, seen, line));
        self.seen
    }
}

/// Reads one line, folding any usage it reports into `seen`.
fn read_line(provider: Provider, seen: &mut Reading, line: &[u8]) {
    // Other fields (event:, id:, retry:, comments) carry nothing counted. `data: [DONE]` and
    // content deltas fail the substring test, so they are never parsed.
    let Some(payload) = line.strip_prefix(b"data:") else {
        return;
    };
    if USAGE_WORD.find(payload).is_none() {
        return;
    }
    let Some(reading) = wire::read_document(provider, payload) else {
        return;
    };

    if provider == Provider::Anthropic {
        seen.prompt = seen.prompt.max(reading.prompt);
        seen.completion = reading.completion.or(seen.completion);
    } else {
        *seen = reading;
    }
}

#[cfg(test)]
mod tests {
    use super::super::samples::*;
    use super::*;

    fn read(provider: Provider, limit: usize, pieces: &[&[u8]]) -> Reading {
        let mut events = Events::new(provider, limit);
        for piece in pieces {
            events.feed(piece);
        }
        events.finish()
    }

    fn reading(prompt: Option<u64>, completion: Option<u64>) -> Reading {
        Reading { prompt, completion }
    }

    /// `input` read whole, split in two at every byte, and byte by byte must all give `want`.
    fn check_every_split(provider: Provider, limit: usize, input: &[u8], want: Reading) {
        assert_eq!(read(provider, limit, &[input]), want, "{provider:?} whole");
        for split in 0..=input.len() {
            let (head, tail) = input.split_at(split);
            let got = read(provider, limit, &[head, tail]);
            assert_eq!(got, want, "{provider:?} split at {split}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            read(provider, limit, &bytes),
            want,
            "{provider:?} byte by byte"
        );
    }

    #[test]
    fn streams_in_usage_out_at_every_split_lf_and_crlf() {
        use Provider::*;
        let some = |p, c| reading(Some(p), Some(c));
        let cut_after_start = ANTHROPIC_STREAM.split("event: ping").next().unwrap_or("");
        let table: &[(Provider, &str, Reading)] = &[
            (OpenAi, OPENAI_STREAM, some(9, 12)),
            (OpenAi, OPENAI_RESPONSES_STREAM, some(4, 6)),
            (Anthropic, ANTHROPIC_STREAM, some(35, 15)),
            (Anthropic, ANTHROPIC_STREAM_INPUT_IN_DELTA, some(30, 8)),
            (Gemini, GEMINI_STREAM, some(5, 7)),
            // A stream cut off after message_start still reports its input.
            (Anthropic, cut_after_start, some(35, 1)),
            (
                Anthropic,
                "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}",
                reading(None, Some(4)),
            ),
            // Without include_usage, or only null usage: nothing.
            (
                OpenAi,
                "data: {\"choices\":[],\"usage\":null}\n\ndata: [DONE]\n\n",
                reading(None, None),
            ),
            (
                Anthropic,
                "event: error\ndata: {\"type\":\"error\"}\n\n",
                reading(None, None),
            ),
            // A usage line that is not a data: line, and a whole JSON reply, are not events.
            (
                OpenAi,
                "usage: {\"usage\":{\"prompt_tokens\":1}}\n",
                reading(None, None),
            ),
            (OpenAi, OPENAI_BODY, reading(None, None)),
            (OpenAi, "", reading(None, None)),
        ];
        for &(provider, input, want) in table {
            check_every_split(provider, 1 << 20, input.as_bytes(), want);
            let crlf = input.replace('\n', "\r\n");
            check_every_split(provider, 1 << 20, crlf.as_bytes(), want);
        }
    }

    #[test]
    fn a_last_line_without_line_end_still_counts() {
        let input = OPENAI_STREAM
            .trim_end_matches("data: [DONE]\n\n")
            .trim_end();
        assert!(!input.ends_with('\n'));
        check_every_split(
            Provider::OpenAi,
            1 << 20,
            input.as_bytes(),
            reading(Some(9), Some(12)),
        );
    }

    #[test]
    fn over_long_lines_are_skipped_and_the_stream_resyncs() {
        let usage_line = r#"data: {"usage":{"prompt_tokens":2,"completion_tokens":3}}"#;
        let limit = usage_line.len();
        let long_delta = format!(
            "data: {{\"usage\":null,\"content\":\"{}\"}}",
            "x".repeat(200)
        );
        let input = format!("{long_delta}\n\n{usage_line}\n\n{long_delta}\n");
        check_every_split(
            Provider::OpenAi,
            limit,
            input.as_bytes(),
            reading(Some(2), Some(3)),
        );

        // The usage line one byte over the limit (its CR counts) is lost, wherever it is cut.
        let input = format!("{usage_line}\r\n");
        check_every_split(
            Provider::OpenAi,
            limit,
            input.as_bytes(),
            reading(None, None),
        );
    }
}

//! The facts about an LLM request the gateway admits and routes by: model, output bound,
//! streaming, and an estimate of the prompt's size in tokens.
//!
//! Owns [`RequestFacts`], read from a request body already read whole. The body is parsed
//! once into a small typed shape naming only the fields read; text is measured while it is
//! parsed, never copied. It must never panic or fail on any body: what cannot be read is
//! simply not known, and the prompt is then estimated from the body's length.

use memchr::memmem;
use serde::Deserialize;

use super::text::TextBytes;
use crate::config::Provider;

/// A rough bytes-per-token ratio for English text and code across the providers' tokenizers.
const BYTES_PER_TOKEN: u64 = 4;

/// What a request body and path say about the call, as far as the gateway cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// The model asked for: the body's `model`, or for Gemini the path's `models/{model}`.
    pub model: Option<String>,
    /// The most output tokens the request allows: OpenAI `max_completion_tokens`, else
    /// `max_tokens` (else the Responses API's `max_output_tokens`); Anthropic `max_tokens`;
    /// Gemini `generationConfig.maxOutputTokens`.
    pub max_tokens: Option<u64>,
    /// The reply is streamed: `"stream": true` for OpenAI and Anthropic, a
    /// `:streamGenerateContent` path for Gemini.
    pub stream: bool,
    /// OpenAI's `stream_options.include_usage`: the stream ends with a usage chunk. Always
    /// false for the other providers, whose streams always carry usage.
    pub include_usage: bool,
    /// Estimated prompt tokens: the UTF-8 bytes of all text in the messages, system prompt and
    /// contents (and OpenAI's `input`, `instructions` and `prompt`), divided by 4 and rounded
    /// up. Images, tool definitions and tool-call arguments are not counted. For a body that
    /// is not a JSON object of the documented types, the body's length so divided.
    pub prompt_estimate: u64,
}

impl RequestFacts {
    /// Reads the facts of a request to `provider` at `path` (query included or not) with the
    /// JSON `body`. An unreadable body leaves every body fact unknown, but Gemini's model and
    /// streaming still come from the path. [`Provider::Http`] requests are not read at all.
    pub fn inspect(provider: Provider, path: &[u8], body: &[u8]) -> RequestFacts {
        let mut facts = RequestFacts::default();
        if provider == Provider::Http {
            return facts;
        }

        // Gemini names the model and the streaming method in the path, not the body.
        if provider == Provider::Gemini {
            let path = path.split(|&b| b == b'?').next().unwrap_or(path);
            facts.model = gemini_model(path);
            facts.stream = memmem::find(path, b":streamGenerateContent").is_some();
        }

        // serde would read a struct from an array too; only an object is a request.
        let is_object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let parsed = match is_object {
            true => serde_json::from_slice::<Body>(body).ok(),
            false => None,
        };
        let Some(fields) = parsed else {
            facts.prompt_estimate = tokens_for(body.len() as u64);
            return facts;
        };

        let text = [
            fields.messages,
            fields.system,
            fields.contents,
            fields.system_instruction,
            fields.input,
            fields.instructions,
            fields.prompt,
        ];
        let text_bytes = text
            .iter()
            .fold(0u64, |sum, t| sum.saturating_add(t.bytes()));
        facts.prompt_estimate = tokens_for(text_bytes);

        match provider {
            Provider::OpenAi | Provider::Anthropic => {
                facts.model = fields.model;
                facts.stream = fields.stream == Some(true);
            }
            Provider::Gemini | Provider::Http => {}
        }
        facts.max_tokens = match provider {
            Provider::OpenAi => fields
                .max_completion_tokens
                .or(fields.max_tokens)
                .or(fields.max_output_tokens),
            Provider::Anthropic => fields.max_tokens,
            Provider::Gemini => fields.generation_config.and_then(|c| c.max_output_tokens),
            Provider::Http => None,
        };
        if provider == Provider::OpenAi {
            facts.include_usage = fields.stream_options.and_then(|o| o.include_usage) == Some(true);
        }
        facts
    }

    /// Tokens to reserve before sending: the prompt estimate plus the output bound, or
    /// `default_max_tokens` when the request sets none. Saturates at `u64::MAX`.
    pub fn reservation(&self, default_max_tokens: u64) -> u64 {
        self.prompt_estimate
            .saturating_add(self.max_tokens.unwrap_or(default_max_tokens))
    }
}

/// The request fields read, for all three providers at once; others are skipped unread.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Body {
    model: Option<String>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    #[serde(rename = "generationConfig", alias = "generation_config")]
    generation_config: Option<GenerationConfig>,
    messages: TextBytes,
    system: TextBytes,
    contents: TextBytes,
    #[serde(rename = "systemInstruction", alias = "system_instruction")]
    system_instruction: TextBytes,
    input: TextBytes,
    instructions: TextBytes,
    prompt: TextBytes,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct GenerationConfig {
    #[serde(rename = "maxOutputTokens", alias = "max_output_tokens")]
    max_output_tokens: Option<u64>,
}

/// The `{model}` of a Gemini `…/models/{model}:method` path, if it is UTF-8 and not empty.
fn gemini_model(path: &[u8]) -> Option<String> {
    let start = memmem::find(path, b"/models/")? + b"/models/".len();
    let rest = &path[start..];
    let end = memchr::memchr2(b':', b'/', rest).unwrap_or(rest.len());
    let name = std::str::from_utf8(&rest[..end]).ok()?;
    (!name.is_empty()).then(|| name.to_owned())
}

fn tokens_for(bytes: u64) -> u64 {
    bytes.div_ceil(BYTES_PER_TOKEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(
        model: Option<&str>,
        max_tokens: Option<u64>,
        stream: bool,
        include_usage: bool,
        prompt_estimate: u64,
    ) -> RequestFacts {
        RequestFacts {
            model: model.map(str::to_owned),
            max_tokens,
            stream,
            include_usage,
            prompt_estimate,
        }
    }

    #[test]
    fn bodies_in_facts_out() {
        use Provider::*;
        let chat = "/v1/chat/completions";
        let messages = "/v1/messages";
        let table: &[(Provider, &str, &str, RequestFacts)] = &[
            (
                OpenAi,
                chat,
                r#"{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},
                    {"role":"user","content":"Hello there"}],"max_tokens":100}"#,
                // 9 + 11 text bytes.
                facts(Some("gpt-4o"), Some(100), false, false, 5),
            ),
            (
                OpenAi,
                chat,
                r#"{"model":"o3","max_tokens":10,"max_completion_tokens":20,"stream":true,
                    "stream_options":{"include_usage":true},"messages":[{"role":"user",
                    "content":[{"type":"text","text":"abcde"},
                    {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},
                    {"role":"assistant","content":null,"tool_calls":[]}]}"#,
                facts(Some("o3"), Some(20), true, true, 2),
            ),
            (
                OpenAi,
                "/v1/responses",
                r#"{"model":"gpt-5","instructions":"four","input":"eight by","max_output_tokens":7}"#,
                facts(Some("gpt-5"), Some(7), false, false, 3),
            ),
            (
                OpenAi,
                chat,
                r#"{"model":"m","stream":false,"stream_options":null,"messages":[]}"#,
                facts(Some("m"), None, false, false, 0),
            ),
            (
                Anthropic,
                messages,
                r#"{"model":"claude-sonnet-4","max_tokens":1024,"stream":true,
                    "system":[{"type":"text","text":"sys"}],
                    "messages":[{"role":"user","content":"hi"},
                    {"role":"user","content":[{"type":"tool_result","tool_use_id":"t",
                    "content":[{"type":"text","text":"result"}]}]}]}"#,
                // 3 + 2 + 6 text bytes.
                facts(Some("claude-sonnet-4"), Some(1024), true, false, 3),
            ),
            (
                Anthropic,
                messages,
                r#"{"model":"c","max_tokens":5,"stream_options":{"include_usage":true},
                    "system":"\u00e9t\u00e9"}"#,
                // Escapes are measured unescaped: two 2-byte letters and one 1-byte.
                facts(Some("c"), Some(5), false, false, 2),
            ),
            (
                Gemini,
                "/v1beta/models/gemini-2.5-flash:generateContent?key=k",
                r#"{"contents":[{"role":"user","parts":[{"text":"Hello"},{"inlineData":{}}]}],
                    "systemInstruction":{"parts":[{"text":"abc"}]},
                    "generationConfig":{"maxOutputTokens":256,"temperature":0.2},
                    "model":"ignored","stream":true,"max_tokens":9}"#,
                facts(Some("gemini-2.5-flash"), Some(256), false, false, 2),
            ),
            (
                Gemini,
                "/v1beta/models/gemini-pro:streamGenerateContent?alt=sse",
                r#"{"contents":[{"parts":[{"text":"x"}]}],
                    "generation_config":{"max_output_tokens":3}}"#,
                facts(Some("gemini-pro"), Some(3), true, false, 1),
            ),
            (
                Gemini,
                "/v1/projects/p/locations/l/publishers/google/models/g:streamGenerateContent",
                "not json",
                facts(Some("g"), None, true, false, 2),
            ),
            (
                Gemini,
                "/v1beta/models/:generateContent?x=:streamGenerateContent",
                "{}",
                facts(None, None, false, false, 0),
            ),
            // Not JSON, not an object, or the wrong types: estimated from the length.
            (
                OpenAi,
                chat,
                "model=gpt-4o&x=1",
                facts(None, None, false, false, 4),
            ),
            (
                OpenAi,
                chat,
                r#"["gpt-4o",true]"#,
                facts(None, None, false, false, 4),
            ),
            (
                OpenAi,
                chat,
                r#"{"model":"m","stream":"yes"}"#,
                facts(None, None, false, false, 7),
            ),
            (
                Anthropic,
                messages,
                r#"{"max_tokens":-1}"#,
                facts(None, None, false, false, 5),
            ),
            (Anthropic, messages, "", facts(None, None, false, false, 0)),
            (
                Http,
                "/anything",
                r#"{"model":"m","stream":true}"#,
                RequestFacts::default(),
            ),
        ];
        for (provider, path, body, want) in table {
            let got = RequestFacts::inspect(*provider, path.as_bytes(), body.as_bytes());
            assert_eq!(&got, want, "{provider:?} {path} {body}");
        }
    }

    #[test]
    fn reservation_adds_the_output_bound_or_the_default() {
        let mut facts = facts(None, Some(100), false, false, 5);
        assert_eq!(facts.reservation(4096), 105);
        facts.max_tokens = None;
        assert_eq!(facts.reservation(4096), 4101);
        facts.max_tokens = Some(u64::MAX);
        assert_eq!(facts.reservation(0), u64::MAX);
    }

    #[test]
    fn deep_or_hostile_bodies_never_panic() {
        let deep_array = format!(r#"{{"messages":{}}}"#, "[".repeat(100_000));
        let deep_content = format!(
            r#"{{"messages":{}"x"{}}}"#,
            r#"{"content":"#.repeat(10_000),
            "}".repeat(10_000)
        );
        let bodies: [&[u8]; 5] = [
            deep_array.as_bytes(),
            deep_content.as_bytes(),
            b"{\"messages\":\"\xff\xfe\"}",
            b"{\"model\":\"\\ud800\"}",
            b"\xef\xbb\xbf{}",
        ];
        for body in bodies {
            for provider in [Provider::OpenAi, Provider::Anthropic, Provider::Gemini] {
                let facts = RequestFacts::inspect(provider, b"/models/\xff:x", body);
                assert_eq!(facts.prompt_estimate, (body.len() as u64).div_ceil(4));
            }
        }
    }
}

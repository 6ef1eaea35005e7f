//! Where each provider puts token usage in a response document, as small serde shapes.
//!
//! Owns the mapping from one JSON document (a whole response body, or the payload of one SSE
//! `data:` line) to the counts it reports. The shapes name only the fields read; everything
//! else is skipped by serde without being kept. Nothing here keeps state between documents
//! or panics on malformed input: a document that does not fit its shape reports nothing.

use serde::Deserialize;

use crate::config::Provider;

/// The counts one document reported; `None` for a count it did not carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Reading {
    /// Input tokens, cached ones included.
    pub(super) prompt: Option<u64>,
    /// Output tokens, reasoning ones included.
    pub(super) completion: Option<u64>,
}

/// Reads the usage a provider's JSON document reports, if it reports any.
///
/// For Gemini a document may also be the JSON array that `:streamGenerateContent` sends
/// without `alt=sse`; the last element carrying usage wins.
pub(super) fn read_document(provider: Provider, json: &[u8]) -> Option<Reading> {
    match provider {
        Provider::OpenAi => serde_json::from_slice::<OpenAiDocument>(json)
            .ok()
            .and_then(OpenAiDocument::reading),
        Provider::Anthropic => serde_json::from_slice::<AnthropicDocument>(json)
            .ok()
            .and_then(AnthropicDocument::reading),
        Provider::Gemini if first_byte(json) == Some(b'[') => {
            serde_json::from_slice::<Vec<GeminiDocument>>(json)
                .ok()?
                .into_iter()
                .rev()
                .find_map(GeminiDocument::reading)
        }
        Provider::Gemini => serde_json::from_slice::<GeminiDocument>(json)
            .ok()
            .and_then(GeminiDocument::reading),
        Provider::Http => None,
    }
}

/// A chat completion or chunk (`usage`), or a Responses API event (`response.usage`).
/// A `"usage": null`, as on every chunk but the last, deserializes to `None`.
#[derive(Deserialize)]
struct OpenAiDocument {
    usage: Option<OpenAiUsage>,
    response: Option<OpenAiResponse>,
}

#[derive(Deserialize)]
struct OpenAiResponse {
    usage: Option<OpenAiUsage>,
}

/// Chat Completions names; the Responses API's names are accepted as aliases.
#[derive(Deserialize)]
struct OpenAiUsage {
    #[serde(alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(alias = "output_tokens")]
    completion_tokens: Option<u64>,
}

impl OpenAiDocument {
    fn reading(self) -> Option<Reading> {
        let usage = self.usage.or(self.response.and_then(|r| r.usage))?;
        Some(Reading {
            prompt: Some(usage.prompt_tokens.unwrap_or(0)),
            completion: Some(usage.completion_tokens.unwrap_or(0)),
        })
    }
}

/// A Messages response or `message_delta` event (`usage`), or `message_start`
/// (`message.usage`).
#[derive(Deserialize)]
struct AnthropicDocument {
    usage: Option<AnthropicUsage>,
    message: Option<AnthropicMessage>,
}

#[derive(Deserialize)]
struct AnthropicMessage {
    usage: Option<AnthropicUsage>,
}

/// `input_tokens` excludes cache reads and writes, which are billed as input too.
#[derive(Deserialize)]
struct AnthropicUsage {
    input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl AnthropicDocument {
    fn reading(self) -> Option<Reading> {
        let usage = self.usage.or(self.message.and_then(|m| m.usage))?;
        let inputs = [
            usage.input_tokens,
            usage.cache_creation_input_tokens,
            usage.cache_read_input_tokens,
        ];
        let prompt = inputs
            .into_iter()
            .flatten()
            .reduce(|sum, count| sum.saturating_add(count));
        Some(Reading {
            prompt,
            completion: usage.output_tokens,
        })
    }
}

/// A `GenerateContentResponse`, whole or one streamed piece.
#[derive(Deserialize)]
struct GeminiDocument {
    #[serde(rename = "usageMetadata")]
    usage_metadata: Option<GeminiUsage>,
}

/// `promptTokenCount` already includes cached content; tool-use prompts and thoughts are
/// counted apart from it and from the candidates, and are billed as input and output.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiUsage {
    prompt_token_count: Option<u64>,
    tool_use_prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
}

impl GeminiDocument {
    fn reading(self) -> Option<Reading> {
        let usage = self.usage_metadata?;
        let sum = |a: Option<u64>, b: Option<u64>| a.unwrap_or(0).saturating_add(b.unwrap_or(0));
        Some(Reading {
            prompt: Some(sum(
                usage.prompt_token_count,
                usage.tool_use_prompt_token_count,
            )),
            completion: Some(sum(
                usage.candidates_token_count,
                usage.thoughts_token_count,
            )),
        })
    }
}

fn first_byte(json: &[u8]) -> Option<u8> {
    json.iter().copied().find(|b| !b.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(prompt: u64, completion: u64) -> Option<Reading> {
        Some(Reading {
            prompt: Some(prompt),
            completion: Some(completion),
        })
    }

    #[test]
    fn documents_in_reading_out() {
        use Provider::*;
        let table: &[(Provider, &str, Option<Reading>)] = &[
            (
                OpenAi,
                r#"{"usage":{"prompt_tokens":9,"completion_tokens":12}}"#,
                reading(9, 12),
            ),
            (
                OpenAi,
                r#"{"usage":{"input_tokens":3,"output_tokens":4}}"#,
                reading(3, 4),
            ),
            (
                OpenAi,
                r#"{"response":{"usage":{"input_tokens":3,"output_tokens":4}}}"#,
                reading(3, 4),
            ),
            (OpenAi, r#"{"response":{"usage":null}}"#, None),
            (OpenAi, r#"{"choices":[],"usage":null}"#, None),
            (OpenAi, r#"{"usage":{}}"#, reading(0, 0)),
            (OpenAi, r#"{"usage":"many"}"#, None),
            (OpenAi, r#"{"usage":{"prompt_tokens":-1}}"#, None),
            (
                Anthropic,
                r#"{"usage":{"input_tokens":25,"output_tokens":15}}"#,
                reading(25, 15),
            ),
            (
                Anthropic,
                r#"{"usage":{"input_tokens":1,"cache_creation_input_tokens":2,
                    "cache_read_input_tokens":4,"output_tokens":8}}"#,
                reading(7, 8),
            ),
            (
                Anthropic,
                r#"{"usage":{"input_tokens":1,"cache_read_input_tokens":null,"output_tokens":2}}"#,
                reading(1, 2),
            ),
            (
                Anthropic,
                r#"{"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}"#,
                reading(5, 1),
            ),
            (
                Anthropic,
                r#"{"type":"message_delta","usage":{"output_tokens":15}}"#,
                Some(Reading {
                    prompt: None,
                    completion: Some(15),
                }),
            ),
            (Anthropic, r#"{"type":"ping"}"#, None),
            (
                Gemini,
                r#"{"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":7}}"#,
                reading(5, 7),
            ),
            (
                Gemini,
                r#"{"usageMetadata":{"promptTokenCount":5,"toolUsePromptTokenCount":1,
                    "candidatesTokenCount":7,"thoughtsTokenCount":3,"totalTokenCount":16}}"#,
                reading(6, 10),
            ),
            (
                Gemini,
                r#"{"usageMetadata":{"promptTokenCount":5}}"#,
                reading(5, 0),
            ),
            (
                Gemini,
                r#" [{"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":1}},
                    {"candidates":[]},
                    {"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":9}}]"#,
                reading(5, 9),
            ),
            (Gemini, r#"[]"#, None),
            (
                Http,
                r#"{"usage":{"prompt_tokens":9,"completion_tokens":12}}"#,
                None,
            ),
            (OpenAi, "", None),
            (OpenAi, "[DONE]", None),
            (Anthropic, "{", None),
        ];
        for (provider, json, want) in table {
            let got = read_document(*provider, json.as_bytes());
            assert_eq!(got, *want, "{provider:?} {json}");
        }
    }

    #[test]
    fn counts_saturate_instead_of_overflowing() {
        let json = format!(
            r#"{{"usage":{{"input_tokens":{max},"cache_read_input_tokens":{max}}}}}"#,
            max = u64::MAX
        );
        let got = read_document(Provider::Anthropic, json.as_bytes());
        assert_eq!(got.and_then(|r| r.prompt), Some(u64::MAX));
    }
}

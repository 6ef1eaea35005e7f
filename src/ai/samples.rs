//! Provider bodies shaped like the real ones, shared by the tests of this module.
//!
//! Each constant is one complete response body as the gateway sees it after de-chunking:
//! server-sent event streams with LF line ends (tests derive the CRLF forms), and whole JSON
//! replies. The comment on each says what usage it must yield.

/// Chat Completions with `include_usage`: null usage on each chunk, then 9 in, 12 out.
/// A content delta mentions the word `usage`.
pub(super) const OPENAI_STREAM: &str = concat!(
    r#"data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"#,
    r#""delta":{"role":"assistant","content":""}}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"#,
    r#""delta":{"content":"the usage is"}}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"c1","object":"chat.completion.chunk","choices":[],"#,
    r#""usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}"#,
    "\n\n",
    "data: [DONE]\n\n",
);

/// Responses API events: `response.completed` carries 4 in, 6 out.
pub(super) const OPENAI_RESPONSES_STREAM: &str = concat!(
    "event: response.created\n",
    r#"data: {"type":"response.created","response":{"id":"r1","usage":null}}"#,
    "\n\n",
    "event: response.completed\n",
    r#"data: {"type":"response.completed","response":{"id":"r1","#,
    r#""usage":{"input_tokens":4,"output_tokens":6,"total_tokens":10}}}"#,
    "\n\n",
);

/// Messages events: 25 + 10 cached in at `message_start`, 15 out at `message_delta`.
/// A text delta mentions the word `usage`.
pub(super) const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\n",
    r#"data: {"type":"message_start","message":{"id":"m1","type":"message","#,
    r#""role":"assistant","content":[],"model":"claude","#,
    r#""usage":{"input_tokens":25,"cache_read_input_tokens":10,"output_tokens":1}}}"#,
    "\n\n",
    "event: ping\ndata: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":0,"#,
    r#""delta":{"type":"text_delta","text":"usage"}}"#,
    "\n\n",
    "event: message_delta\n",
    r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"#,
    r#""usage":{"output_tokens":15}}"#,
    "\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

/// A newer `message_delta` repeats the input (30), which beats `message_start`'s 3;
/// the last delta says 8 out.
pub(super) const ANTHROPIC_STREAM_INPUT_IN_DELTA: &str = concat!(
    "event: message_start\n",
    r#"data: {"type":"message_start","message":{"usage":{"input_tokens":3,"output_tokens":1}}}"#,
    "\n\n",
    "event: message_delta\n",
    r#"data: {"type":"message_delta","usage":{"input_tokens":30,"output_tokens":5}}"#,
    "\n\n",
    "event: message_delta\n",
    r#"data: {"type":"message_delta","usage":{"output_tokens":8}}"#,
    "\n",
);

/// `alt=sse` events, each with `usageMetadata`; the last says 5 in, 7 out.
pub(super) const GEMINI_STREAM: &str = concat!(
    r#"data: {"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"}}],"#,
    r#""usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":2,"totalTokenCount":7}}"#,
    "\n\n",
    r#"data: {"candidates":[{"content":{"parts":[{"text":"lo"}],"role":"model"}}],"#,
    r#""usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":7,"totalTokenCount":12}}"#,
    "\n\n",
);

/// `:streamGenerateContent` without `alt=sse`: a pretty-printed JSON array; 5 in, 9 out.
pub(super) const GEMINI_ARRAY_STREAM: &str = concat!(
    "[{\n  \"candidates\": [],\n  \"usageMetadata\": {\n    \"promptTokenCount\": 5,\n",
    "    \"candidatesTokenCount\": 2\n  }\n}\n,\r\n{\n  \"usageMetadata\": {\n",
    "    \"promptTokenCount\": 5,\n    \"candidatesTokenCount\": 9\n  }\n}\n]",
);

/// A whole chat completion: 19 in, 10 out.
pub(super) const OPENAI_BODY: &str = concat!(
    r#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":"#,
    r#"{"role":"assistant","content":"hi\nthere"}}],"#,
    "\n",
    r#""usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"#,
    r#""completion_tokens_details":{"reasoning_tokens":0}}}"#,
);

/// A whole message: 10 + 5 cache-write in, 20 out.
pub(super) const ANTHROPIC_BODY: &str = concat!(
    r#"{"id":"m1","type":"message","content":[{"type":"text","text":"hi"}],"#,
    r#""usage":{"input_tokens":10,"cache_creation_input_tokens":5,"#,
    r#""cache_read_input_tokens":0,"output_tokens":20}}"#,
);

/// A whole `generateContent` reply: 8 in, 3 + 4 thinking out.
pub(super) const GEMINI_BODY: &str = concat!(
    r#"{"candidates":[{"content":{"parts":[{"text":"hi"}]}}],"usageMetadata":"#,
    r#"{"promptTokenCount":8,"candidatesTokenCount":3,"thoughtsTokenCount":4}}"#,
);

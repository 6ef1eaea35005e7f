//! What the gateway needs to know about LLM requests and responses, per provider wire format
//! (OpenAI, Anthropic, Gemini): the model, stream and token facts of a request, and the token
//! usage a response reports.
//!
//! Sans-IO: functions take bytes and return values, so every rule is tested as a table of
//! bytes in, values out. Nothing here performs I/O, blocks, allocates per byte, keeps more than
//! a caller-given bound of a response, or panics on any input: a body that is not what its
//! provider documents yields fewer facts, never an error.

mod events;
mod lines;
mod request;
#[cfg(test)]
mod samples;
mod text;
mod usage;
mod wire;

pub use request::RequestFacts;
pub use usage::{Usage, UsageScanner};

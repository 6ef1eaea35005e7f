//! The gateway's configuration: a TOML file read into typed, validated values.
//!
//! This first step holds the value languages used inside config strings and the
//! `FILE:LINE:COL: message` problem type; the loader comes next.

mod error;
mod value;

pub use error::{ConfigErrors, ConfigProblem};
pub use value::{
    parse_byte_size, parse_duration, parse_endpoint, parse_rate, system_resolver, Endpoint,
    EndpointSpec, Rate, Resolver, ValueError,
};

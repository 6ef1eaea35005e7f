//! The bytes of the requests a run sends, from a template built once: the head without its
//! `Authorization` line and end, and the body. Each request is then three copies into a
//! connection's output buffer, with the key written between them.

use anyhow::bail;
use bytes::{BufMut, BytesMut};
use keygate::http::HeadWriter;

use super::keys::KeySet;

/// The body sent by POST when none is given: a small OpenAI chat completion.
pub const DEFAULT_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}"#;

/// Fields whose value the load generator must decide: it frames the body itself.
const FORBIDDEN: &[&str] = &["content-length", "transfer-encoding"];

/// The method of every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Method {
    /// A request with a body (the chat completion by default).
    Post,
    /// A request without a body unless one is given.
    Get,
}

impl Method {
    /// The method's token.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Get => "GET",
        }
    }
}

/// What `loadtest run` and `loadtest idle` send: path, method, body and extra fields.
#[derive(Debug, Clone, clap::Args)]
pub struct RequestArgs {
    /// Request target path.
    #[arg(long, default_value = "/v1/chat/completions")]
    pub path: String,
    /// Request method.
    #[arg(long, value_enum, ignore_case = true, default_value_t = Method::Post)]
    pub method: Method,
    /// Request body, read from a file.
    #[arg(long, conflicts_with = "body")]
    pub body_file: Option<std::path::PathBuf>,
    /// Request body [default for POST: a small OpenAI chat completion request].
    #[arg(long)]
    pub body: Option<String>,
    /// Extra request header, "Name: value" (repeatable).
    #[arg(long = "header", value_name = "HEADER", value_parser = Header::parse)]
    pub headers: Vec<Header>,
}

impl RequestArgs {
    /// The body: the file's, the one given, the default chat request for a POST, or none.
    pub fn body(&self) -> anyhow::Result<Option<Vec<u8>>> {
        use anyhow::Context;
        Ok(match (&self.body_file, &self.body, self.method) {
            (Some(path), _, _) => Some(
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            ),
            (None, Some(body), _) => Some(body.clone().into_bytes()),
            (None, None, Method::Post) => Some(DEFAULT_BODY.as_bytes().to_vec()),
            (None, None, Method::Get) => None,
        })
    }
}

/// One `--header` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name, case kept.
    pub name: String,
    /// The value, trimmed.
    pub value: String,
}

impl Header {
    /// Parses `Name: value`: a token (RFC 9110 §5.1), then a value without control characters.
    pub fn parse(text: &str) -> Result<Header, String> {
        let Some((name, value)) = text.split_once(':') else {
            return Err(format!("{text:?} is not `Name: value`"));
        };
        let value = value.trim_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(format!("{name:?} is not a header name"));
        }
        if value
            .bytes()
            .any(|byte| byte.is_ascii_control() && byte != b'\t')
        {
            return Err(format!("the value of {name} holds a control character"));
        }
        Ok(Header {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// Requests to one target, all alike but for their key.
#[derive(Debug)]
pub struct RequestTemplate {
    /// The request line and fields, without the key's field and the empty line.
    head: Box<[u8]>,
    /// The body, possibly empty.
    body: Box<[u8]>,
    /// The keys requests carry; none sends no `Authorization`.
    keys: Option<KeySet>,
}

impl RequestTemplate {
    /// A template for `method path` to `host`, with the extra `headers`, `body` (framed by
    /// `Content-Length`) and a key from `keys` in each request.
    pub fn new(
        method: Method,
        path: &str,
        host: &str,
        headers: &[Header],
        body: Option<&[u8]>,
        keys: Option<KeySet>,
    ) -> anyhow::Result<RequestTemplate> {
        if !path.starts_with('/') || !path.bytes().all(|byte| byte.is_ascii_graphic()) {
            bail!("--path must start with / and hold no spaces or control characters");
        }
        let given = |name: &str| headers.iter().any(|h| h.name.eq_ignore_ascii_case(name));
        for name in FORBIDDEN {
            if given(name) {
                bail!("--header {name} is not allowed: the load generator sets the framing");
            }
        }
        if keys.is_some() && given("authorization") {
            bail!("--header Authorization conflicts with the keys options");
        }

        let mut head = BytesMut::new();
        let mut writer = HeadWriter::new(&mut head);
        writer.request_line(method.as_str().as_bytes(), path.as_bytes());
        // A default field given with `--header` is replaced, not repeated.
        let defaults: [(&str, &[u8]); 3] = [
            ("Host", host.as_bytes()),
            ("User-Agent", b"keygate-loadtest"),
            ("Content-Type", b"application/json"),
        ];
        for (name, value) in defaults {
            let wanted = name != "Content-Type" || body.is_some();
            if wanted && !given(name) {
                writer.field(name.as_bytes(), value);
            }
        }
        if let Some(body) = body {
            writer.field_u64(b"Content-Length", body.len() as u64);
        }
        for header in headers {
            writer.field(header.name.as_bytes(), header.value.as_bytes());
        }

        Ok(RequestTemplate {
            head: head.as_ref().into(),
            body: body.unwrap_or_default().into(),
            keys,
        })
    }

    /// Appends one request to `out`, carrying key `key` when the template has keys.
    pub fn write(&self, key: u64, out: &mut BytesMut) {
        out.reserve(self.head.len() + self.body.len() + 64);
        out.put_slice(&self.head);
        if let Some(keys) = &self.keys {
            out.put_slice(b"Authorization: Bearer ");
            keys.write(key, out);
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
        out.put_slice(&self.body);
    }
}

/// tchar (RFC 9110 §5.6.2).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text: &str) -> Header {
        Header::parse(text).unwrap()
    }

    #[test]
    fn headers_are_parsed_and_checked() {
        assert_eq!(
            header("X-Mock-Tokens:  4 "),
            Header {
                name: "X-Mock-Tokens".into(),
                value: "4".into()
            }
        );
        assert_eq!(header("x-empty:").value, "");
        assert_eq!(header("x-colon: a:b").value, "a:b");
        for bad in ["no colon", ": v", "bad name: v", "x: a\r\nb: c", "x\n: v"] {
            assert!(Header::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn post_with_a_key() {
        let keys = KeySet::numbered("kg-", 3).unwrap();
        let template = RequestTemplate::new(
            Method::Post,
            "/v1/chat/completions",
            "127.0.0.1:9001",
            &[header("x-mock-tokens: 2")],
            Some(b"{}"),
            Some(keys),
        )
        .unwrap();
        let mut out = BytesMut::new();
        template.write(2, &mut out);
        assert_eq!(
            &out[..],
            &b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:9001\r\n\
               User-Agent: keygate-loadtest\r\nContent-Type: application/json\r\n\
               Content-Length: 2\r\nx-mock-tokens: 2\r\nAuthorization: Bearer kg-2\r\n\r\n{}"[..]
        );
    }

    #[test]
    fn get_without_keys_or_body_and_replaced_defaults() {
        let template = RequestTemplate::new(
            Method::Get,
            "/v1/models",
            "h:1",
            &[header("host: other"), header("user-agent: me")],
            None,
            None,
        )
        .unwrap();
        let mut out = BytesMut::new();
        template.write(0, &mut out);
        assert_eq!(
            &out[..],
            &b"GET /v1/models HTTP/1.1\r\nhost: other\r\nuser-agent: me\r\n\r\n"[..]
        );
    }

    #[test]
    fn requests_append_one_after_another() {
        let template = RequestTemplate::new(Method::Get, "/", "h", &[], None, None).unwrap();
        let mut out = BytesMut::new();
        template.write(0, &mut out);
        let one = out.len();
        template.write(0, &mut out);
        assert_eq!(out.len(), 2 * one);
        assert_eq!(out[..one], out[one..]);
    }

    #[test]
    fn conflicting_options_are_refused() {
        let keys = KeySet::numbered("kg-", 3).unwrap();
        let refused = [
            RequestTemplate::new(
                Method::Get,
                "/",
                "h",
                &[header("Content-Length: 1")],
                None,
                None,
            ),
            RequestTemplate::new(
                Method::Get,
                "/",
                "h",
                &[header("transfer-encoding: x")],
                None,
                None,
            ),
            RequestTemplate::new(
                Method::Get,
                "/",
                "h",
                &[header("authorization: x")],
                None,
                Some(keys),
            ),
            RequestTemplate::new(Method::Get, "no-slash", "h", &[], None, None),
            RequestTemplate::new(Method::Get, "/a b", "h", &[], None, None),
        ];
        for result in refused {
            assert!(result.is_err());
        }
    }
}

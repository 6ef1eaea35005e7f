//! Request heads (RFC 9112 §3): parsed in place, checked for the ambiguities that let requests
//! be smuggled, and kept as spans of the received bytes.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::fields::{self, Field};
use super::{head_length, version_of, Framing, ParseError, Version, MAX_HEADERS};

/// The request methods the gateway treats specially; others are carried as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// HEAD: the response has no body (RFC 9110 §9.3.2).
    Head,
    /// POST.
    Post,
    /// CONNECT: tunnels are not offered by the gateway.
    Connect,
    /// Any other method token.
    Other,
}

/// A parsed request head. Its bytes are the head as received; everything else points into them.
#[derive(Debug, Clone)]
pub struct RequestHead {
    raw: Bytes,
    method_span: Range<u32>,
    target: Range<u32>,
    path: Range<u32>,
    /// The method, classified.
    pub method: Method,
    /// The protocol version of the request line.
    pub version: Version,
    /// The header fields in the order received.
    pub fields: Vec<Field>,
    /// How the request body is framed.
    pub framing: Framing,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// Whether the client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
}

impl RequestHead {
    /// Parses a request head from the start of `buf`.
    ///
    /// Returns `Ok(None)` when more bytes are needed, and on success splits the head off the
    /// front of `buf`, leaving any body or pipelined bytes behind. `fields` is reused storage:
    /// the head takes it on success ([`RequestHead::into_fields`] gives it back) and it stays
    /// with the caller otherwise.
    pub fn parse(
        buf: &mut BytesMut,
        max_head_bytes: usize,
        fields: &mut Vec<Field>,
    ) -> Result<Option<RequestHead>, ParseError> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut slots);
        let Some(head_len) = head_length(request.parse(buf), buf.len(), max_head_bytes)? else {
            return Ok(None);
        };

        let base: &[u8] = buf;
        let facts = fields::collect(base, request.headers, fields)?;
        let version = version_of(request.version);
        let method_text = request.method.unwrap_or_default().as_bytes();
        let method = classify(method_text);
        let target_text = request.path.unwrap_or_default().as_bytes();
        let path = path_of(target_text)?;

        // A message with both is a smuggling attempt or a broken client (RFC 9112 §6.1).
        if facts.transfer_encoding && facts.content_length.is_some() {
            return Err(ParseError::AmbiguousLength);
        }
        // HTTP/1.0 has no transfer codings: its framing would be faulty (RFC 9112 §6.1).
        if facts.transfer_encoding && (version == Version::Http10 || !facts.chunked) {
            return Err(if version == Version::Http10 {
                ParseError::Malformed("Transfer-Encoding in an HTTP/1.0 request")
            } else {
                ParseError::UnsupportedTransferEncoding
            });
        }
        if facts.host_count > 1 || (version == Version::Http11 && facts.host_count == 0) {
            return Err(ParseError::BadHost);
        }
        if facts.expect_other {
            return Err(ParseError::UnsupportedExpectation);
        }

        // A request without either field has no body (RFC 9112 §6.3 rule 7).
        let framing = match (facts.chunked, facts.content_length) {
            (true, _) => Framing::Chunked,
            (false, Some(length)) => Framing::Length(length),
            (false, None) => Framing::Empty,
        };
        let keep_alive = match version {
            Version::Http11 => !facts.connection_close,
            Version::Http10 => facts.connection_keep_alive && !facts.connection_close,
        };
        let method_span = fields::span(base, method_text);
        let target = fields::span(base, target_text);
        let path = target.start + path.start as u32..target.start + path.end as u32;
        let has_body = !matches!(framing, Framing::Empty | Framing::Length(0));
        let expect_continue = facts.expect_continue && has_body;
        let raw = buf.split_to(head_len).freeze();

        Ok(Some(RequestHead {
            raw,
            method_span,
            target,
            path,
            method,
            version,
            fields: std::mem::take(fields),
            framing,
            keep_alive,
            expect_continue,
        }))
    }

    /// The method token as received.
    pub fn method_bytes(&self) -> &[u8] {
        self.slice(&self.method_span)
    }

    /// The request target as received (origin-form, or absolute-form from a proxy client).
    pub fn target(&self) -> &[u8] {
        self.slice(&self.target)
    }

    /// The path (and query) of the target: the target itself in origin-form; `/` for an
    /// absolute-form target without a path (`http://host`, RFC 9110 §4.2.3).
    pub fn path(&self) -> &[u8] {
        match self.slice(&self.path) {
            b"" => b"/",
            path => path,
        }
    }

    /// The path without its query.
    pub fn path_only(&self) -> &[u8] {
        let path = self.path();
        path.split(|&b| b == b'?').next().unwrap_or(path)
    }

    /// The host the client addressed: the authority of an absolute-form target, else `Host`.
    pub fn host(&self) -> Option<&[u8]> {
        if self.path != self.target {
            let target = self.target();
            let rest = &target[target.iter().position(|&b| b == b':').map_or(0, |i| i + 3)..];
            let end = rest
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .unwrap_or(rest.len());
            return Some(&rest[..end]);
        }
        self.fields
            .iter()
            .find(|field| field.flags.contains(super::FieldFlags::HOST))
            .map(|field| self.slice(&field.value))
    }

    /// The name of a field, as received.
    pub fn name(&self, field: &Field) -> &[u8] {
        self.slice(&field.name)
    }

    /// The value of a field, without surrounding whitespace.
    pub fn value(&self, field: &Field) -> &[u8] {
        self.slice(&field.value)
    }

    /// The first value of the field called `name` (compared without case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|field| self.name(field).eq_ignore_ascii_case(name.as_bytes()))
            .map(|field| self.value(field))
    }

    /// The head's bytes as received.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Gives back the field storage for the next request on the connection.
    pub fn into_fields(self) -> Vec<Field> {
        self.fields
    }

    fn slice(&self, range: &Range<u32>) -> &[u8] {
        &self.raw[range.start as usize..range.end as usize]
    }
}

fn classify(method: &[u8]) -> Method {
    match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        b"CONNECT" => Method::Connect,
        _ => Method::Other,
    }
}

/// The range of the path within a request target (RFC 9112 §3.2).
fn path_of(target: &[u8]) -> Result<Range<usize>, ParseError> {
    // A fragment is never sent in a request target (RFC 9112 §3.2).
    if target.contains(&b'#') {
        return Err(ParseError::Malformed("request target holds a fragment"));
    }
    if target.first() == Some(&b'/') || target == b"*" {
        return Ok(0..target.len());
    }
    // absolute-form: scheme "://" authority [path-abempty] ["?" query]
    let lower_scheme = target.iter().position(|&b| b == b':');
    let Some(colon) = lower_scheme else {
        return Err(ParseError::Malformed(
            "request target is not origin- or absolute-form",
        ));
    };
    let scheme = &target[..colon];
    let http = scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https");
    if !http || !target[colon..].starts_with(b"://") {
        return Err(ParseError::Malformed(
            "request target is not origin- or absolute-form",
        ));
    }
    let authority_start = colon + 3;
    let path_start = target[authority_start..]
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .map_or(target.len(), |i| authority_start + i);
    if path_start == authority_start {
        return Err(ParseError::Malformed("absolute-form target without a host"));
    }
    // A query needs a path before it to be forwarded in origin-form; `http://host?q` is
    // refused rather than rewritten.
    if target.get(path_start) == Some(&b'?') {
        return Err(ParseError::Malformed(
            "absolute-form target with a query but no path",
        ));
    }
    // RFC 9110 §4.2.4: userinfo in an http(s) URI is deprecated and a recipient should treat
    // it as an error; `http://allowed.example@other/` names `other`, which readers disagree on.
    if target[authority_start..path_start].contains(&b'@') {
        return Err(ParseError::Malformed("absolute-form target with userinfo"));
    }
    Ok(path_start..target.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<Option<RequestHead>, ParseError> {
        RequestHead::parse(&mut BytesMut::from(input), 8192, &mut Vec::new())
    }

    fn parse_ok(input: &[u8]) -> RequestHead {
        match parse(input) {
            Ok(Some(head)) => head,
            other => panic!("{:?} gave {:?}", String::from_utf8_lossy(input), other),
        }
    }

    #[test]
    fn framing_table() {
        let table: &[(&[u8], Framing)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Framing::Empty),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
                Framing::Length(5),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
                Framing::Length(0),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 7\r\nContent-Length: 7\r\n\r\n",
                Framing::Length(7),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Chunked,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED \r\n\r\n",
                Framing::Chunked,
            ),
        ];
        for (input, framing) in table {
            assert_eq!(
                parse_ok(input).framing,
                *framing,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn smuggling_and_malformed_table() {
        let table: &[(&[u8], ParseError)] = &[
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                ParseError::AmbiguousLength,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                ParseError::BadContentLength,
            ),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5a\r\n\r\n", ParseError::BadContentLength),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n", ParseError::BadContentLength),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                ParseError::UnsupportedTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                ParseError::UnsupportedTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
                ParseError::UnsupportedTransferEncoding,
            ),
            (b"GET / HTTP/1.1\r\n\r\n", ParseError::BadHost),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", ParseError::BadHost),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", ParseError::BadHost),
            (b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", ParseError::BadHost),
            (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", ParseError::BadHost),
            (b"GET /x#frag HTTP/1.1\r\nHost: a\r\n\r\n", ParseError::Malformed("request target holds a fragment")),
            (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", ParseError::UnsupportedExpectation),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n", ParseError::Malformed("invalid header name")),
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", ParseError::Malformed("invalid header name")),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", ParseError::Malformed("unsupported HTTP version")),
            (b"GET foo HTTP/1.1\r\nHost: a\r\n\r\n", ParseError::Malformed("request target is not origin- or absolute-form")),
            (
                b"GET http://a.example@b/x HTTP/1.1\r\nHost: b\r\n\r\n",
                ParseError::Malformed("absolute-form target with userinfo"),
            ),
            (
                b"GET http://a.example?q HTTP/1.1\r\nHost: b\r\n\r\n",
                ParseError::Malformed("absolute-form target with a query but no path"),
            ),
        ];
        for (input, expected) in table {
            let got = parse(input).map(|head| head.map(|h| h.framing));
            assert_eq!(
                got,
                Err(expected.clone()),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn http10_transfer_encoding_is_rejected() {
        let input = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse(input), Err(ParseError::Malformed(_))));
    }

    #[test]
    fn partial_heads_need_more_bytes() {
        let full = b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n";
        for cut in 0..full.len() {
            assert!(matches!(parse(&full[..cut]), Ok(None)), "cut at {cut}");
        }
    }

    #[test]
    fn head_limit_gives_too_large() {
        let mut input = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
        input.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(parse(&input).map(|_| ()), Err(ParseError::HeadTooLarge));
        input.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&input).map(|_| ()), Err(ParseError::HeadTooLarge));
    }

    #[test]
    fn too_many_fields_gives_too_large() {
        let mut input = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            input.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\n");
        assert_eq!(parse(&input).map(|_| ()), Err(ParseError::HeadTooLarge));
    }

    #[test]
    fn keep_alive_rules() {
        let table: &[(&[u8], bool)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        ];
        for (input, keep_alive) in table {
            assert_eq!(
                parse_ok(input).keep_alive,
                *keep_alive,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn head_is_split_off_and_body_stays() {
        let mut buf = BytesMut::from(
            &b"POST /a?b=1 HTTP/1.1\r\nHost: Example\r\nContent-Length: 3\r\n\r\nabcGET"[..],
        );
        let head = RequestHead::parse(&mut buf, 8192, &mut Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..], b"abcGET");
        assert_eq!(head.method, Method::Post);
        assert_eq!(head.path(), b"/a?b=1");
        assert_eq!(head.path_only(), b"/a");
        assert_eq!(head.host(), Some(&b"Example"[..]));
        assert_eq!(head.header("content-length"), Some(&b"3"[..]));
    }

    #[test]
    fn absolute_form_target() {
        let head =
            parse_ok(b"GET http://api.example:8080/v1/models?x HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(head.path(), b"/v1/models?x");
        assert_eq!(head.host(), Some(&b"api.example:8080"[..]));
        let head = parse_ok(b"GET http://api.example HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(head.path(), b"/");
        assert_eq!(head.host(), Some(&b"api.example"[..]));
    }

    #[test]
    fn connection_options_are_hop_by_hop() {
        let head = parse_ok(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret\r\nX-Secret: 1\r\nX-Kept: 2\r\nKeep-Alive: 5\r\n\r\n",
        );
        let forwarded: Vec<&[u8]> = head
            .fields
            .iter()
            .filter(|f| !f.flags.contains(super::super::FieldFlags::HOP_BY_HOP))
            .map(|f| head.name(f))
            .collect();
        assert_eq!(forwarded, vec![&b"Host"[..], b"X-Kept"]);
    }

    #[test]
    fn expect_continue_only_with_a_body() {
        let head = parse_ok(
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        );
        assert!(head.expect_continue);
        let head = parse_ok(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n");
        assert!(!head.expect_continue);
    }
}

//! Just enough HTTP/1.x for a metrics scrape, as pure functions: read a request head from
//! bytes, decide the answer, write a response.
//!
//! The endpoint is read-only and serves one resource: `GET /metrics` (a query string is
//! ignored). Any other path is 404, any other method 405, a head larger than the limit
//! 431, and anything that is not an HTTP/1.x request line 400. Request bodies are never
//! read: the connection closes after one response. No sockets or clocks here.

/// What the bytes received so far amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not complete yet: read more (within the limit).
    Partial,
    /// The head is complete; this is the answer it gets.
    Complete(Route),
}

/// The answer to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics`: 200 with the exposition.
    Metrics,
    /// Another path: 404.
    NotFound,
    /// Another method: 405.
    MethodNotAllowed,
    /// The head exceeded the limit before it ended: 431.
    HeadTooLarge,
    /// Not an HTTP/1.x request: 400.
    BadRequest,
}

impl Route {
    /// Status code and reason phrase.
    pub const fn status(self) -> (u16, &'static str) {
        match self {
            Route::Metrics => (200, "OK"),
            Route::NotFound => (404, "Not Found"),
            Route::MethodNotAllowed => (405, "Method Not Allowed"),
            Route::HeadTooLarge => (431, "Request Header Fields Too Large"),
            Route::BadRequest => (400, "Bad Request"),
        }
    }
}

/// The one path served.
pub const METRICS_PATH: &str = "/metrics";

/// Reads the request head in `received` (everything read so far). A head longer than
/// `head_bytes_max` without its blank line is [`Route::HeadTooLarge`].
pub fn parse_request(received: &[u8], head_bytes_max: usize) -> Parsed {
    let window = received.get(..head_bytes_max).unwrap_or(received);
    let Some(head_end) = find_head_end(window) else {
        if received.len() >= head_bytes_max {
            return Parsed::Complete(Route::HeadTooLarge);
        }
        // A request line that is already wrong need not wait for the rest.
        if let Some(line_end) = window.iter().position(|byte| *byte == b'\n') {
            let line = window.get(..line_end).unwrap_or_default();
            if let Route::BadRequest = route_request_line(line) {
                return Parsed::Complete(Route::BadRequest);
            }
        }
        return Parsed::Partial;
    };
    let head = window.get(..head_end).unwrap_or_default();
    let line_end = head
        .iter()
        .position(|byte| *byte == b'\n')
        .unwrap_or(head.len());
    Parsed::Complete(route_request_line(head.get(..line_end).unwrap_or_default()))
}

/// Where the head ends (the index of its blank line's first byte), for CRLF or bare LF.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|window| window == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|window| window == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn route_request_line(line: &[u8]) -> Route {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::BadRequest;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    let token = |text: &str| {
        !text.is_empty()
            && text
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
    };
    if !token(method) || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Route::BadRequest;
    }
    if method != "GET" {
        return Route::MethodNotAllowed;
    }
    let path = target.split('?').next().unwrap_or(target);
    if path == METRICS_PATH {
        Route::Metrics
    } else {
        Route::NotFound
    }
}

/// Writes a complete response for `route` with `body` (the exposition for
/// [`Route::Metrics`], a one-line explanation otherwise) into `out`.
pub fn write_response(route: Route, content_type: &str, body: &[u8], out: &mut Vec<u8>) {
    let (code, reason) = route.status();
    out.extend_from_slice(format!("HTTP/1.1 {code} {reason}\r\n").as_bytes());
    out.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
    out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    if route == Route::MethodNotAllowed {
        out.extend_from_slice(b"Allow: GET\r\n");
    }
    out.extend_from_slice(b"Cache-Control: no-store\r\nConnection: close\r\n\r\n");
    out.extend_from_slice(body);
}

/// The short text body of a refusal.
pub const fn refusal_body(route: Route) -> &'static str {
    match route {
        Route::Metrics => "",
        Route::NotFound => "not found: only GET /metrics is served\n",
        Route::MethodNotAllowed => "method not allowed: only GET /metrics is served\n",
        Route::HeadTooLarge => "request head too large\n",
        Route::BadRequest => "bad request\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64;

    #[test]
    fn requests_are_routed_by_method_and_path() {
        let cases: &[(&[u8], Parsed)] = &[
            (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                Parsed::Complete(Route::Metrics),
            ),
            (
                b"GET /metrics?x=1 HTTP/1.0\r\n\r\n",
                Parsed::Complete(Route::Metrics),
            ),
            (
                b"GET /metrics HTTP/1.1\n\n",
                Parsed::Complete(Route::Metrics),
            ),
            (b"GET / HTTP/1.1\r\n\r\n", Parsed::Complete(Route::NotFound)),
            (
                b"GET /metrics/x HTTP/1.1\r\n\r\n",
                Parsed::Complete(Route::NotFound),
            ),
            (
                b"POST /metrics HTTP/1.1\r\n\r\n",
                Parsed::Complete(Route::MethodNotAllowed),
            ),
            (
                b"HEAD /metrics HTTP/1.1\r\n\r\n",
                Parsed::Complete(Route::MethodNotAllowed),
            ),
            (b"GET /metrics\r\n\r\n", Parsed::Complete(Route::BadRequest)),
            (
                b"GET /metrics HTTP/2\r\n\r\n",
                Parsed::Complete(Route::BadRequest),
            ),
            (
                b"GET metrics HTTP/1.1\r\n\r\n",
                Parsed::Complete(Route::BadRequest),
            ),
            (
                b"\x16\x03\x01\x02\x00\x01\x00\n",
                Parsed::Complete(Route::BadRequest),
            ),
            (b"GET /metrics HTTP/1.1\r\nHost", Parsed::Partial),
            (b"GET /met", Parsed::Partial),
            (b"", Parsed::Partial),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                parse_request(bytes, MAX),
                *expected,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn a_head_that_does_not_end_within_the_limit_is_refused() {
        let mut request = b"GET /metrics HTTP/1.1\r\n".to_vec();
        request.extend(std::iter::repeat_n(b'a', MAX));
        assert_eq!(
            parse_request(&request, MAX),
            Parsed::Complete(Route::HeadTooLarge)
        );
        // A blank line beyond the limit does not count.
        request.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_request(&request, MAX),
            Parsed::Complete(Route::HeadTooLarge)
        );
        let exact = b"GET /metrics HTTP/1.1\r\n\r\n";
        assert_eq!(
            parse_request(exact, exact.len()),
            Parsed::Complete(Route::Metrics)
        );
    }

    #[test]
    fn responses_carry_length_and_close() {
        let mut out = Vec::new();
        write_response(Route::MethodNotAllowed, "text/plain", b"no\n", &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\n\
              Content-Length: 3\r\nAllow: GET\r\nCache-Control: no-store\r\n\
              Connection: close\r\n\r\nno\n"
        );
    }
}

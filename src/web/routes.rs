//! What each request gets, as a pure function of its method and path, and the embedded
//! operator page.
//!
//! The endpoint is read-only: `GET` only (anything else is 405), a fixed set of paths
//! (anything else is 404), and a query string is ignored. No sockets here.

/// The resource a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics`: the exposition, in the negotiated format.
    Metrics,
    /// `GET /`: the operator page.
    Page,
    /// `GET /page.css`.
    Style,
    /// `GET /page.js`.
    Script,
    /// `GET /status.json`: the snapshot the page polls.
    Status,
    /// Another path: 404.
    NotFound,
    /// Another method: 405.
    MethodNotAllowed,
}

/// The page, its style sheet and its script, compiled into the binary.
pub const PAGE_HTML: &str = include_str!("page/index.html");
/// The page's style sheet.
pub const PAGE_CSS: &str = include_str!("page/page.css");
/// The page's script.
pub const PAGE_JS: &str = include_str!("page/page.js");

/// Routes a request.
pub fn route(method: &str, target: &str) -> Route {
    if method != "GET" {
        return Route::MethodNotAllowed;
    }
    let path = target.split('?').next().unwrap_or(target);
    match path {
        "/metrics" => Route::Metrics,
        "/" => Route::Page,
        "/page.css" => Route::Style,
        "/page.js" => Route::Script,
        "/status.json" => Route::Status,
        _ => Route::NotFound,
    }
}

impl Route {
    /// The fixed body and content type of a static route; `None` for generated ones.
    pub const fn fixed(self) -> Option<(&'static str, &'static str)> {
        match self {
            Route::Page => Some((PAGE_HTML, "text/html; charset=utf-8")),
            Route::Style => Some((PAGE_CSS, "text/css; charset=utf-8")),
            Route::Script => Some((PAGE_JS, "text/javascript; charset=utf-8")),
            Route::NotFound => Some((
                "not found: GET /metrics, / (the operator page) and /status.json are served\n",
                "text/plain; charset=utf-8",
            )),
            Route::MethodNotAllowed => Some((
                "method not allowed: the endpoint is read-only (GET)\n",
                "text/plain; charset=utf-8",
            )),
            Route::Metrics | Route::Status => None,
        }
    }

    /// The status code.
    pub const fn status(self) -> u16 {
        match self {
            Route::NotFound => 404,
            Route::MethodNotAllowed => 405,
            _ => 200,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_by_method_and_path() {
        let cases = [
            ("GET", "/metrics", Route::Metrics),
            ("GET", "/metrics?x=1", Route::Metrics),
            ("GET", "/", Route::Page),
            ("GET", "/?refresh", Route::Page),
            ("GET", "/page.css", Route::Style),
            ("GET", "/page.js", Route::Script),
            ("GET", "/status.json", Route::Status),
            ("GET", "/metrics/x", Route::NotFound),
            ("GET", "/../etc/passwd", Route::NotFound),
            ("POST", "/metrics", Route::MethodNotAllowed),
            ("HEAD", "/metrics", Route::MethodNotAllowed),
            ("DELETE", "/", Route::MethodNotAllowed),
        ];
        for (method, target, expected) in cases {
            assert_eq!(route(method, target), expected, "{method} {target}");
        }
    }

    #[test]
    fn the_page_uses_nothing_from_elsewhere() {
        for text in [PAGE_HTML, PAGE_CSS, PAGE_JS] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        assert!(PAGE_HTML.contains("page.js") && PAGE_HTML.contains("page.css"));
        assert!(PAGE_JS.contains("status.json"));
    }
}

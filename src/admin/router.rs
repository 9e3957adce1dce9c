//! The admin listener's pages, by path, and the answers for everything
//! else: a JSON error for an unknown path or a method other than GET.

use async_trait::async_trait;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use pingora_http::RequestHeader;

/// One page of the admin listener, answering `GET` of its path.
#[async_trait]
pub trait Page: Send + Sync {
    async fn get(&self, request: &RequestHeader) -> Response<Vec<u8>>;

    /// Served without the admin token: only for a page that holds no data
    /// (the status page's shell, which fetches the data with the token).
    fn public(&self) -> bool {
        false
    }
}

/// Pages by exact path.
#[derive(Default)]
pub struct Router {
    pages: Vec<(&'static str, Box<dyn Page>)>,
}

impl Router {
    /// Serves `page` at `path` (exactly, without the query).
    pub fn page(mut self, path: &'static str, page: impl Page + 'static) -> Self {
        self.pages.push((path, Box::new(page)));
        self
    }

    /// Whether the page at `path` is served without the token.
    pub fn is_public(&self, path: &str) -> bool {
        self.pages
            .iter()
            .any(|(p, page)| *p == path && page.public())
    }

    /// The answer to `request`, once it is authenticated.
    pub async fn answer(&self, request: &RequestHeader) -> Response<Vec<u8>> {
        let path = request.uri.path();
        let Some((_, page)) = self.pages.iter().find(|(p, _)| *p == path) else {
            let known: Vec<&str> = self.pages.iter().map(|(p, _)| *p).collect();
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no admin page at {path}; pages: {}", known.join(", ")),
            );
        };
        if request.method != Method::GET {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("{} is not allowed; use GET", request.method),
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
            return r;
        }
        page.get(request).await
    }
}

/// A response with `body` of `content_type`, never cached.
pub fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let len = body.len();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An error in the shape the proxy's own errors have:
/// `{"error":{"message","type","code"}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Vec<u8>> {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    };
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "code": code }
    });
    respond(status, "application/json", body.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Hello;

    #[async_trait]
    impl Page for Hello {
        async fn get(&self, _: &RequestHeader) -> Response<Vec<u8>> {
            respond(StatusCode::OK, "text/plain", b"hello".to_vec())
        }
    }

    fn request(method: &str, path: &str) -> RequestHeader {
        RequestHeader::build(method, path.as_bytes(), None).unwrap()
    }

    fn json(r: &Response<Vec<u8>>) -> serde_json::Value {
        serde_json::from_slice(r.body()).unwrap()
    }

    #[tokio::test]
    async fn pages_by_path_and_json_for_the_rest() {
        let router = Router::default().page("/hello", Hello);
        let r = router.answer(&request("GET", "/hello?x=1")).await;
        assert_eq!(
            (r.status(), r.body().as_slice()),
            (StatusCode::OK, &b"hello"[..])
        );
        assert_eq!(r.headers()[CONTENT_LENGTH], "5");

        let r = router.answer(&request("GET", "/nope")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            json(&r)["error"]["message"],
            "no admin page at /nope; pages: /hello"
        );

        assert!(
            !router.is_public("/hello"),
            "pages need the token by default"
        );

        let r = router.answer(&request("POST", "/hello")).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "GET");
        assert_eq!(json(&r)["error"]["code"], "method_not_allowed");
    }
}

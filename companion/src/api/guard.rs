//! What every request passes before a handler: its shape (no body, a bounded URL) and, when
//! configured, a bearer token.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

/// Longest request target accepted (path and query).
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Refuses requests with a body or an overlong URL before any work is done for them.
pub async fn request_shape(request: Request, next: Next) -> Response {
    let uri_len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return plain(StatusCode::URI_TOO_LONG, "URL too long");
    }
    let headers = request.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|len| len.as_bytes() != b"0");
    if has_body {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request bodies are not accepted",
        );
    }
    next.run(request).await
}

/// The bearer token required of clients, and which paths are open without it.
#[derive(Clone)]
pub struct TokenAuth {
    token: Arc<[u8]>,
    open_healthz: bool,
}

impl TokenAuth {
    pub fn new(token: &str, open_healthz: bool) -> TokenAuth {
        TokenAuth {
            token: token.as_bytes().into(),
            open_healthz,
        }
    }

    /// Whether the Authorization header carries the token. The comparison takes the same time
    /// whatever the token and the guess share.
    fn accepts(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(presented) = authorization.and_then(|value| {
            let value = value.as_bytes();
            let scheme = value.get(..7)?;
            scheme
                .eq_ignore_ascii_case(b"bearer ")
                .then(|| value[7..].trim_ascii())
        }) else {
            return false;
        };
        constant_time_eq::constant_time_eq(presented, &self.token)
    }
}

pub async fn require_token(
    State(auth): State<TokenAuth>,
    request: Request,
    next: Next,
) -> Response {
    let open = auth.open_healthz && request.uri().path() == "/healthz";
    if open || auth.accepts(request.headers().get(header::AUTHORIZATION)) {
        return next.run(request).await;
    }
    let mut response = plain(StatusCode::UNAUTHORIZED, "a bearer token is required");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"companion\""),
    );
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_check() {
        let auth = TokenAuth::new("s3cret", true);
        let header = |v: &'static str| HeaderValue::from_static(v);
        assert!(auth.accepts(Some(&header("Bearer s3cret"))));
        assert!(auth.accepts(Some(&header("bearer s3cret"))));
        assert!(auth.accepts(Some(&header("Bearer s3cret  "))));
        for wrong in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Basic s3cret",
            "Bearer",
            "s3cret",
            "Bearer ",
        ] {
            assert!(!auth.accepts(Some(&header(wrong))), "{wrong}");
        }
        assert!(!auth.accepts(None));
    }
}

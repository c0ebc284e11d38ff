//! What every request passes before a handler: its shape (no body, a bounded URL, a well-formed
//! path) and, when configured, a bearer token.

use std::{path::Path, sync::Arc};

use anyhow::{Context, bail};

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
    let path = request.uri().path();
    if !escapes_are_well_formed(path) {
        return plain(
            StatusCode::BAD_REQUEST,
            "malformed percent-escape in the path: `%` must be followed by two hex digits",
        );
    }
    if let Some(location) = without_empty_leading_segments(path, request.uri().query()) {
        // What the original's router did: clients whose base URL ends in `/` follow it.
        let mut response = plain(StatusCode::MOVED_PERMANENTLY, "moved permanently");
        if let Ok(location) = HeaderValue::try_from(location) {
            response.headers_mut().insert(header::LOCATION, location);
            return response;
        }
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

/// Whether every `%` of `path` starts a `%XX` escape.
fn escapes_are_well_formed(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// For a path starting with `//` (empty leading segments), the cleaned path and query to
/// redirect to; `None` for any other path.
fn without_empty_leading_segments(path: &str, query: Option<&str>) -> Option<String> {
    if !path.starts_with("//") {
        return None;
    }
    let cleaned = format!("/{}", path.trim_start_matches('/'));
    Some(match query {
        Some(query) => format!("{cleaned}?{query}"),
        None => cleaned,
    })
}

/// Shortest token not warned about: 16 bytes (128 bits when random).
const MIN_TOKEN_BYTES: usize = 16;

/// Reads the bearer token from `path`: its one line, surrounding whitespace ignored. An empty
/// file or one of several lines (a token file that is something else) is refused; a short token
/// or a file others can read or write are accepted with the warnings returned.
pub fn read_token_file(path: &Path) -> anyhow::Result<(String, Vec<String>)> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading the token file {shown}"))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("the token file {shown} is empty");
    }
    if token.contains(['\n', '\r']) {
        bail!("the token file {shown} holds several lines: it must hold the token alone");
    }
    let mut warnings = Vec::new();
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading the token file {shown}"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        warnings.push(format!(
            "the token file {shown} is open to its group or others (mode {:o}): chmod 600 it",
            mode & 0o777
        ));
    }
    if token.len() < MIN_TOKEN_BYTES {
        warnings.push(format!(
            "the token in {shown} is {} bytes: use at least {MIN_TOKEN_BYTES} random bytes",
            token.len()
        ));
    }
    Ok((token.to_owned(), warnings))
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

    #[test]
    fn token_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let good = "0123456789abcdef0123";
        let (token, warnings) =
            read_token_file(&file("good", &format!("  {good}\n"), 0o600)).unwrap();
        assert_eq!((token.as_str(), warnings.len()), (good, 0), "{warnings:?}");

        let (_, warnings) = read_token_file(&file("open", good, 0o644)).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("mode 644"), "{warnings:?}");
        let (token, warnings) = read_token_file(&file("short", "s3cret\n", 0o600)).unwrap();
        assert_eq!(token, "s3cret");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("6 bytes"), "{warnings:?}");
        let (_, warnings) = read_token_file(&file("both", "s3cret", 0o640)).unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");

        for text in [
            format!("{good}\nsecond"),
            format!("{good}\r\n{good}\n"),
            "a\n\nb".to_owned(),
        ] {
            let err = read_token_file(&file("lines", &text, 0o600)).unwrap_err();
            assert!(err.to_string().contains("several lines"), "{err}");
        }
        for text in ["", " \n\n"] {
            let err = read_token_file(&file("empty", text, 0o600)).unwrap_err();
            assert!(err.to_string().contains("empty"), "{err}");
        }
        assert!(read_token_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn percent_escapes() {
        for good in ["/", "/a%20b", "/%2F%2f", "/api/v1.0/x/processes", "/100%41"] {
            assert!(escapes_are_well_formed(good), "{good}");
        }
        for bad in ["/%zz", "/%", "/a%2", "/%g0", "/x/%%41", "/%2-"] {
            assert!(!escapes_are_well_formed(bad), "{bad}");
        }
    }

    #[test]
    fn empty_leading_segments_are_cleaned() {
        let clean = without_empty_leading_segments;
        assert_eq!(
            clean("//api/v1.0/docker/x/processes", Some("count=2")).as_deref(),
            Some("/api/v1.0/docker/x/processes?count=2")
        );
        assert_eq!(clean("///healthz", None).as_deref(), Some("/healthz"));
        assert_eq!(clean("//", None).as_deref(), Some("/"));
        // Never a protocol-relative location (`//host/…`), and only a leading empty segment.
        assert_eq!(clean("/api//x", None), None);
        assert_eq!(clean("/healthz", None), None);
    }
}

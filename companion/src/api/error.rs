//! The one error type of the HTTP API: every failure becomes a status and a plain-text body.

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::history::QueryError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A malformed request the client can fix (a bad container path, an unknown `sort`).
    #[error("{0}")]
    BadRequest(String),
    #[error("404 page not found")]
    NotFound,
    /// No container matches a lookup (404).
    #[error("{0}")]
    NoSuchContainer(String),
    /// An id prefix matches several containers (409).
    #[error("{0}")]
    Ambiguous(String),
    /// The v1.0 contract answers these with 500; kept for its clients.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The service cannot answer yet or any more (no sample published, shutting down).
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound | ApiError::NoSuchContainer(_) => StatusCode::NOT_FOUND,
            ApiError::Ambiguous(_) => StatusCode::CONFLICT,
            ApiError::Query(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status(),
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.to_string(),
        )
            .into_response()
    }
}

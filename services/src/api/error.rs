//! The API's one error type. Every failure a client sees has the shape
//! `{ "error": { "code", "message", "field"? } }`; internal details are logged, never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::types::{ErrorBody, ErrorDetail};
use crate::store::StoreError;

/// The stable machine-readable codes of API errors (`error.code`). The OpenAPI document lists
/// them as an enum generated from [`ErrorCode::ALL`].
macro_rules! error_codes {
    ($($variant:ident => $text:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(Self::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }
        }
    };
}

error_codes! {
    AlreadyFinished => "already_finished",
    BadRequest => "bad_request",
    Conflict => "conflict",
    Forbidden => "forbidden",
    IdempotencyKeyReused => "idempotency_key_reused",
    ImageNotInRegistry => "image_not_in_registry",
    ImagesUnavailable => "images_unavailable",
    InternalError => "internal_error",
    InvalidHeader => "invalid_header",
    InvalidId => "invalid_id",
    InvalidImage => "invalid_image",
    InvalidJson => "invalid_json",
    InvalidLayout => "invalid_layout",
    InvalidModule => "invalid_module",
    InvalidQuery => "invalid_query",
    InvalidReference => "invalid_reference",
    MethodNotAllowed => "method_not_allowed",
    ModuleNotFound => "module_not_found",
    NotFound => "not_found",
    PayloadTooLarge => "payload_too_large",
    QuotaExceeded => "quota_exceeded",
    RateLimited => "rate_limited",
    RegistryError => "registry_error",
    RegistryNotAllowed => "registry_not_allowed",
    StorageFull => "storage_full",
    Unauthorized => "unauthorized",
    Unavailable => "unavailable",
    ValidationFailed => "validation_failed",
}

impl super::types::WireName for ErrorCode {
    fn as_str(self) -> &'static str {
        ErrorCode::as_str(self)
    }
    fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == text)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The OpenAPI schema of `error.code`: a string enum of every [`ErrorCode`].
pub(crate) fn error_code_schema() -> utoipa::openapi::schema::Object {
    super::types::names_schema(
        ErrorCode::ALL,
        "Stable machine-readable code, e.g. `invalid_json`, `validation_failed`, `not_found`.",
    )
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    /// Seconds for a `Retry-After` header (503s the client should simply retry, 429s).
    pub retry_after: Option<u32>,
    /// Send `WWW-Authenticate: Bearer` (401s).
    pub challenge: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            challenge: false,
        }
    }

    /// Adds `WWW-Authenticate: Bearer` (a 401).
    pub fn with_challenge(mut self) -> Self {
        self.challenge = true;
        self
    }

    /// Adds `Retry-After` (seconds).
    pub fn with_retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// 422: the request is well-formed JSON but a value is not acceptable.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: ErrorCode::ValidationFailed,
            message: message.into(),
            field: Some(field.into()),
            retry_after: None,
            challenge: false,
        }
    }

    /// 400 `invalid_query`: a query parameter is not acceptable.
    pub fn invalid_query(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery, message)
    }

    /// 400 `invalid_query` from axum's query parser (an unknown, malformed or missing parameter).
    pub fn from_query(e: axum::extract::rejection::QueryRejection) -> Self {
        Self::invalid_query(e.body_text())
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, what)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            "the server failed to handle this request; it was logged — retry later",
        )
    }
}

/// A page size: `default` when absent, else 1..=`max` (400 naming `limit`).
pub fn page_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(
            ApiError::invalid_query(format!("limit must be between 1 and {max}"))
                .with_field("limit"),
        )
    }
}

/// A `cursor` parameter: the `next_cursor` (an id) an earlier page returned.
pub fn page_cursor(cursor: Option<&str>) -> Result<Option<uuid::Uuid>, ApiError> {
    cursor
        .map(|c| uuid::Uuid::parse_str(c).map_err(|_| bad_cursor()))
        .transpose()
}

/// The 400 for a `cursor` that no listing of this API returned.
pub fn bad_cursor() -> ApiError {
    ApiError::invalid_query("cursor is not one this API returned; pass `next_cursor` as is")
        .with_field("cursor")
}

/// True when the database could not be reached or went away mid-request (the request can be
/// retried as it is): pool timeouts, connection I/O errors, and PostgreSQL's connection-exception
/// (class 08), shutdown (57P01–57P03) and too-many-connections (53300) states.
pub(crate) fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Db(ref db) if database_unavailable(db) => {
                tracing::warn!(error = %e, "the database is unavailable; answering 503");
                ApiError {
                    retry_after: Some(1),
                    ..ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorCode::Unavailable,
                        "the database is busy or unreachable; retry later (nothing was stored)",
                    )
                }
            }
            _ => {
                tracing::error!(error = %e, "store error while handling a request");
                ApiError::internal()
            }
        }
    }
}

impl ApiError {
    /// The error's wire body (the status and headers aside).
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message.clone(),
                field: self.field.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        if self.challenge {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"nekton\""),
            );
        }
        response
    }
}

/// Parses a JSON body strictly, naming the offending field on failure. Syntax errors are 400,
/// values of the wrong type or unknown fields are 422.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidJson,
            "the request body is empty; send a JSON object",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let field = if path == "." || path.is_empty() {
                None
            } else {
                Some(path)
            };
            match inner.classify() {
                serde_json::error::Category::Syntax
                | serde_json::error::Category::Eof
                | serde_json::error::Category::Io => Err(ApiError {
                    status: StatusCode::BAD_REQUEST,
                    code: ErrorCode::InvalidJson,
                    message: format!("the request body is not valid JSON: {inner}"),
                    field,
                    retry_after: None,
                    challenge: false,
                }),
                serde_json::error::Category::Data => Err(ApiError {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    code: ErrorCode::ValidationFailed,
                    message: format!("{inner}"),
                    field,
                    retry_after: None,
                    challenge: false,
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lost database answers 503 with `Retry-After`, whichever way the loss shows; other
    /// database errors stay 500.
    #[tokio::test]
    async fn a_lost_database_is_a_503_with_retry_after() {
        // A server that is not there: a Unix socket directory with no socket (nothing leaves the
        // machine).
        let dir = tempfile::tempdir().unwrap();
        let options = sqlx::postgres::PgConnectOptions::new()
            .socket(dir.path())
            .username("nobody")
            .database("none");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(std::time::Duration::from_millis(300))
            .connect_lazy_with(options);
        let err = sqlx::query("SELECT 1").execute(&pool).await.unwrap_err();
        assert!(database_unavailable(&err), "{err:?}");
        let response = ApiError::from(StoreError::Db(err)).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "1");

        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        ] {
            assert!(database_unavailable(&e), "{e:?}");
        }
        assert!(!database_unavailable(&sqlx::Error::RowNotFound));
        let response = ApiError::from(StoreError::Db(sqlx::Error::RowNotFound)).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            response
                .headers()
                .get(axum::http::header::RETRY_AFTER)
                .is_none()
        );
    }

    /// A backend the server terminates mid-session (what a crash or a fast shutdown does to every
    /// connection) is recognised too.
    #[tokio::test]
    async fn a_terminated_connection_is_unavailable_not_internal() {
        use sqlx::Connection as _;
        let db = crate::testing::TestDb::new().await;
        let mut conn = db.connect().await.unwrap();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let _: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        let err = sqlx::query("SELECT 1")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert!(database_unavailable(&err), "{err:?}");
        let _ = conn.close().await;
    }
}

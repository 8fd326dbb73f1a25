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
    RegistryError => "registry_error",
    RegistryNotAllowed => "registry_not_allowed",
    StorageFull => "storage_full",
    Unavailable => "unavailable",
    ValidationFailed => "validation_failed",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The OpenAPI schema of `error.code`: a string enum of every [`ErrorCode`].
pub(crate) fn error_code_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
        .description(Some(
            "Stable machine-readable code, e.g. `invalid_json`, `validation_failed`, `not_found`.",
        ))
        .build()
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 422: the request is well-formed JSON but a value is not acceptable.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: ErrorCode::ValidationFailed,
            message: message.into(),
            field: Some(field.into()),
        }
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

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error while handling a request");
        match e {
            StoreError::Db(sqlx::Error::PoolTimedOut) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "the database is busy or unreachable; retry later",
            ),
            _ => ApiError::internal(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_string(),
                message: self.message,
                field: self.field,
            },
        };
        (self.status, Json(body)).into_response()
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
                }),
                serde_json::error::Category::Data => Err(ApiError {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    code: ErrorCode::ValidationFailed,
                    message: format!("{inner}"),
                    field,
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_schema_lists_every_code() {
        let schema = serde_json::to_value(error_code_schema()).unwrap();
        let values: Vec<&str> = schema["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let expected: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(values, expected);
        assert!(values.contains(&"validation_failed"));
        assert!(values.contains(&"image_not_in_registry"));
    }
}

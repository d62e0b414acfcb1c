//! The one table from S3 answers (HTTP status, error code, transport failure) to
//! [`BackendError`] kinds.
//!
//! Owns the classification. Must not send requests or retry.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::backend::{BackendError, BoxError};

/// What an S3 answer means to a caller: the one table from S3 status codes and error codes to
/// [`BackendError`] kinds.
fn classify(status: Option<u16>, code: Option<&str>) -> Class {
    match (status, code) {
        // Codes first: some servers send throttling or internal errors with odd statuses.
        (_, Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded")) => {
            Class::Transient
        }
        (_, Some("InternalError" | "ServiceUnavailable" | "RequestTimeout")) => Class::Transient,
        // A concurrent conditional write on the same key: try again.
        (_, Some("ConditionalRequestConflict" | "OperationAborted")) => Class::Transient,
        // A missing bucket or upload is a configuration or logic problem, not a missing key.
        (_, Some("NoSuchBucket" | "NoSuchUpload")) => Class::Other,
        (_, Some("NoSuchKey" | "NotFound")) | (Some(404), _) => Class::NotFound,
        (Some(304 | 412), _) | (_, Some("PreconditionFailed")) => Class::Precondition,
        (Some(416), _) | (_, Some("InvalidRange")) => Class::InvalidRange,
        (Some(409), _) => Class::Transient,
        (Some(408 | 429), _) => Class::Transient,
        (Some(501), _) | (_, Some("NotImplemented")) => Class::NotImplemented,
        (Some(500..=599), _) => Class::Transient,
        _ => Class::Other,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Class {
    NotFound,
    Precondition,
    InvalidRange,
    NotImplemented,
    Transient,
    Other,
}

/// Converts an SDK error on `key` into a [`BackendError`], keeping it as the source.
pub(super) fn sdk_error<E>(
    op: &'static str,
    key: impl std::fmt::Display,
    err: SdkError<E>,
) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let key = key.to_string();
    let class = match &err {
        SdkError::ConstructionFailure(_) => Class::Other,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Class::Transient
        }
        SdkError::ServiceError(service) => {
            classify(Some(service.raw().status().as_u16()), service.err().code())
        }
        _ => Class::Other,
    };
    // The full context (service code and message, or the transport cause) as text: the SDK
    // error's own `Display` says little.
    let source: BoxError = aws_sdk_s3::error::DisplayErrorContext(&err)
        .to_string()
        .into();
    match class {
        Class::NotFound => BackendError::NotFound { key },
        Class::Precondition => BackendError::PreconditionFailed { key },
        Class::InvalidRange => BackendError::InvalidRange {
            key,
            start: 0,
            end: 0,
            size: 0,
        },
        Class::NotImplemented => BackendError::NotImplemented { what: op },
        Class::Transient => BackendError::Transient { op, key, source },
        Class::Other => BackendError::Other { op, key, source },
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// The mapping table: every status and code the backend branches on.
    #[test]
    fn classify_table() {
        let cases: &[(Option<u16>, Option<&str>, Class)] = &[
            (Some(404), Some("NoSuchKey"), Class::NotFound),
            (Some(404), None, Class::NotFound),
            (Some(404), Some("NoSuchBucket"), Class::Other),
            (Some(404), Some("NoSuchUpload"), Class::Other),
            (Some(412), Some("PreconditionFailed"), Class::Precondition),
            (Some(304), None, Class::Precondition),
            (
                Some(409),
                Some("ConditionalRequestConflict"),
                Class::Transient,
            ),
            (Some(416), Some("InvalidRange"), Class::InvalidRange),
            (Some(503), Some("SlowDown"), Class::Transient),
            (Some(500), Some("InternalError"), Class::Transient),
            (Some(502), None, Class::Transient),
            (Some(429), None, Class::Transient),
            (Some(400), Some("RequestTimeout"), Class::Transient),
            (Some(501), Some("NotImplemented"), Class::NotImplemented),
            (Some(403), Some("AccessDenied"), Class::Other),
            (Some(400), Some("InvalidArgument"), Class::Other),
        ];
        for (status, code, want) in cases {
            assert_eq!(&classify(*status, *code), want, "{status:?} {code:?}");
        }
    }
}

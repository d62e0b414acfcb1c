//! Body adapters between [`Payload`]/[`ByteStream`] and the SDK's HTTP bodies: uploads stream a
//! payload as it is sent (parking the payload's own error), downloads check the length.
//!
//! Owns the adapters. Must not send requests or classify S3 errors.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::{self, StreamExt};

use crate::backend::{BackendError, BoxError, ByteStream, Payload};

/// Slot where an upload body parks the payload's own error (a short or unreadable file), so that
/// the caller reports it rather than the transport error it caused.
type FailureSlot = Arc<Mutex<Option<BackendError>>>;

pub(super) fn take_failure(slot: &FailureSlot) -> Result<(), BackendError> {
    match slot.lock().expect("failure slot").take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub(super) fn upload_body(payload: &Payload) -> (aws_sdk_s3::primitives::ByteStream, FailureSlot) {
    let failure = FailureSlot::default();
    let body = UploadBody {
        stream: Mutex::new(payload.stream()),
        remaining: payload.len(),
        failure: failure.clone(),
    };
    (
        aws_sdk_s3::primitives::ByteStream::from_body_1_x(body),
        failure,
    )
}

/// A payload as an HTTP body of exactly its length, read as it is sent.
struct UploadBody {
    /// In a mutex only to be `Sync` as the SDK requires; never contended (`get_mut`).
    stream: Mutex<ByteStream>,
    remaining: u64,
    failure: FailureSlot,
}

impl http_body::Body for UploadBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let stream = this.stream.get_mut().expect("upload body stream");
        let fail = |this: &mut UploadBody, e: BackendError| {
            let message = e.to_string();
            *this.failure.lock().expect("failure slot") = Some(e);
            Poll::Ready(Some(Err(message.into())))
        };
        match stream.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(piece))) => {
                if piece.len() as u64 > this.remaining {
                    let e = BackendError::other("put", "", "payload is longer than its length");
                    return fail(this, e);
                }
                this.remaining -= piece.len() as u64;
                Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
            }
            Poll::Ready(Some(Err(e))) => fail(this, e),
            Poll::Ready(None) if this.remaining > 0 => {
                let e = BackendError::other("put", "", "payload is shorter than its length");
                fail(this, e)
            }
            Poll::Ready(None) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// A response body as a [`ByteStream`]; transport errors are transient, and a body that ends
/// short of `len` bytes is an error rather than a silently truncated object.
pub(super) fn download_stream(
    body: aws_sdk_s3::primitives::ByteStream,
    key: String,
    len: u64,
) -> ByteStream {
    stream::try_unfold((body, 0u64), move |(mut body, got)| {
        let key = key.clone();
        async move {
            match body.next().await {
                Some(Ok(piece)) => {
                    let got = got + piece.len() as u64;
                    Ok(Some((piece, (body, got))))
                }
                Some(Err(e)) => Err(BackendError::transient("get", key, e)),
                None if got != len => Err(BackendError::transient(
                    "get",
                    key,
                    format!("body ended after {got} of {len} bytes"),
                )),
                None => Ok(None),
            }
        }
    })
    .boxed()
}

//! Plumbing shared by the backend wrappers (retry, timeout, limit, metrics, fault): the names of
//! the operations they act on, and stream adapters for the two streamed answers (`list` items and
//! `get` bodies).
//!
//! Owns nothing a backend stores. Must not hold policy (how long, how often, how many): each
//! wrapper decides that in its own module.

use std::fmt;
use std::future::Future;

use futures::stream::{self, BoxStream, StreamExt};
use serde::Serialize;

use super::BackendError;

/// One method of the [`Backend`](super::Backend) trait, as wrappers count and configure them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Listing a prefix.
    List,
    /// Writing an object (plain or conditional).
    Put,
    /// Reading a whole object.
    Get,
    /// Reading a byte range of an object.
    GetRange,
    /// Reading an object's size and etag.
    Head,
    /// Deleting an object.
    Delete,
}

impl Op {
    /// Every operation, in a fixed order (indexes per-operation tables).
    pub const ALL: [Op; 6] = [
        Op::List,
        Op::Put,
        Op::Get,
        Op::GetRange,
        Op::Head,
        Op::Delete,
    ];

    /// The snake_case name used in logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Op::List => "list",
            Op::Put => "put",
            Op::Get => "get",
            Op::GetRange => "get_range",
            Op::Head => "head",
            Op::Delete => "delete",
        }
    }

    /// Position in [`Op::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the operation only reads (for separate read/write limits).
    pub fn is_read(self) -> bool {
        !matches!(self, Op::Put | Op::Delete)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fallible stream as the trait returns them (list items, body pieces).
pub(crate) type TryStream<T> = BoxStream<'static, Result<T, BackendError>>;

/// Drives `inner` one item at a time through `step`, which receives the stream, awaits its next
/// item in whatever context it needs (a permit held, a deadline) and hands both back. The result
/// ends after the first error, so a wrapper never polls a stream that has already failed.
pub(crate) fn each_step<T, F, Fut>(inner: TryStream<T>, mut step: F) -> TryStream<T>
where
    T: Send + 'static,
    F: FnMut(TryStream<T>) -> Fut + Send + 'static,
    Fut: Future<Output = Option<(Result<T, BackendError>, TryStream<T>)>> + Send + 'static,
{
    stream::unfold(Some(inner), move |state| {
        let next = state.map(&mut step);
        async move {
            let (item, rest) = next?.await?;
            let rest = if item.is_ok() { Some(rest) } else { None };
            Some((item, rest))
        }
    })
    .boxed()
}

/// Keeps `guard` alive until `inner` has ended (or is dropped), e.g. a concurrency permit for the
/// duration of a download.
pub(crate) fn hold_until_done<T, G>(inner: TryStream<T>, guard: G) -> TryStream<T>
where
    T: Send + 'static,
    G: Send + 'static,
{
    stream::unfold(Some((inner, guard)), |state| async move {
        let (mut inner, guard) = state?;
        let item = inner.next().await?;
        Some((item, Some((inner, guard))))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `each_step` stops after the first error even if the inner stream would go on.
    #[tokio::test]
    async fn each_step_fuses_after_error() {
        let inner: TryStream<u32> = stream::iter(vec![
            Ok(1),
            Err(BackendError::NotImplemented { what: "x" }),
            Ok(3),
        ])
        .boxed();
        let out: Vec<_> = each_step(inner, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        })
        .collect()
        .await;
        assert_eq!(out.len(), 2);
        assert!(out[0].is_ok() && out[1].is_err());
    }
}

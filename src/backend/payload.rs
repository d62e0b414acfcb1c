//! Upload payloads and body streams: what goes into `put` and comes out of `get`.
//!
//! Owns [`Payload`] (in-memory parts or a file range, replayable), [`ByteStream`], reading a file
//! piecewise as a stream and collecting a stream with a size bound. Must not know about keys,
//! backends or retries.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};

use super::BackendError;

/// A stream of body bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, BackendError>>;

/// An upload body: a known length and a source that can be streamed any number of times (so that
/// a retry wrapper can replay it). Never requires the whole object in memory: a file source is
/// read piecewise.
#[derive(Clone)]
pub struct Payload {
    len: u64,
    source: PayloadSource,
}

#[derive(Clone)]
enum PayloadSource {
    Memory(Arc<[Bytes]>),
    File { path: Arc<PathBuf>, offset: u64 },
}

/// Read size when streaming a file payload.
const FILE_READ_SIZE: usize = 1 << 20;

impl Payload {
    /// A payload held in memory.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Payload {
        let bytes = bytes.into();
        Payload {
            len: bytes.len() as u64,
            source: PayloadSource::Memory(Arc::new([bytes])),
        }
    }

    /// A payload made of several in-memory parts, sent in order without concatenating them.
    pub fn from_parts(parts: Vec<Bytes>) -> Payload {
        let len = parts.iter().map(|p| p.len() as u64).sum();
        Payload {
            len,
            source: PayloadSource::Memory(parts.into()),
        }
    }

    /// `len` bytes of the file at `path` starting at `offset`, read when streamed. The file must
    /// not change while the payload is in use; a short file is reported as an error.
    pub fn from_file(path: impl Into<PathBuf>, offset: u64, len: u64) -> Payload {
        Payload {
            len,
            source: PayloadSource::File {
                path: Arc::new(path.into()),
                offset,
            },
        }
    }

    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the payload has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A sub-range of the payload, for multipart uploads. `range` must lie within the payload.
    pub fn slice(&self, range: Range<u64>) -> Payload {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "payload slice out of range"
        );
        let len = range.end - range.start;
        let source = match &self.source {
            PayloadSource::File { path, offset } => PayloadSource::File {
                path: path.clone(),
                offset: offset + range.start,
            },
            PayloadSource::Memory(parts) => {
                let mut out = Vec::new();
                let mut pos = 0u64;
                for p in parts.iter() {
                    let (s, e) = (pos, pos + p.len() as u64);
                    pos = e;
                    let (lo, hi) = (range.start.max(s), range.end.min(e));
                    if lo < hi {
                        out.push(p.slice((lo - s) as usize..(hi - s) as usize));
                    }
                }
                PayloadSource::Memory(out.into())
            }
        };
        Payload { len, source }
    }

    /// Streams the payload from its start.
    pub fn stream(&self) -> ByteStream {
        match &self.source {
            PayloadSource::Memory(parts) => {
                let parts: Vec<Bytes> = parts.iter().filter(|p| !p.is_empty()).cloned().collect();
                futures::stream::iter(parts.into_iter().map(Ok)).boxed()
            }
            PayloadSource::File { path, offset } => file_stream(path.clone(), *offset, self.len),
        }
    }

    /// Collects the payload into one buffer. For backends whose client needs contiguous bytes for
    /// small objects; callers bound the size.
    pub async fn to_bytes(&self) -> Result<Bytes, BackendError> {
        if let PayloadSource::Memory(parts) = &self.source
            && parts.len() == 1
        {
            return Ok(parts[0].clone());
        }
        collect_stream(self.stream(), self.len).await
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            PayloadSource::Memory(_) => write!(f, "Payload(memory, {} bytes)", self.len),
            PayloadSource::File { path, offset } => {
                write!(
                    f,
                    "Payload({}@{offset}, {} bytes)",
                    path.display(),
                    self.len
                )
            }
        }
    }
}

fn file_stream(path: Arc<PathBuf>, offset: u64, len: u64) -> ByteStream {
    use tokio::io::AsyncSeekExt;
    let opened = async move {
        let label = path.display().to_string();
        let io_err = |e| BackendError::other("read payload file", &label, e);
        let mut f = tokio::fs::File::open(&*path).await.map_err(io_err)?;
        f.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(io_err)?;
        Ok::<_, BackendError>(read_stream(f, len, label))
    };
    futures::stream::once(opened).try_flatten().boxed()
}

/// Streams exactly `len` bytes from `file`'s current position; a short file is an error naming
/// `label`.
pub(crate) fn read_stream(file: tokio::fs::File, len: u64, label: String) -> ByteStream {
    use tokio::io::AsyncReadExt;
    futures::stream::try_unfold((file, 0u64), move |(mut file, done)| {
        let label = label.clone();
        async move {
            if done >= len {
                return Ok(None);
            }
            let want = (len - done).min(FILE_READ_SIZE as u64) as usize;
            let mut buf = BytesMut::zeroed(want);
            let mut got = 0;
            while got < want {
                let n = file.read(&mut buf[got..]).await;
                match n {
                    Ok(0) => {
                        let e = std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "file is shorter than expected",
                        );
                        return Err(BackendError::other("read", &label, e));
                    }
                    Ok(n) => got += n,
                    Err(e) => return Err(BackendError::other("read", &label, e)),
                }
            }
            Ok(Some((buf.freeze(), (file, done + want as u64))))
        }
    })
    .boxed()
}

/// Collects a body stream, failing if it exceeds `max_len` bytes (checked before buffering).
pub async fn collect_stream(mut stream: ByteStream, max_len: u64) -> Result<Bytes, BackendError> {
    let mut buf = BytesMut::new();
    while let Some(piece) = stream.try_next().await? {
        if buf.len() as u64 + piece.len() as u64 > max_len {
            return Err(BackendError::TooLarge { limit: max_len });
        }
        if buf.is_empty() {
            buf = BytesMut::from(&piece[..]);
        } else {
            buf.extend_from_slice(&piece);
        }
    }
    Ok(buf.freeze())
}

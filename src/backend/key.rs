//! Object keys and listing prefixes: the one place that decides which strings are valid keys.
//!
//! Owns [`Key`], [`Prefix`] and their validation rules. Must not know about any backend, about
//! what the keys name (packs, indexes, manifests: that is `format::keys`), or do any I/O.

use std::fmt;

use super::BackendError;

/// Longest key accepted, in bytes (S3's own limit).
pub const MAX_KEY_LEN: usize = 1024;

/// A validated object key: `/`-separated components of S3 "safe" characters
/// (`A-Z a-z 0-9 ! - _ . * ' ( )`); no empty component, no component that starts with `.` (so no
/// `.` or `..`, and dot-names stay free for a backend's own bookkeeping); no leading `/`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    /// Validates `key`.
    pub fn new(key: impl Into<String>) -> Result<Key, BackendError> {
        let key = key.into();
        match key_problem(&key) {
            None => Ok(Key(key)),
            Some(reason) => Err(BackendError::InvalidKey { key, reason }),
        }
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

/// Characters allowed in a key component besides ASCII letters and digits.
pub const KEY_PUNCTUATION: &str = "!-_.*'()";

fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        return Some("key is empty");
    }
    if key.len() > MAX_KEY_LEN {
        return Some("key is longer than 1024 bytes");
    }
    for comp in key.split('/') {
        if comp.is_empty() {
            return Some("key has an empty component (leading, trailing or doubled '/')");
        }
        if comp.starts_with('.') {
            return Some("key component starts with '.'");
        }
        if !comp
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || KEY_PUNCTUATION.contains(c))
        {
            return Some("key has a character outside A-Z a-z 0-9 and !-_.*'()");
        }
    }
    None
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A listing prefix: empty, or a key-like string (its last component may be partial, e.g.
/// `manifests/ab`). Validated like a key, except that it may end with `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    /// The empty prefix: everything.
    pub fn all() -> Prefix {
        Prefix(String::new())
    }

    /// Validates `prefix`.
    pub fn new(prefix: impl Into<String>) -> Result<Prefix, BackendError> {
        let prefix = prefix.into();
        let body = prefix.strip_suffix('/').unwrap_or(&prefix);
        if prefix.is_empty() {
            return Ok(Prefix(prefix));
        }
        match key_problem(body) {
            None => Ok(Prefix(prefix)),
            Some(reason) => Err(BackendError::InvalidKey {
                key: prefix,
                reason,
            }),
        }
    }

    /// The prefix as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

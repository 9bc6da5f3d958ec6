//! Object keys: the only names that reach a file path or an S3 key.

use std::{fmt, str::FromStr};

/// A key in the blob store, e.g. `files/2026/11/24/1764000000-0193c0de.jpg`.
///
/// Built by the code from generated names, never from what a user typed: the original
/// file name is kept for display only. Still, the key is checked so that no mistake
/// upstream can turn into a path outside the store: `/`-separated segments, each
/// `[a-z0-9][a-z0-9._-]*` and at most [`ObjectKey::MAX_SEGMENT`] bytes, no `..`
/// anywhere, no empty segment, at most [`ObjectKey::MAX_LEN`] bytes in all. So no
/// absolute path, no backslash, NUL, control character or upper case (which would
/// collide on case-insensitive disks), and no segment starting with `.` (the disk
/// store's temporary files do, so they never meet a key).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectKey(String);

/// Why a string is not an [`ObjectKey`]. The rejected input is not echoed: it may be
/// anything a client sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid object key: {0}")]
pub struct InvalidKey(&'static str);

impl ObjectKey {
    /// Longest key in bytes (S3 allows 1024; a disk path should stay well under 4096).
    pub const MAX_LEN: usize = 512;
    /// Longest segment in bytes (file systems allow 255 per name).
    pub const MAX_SEGMENT: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, InvalidKey> {
        if raw.is_empty() {
            return Err(InvalidKey("empty"));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(InvalidKey("too long"));
        }
        if raw.contains("..") {
            return Err(InvalidKey("contains .."));
        }
        for segment in raw.split('/') {
            let Some(first) = segment.bytes().next() else {
                return Err(InvalidKey("empty segment (leading, trailing or double /)"));
            };
            if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
                return Err(InvalidKey("a segment must start with a-z or 0-9"));
            }
            if segment.len() > Self::MAX_SEGMENT {
                return Err(InvalidKey("segment too long"));
            }
            if !segment.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            }) {
                return Err(InvalidKey("only a-z 0-9 . _ - and / are allowed"));
            }
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ObjectKey {
    type Err = InvalidKey;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

impl TryFrom<String> for ObjectKey {
    type Error = InvalidKey;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<ObjectKey> for String {
    fn from(key: ObjectKey) -> Self {
        key.0
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_generated_names() {
        for ok in [
            "a",
            "files/2026/11/24/1764000000-0193c0de.jpg",
            "thumbnails/x_y-z.0.webp",
            "0",
        ] {
            assert_eq!(ObjectKey::parse(ok).unwrap().as_str(), ok);
        }
        let longest = format!("{}/{}", "a".repeat(128), "b".repeat(128));
        assert!(ObjectKey::parse(&longest).is_ok());
    }

    #[test]
    fn refuses_tricks() {
        for bad in [
            "",
            "../etc/passwd",
            "a/../b",
            "a/..",
            "a..b",
            "/abs",
            "a/",
            "a//b",
            "./a",
            "a/./b",
            ".hidden",
            "a\\b",
            "a\0b",
            "a\nb",
            "a b",
            "A",
            "caf\u{e9}",
            "a/.tmp",
            "-a",
            "_a",
            "C:/x",
        ] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(ObjectKey::parse(&"a".repeat(129)).is_err());
        assert!(ObjectKey::parse(&format!("{}/b", "a/".repeat(256))).is_err());
    }

    #[test]
    fn deserializing_checks_too() {
        assert!(serde_json::from_str::<ObjectKey>("\"../x\"").is_err());
        let key: ObjectKey = serde_json::from_str("\"a/b\"").unwrap();
        assert_eq!(serde_json::to_string(&key).unwrap(), "\"a/b\"");
    }
}

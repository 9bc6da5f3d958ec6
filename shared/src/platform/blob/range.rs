//! Byte ranges, as HTTP `Range: bytes=…` asks for them (RFC 9110 §14.1.2).

use std::fmt;

/// One range of bytes of an object, before the object's size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=first-last`: both ends included; `last` past the end means to the end.
    Inclusive { first: u64, last: u64 },
    /// `bytes=first-`: from `first` to the end.
    From { first: u64 },
    /// `bytes=-length`: the last `length` bytes (the whole object if it is shorter).
    Suffix { length: u64 },
}

/// A range resolved against an object's size: `start..=end`, never empty, inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedRange {
    pub start: u64,
    /// Included.
    pub end: u64,
}

impl ByteRange {
    /// Parses one `Range` header value with a single range. `None` for anything else
    /// (other units, several ranges, malformed): HTTP then says to ignore the header
    /// and send the whole object.
    pub fn parse_http(value: &str) -> Option<Self> {
        let spec = value.trim().strip_prefix("bytes=")?.trim();
        let (first, last) = spec.split_once('-')?;
        let number = |s: &str| -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        match (first.trim(), last.trim()) {
            ("", length) => Some(Self::Suffix {
                length: number(length)?,
            }),
            (first, "") => Some(Self::From {
                first: number(first)?,
            }),
            (first, last) => {
                let (first, last) = (number(first)?, number(last)?);
                (first <= last).then_some(Self::Inclusive { first, last })
            }
        }
    }

    /// The bytes this range selects of an object of `size` bytes; `None` when it
    /// selects none (HTTP's 416): a start at or past the end, an empty suffix, any
    /// range of an empty object, or `last < first`.
    pub fn resolve(self, size: u64) -> Option<ResolvedRange> {
        if size == 0 {
            return None;
        }
        let (start, end) = match self {
            Self::Inclusive { first, last } if first <= last => (first, last.min(size - 1)),
            Self::Inclusive { .. } => return None,
            Self::From { first } => (first, size - 1),
            Self::Suffix { length: 0 } => return None,
            Self::Suffix { length } => (size.saturating_sub(length), size - 1),
        };
        (start < size).then_some(ResolvedRange { start, end })
    }
}

/// The `Range` header value, as S3 takes it too.
impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inclusive { first, last } => write!(f, "bytes={first}-{last}"),
            Self::From { first } => write!(f, "bytes={first}-"),
            Self::Suffix { length } => write!(f, "bytes=-{length}"),
        }
    }
}

impl ResolvedRange {
    /// Bytes in the range (never zero).
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Never true: a resolved range holds at least one byte. (Here for clippy's sake.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `Content-Range` header value of a 206 answer: `bytes 0-99/1000`.
    pub fn content_range(&self, total_size: u64) -> String {
        format!("bytes {}-{}/{total_size}", self.start, self.end)
    }

    /// Reads S3's `Content-Range: bytes 0-99/1000` back into a range and a total size.
    pub(crate) fn parse_content_range(value: &str) -> Option<(Self, u64)> {
        let rest = value.trim().strip_prefix("bytes ")?;
        let (span, total) = rest.split_once('/')?;
        let (start, end) = span.split_once('-')?;
        let (start, end, total) = (
            start.trim().parse().ok()?,
            end.trim().parse().ok()?,
            total.trim().parse().ok()?,
        );
        (start <= end && end < total).then_some((Self { start, end }, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_http() {
        let r = |range: ByteRange| range.resolve(100).map(|r| (r.start, r.end));
        assert_eq!(r(ByteRange::Inclusive { first: 0, last: 9 }), Some((0, 9)));
        assert_eq!(
            r(ByteRange::Inclusive {
                first: 90,
                last: 500
            }),
            Some((90, 99))
        );
        assert_eq!(
            r(ByteRange::Inclusive {
                first: 100,
                last: 500
            }),
            None
        );
        assert_eq!(r(ByteRange::Inclusive { first: 5, last: 4 }), None);
        assert_eq!(r(ByteRange::From { first: 99 }), Some((99, 99)));
        assert_eq!(r(ByteRange::From { first: 100 }), None);
        assert_eq!(r(ByteRange::Suffix { length: 10 }), Some((90, 99)));
        assert_eq!(r(ByteRange::Suffix { length: 1000 }), Some((0, 99)));
        assert_eq!(r(ByteRange::Suffix { length: 0 }), None);
        assert_eq!(ByteRange::From { first: 0 }.resolve(0), None);
        assert_eq!(ByteRange::Suffix { length: 5 }.resolve(0), None);
    }

    #[test]
    fn parses_one_range_only() {
        let p = ByteRange::parse_http;
        assert_eq!(
            p("bytes=0-9"),
            Some(ByteRange::Inclusive { first: 0, last: 9 })
        );
        assert_eq!(p("bytes=10-"), Some(ByteRange::From { first: 10 }));
        assert_eq!(p("bytes=-5"), Some(ByteRange::Suffix { length: 5 }));
        for bad in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-4",
            "bytes=-",
            "bytes=a-",
            "bytes=+1-2",
            "",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
        for range in [p("bytes=0-9"), p("bytes=10-"), p("bytes=-5")]
            .into_iter()
            .flatten()
        {
            assert_eq!(p(&range.to_string()), Some(range));
        }
    }

    #[test]
    fn content_range_round_trips() {
        let range = ResolvedRange { start: 5, end: 9 };
        assert_eq!(range.content_range(10), "bytes 5-9/10");
        assert_eq!(
            ResolvedRange::parse_content_range("bytes 5-9/10"),
            Some((range, 10))
        );
        assert_eq!(ResolvedRange::parse_content_range("bytes 5-10/10"), None);
        assert_eq!(ResolvedRange::parse_content_range("bytes */10"), None);
    }
}

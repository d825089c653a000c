//! HTTP `Range` requests on blobs, per RFC 9110 §14: one byte range served as 206; invalid or
//! unsatisfiable byte ranges rejected with 416; other units and multiple ranges ignored (200).

use std::ops::Range;

/// How to answer a request given its `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAnswer {
    /// Serve the whole content (no range, or one we may ignore).
    Full,
    /// Serve these bytes with 206.
    Partial(Range<u64>),
    /// Answer 416 with `Content-Range: bytes */<size>`.
    Unsatisfiable,
}

/// Decides the answer for a `Range` header value on content of `size` bytes.
pub fn answer(header: Option<&str>, size: u64) -> RangeAnswer {
    let Some(value) = header else {
        return RangeAnswer::Full;
    };
    let Some(set) = value.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Full;
    };
    if set.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeAnswer::Unsatisfiable;
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            Some(n) if n > 0 && size > 0 => RangeAnswer::Partial(size - n.min(size)..size),
            _ => RangeAnswer::Unsatisfiable,
        },
        (first, "") => match number(first) {
            Some(f) if f < size => RangeAnswer::Partial(f..size),
            _ => RangeAnswer::Unsatisfiable,
        },
        (first, last) => match (number(first), number(last)) {
            (Some(f), Some(l)) if f <= l && f < size => {
                RangeAnswer::Partial(f..l.saturating_add(1).min(size))
            }
            _ => RangeAnswer::Unsatisfiable,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeAnswer::*;
        assert_eq!(answer(None, 10), Full);
        assert_eq!(answer(Some("bytes=0-3"), 10), Partial(0..4));
        assert_eq!(answer(Some("bytes=5-"), 10), Partial(5..10));
        assert_eq!(answer(Some("bytes=-3"), 10), Partial(7..10));
        assert_eq!(answer(Some("bytes=-30"), 10), Partial(0..10));
        assert_eq!(answer(Some("bytes=8-100"), 10), Partial(8..10));
        assert_eq!(answer(Some("bytes=500-0"), 1000), Unsatisfiable);
        assert_eq!(answer(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(answer(Some("bytes=10-20"), 10), Unsatisfiable);
        assert_eq!(answer(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(answer(Some("bytes=0-0"), 0), Unsatisfiable);
        assert_eq!(answer(Some("bytes=a-b"), 10), Unsatisfiable);
        assert_eq!(answer(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(answer(Some("items=0-1"), 10), Full);
    }
}

//! MIME encodings shared by MMS bodies and emails.

/// Encoded bytes per RFC 2231 continuation, keeping each header line short.
const SEGMENT: usize = 60;

/// A `filename` parameter for a Content-Disposition: quoted when the name is plain
/// ASCII, otherwise RFC 2231 (`filename*=UTF-8''…`, percent-encoded), split into numbered
/// continuations when long. `separator` goes between continuations (`"; "`).
pub(crate) fn filename_parameter(name: &str, separator: &str) -> String {
    let plain = name
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if plain && name.len() <= SEGMENT {
        return format!("filename=\"{name}\"");
    }
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'!'
            | b'#'
            | b'$'
            | b'&'
            | b'+'
            | b'-'
            | b'.'
            | b'^'
            | b'_'
            | b'`'
            | b'|'
            | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    if encoded.len() <= SEGMENT {
        return format!("filename*=UTF-8''{encoded}");
    }
    let mut segments = Vec::new();
    let mut rest = encoded.as_str();
    while !rest.is_empty() {
        let mut end = rest.len().min(SEGMENT);
        // Never split a %XX escape.
        while end < rest.len() && rest[..end].rfind('%').is_some_and(|at| at + 3 > end) {
            end -= 1;
        }
        segments.push(&rest[..end]);
        rest = &rest[end..];
    }
    segments
        .iter()
        .enumerate()
        .map(|(n, segment)| {
            let charset = if n == 0 { "UTF-8''" } else { "" };
            format!("filename*{n}*={charset}{segment}")
        })
        .collect::<Vec<_>>()
        .join(separator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_quoted_or_rfc2231_encoded() {
        assert_eq!(
            filename_parameter("plan.pdf", "; "),
            "filename=\"plan.pdf\""
        );
        assert_eq!(
            filename_parameter("site plan.pdf", "; "),
            "filename=\"site plan.pdf\""
        );
        assert_eq!(
            filename_parameter("façade plan.pdf", "; "),
            "filename*=UTF-8''fa%C3%A7ade%20plan.pdf"
        );
        assert_eq!(
            filename_parameter("say \"hi\".txt", "; "),
            "filename*=UTF-8''say%20%22hi%22.txt"
        );
        let long = filename_parameter(&"日本".repeat(10), "; ");
        let segments: Vec<&str> = long.split("; ").collect();
        assert_eq!(segments.len(), 3, "{long}");
        assert!(segments[0].starts_with("filename*0*=UTF-8''%E6%97%A5"));
        assert!(segments[1].starts_with("filename*1*=%"));
        for segment in segments {
            let value = segment
                .rsplit('=')
                .next()
                .unwrap_or_default()
                .trim_start_matches("UTF-8''");
            assert!(value.len() <= SEGMENT && value.len() % 3 == 0, "{segment}");
        }
    }
}

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
    // Each character percent-encoded whole: a segment never ends inside a character
    // (readers decode segments one by one).
    let characters: Vec<String> = name.chars().map(percent_encoded).collect();
    let length: usize = characters.iter().map(String::len).sum();
    if length <= SEGMENT {
        return format!("filename*=UTF-8''{}", characters.concat());
    }
    let mut segments = vec![String::new()];
    for character in characters {
        if segments
            .last()
            .is_some_and(|segment| segment.len() + character.len() > SEGMENT)
        {
            segments.push(String::new());
        }
        if let Some(segment) = segments.last_mut() {
            segment.push_str(&character);
        }
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

/// One character as RFC 2231 writes it: attribute characters as they are, the rest as
/// `%XX` per UTF-8 byte.
fn percent_encoded(character: char) -> String {
    let mut utf8 = [0; 4];
    character
        .encode_utf8(&mut utf8)
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
        .collect()
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
        assert_eq!(segments.len(), 4, "{long}");
        assert!(segments[0].starts_with("filename*0*=UTF-8''%E6%97%A5"));
        assert!(segments[1].starts_with("filename*1*=%"));
        for segment in segments {
            let value = segment
                .rsplit('=')
                .next()
                .unwrap_or_default()
                .trim_start_matches("UTF-8''");
            // Whole characters only: three escapes each.
            assert!(value.len() <= SEGMENT && value.len() % 9 == 0, "{segment}");
        }
    }
}

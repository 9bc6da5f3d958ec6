//! The one rule for text people write for other people to read (messages, subjects,
//! template content, crew, member and project names, notes, reasons): something
//! visible in it, and no control characters but tab and line breaks. A text of only
//! invisible characters would show as an empty bubble, and controls (ESC, BEL, BS) can
//! rewrite a terminal or a log that shows them.

/// Characters that show nothing by themselves: format characters (zero-width space and
/// joiners, direction marks and the bidi embeddings, overrides and isolates, the word
/// joiner and invisible operators, the byte-order mark, the soft hyphen, interlinear
/// annotation marks), fillers (Hangul, the Braille pattern blank), the combining
/// grapheme joiner, variation selectors and tag characters.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}'
        | '\u{2800}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF9}'..='\u{FFFB}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E007F}' | '\u{E0100}'..='\u{E01EF}')
}

/// Is there nothing a reader would see? Whitespace, controls and [`is_invisible`]
/// characters count as nothing.
pub fn is_blank(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_whitespace() || c.is_control() || is_invisible(c))
}

/// A control character people's text may not hold: any but tab, line feed and carriage
/// return (C0, DEL, C1; NUL among them).
pub fn is_forbidden_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// Why `text` cannot be shown as someone's words, if it cannot: the problem, to follow
/// the field's name in an error ("must not be empty", "at most 200 characters", "holds
/// the control character U+001B").
pub fn refusal(text: &str, max_chars: usize) -> Option<String> {
    if let Some(why) = control_refusal(text) {
        return Some(why);
    }
    if is_blank(text) {
        return Some(if text.is_empty() {
            "must not be empty".to_owned()
        } else {
            "must not be empty (it has nothing visible in it)".to_owned()
        });
    }
    let chars = text.chars().count();
    (chars > max_chars).then(|| format!("at most {max_chars} characters, not {chars}"))
}

/// The first forbidden control character in `text`, as a refusal, if it has one.
pub fn control_refusal(text: &str) -> Option<String> {
    let c = text.chars().find(|&c| is_forbidden_control(c))?;
    Some(format!(
        "holds the control character U+{:04X}; only tab and line breaks are allowed",
        u32::from(c)
    ))
}

/// As [`refusal`], for a text that may be left empty (a note, say): empty is fine, but
/// a text that is there must show something.
pub fn refusal_if_any(text: &str, max_chars: usize) -> Option<String> {
    (!text.is_empty())
        .then(|| refusal(text, max_chars))
        .flatten()
}

/// `text` as PostgreSQL can store it: each NUL replaced by U+FFFD (the replacement
/// character). For what providers hand us, which we must keep rather than refuse; what
/// people send through the API is refused instead (400).
pub fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// Every string (and key) of a JSON value made [`storable`], for `jsonb`.
pub fn make_storable(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(text) if text.contains('\0') => *text = storable(text),
        Value::Array(items) => items.iter_mut().for_each(make_storable),
        Value::Object(fields) => {
            if fields.keys().any(|key| key.contains('\0')) {
                *fields = std::mem::take(fields)
                    .into_iter()
                    .map(|(key, item)| (storable(&key), item))
                    .collect();
            }
            fields.values_mut().for_each(make_storable);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_only_texts_are_blank() {
        for text in [
            "",
            "  \n\t",
            "\u{200B}\u{FEFF}",
            "\u{202A}\u{202E}\u{2066}\u{2069}\u{061C}",
            "\u{3164}\u{115F}\u{1160}\u{FFA0}",
            "\u{2800}",
            "\u{034F}",
            "\u{FE0F}\u{E0101}",
            "\u{E0041}\u{E007F}",
            "\u{1B}\u{7}\u{8}",
        ] {
            assert!(is_blank(text), "{text:?}");
        }
        for text in ["a", "\u{200B}a", "😀", "\u{2764}\u{FE0F}", "日本"] {
            assert!(!is_blank(text), "{text:?}");
        }
    }

    #[test]
    fn controls_are_refused_but_tab_and_line_breaks() {
        assert!(refusal("line\r\nnext\tcolumn", 100).is_none());
        for text in [
            "a\u{1B}[2J",
            "a\u{7}",
            "a\u{8}",
            "a\0b",
            "a\u{7F}",
            "a\u{85}",
        ] {
            let why = refusal(text, 100).unwrap();
            assert!(why.contains("control character U+"), "{text:?}: {why}");
        }
    }

    #[test]
    fn provider_text_is_kept_with_nul_replaced() {
        assert_eq!(storable("a\0b"), "a\u{FFFD}b");
        let mut value = serde_json::json!({"a\0": ["x\0", {"y": "z\0"}], "n": 1});
        make_storable(&mut value);
        assert_eq!(
            value,
            serde_json::json!({"a\u{FFFD}": ["x\u{FFFD}", {"y": "z\u{FFFD}"}], "n": 1})
        );
    }

    #[test]
    fn a_refusal_says_what_is_wrong() {
        assert_eq!(refusal("", 5).unwrap(), "must not be empty");
        assert!(refusal("\u{2800}", 5).unwrap().contains("nothing visible"));
        assert_eq!(refusal("abcdef", 5).unwrap(), "at most 5 characters, not 6");
        assert!(refusal("abcde", 5).is_none());
        assert!(refusal_if_any("", 5).is_none());
        assert!(refusal_if_any("\u{200B}", 5).is_some());
    }
}

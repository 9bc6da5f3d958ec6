//! The rules for text at the edge, on any input: a JSON body holds NUL exactly when
//! `nul_in_json` names a place, and the place it names holds it; people's text passes
//! `text::refusal` only with something visible, no control but tab and line breaks,
//! and within its length; provider text made `storable` holds no NUL and keeps its
//! length in characters.
#![no_main]

use commcenter_api::body::nul_in_json;
use commcenter_shared::domain::text::{is_blank, is_forbidden_control, refusal, storable};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(fields) => fields.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

fuzz_target!(|raw: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<Value>(raw) {
        let named = nul_in_json(raw);
        assert_eq!(named.is_some(), holds_nul(&value), "{named:?}");
    }
    let text = String::from_utf8_lossy(raw);
    match refusal(&text, 64) {
        None => {
            assert!(!is_blank(&text));
            assert!(!text.chars().any(is_forbidden_control));
            assert!(text.chars().count() <= 64);
        }
        Some(why) => assert!(!why.is_empty()),
    }
    let kept = storable(&text);
    assert!(!kept.contains('\0'));
    assert_eq!(kept.chars().count(), text.chars().count());
});

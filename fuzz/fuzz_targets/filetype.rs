//! Content sniffing (`commcenter_shared::domain::filetype`): any bytes under any name are
//! classified or refused without a panic, and what is accepted is on the allow-list.
#![no_main]

use commcenter_shared::domain::filetype::{self, ALLOWED, MAX_DISPLAY_NAME, SNIFF_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (String, &[u8])| {
    let (name, head) = input;
    if let Ok(sniffed) = filetype::sniff(head, &name) {
        assert!(ALLOWED.contains(&sniffed), "{sniffed:?} is not on the allow-list");
        // The answer depends on the first SNIFF_BYTES only (the upload reads no more).
        let cut = &head[..head.len().min(SNIFF_BYTES)];
        assert_eq!(filetype::sniff(cut, &name).ok(), Some(sniffed));
        assert!(filetype::is_stored_name(&filetype::stored_name(sniffed.extension)));
    }
    let shown = filetype::safe_display_name(&name);
    assert!(!shown.is_empty() && shown.len() <= MAX_DISPLAY_NAME, "{shown:?}");
    assert!(!shown.contains(['/', '\\']) && !shown.chars().any(char::is_control));
    assert!(shown != "." && shown != "..");
});

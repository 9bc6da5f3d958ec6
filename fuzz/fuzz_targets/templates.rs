//! Templates and their placeholders, as staff write them: any text either parses or is
//! refused (never a panic), and rendering agrees with the placeholders found: without
//! variables it names exactly those missing, in order; with every one given it renders,
//! and an empty value leaves only the template's own text.
#![no_main]

use std::collections::BTreeMap;

use commcenter_shared::domain::templates::{RenderError, placeholders, render};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|input: (&str, &str)| {
    let (content, value) = input;
    let found = placeholders([content]);
    let bare = render(content, &BTreeMap::new());
    let Ok(names) = found else {
        assert!(
            matches!(bare, Err(RenderError::Malformed(_))),
            "a template placeholders() refuses renders: {content:?}"
        );
        return;
    };
    match bare {
        Ok(text) => assert!(names.is_empty() && text == content, "{content:?}"),
        Err(RenderError::Missing(missing)) => assert_eq!(missing, names, "{content:?}"),
        Err(other) => panic!("{content:?}: {other}"),
    }
    let with = |v: &str| -> BTreeMap<String, Value> {
        names.iter().map(|n| (n.clone(), Value::String(v.to_owned()))).collect()
    };
    let empty = render(content, &with("")).expect("every variable given");
    assert!(empty.len() <= content.len(), "{content:?}");
    let filled = render(content, &with(value)).expect("every variable given");
    // Values go in as they are: never re-read as placeholders.
    let occurrences = filled.len() - empty.len();
    assert_eq!(occurrences % value.len().max(1), 0, "{content:?} with {value:?}");
});

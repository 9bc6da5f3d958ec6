//! ARCHITECTURE.md lists every job kind and event type; these tests hold those lists to
//! the code's registries (`job_kinds!`, `event_types!`), so the map cannot go stale
//! silently.

use std::collections::BTreeSet;

use commcenter_shared::{ledger::events::EventType, ledger::jobs::kinds};

/// The first column's names (`` `name` ``) of the table under `heading`.
fn listed(heading: &str) -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ARCHITECTURE.md");
    let map = std::fs::read_to_string(path).expect("ARCHITECTURE.md is readable");
    let section = map
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has a section {heading:?}"));
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned())
        .collect()
}

#[test]
fn the_map_lists_every_job_kind_and_no_other() {
    let code: BTreeSet<String> = kinds::ALL.iter().map(|k| (*k).to_owned()).collect();
    assert_eq!(listed("The job kinds"), code);
}

#[test]
fn the_map_lists_every_event_type_and_no_other() {
    let code: BTreeSet<String> = EventType::ALL
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    assert_eq!(listed("The event types"), code);
}

/// The layers of `shared/src`, lowest first; a file may use its own layer and those
/// below it. The newtypes at the root of `domain` are below them all.
const LAYERS: &[&str] = &["platform", "ledger", "domain", "ops"];

/// Every `crate::…` path a file names (outside comments and its tests), as segments,
/// with `use crate::{a::…, b}` groups expanded one level.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or_default()
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let mut paths = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let head: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let mut segments: Vec<String> = head
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if rest[head.len()..].starts_with('{') {
            let group = &rest[head.len() + 1..];
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let mut path = segments.clone();
                        path.extend(item_segments(&item));
                        paths.push(path);
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            segments.extend(item_segments(&item));
        }
        paths.push(segments);
    }
    paths
}

/// `a::b as c` → `a`, `b`.
fn item_segments(item: &str) -> Vec<String> {
    let path = item.split_whitespace().next().unwrap_or_default();
    path.split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn each_layer_uses_only_those_below_it() {
    let src = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
    let domain_modules: BTreeSet<String> = std::fs::read_dir(src.join("domain"))
        .expect("domain/")
        .map(|e| e.expect("entry").path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .filter(|name| name != "mod")
        .collect();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("inside src");
        let Some(own) = LAYERS.iter().position(|l| relative.starts_with(l)) else {
            continue; // lib.rs
        };
        let text = std::fs::read_to_string(&file).expect("readable");
        for path in crate_paths(&text) {
            let Some(layer) = path
                .first()
                .and_then(|l| LAYERS.iter().position(|x| x == l))
            else {
                continue;
            };
            // The newtypes at the root of `domain` are below every layer.
            let newtype = layer == 2 && !path.get(1).is_some_and(|m| domain_modules.contains(m));
            if layer > own && !newtype {
                wrong.push(format!(
                    "{} uses crate::{}",
                    relative.display(),
                    path.join("::")
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "a layer reaches up:\n{}",
        wrong.join("\n")
    );
}

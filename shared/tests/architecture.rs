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

//! Snapshot redactions: what changes from run to run is replaced by a placeholder, so a snapshot shows only
//! what the lesson decides.
//!
//! Use it around an assertion: `kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!(value))`.
//! Offsets are redacted even on fresh topics: another broker (or a retry) may number them differently, and the
//! tests assert offsets against what was read back instead.

/// Field names whose values are always redacted, wherever they appear in a snapshot.
pub const REDACTED_FIELDS: &[(&str, &str)] = &[
    ("offset", "[offset]"),
    ("timestamp", "[timestamp]"),
    ("event_id", "[event_id]"),
    ("bootstrap_servers", "[bootstrap]"),
    ("topic", "[topic]"),
    ("group_id", "[group]"),
];

/// insta settings with the workbook's redactions and sorted maps.
pub fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    for (field, placeholder) in REDACTED_FIELDS {
        settings.add_redaction(&format!(".**.{field}"), *placeholder);
    }
    settings.set_sort_maps(true);
    settings.set_prepend_module_to_snapshot(false);
    settings
}

//! Grades lesson 09's checker on logs made by hand: a clean log, and each way a producer can fail its readers
//! (a lost record, a duplicate, a swap, a key split over partitions, a record that is not part of the sequence).

use std::collections::BTreeMap;

use kit_testing::ReadRecord;
use solution_09::{KeyReport, Numbered, OrderCheck, check_once_in_order, numbered_sequence};

const KEYS: &[&str] = &["user-1", "user-2"];

/// A log as a reader sees it: `(partition, key, seq)` in log order, offsets numbered per partition.
fn log(entries: &[(i32, &str, u32)]) -> Vec<ReadRecord> {
    let mut next_offset: BTreeMap<i32, i64> = BTreeMap::new();
    let mut records: Vec<ReadRecord> = entries
        .iter()
        .map(|&(partition, key, seq)| {
            let offset = next_offset.entry(partition).or_default();
            *offset += 1;
            let numbered = Numbered { key: key.to_string(), seq };
            ReadRecord {
                partition,
                offset: *offset - 1,
                key: Some(key.to_string()),
                payload: Some(serde_json::to_string(&numbered).unwrap()),
                headers: BTreeMap::new(),
            }
        })
        .collect();
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

fn verdict(check: &OrderCheck) -> serde_json::Value {
    serde_json::json!({ "once_and_in_order": check.once_and_in_order(), "check": check })
}

#[test]
fn a_clean_log_passes() {
    let sent = numbered_sequence(KEYS, 3);
    let entries: Vec<(i32, &str, u32)> =
        sent.iter().map(|n| (if n.key == "user-1" { 0 } else { 1 }, n.key.as_str(), n.seq)).collect();
    let check = check_once_in_order(&log(&entries), KEYS, 3);
    assert!(check.once_and_in_order(), "every record is there once, in order: {check:?}");
    assert_eq!(check.keys.len(), KEYS.len(), "one report per key");
    assert_eq!(check.keys["user-1"].read, 3, "three records of user-1 were read");
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("clean_log", verdict(&check)));
}

#[test]
fn each_fault_is_named() {
    let cases: BTreeMap<&str, Vec<(i32, &str, u32)>> = BTreeMap::from([
        ("lost", vec![(0, "user-1", 0), (0, "user-1", 2), (1, "user-2", 0), (1, "user-2", 1), (1, "user-2", 2)]),
        // A retried batch written twice: 1 and 2 come back after themselves.
        (
            "duplicated",
            vec![
                (0, "user-1", 0),
                (0, "user-1", 1),
                (0, "user-1", 2),
                (0, "user-1", 1),
                (0, "user-1", 2),
                (1, "user-2", 0),
                (1, "user-2", 1),
                (1, "user-2", 2),
            ],
        ),
        // A failed batch retried after the next one was written: 1 lands after 2.
        (
            "reordered",
            vec![
                (0, "user-1", 0),
                (0, "user-1", 2),
                (0, "user-1", 1),
                (1, "user-2", 0),
                (1, "user-2", 1),
                (1, "user-2", 2),
            ],
        ),
        // The key did not decide the partition: no single log holds user-2's order.
        (
            "split_over_partitions",
            vec![
                (0, "user-1", 0),
                (0, "user-1", 1),
                (0, "user-1", 2),
                (0, "user-2", 0),
                (1, "user-2", 1),
                (1, "user-2", 2),
            ],
        ),
    ]);
    let verdicts: BTreeMap<&str, serde_json::Value> =
        cases.iter().map(|(name, entries)| (*name, verdict(&check_once_in_order(&log(entries), KEYS, 3)))).collect();
    for (name, value) in &verdicts {
        assert_eq!(value["once_and_in_order"], false, "the {name} log must not pass: {value}");
    }
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("each_fault_is_named", verdicts));
}

#[test]
fn a_record_outside_the_sequence_is_reported_not_skipped() {
    let mut records = log(&[(0, "user-1", 0), (0, "user-1", 1), (1, "user-2", 0), (1, "user-2", 1)]);
    records.insert(
        2,
        ReadRecord {
            partition: 0,
            offset: 2,
            key: Some("user-1".into()),
            payload: Some("not json".into()),
            headers: BTreeMap::new(),
        },
    );
    let check = check_once_in_order(&records, KEYS, 2);
    assert_eq!(check.unreadable, vec!["0/2".to_string()], "the unparsable record is named by partition/offset");
    assert!(!check.once_and_in_order(), "a log with a stranger in it is not clean");
    assert!(check.keys.values().all(|k| k.missing.is_empty()), "the readable records are all accounted for");
}

#[test]
fn out_of_order_is_measured_against_the_highest_number_seen() {
    // 3 overtook 1 and 2: both first arrived after a higher number, though 2 follows 1.
    let entries = vec![
        (0, "user-1", 0),
        (0, "user-1", 3),
        (0, "user-1", 1),
        (0, "user-1", 2),
        (1, "user-2", 0),
        (1, "user-2", 1),
        (1, "user-2", 2),
        (1, "user-2", 3),
    ];
    let check = check_once_in_order(&log(&entries), KEYS, 4);
    assert_eq!(
        check.keys["user-1"].out_of_order,
        vec![1, 2],
        "in 0 3 1 2, both 1 and 2 first arrive after 3, a higher number: {check:?}"
    );
    assert!(check.keys["user-2"].out_of_order.is_empty(), "user-2 is in order: {check:?}");
    assert!(!check.once_and_in_order(), "a reordered log does not pass");
}

#[test]
fn a_record_with_no_payload_is_reported_not_skipped() {
    let mut records = log(&[(0, "user-1", 0), (0, "user-1", 1), (1, "user-2", 0), (1, "user-2", 1)]);
    // A record with a key and no payload at all (a tombstone), after user-2's records: it is not a `Numbered` either.
    records.push(ReadRecord {
        partition: 1,
        offset: 2,
        key: Some("user-2".into()),
        payload: None,
        headers: BTreeMap::new(),
    });
    let check = check_once_in_order(&records, KEYS, 2);
    assert_eq!(
        check.unreadable,
        vec!["1/2".to_string()],
        "the record without a payload is named by partition/offset, not skipped: {check:?}"
    );
    assert!(!check.once_and_in_order(), "a log with a stranger in it is not clean");
}

#[test]
fn numbers_lost_at_the_tail_are_missing() {
    // user-1's last two records never arrived (a producer that gave up at message.timeout.ms loses the tail): the
    // highest number read is 1, but the sequence runs to per_key - 1 = 3.
    let entries = vec![
        (0, "user-1", 0),
        (0, "user-1", 1),
        (1, "user-2", 0),
        (1, "user-2", 1),
        (1, "user-2", 2),
        (1, "user-2", 3),
    ];
    let check = check_once_in_order(&log(&entries), KEYS, 4);
    assert_eq!(
        check.keys["user-1"].missing,
        vec![2, 3],
        "missing counts up to per_key (4), not up to the highest number read (1): {check:?}"
    );
    assert!(check.keys["user-2"].missing.is_empty(), "user-2 has all of 0..4: {check:?}");
    assert!(!check.once_and_in_order(), "a log that lost its last records does not pass");
}

#[test]
fn a_key_whose_records_were_all_lost_has_a_report() {
    // Only user-1's records are in the log: every record of user-2 was lost.
    let check = check_once_in_order(&log(&[(0, "user-1", 0), (0, "user-1", 1), (0, "user-1", 2)]), KEYS, 3);
    let report = check.keys.get("user-2").unwrap_or_else(|| {
        panic!("every key of `keys` has a report, user-2 too though none of its records was read: {check:?}")
    });
    assert_eq!(
        report,
        &KeyReport { partitions: vec![], read: 0, missing: vec![0, 1, 2], duplicated: vec![], out_of_order: vec![] },
        "user-2: no partition, nothing read, all of 0..3 missing"
    );
    assert!(!check.once_and_in_order(), "a log that lost every record of a key does not pass: {check:?}");
}

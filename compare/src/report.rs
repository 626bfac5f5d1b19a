//! What a comparison run found and how it is shown: aligned plain-text tables on stdout, markdown for the book
//! (`docs/generated/compare.md`, included by the comparison chapter under its own `##` heading, so the sections
//! here are `###`). Nothing in this module talks to a broker: the rendering and the maths (rates, percentiles)
//! are unit-tested on their own.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Which broker a figure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    Kafka,
    RabbitMq,
}

impl Broker {
    pub fn name(self) -> &'static str {
        match self {
            Broker::Kafka => "Kafka",
            Broker::RabbitMq => "RabbitMQ",
        }
    }
}

/// Whether the broker has to keep the messages safe before it says so (acks=all / publisher confirms on a durable
/// queue with persistent messages), or may answer sooner (acks=1 / transient messages without confirms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Persistent,
    Transient,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::Persistent => "persistent",
            Durability::Transient => "not persistent",
        }
    }
}

/// Messages (and megabytes, 10^6 bytes) per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub messages_per_sec: f64,
    pub megabytes_per_sec: f64,
}

/// The rate of `messages` of `bytes_each` bytes moved in `took`. A zero duration counts as one microsecond, so a
/// rate is always finite.
pub fn rate(messages: u64, bytes_each: usize, took: Duration) -> Rate {
    let secs = took.as_secs_f64().max(1e-6);
    Rate {
        messages_per_sec: messages as f64 / secs,
        megabytes_per_sec: messages as f64 * bytes_each as f64 / 1e6 / secs,
    }
}

/// One throughput run: N messages produced (until the broker acknowledged the last), then drained by one consumer
/// (from its start until it held the N-th).
#[derive(Debug, Clone, PartialEq)]
pub struct ThroughputRun {
    pub broker: Broker,
    pub durability: Durability,
    pub messages: u64,
    pub message_bytes: usize,
    pub produce: Duration,
    pub drain: Duration,
}

impl ThroughputRun {
    pub fn produce_rate(&self) -> Rate {
        rate(self.messages, self.message_bytes, self.produce)
    }

    pub fn drain_rate(&self) -> Rate {
        rate(self.messages, self.message_bytes, self.drain)
    }
}

/// The histogram end-to-end latencies are recorded in, in microseconds: 1 µs to 60 s at three significant
/// digits (every value below 2048 µs is exact, above it the error is under 0.1 %).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of one latency run, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    /// Reads the percentiles off `histogram`: the p-th percentile is the smallest recorded value that at least p %
    /// of the samples do not exceed (hdrhistogram's `value_at_quantile`, reported at its bucket's highest
    /// equivalent value).
    pub fn of(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// One latency run: messages sent at a fixed rate, each carrying its send time, timed until a consumer holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyRun {
    pub broker: Broker,
    pub durability: Durability,
    /// How this run differs from the others of its durability, if it does ("no idempotence").
    pub variant: Option<&'static str>,
    pub sent: u64,
    pub summary: LatencySummary,
}

/// A consumer that dies with messages handled but not yet committed or acknowledged, and the consumer after it.
/// Messages are numbered from 0 in the order they were written (on Kafka, the number is the offset).
#[derive(Debug, Clone, PartialEq)]
pub struct CrashRun {
    pub broker: Broker,
    pub total: u64,
    /// How many the first consumer handled before it died.
    pub handled: u64,
    /// How many of those it committed (Kafka) or acknowledged (RabbitMQ), one at a time, after handling each.
    pub settled: u64,
    /// The first message the new consumer received.
    pub resumed_at: u64,
    /// Messages the new consumer received that the first one had already handled.
    pub handled_twice: u64,
    /// Messages the new consumer received with RabbitMQ's `redelivered` flag; Kafka has no such flag.
    pub flagged_redelivered: Option<u64>,
    /// How many the new consumer received in all, and whether in the order they were written.
    pub received_after: u64,
    pub in_order: bool,
}

/// A fresh reader after every message was read and settled: what can be read again.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayRun {
    pub what: String,
    pub written: u64,
    pub first_reader_settled: u64,
    pub fresh_reader_got: u64,
}

/// Everything a run found, with the facts needed to read it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// When, and which workload: one line.
    pub headline: String,
    /// Machine, brokers, clients, workload: (what, description) rows.
    pub facts: Vec<(String, String)>,
    pub throughput: Vec<ThroughputRun>,
    pub throughput_settings: Vec<String>,
    pub latency: Vec<LatencyRun>,
    pub latency_settings: Vec<String>,
    pub crash: Vec<CrashRun>,
    pub crash_settings: Vec<String>,
    pub replay: Vec<ReplayRun>,
    /// "How to read these numbers": one bullet each.
    pub caveats: Vec<String>,
    /// Anything that did not go as planned (a deadline that ran out, a scenario that failed).
    pub problems: Vec<String>,
}

/// A table of text cells, rendered aligned for a terminal or as a markdown pipe table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    right_aligned: Vec<bool>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            right_aligned: vec![false; header.len()],
        }
    }

    /// Right-aligns these columns (numbers).
    pub fn right_align(mut self, columns: &[usize]) -> Table {
        for &c in columns {
            self.right_aligned[c] = true;
        }
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(cells.len(), self.header.len(), "a row has as many cells as the header");
        self.rows.push(cells);
    }

    /// Columns padded to their widest cell, two spaces apart, a rule under the header.
    pub fn text(&self) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|c| {
                std::iter::once(&self.header[c])
                    .chain(self.rows.iter().map(|r| &r[c]))
                    .map(|s| width(s))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(c, cell)| {
                    let pad = " ".repeat(widths[c] - width(cell));
                    if self.right_aligned[c] { format!("{pad}{cell}") } else { format!("{cell}{pad}") }
                })
                .collect();
            padded.join("  ").trim_end().to_string()
        };
        let mut out = line(&self.header);
        out.push('\n');
        out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }

    /// A markdown pipe table; `|` inside a cell is escaped.
    pub fn markdown(&self) -> String {
        let line = |cells: &[String]| {
            let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = line(&self.header);
        let rule: Vec<&str> = self.right_aligned.iter().map(|&r| if r { "---:" } else { "---" }).collect();
        out.push_str(&format!("| {} |\n", rule.join(" | ")));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// Display width of a cell: characters, not bytes ("µs", "—").
fn width(cell: &str) -> usize {
    cell.chars().count()
}

/// 52310 → "52,310".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// One decimal, thousands grouped: 1151.94 → "1,151.9".
pub fn one_decimal(x: f64) -> String {
    let tenths = (x.max(0.0) * 10.0).round() as u64;
    format!("{}.{}", thousands(tenths / 10), tenths % 10)
}

/// Microseconds as milliseconds, with the precision the value deserves: "0.42 ms", "12.3 ms", "250 ms".
pub fn millis(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// "1.23 s".
pub fn seconds(took: Duration) -> String {
    format!("{:.2} s", took.as_secs_f64())
}

pub fn throughput_table(runs: &[ThroughputRun]) -> Table {
    let mut table = Table::new(&[
        "Durability",
        "Broker",
        "Produce msg/s",
        "Produce MB/s",
        "Consume msg/s",
        "Consume MB/s",
        "Produce time",
        "Drain time",
    ])
    .right_align(&[2, 3, 4, 5, 6, 7]);
    for run in runs {
        let (produce, drain) = (run.produce_rate(), run.drain_rate());
        table.row(vec![
            run.durability.name().into(),
            run.broker.name().into(),
            thousands(produce.messages_per_sec.round() as u64),
            one_decimal(produce.megabytes_per_sec),
            thousands(drain.messages_per_sec.round() as u64),
            one_decimal(drain.megabytes_per_sec),
            seconds(run.produce),
            seconds(run.drain),
        ]);
    }
    table
}

pub fn latency_table(runs: &[LatencyRun]) -> Table {
    let mut table =
        Table::new(&["Durability", "Broker", "Received", "p50", "p99", "p99.9", "max"]).right_align(&[2, 3, 4, 5, 6]);
    for run in runs {
        let s = &run.summary;
        let durability = match run.variant {
            Some(variant) => format!("{}, {variant}", run.durability.name()),
            None => run.durability.name().to_string(),
        };
        table.row(vec![
            durability,
            run.broker.name().into(),
            format!("{} of {}", thousands(s.count), thousands(run.sent)),
            millis(s.p50_us),
            millis(s.p99_us),
            millis(s.p999_us),
            millis(s.max_us),
        ]);
    }
    table
}

pub fn crash_table(runs: &[CrashRun]) -> Table {
    let mut table = Table::new(&[
        "Broker",
        "Handled before the crash",
        "Settled before the crash",
        "New consumer starts at",
        "Handled twice",
        "Flagged redelivered",
        "Order after the crash",
    ])
    .right_align(&[1, 2, 4]);
    for run in runs {
        let (settled, resumed) = match run.broker {
            Broker::Kafka => (
                format!("{} (committed)", run.settled),
                if run.resumed_at == run.settled {
                    format!("offset {}, the last commit", run.resumed_at)
                } else {
                    format!("offset {}", run.resumed_at)
                },
            ),
            Broker::RabbitMq => (
                format!("{} (acknowledged)", run.settled),
                if run.resumed_at == run.settled {
                    format!("message {}, the first unacknowledged", run.resumed_at)
                } else {
                    format!("message {}", run.resumed_at)
                },
            ),
        };
        table.row(vec![
            run.broker.name().into(),
            format!("{} of {}", run.handled, run.total),
            settled,
            resumed,
            run.handled_twice.to_string(),
            run.flagged_redelivered.map_or_else(|| "— (no such flag)".into(), |n| n.to_string()),
            if run.in_order { "in order".into() } else { "out of order".into() },
        ]);
    }
    table
}

pub fn replay_table(runs: &[ReplayRun]) -> Table {
    let mut table = Table::new(&["Where the messages are", "Written", "Read and settled", "A fresh reader gets"])
        .right_align(&[1, 2, 3]);
    for run in runs {
        table.row(vec![
            run.what.clone(),
            thousands(run.written),
            thousands(run.first_reader_settled),
            thousands(run.fresh_reader_got),
        ]);
    }
    table
}

const THROUGHPUT_TITLE: &str = "Throughput";
const LATENCY_TITLE: &str = "End-to-end latency at a fixed rate";
const CRASH_TITLE: &str = "A consumer crashes";
const REPLAY_TITLE: &str = "Reading again";
const CAVEATS_TITLE: &str = "How to read these numbers";

/// The markdown the comparison chapter includes.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    out.push_str("<!-- Written by `cargo xtask compare`: do not edit by hand, run it again. -->\n\n");
    let _ = writeln!(out, "{}\n", report.headline);
    for (what, value) in &report.facts {
        let _ = writeln!(out, "- **{what}**: {value}");
    }
    let sections: [(&str, Option<Table>, &[String]); 4] = [
        (
            THROUGHPUT_TITLE,
            (!report.throughput.is_empty()).then(|| throughput_table(&report.throughput)),
            &report.throughput_settings,
        ),
        (LATENCY_TITLE, (!report.latency.is_empty()).then(|| latency_table(&report.latency)), &report.latency_settings),
        (CRASH_TITLE, (!report.crash.is_empty()).then(|| crash_table(&report.crash)), &report.crash_settings),
        (REPLAY_TITLE, (!report.replay.is_empty()).then(|| replay_table(&report.replay)), &[]),
    ];
    for (title, table, settings) in sections {
        let _ = writeln!(out, "\n### {title}\n");
        match table {
            Some(table) => out.push_str(&table.markdown()),
            None => out.push_str("Not measured in this run (see the problems below).\n"),
        }
        if !settings.is_empty() {
            out.push('\n');
            for line in settings {
                let _ = writeln!(out, "- {line}");
            }
        }
    }
    if !report.problems.is_empty() {
        out.push_str("\n### Problems in this run\n\n");
        for problem in &report.problems {
            let _ = writeln!(out, "- {problem}");
        }
    }
    let _ = writeln!(out, "\n### {CAVEATS_TITLE}\n");
    for caveat in &report.caveats {
        let _ = writeln!(out, "- {caveat}");
    }
    out
}

/// The same for a terminal: facts, then each table aligned, then the caveats.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}\n", strip_markdown(&report.headline));
    let key_width = report.facts.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
    for (what, value) in &report.facts {
        let _ = writeln!(out, "{what:key_width$}  {}", strip_markdown(value));
    }
    let sections: [(&str, Option<Table>); 4] = [
        (THROUGHPUT_TITLE, (!report.throughput.is_empty()).then(|| throughput_table(&report.throughput))),
        (LATENCY_TITLE, (!report.latency.is_empty()).then(|| latency_table(&report.latency))),
        (CRASH_TITLE, (!report.crash.is_empty()).then(|| crash_table(&report.crash))),
        (REPLAY_TITLE, (!report.replay.is_empty()).then(|| replay_table(&report.replay))),
    ];
    for (title, table) in sections {
        let _ = writeln!(out, "\n{title}\n{}", "=".repeat(width(title)));
        match table {
            Some(table) => out.push_str(&table.text()),
            None => out.push_str("not measured in this run\n"),
        }
    }
    if !report.problems.is_empty() {
        out.push_str("\nProblems in this run\n");
        for problem in &report.problems {
            let _ = writeln!(out, "- {}", strip_markdown(problem));
        }
    }
    out
}

/// Backticks and bold markers out, for a terminal.
fn strip_markdown(s: &str) -> String {
    s.replace('`', "").replace("**", "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_count_messages_and_megabytes_per_second() {
        let r = rate(50_000, 1024, Duration::from_millis(2_500));
        assert_eq!(r.messages_per_sec, 20_000.0);
        assert!((r.megabytes_per_sec - 20.48).abs() < 1e-9, "{r:?}");
        assert!(rate(5, 1, Duration::ZERO).messages_per_sec.is_finite());
    }

    #[test]
    fn percentiles_are_read_off_the_histogram() {
        let mut histogram = latency_histogram();
        for us in 1..=1000 {
            histogram.record(us).unwrap();
        }
        // Below 2048 µs every value has a bucket of its own, so the percentiles are exact ranks.
        assert_eq!(
            LatencySummary::of(&histogram),
            LatencySummary { count: 1000, p50_us: 500, p99_us: 990, p999_us: 999, max_us: 1000 }
        );
    }

    #[test]
    fn one_slow_message_in_a_thousand_shows_at_p99_9_not_at_p99() {
        let mut histogram = latency_histogram();
        for _ in 0..999 {
            histogram.record(800).unwrap();
        }
        histogram.record(250_000).unwrap();
        let summary = LatencySummary::of(&histogram);
        assert_eq!((summary.p50_us, summary.p99_us, summary.p999_us), (800, 800, 800));
        // Above 2048 µs a value is reported at its bucket's top, within 0.1 %.
        assert!(summary.max_us.abs_diff(250_000) <= 250, "{summary:?}");
        assert_eq!(LatencySummary::of(&latency_histogram()), LatencySummary::default(), "no samples, no figures");
    }

    #[test]
    fn numbers_are_written_for_people() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(52_310), "52,310");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(one_decimal(1151.94), "1,151.9");
        assert_eq!(one_decimal(20.48), "20.5");
        assert_eq!(one_decimal(0.04), "0.0");
        assert_eq!(millis(420), "0.42 ms");
        assert_eq!(millis(12_345), "12.3 ms");
        assert_eq!(millis(250_400), "250 ms");
        assert_eq!(seconds(Duration::from_millis(1234)), "1.23 s");
    }

    #[test]
    fn a_text_table_aligns_its_columns() {
        let mut table = Table::new(&["Broker", "msg/s"]).right_align(&[1]);
        table.row(vec!["Kafka".into(), "52,310".into()]);
        table.row(vec!["RabbitMQ".into(), "9".into()]);
        assert_eq!(table.text(), "Broker     msg/s\n--------  ------\nKafka     52,310\nRabbitMQ       9\n");
    }

    #[test]
    fn a_markdown_table_marks_number_columns_and_escapes_pipes() {
        let mut table = Table::new(&["Broker", "msg/s"]).right_align(&[1]);
        table.row(vec!["a|b".into(), "1".into()]);
        assert_eq!(table.markdown(), "| Broker | msg/s |\n| --- | ---: |\n| a\\|b | 1 |\n");
    }

    fn sample_report() -> Report {
        let summary = LatencySummary { count: 5000, p50_us: 850, p99_us: 2_100, p999_us: 5_000, max_us: 12_000 };
        Report {
            headline: "Measured on 2026-12-01.".into(),
            facts: vec![("Machine".into(), "2 cores".into())],
            throughput: vec![ThroughputRun {
                broker: Broker::Kafka,
                durability: Durability::Persistent,
                messages: 50_000,
                message_bytes: 1000,
                produce: Duration::from_secs(1),
                drain: Duration::from_millis(500),
            }],
            throughput_settings: vec!["Kafka: `acks=all`".into()],
            latency: vec![
                LatencyRun {
                    broker: Broker::RabbitMq,
                    durability: Durability::Transient,
                    variant: None,
                    sent: 5000,
                    summary,
                },
                LatencyRun {
                    broker: Broker::Kafka,
                    durability: Durability::Persistent,
                    variant: Some("no idempotence"),
                    sent: 5000,
                    summary,
                },
            ],
            latency_settings: vec![],
            crash: vec![
                CrashRun {
                    broker: Broker::Kafka,
                    total: 100,
                    handled: 60,
                    settled: 55,
                    resumed_at: 55,
                    handled_twice: 5,
                    flagged_redelivered: None,
                    received_after: 45,
                    in_order: true,
                },
                CrashRun {
                    broker: Broker::RabbitMq,
                    total: 100,
                    handled: 60,
                    settled: 55,
                    resumed_at: 65,
                    handled_twice: 5,
                    flagged_redelivered: Some(15),
                    received_after: 45,
                    in_order: false,
                },
            ],
            crash_settings: vec![],
            replay: vec![ReplayRun {
                what: "RabbitMQ classic queue".into(),
                written: 1000,
                first_reader_settled: 1000,
                fresh_reader_got: 0,
            }],
            caveats: vec!["One machine.".into()],
            problems: vec![],
        }
    }

    #[test]
    fn the_markdown_holds_every_table_the_facts_and_the_caveats() {
        let md = markdown(&sample_report());
        for expected in [
            "Measured on 2026-12-01.\n\n- **Machine**: 2 cores\n\n### Throughput",
            "### Throughput",
            "| persistent | Kafka | 50,000 | 50.0 | 100,000 | 100.0 | 1.00 s | 0.50 s |",
            "- Kafka: `acks=all`",
            "| not persistent | RabbitMQ | 5,000 of 5,000 | 0.85 ms | 2.10 ms | 5.00 ms | 12.0 ms |",
            "| persistent, no idempotence | Kafka | 5,000 of 5,000 |",
            "| Kafka | 60 of 100 | 55 (committed) | offset 55, the last commit | 5 | — (no such flag) | in order |",
            "| RabbitMQ | 60 of 100 | 55 (acknowledged) | message 65 | 5 | 15 | out of order |",
            "| RabbitMQ classic queue | 1,000 | 1,000 | 0 |",
            "### How to read these numbers\n\n- One machine.",
        ] {
            assert!(md.contains(expected), "missing {expected:?} in:\n{md}");
        }
        assert!(!md.contains("### Problems"), "no problems, no section");
        assert!(
            !md.lines().any(|l| l.starts_with("# ") || l.starts_with("## ")),
            "sections sit under the chapter's own ## heading"
        );
    }

    #[test]
    fn a_scenario_that_failed_is_said_so_in_both_renderings() {
        let mut report = sample_report();
        report.latency.clear();
        report.problems.push("latency: Kafka received 10 of 5000 within 30 s".into());
        let md = markdown(&report);
        assert!(md.contains("### End-to-end latency at a fixed rate\n\nNot measured in this run"), "{md}");
        assert!(md.contains("### Problems in this run\n\n- latency: Kafka received 10 of 5000"), "{md}");
        let text = text(&report);
        assert!(
            text.contains("End-to-end latency at a fixed rate\n==================================\nnot measured"),
            "{text}"
        );
        assert!(text.contains("Broker    Handled before the crash"), "{text}");
    }
}

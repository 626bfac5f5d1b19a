//! The lab's results as the book shows them: a markdown table and an SVG chart, written to `docs/generated/`.
//!
//! The chart is drawn here, by hand, as SVG text: four small panels of bars and a line, which is a hundred lines
//! of `format!`. A plotting crate (plotters) would bring a font stack and a rasteriser for PNG to draw the same
//! four panels; SVG is text, so the chart diffs in review, scales with the page and needs no font on the machine
//! that draws it (the browser that shows it has them).

use std::fmt::Write;

use crate::perf::{BenchReport, SweepPoint};

/// The sweep as a markdown section: one table per setting.
pub fn markdown(broker: &str, features: &[String], points: &[SweepPoint], bench: Option<&BenchReport>) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "Measured on {broker}, librdkafka {}.", rdkafka::util::get_rdkafka_version().1);
    let codecs: Vec<&str> =
        ["gzip", "snappy", "lz4", "zstd"].into_iter().filter(|codec| features.iter().any(|f| f == codec)).collect();
    let _ = writeln!(md, "Codecs this build has (`builtin.features`): {}.", codecs.join(", "));
    let _ = writeln!(
        md,
        "Throughput: a `BaseProducer` loop, {} B records. Latency: records at a steady pace, send → receive, \
         through the tuned consumer. Each setting varies alone; the others keep librdkafka's defaults \
         (`linger.ms` 5, `batch.size` 1000000, `compression.type` none, `acks` all).",
        crate::perf::PAYLOAD_BYTES
    );
    let mut setting = "";
    for point in points {
        if point.setting != setting {
            setting = &point.setting;
            let _ = writeln!(md, "\n| `{setting}` | records/s | MB/s | p50 ms | p99 ms | p99.9 ms |");
            let _ = writeln!(md, "| ---: | ---: | ---: | ---: | ---: | ---: |");
        }
        match (&point.throughput, &point.latency, &point.skipped) {
            (Some(t), Some(l), _) => {
                let _ = writeln!(
                    md,
                    "| {} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} |",
                    point.value, t.records_per_s, t.mb_per_s, l.p50_ms, l.p99_ms, l.p999_ms
                );
            }
            (_, _, skipped) => {
                let why = skipped.as_deref().unwrap_or("not measured");
                let _ = writeln!(md, "| {} | {why} | | | | |", point.value);
            }
        }
    }
    if let Some(bench) = bench {
        let _ = writeln!(md, "\n{}", bench_lines(bench).join("  \n"));
    }
    md
}

/// The benchmark's figures, a line each.
pub fn bench_lines(bench: &BenchReport) -> Vec<String> {
    let l = &bench.latency;
    vec![
        format!(
            "raw BaseProducer loop, defaults:   {:.0} records/s ({:.1} MB/s)",
            bench.raw.records_per_s, bench.raw.mb_per_s
        ),
        format!(
            "raw loop, tuned settings:          {:.0} records/s ({:.1} MB/s): {:.0}% of the defaults (target: 90%)",
            bench.tuned.records_per_s,
            bench.tuned.mb_per_s,
            bench.ratio * 100.0
        ),
        format!(
            "FutureProducer, tuned settings:    {:.0} records/s ({:.1} MB/s), every delivery awaited",
            bench.service.records_per_s, bench.service.mb_per_s
        ),
        format!(
            "end to end, tuned producer and consumer: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms \
             ({} records; target: p99 ≤ 10 ms)",
            l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms, l.samples
        ),
    ]
}

/// Escapes text for SVG.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The sweep as an SVG chart: a row per setting, its throughput on the left (thousands of records/s) and its
/// end-to-end latency on the right (p50 and p99, ms), each value written over its bar; a setting this build lacks
/// is marked "n/a".
pub fn svg(title: &str, points: &[SweepPoint]) -> String {
    const W: f64 = 720.0;
    const ROW_H: f64 = 150.0;
    let mut settings: Vec<&str> = Vec::new();
    for point in points {
        if !settings.contains(&point.setting.as_str()) {
            settings.push(&point.setting);
        }
    }
    let height = 62.0 + settings.len() as f64 * (ROW_H + 12.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}""#
    );
    let _ = writeln!(out, r#"  font-family="sans-serif" font-size="12">"#);
    let _ = writeln!(out, r#"<rect width="{W}" height="{height}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    // The legend: a swatch and its words, for each colour.
    for (x, color, words) in [
        (120, "#4e79a7", "throughput, thousand records/s"),
        (380, "#f1a7a9", "p50"),
        (430, "#e15759", "p99 end to end, ms"),
    ] {
        let _ = writeln!(out, r#"<rect x="{x}" y="34" width="12" height="12" fill="{color}"/>"#);
        let _ = writeln!(out, r#"<text x="{}" y="44">{words}</text>"#, x + 17);
    }
    for (row, setting) in settings.iter().enumerate() {
        let y0 = 56.0 + row as f64 * (ROW_H + 12.0);
        let row_points: Vec<&SweepPoint> = points.iter().filter(|p| p.setting == *setting).collect();
        let throughput: Vec<Option<Vec<f64>>> =
            row_points.iter().map(|p| p.throughput.as_ref().map(|t| vec![t.records_per_s / 1000.0])).collect();
        let latency: Vec<Option<Vec<f64>>> =
            row_points.iter().map(|p| p.latency.as_ref().map(|l| vec![l.p50_ms, l.p99_ms])).collect();
        let labels: Vec<String> = row_points.iter().map(|p| short_value(&p.value)).collect();
        let heading = format!("{setting}: {}", axis_title(setting));
        bars(&mut out, 10.0, y0, 345.0, ROW_H, &heading, &labels, &throughput, &["#4e79a7"]);
        bars(&mut out, 365.0, y0, 345.0, ROW_H, "", &labels, &latency, &["#f1a7a9", "#e15759"]);
    }
    out.push_str("</svg>\n");
    out
}

/// A round axis maximum at or above `value`: 1, 2 or 5 times a power of ten.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * power).find(|v| *v >= value).unwrap_or(10.0 * power)
}

/// One panel of grouped bars: a group per value (`labels`), a bar per series (`colors`), each with its figure
/// above it; a value with no figures (not measured) shows "n/a".
#[allow(clippy::too_many_arguments)]
fn bars(
    out: &mut String,
    x0: f64,
    y0: f64,
    w: f64,
    h: f64,
    heading: &str,
    labels: &[String],
    values: &[Option<Vec<f64>>],
    colors: &[&str],
) {
    let (left, right, top, bottom) = (x0 + 8.0, x0 + w - 8.0, y0 + 34.0, y0 + h - 22.0);
    let _ = writeln!(out, r##"<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>"##);
    if !heading.is_empty() {
        let _ = writeln!(out, r#"<text x="{}" y="{}" font-weight="bold">{}</text>"#, x0 + 8.0, y0 + 16.0, esc(heading));
    }
    let max = nice_ceiling(values.iter().flatten().flatten().copied().fold(0.0, f64::max));
    let _ = writeln!(out, r##"<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#999"/>"##);
    let slot = (right - left) / labels.len().max(1) as f64;
    for (i, (label, group)) in labels.iter().zip(values).enumerate() {
        let cx = left + slot * (i as f64 + 0.5);
        let _ = writeln!(out, r#"<text x="{cx}" y="{}" text-anchor="middle">{}</text>"#, bottom + 15.0, esc(label));
        let Some(group) = group else {
            let _ =
                writeln!(out, r##"<text x="{cx}" y="{}" text-anchor="middle" fill="#888">n/a</text>"##, bottom - 6.0);
            continue;
        };
        let bar_w = (slot * 0.7 / group.len() as f64).min(40.0);
        let start = cx - bar_w * group.len() as f64 / 2.0;
        for (j, (value, color)) in group.iter().zip(colors).enumerate() {
            let bar_h = (bottom - top) * value / max;
            let x = start + bar_w * j as f64;
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bar_h:.1}" fill="{color}"/>"#,
                bottom - bar_h,
                bar_w - 2.0
            );
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"#,
                x + bar_w / 2.0 - 1.0,
                bottom - bar_h - 4.0,
                trim(*value)
            );
        }
    }
}

/// A short label for a value: byte sizes in KiB, or MB for librdkafka's default of 1,000,000.
fn short_value(value: &str) -> String {
    match value.parse::<u64>() {
        Ok(1_000_000) => "1 MB".to_string(),
        Ok(bytes) if bytes >= 16_384 => format!("{} KiB", bytes / 1024),
        _ => value.to_string(),
    }
}

fn axis_title(setting: &str) -> &'static str {
    match setting {
        "linger.ms" => "ms a batch may wait",
        "batch.size" => "bytes a batch may hold",
        "compression.type" => "codec",
        _ => "acknowledged by",
    }
}

/// A figure with as few digits as it needs.
fn trim(value: f64) -> String {
    if value == 0.0 {
        "0".to_string()
    } else if value >= 10.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

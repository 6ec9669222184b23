//! `timeline.html`: one picture of a run to open in a browser. Top: a lane per client, each
//! operation a bar from invocation to completion, green when ok, red when it certainly failed,
//! orange when its outcome is unknown; fault windows shaded across every lane and named.
//! Bottom: each operation's latency against the time it was invoked (log scale). Hovering a
//! bar or a dot shows the operation.

use std::fmt::Write as _;

use serde_json::Value;

use crate::Record;

const WIDTH: f64 = 1400.0;
const LEFT: f64 = 90.0;
const LANE: f64 = 16.0;
const PLOT: f64 = 260.0;

fn color(outcome: &str) -> &'static str {
    match outcome {
        "ok" => "#3a9a4a",
        "fail" => "#d03030",
        _ => "#f0a020",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn describe(record: &Record) -> String {
    let mut text = format!(
        "process {} {} key {}",
        record.process, record.op, record.key
    );
    if let Some(value) = record.value {
        let _ = write!(text, " value {value}");
    }
    if let Some(result) = record.result {
        let _ = write!(text, " result {result}");
    }
    let _ = write!(
        text,
        ": {} after {:.1} ms",
        record.outcome,
        (record.complete_us - record.invoke_us) as f64 / 1000.0
    );
    if let Some(error) = &record.error {
        let _ = write!(text, " ({error})");
    }
    escape(&text)
}

/// The page for a run: `title` on top, `clients` lanes.
pub fn render(title: &str, history: &[Record], schedule: &[Value], clients: usize) -> String {
    let end_us = history
        .iter()
        .map(|r| r.complete_us)
        .chain(
            schedule
                .iter()
                .filter_map(|f| f["end_ms"].as_u64())
                .map(|ms| ms * 1000),
        )
        .max()
        .unwrap_or(1)
        .max(1);
    let span = WIDTH - LEFT - 10.0;
    let x = |us: u64| LEFT + us as f64 / end_us as f64 * span;
    let lanes_height = clients as f64 * LANE;
    let plot_top = 30.0 + lanes_height + 50.0;
    let height = plot_top + PLOT + 40.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    // Fault windows, across the lanes and the plot.
    for fault in schedule {
        let (Some(start), Some(stop)) = (fault["start_ms"].as_u64(), fault["end_ms"].as_u64())
        else {
            continue;
        };
        let (x0, x1) = (x(start * 1000), x(stop * 1000));
        let name = format!(
            "{} {}",
            fault["fault"].as_str().unwrap_or("fault"),
            fault["nodes"]
        );
        let _ = write!(
            svg,
            r##"<rect x="{x0:.1}" y="20" width="{:.1}" height="{:.1}" fill="#8080ff" opacity="0.18"><title>{} from {start} ms to {stop} ms</title></rect><text x="{x0:.1}" y="16" fill="#4040a0">{}</text>"##,
            (x1 - x0).max(1.0),
            height - 40.0,
            escape(&name),
            escape(&name)
        );
    }
    // Lanes.
    for lane in 0..clients {
        let y = 30.0 + lane as f64 * LANE;
        let _ = write!(
            svg,
            r##"<text x="4" y="{:.1}">client {lane}</text><line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            y + 11.0,
            WIDTH - 10.0,
            y + LANE,
            y + LANE
        );
    }
    for record in history {
        let y = 30.0 + record.process as f64 * LANE + 2.0;
        let (x0, x1) = (x(record.invoke_us), x(record.complete_us));
        let _ = write!(
            svg,
            r#"<rect x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}</title></rect>"#,
            (x1 - x0).max(0.8),
            LANE - 4.0,
            color(record.outcome),
            describe(record)
        );
    }
    // Latency over time, log scale from 0.1 ms to the slowest operation.
    let slowest_ms = history
        .iter()
        .map(|r| (r.complete_us - r.invoke_us) as f64 / 1000.0)
        .fold(1.0f64, f64::max);
    let (low, high) = (0.1f64.log10(), slowest_ms.log10().max(0.0) + 0.1);
    let y = |ms: f64| plot_top + PLOT - (ms.max(0.1).log10() - low) / (high - low) * PLOT;
    let _ = write!(
        svg,
        r##"<text x="4" y="{:.1}">latency</text><rect x="{LEFT}" y="{plot_top:.1}" width="{span:.1}" height="{PLOT}" fill="none" stroke="#999"/>"##,
        plot_top - 6.0
    );
    let mut tick = 0.1f64;
    while tick <= 10f64.powf(high) {
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{tick} ms</text>"##,
            WIDTH - 10.0,
            y(tick),
            y(tick),
            LEFT - 4.0,
            y(tick) + 4.0
        );
        tick *= 10.0;
    }
    for record in history {
        let ms = (record.complete_us - record.invoke_us) as f64 / 1000.0;
        let _ = write!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="{}"><title>{}</title></circle>"#,
            x(record.invoke_us),
            y(ms),
            color(record.outcome),
            describe(record)
        );
    }
    // Time axis.
    let seconds = end_us / 1_000_000;
    let every = (seconds / 20).max(1);
    for second in (0..=seconds).step_by(every as usize) {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{second} s</text>"#,
            x(second * 1_000_000),
            height - 20.0
        );
    }
    svg.push_str("</svg>");
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"margin:16px\"><h3 style=\"font-family:sans-serif\">{title}</h3>\
         <p style=\"font-family:sans-serif;font-size:12px\">green ok, red failed, orange \
         unknown outcome; blue: fault windows. Hover for details.</p>\n{svg}\n</body></html>\n",
        title = escape(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(process: usize, outcome: &'static str, invoke_us: u64, complete_us: u64) -> Record {
        Record {
            process,
            op: "write",
            key: 1,
            value: Some(3),
            from: None,
            outcome,
            result: None,
            invoke_us,
            complete_us,
            error: (outcome != "ok").then(|| "timed out <after 3 s>".to_string()),
        }
    }

    #[test]
    fn draws_every_operation_and_fault_window() {
        let history = [
            record(0, "ok", 1_000, 5_000),
            record(1, "info", 2_000, 3_002_000),
            record(1, "fail", 3_100_000, 3_200_000),
        ];
        let schedule = [
            serde_json::json!({"fault": "Kill", "nodes": [2], "start_ms": 1000,
            "end_ms": 2500}),
        ];
        let page = render("register kill seed 7", &history, &schedule, 2);
        // A bar and a dot per operation, each with its description.
        assert_eq!(page.matches("<circle").count(), 3);
        assert_eq!(page.matches("fill=\"#3a9a4a\"").count(), 2);
        assert_eq!(page.matches("fill=\"#f0a020\"").count(), 2);
        assert_eq!(page.matches("fill=\"#d03030\"").count(), 2);
        assert!(page.contains("Kill [2] from 1000 ms to 2500 ms"));
        // Error text is escaped, so the page stays well-formed.
        assert!(page.contains("timed out &lt;after 3 s&gt;"));
        assert!(!page.contains("<after"));
        assert!(page.contains("client 1"));
        assert!(page.starts_with("<!doctype html>"));
    }
}

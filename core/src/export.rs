//! From merged window totals to what people read: the windowed metrics of docs/contract.md
//! section 4, as Prometheus gauge samples and as cx-metrics snapshots. Both are written from
//! the same rows, so the latest snapshot of a series equals what /metrics showed at its as_of.

use std::fmt::Write;
use std::sync::LazyLock;

use crate::stats::{Z_95, nps, nps_margin_of_error, ratio, wilson_interval};
use crate::tally::{Tally, count_index, sketch_index};

/// The labels of a series, in the order of its cx-metrics key.
pub const LABELS: [&str; 4] = ["window", "team", "channel", "priority"];

/// Every windowed metric, in the order of a snapshot; the last BUSINESS ones only when a
/// schedule is configured.
pub const METRICS: [&str; 46] = [
    "nps",
    "nps_margin_of_error",
    "nps_responses",
    "nps_promoters",
    "nps_passives",
    "nps_detractors",
    "csat_ratio",
    "csat_ratio_lower",
    "csat_ratio_upper",
    "csat_responses",
    "csat_satisfied",
    "csat_score_avg",
    "ces_score_avg",
    "ces_low_effort_ratio",
    "ces_responses",
    "first_response_seconds_p50",
    "first_response_seconds_p90",
    "first_response_seconds_avg",
    "first_response_count",
    "resolution_seconds_p50",
    "resolution_seconds_p90",
    "resolution_seconds_avg",
    "resolution_count",
    "tickets_opened",
    "tickets_resolved",
    "first_response_sla_breach_ratio",
    "resolution_sla_breach_ratio",
    "one_touch_ratio",
    "first_response_sla_breaches",
    "resolution_sla_breaches",
    "one_touch_tickets",
    "full_resolution_seconds_p50",
    "full_resolution_seconds_p90",
    "full_resolution_seconds_avg",
    "full_resolution_count",
    "ticket_reopens",
    "reopened_ratio",
    "reopened_tickets",
    "first_contact_resolution_ratio",
    "first_contact_resolutions",
    "first_response_business_seconds_p50",
    "first_response_business_seconds_p90",
    "first_response_business_seconds_avg",
    "resolution_business_seconds_p50",
    "resolution_business_seconds_p90",
    "resolution_business_seconds_avg",
];
pub const BUSINESS: usize = 6;

/// The quantiles exported of every duration (the _p50 and _p90 metrics), with the quantile
/// label of their samples.
const P50_P90: [f64; 2] = [0.5, 0.9];
const QUANTILE_LABELS: [(&str, &str); 2] = [("_p50", "0.5"), ("_p90", "0.9")];

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// A count: a whole number in a snapshot.
    Count(i64),
    Real(f64),
    /// A ratio, average or quantile while its count is 0: null in a snapshot, no sample.
    Absent,
}

impl From<Option<f64>> for Value {
    fn from(value: Option<f64>) -> Self {
        value.map_or(Value::Absent, Value::Real)
    }
}

/// Every metric of `METRICS` for one series and window, in its order; the business-time ones
/// only with `business_hours`.
pub fn window_metrics(tally: &Tally, business_hours: bool) -> Vec<Value> {
    let sum = |name: &str| count_index(name).map_or(0.0, |index| tally.count(index));
    // a count rounded: sums of retracted floats may be a hair off a whole number
    let count = |name: &str| sum(name).round_ties_even() as i64;
    let quantiles = |name: &str| {
        let found = sketch_index(name).map(|index| tally.quantiles(index as u8, &P50_P90));
        let [p50, p90] = found.as_deref().unwrap_or(&[None, None]) else {
            return [Value::Absent; 2];
        };
        [Value::from(*p50), Value::from(*p90)]
    };
    let whole = |part: f64, of: i64| Value::from(ratio(part, of as f64));
    let (promoters, passives, detractors) = (
        count("nps_promoters"),
        count("nps_passives"),
        count("nps_detractors"),
    );
    let (csat_responses, satisfied) = (count("csat_responses"), count("csat_satisfied"));
    let interval = wilson_interval(satisfied as f64, csat_responses as f64, Z_95);
    let (first_responses, resolutions) = (count("first_response_count"), count("resolution_count"));
    let (ces_responses, resolved) = (count("ces_responses"), count("tickets_resolved"));
    let full_resolutions = count("full_resolution_count");
    let share = |name: &str, of: i64| whole(count(name) as f64, of);
    let [first_response_p50, first_response_p90] = quantiles("first_response_seconds");
    let [resolution_p50, resolution_p90] = quantiles("resolution_seconds");
    let [full_resolution_p50, full_resolution_p90] = quantiles("full_resolution_seconds");
    let mut metrics = vec![
        nps(promoters, passives, detractors).into(),
        nps_margin_of_error(promoters, passives, detractors).into(),
        Value::Count(promoters + passives + detractors),
        Value::Count(promoters),
        Value::Count(passives),
        Value::Count(detractors),
        share("csat_satisfied", csat_responses),
        interval.map(|(low, _)| low).into(),
        interval.map(|(_, high)| high).into(),
        Value::Count(csat_responses),
        Value::Count(satisfied),
        whole(sum("csat_score_sum"), csat_responses),
        whole(sum("ces_score_sum"), ces_responses),
        share("ces_low_effort", ces_responses),
        Value::Count(ces_responses),
        first_response_p50,
        first_response_p90,
        whole(sum("first_response_seconds_sum"), first_responses),
        Value::Count(first_responses),
        resolution_p50,
        resolution_p90,
        whole(sum("resolution_seconds_sum"), resolutions),
        Value::Count(resolutions),
        Value::Count(count("tickets_opened")),
        Value::Count(resolved),
        share("first_response_sla_breaches", first_responses),
        share("resolution_sla_breaches", resolutions),
        share("one_touch_tickets", resolved),
        Value::Count(count("first_response_sla_breaches")),
        Value::Count(count("resolution_sla_breaches")),
        Value::Count(count("one_touch_tickets")),
        full_resolution_p50,
        full_resolution_p90,
        whole(sum("full_resolution_seconds_sum"), full_resolutions),
        Value::Count(full_resolutions),
        Value::Count(count("ticket_reopens")),
        share("reopened_tickets", resolved),
        Value::Count(count("reopened_tickets")),
        share("first_contact_resolutions", resolved),
        Value::Count(count("first_contact_resolutions")),
    ];
    if business_hours {
        for (name, responses) in [
            ("first_response_business_seconds", first_responses),
            ("resolution_business_seconds", resolutions),
        ] {
            let [p50, p90] = if responses != 0 {
                quantiles(name)
            } else {
                [Value::Absent; 2]
            };
            metrics.extend([p50, p90, whole(sum(&format!("{name}_sum")), responses)]);
        }
    }
    metrics
}

/// One (window, segment) series: its labels (`LABELS`), windowed metrics and the segment's
/// backlog.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub labels: [String; 4],
    pub metrics: Vec<Value>,
    pub tickets_open: i64,
}

impl Row {
    /// The cx-metrics record key: window=1h,team=all,channel=all,priority=all.
    pub fn key(&self) -> String {
        let mut key = String::new();
        for (name, value) in LABELS.iter().zip(&self.labels) {
            let comma = if key.is_empty() { "" } else { "," };
            let _ = write!(key, "{comma}{name}={value}");
        }
        key
    }

    /// Its cx-metrics value (schemas/metrics-snapshot.schema.json) without the closing
    /// `,"as_of":...}`: what is compared to tell whether it changed since last sent.
    pub fn snapshot_body(&self) -> String {
        let mut body = String::with_capacity(2048);
        body.push('{');
        for (name, value) in LABELS.iter().zip(&self.labels) {
            push_name(&mut body, name);
            body.push_str(&serde_json::to_string(value).unwrap_or_default());
        }
        for (name, value) in METRICS.iter().zip(&self.metrics) {
            push_name(&mut body, name);
            match value {
                Value::Count(count) => body.push_str(itoa::Buffer::new().format(*count)),
                Value::Real(real) if real.is_finite() => {
                    body.push_str(zmij::Buffer::new().format_finite(*real));
                }
                _ => body.push_str("null"),
            }
        }
        push_name(&mut body, "tickets_open");
        body.push_str(itoa::Buffer::new().format(self.tickets_open));
        body
    }
}

/// `"name":` after the object's opening or a comma.
fn push_name(body: &mut String, name: &str) {
    if body.len() > 1 {
        body.push(',');
    }
    body.push('"');
    body.push_str(name);
    body.push_str("\":");
}

/// The metric families of the page, in order: each metric's (its quantiles share one), then
/// cx_tickets_open.
pub static FAMILIES: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut families: Vec<String> = Vec::new();
    for metric in METRICS {
        let family = family_of(metric).0;
        if !families.contains(&family) {
            families.push(family);
        }
    }
    families.push(TICKETS_OPEN.to_owned());
    families
});

const TICKETS_OPEN: &str = "cx_tickets_open";

/// Per metric of `METRICS`: the index of its family in `FAMILIES` and the quantile label it
/// adds.
static SAMPLE_OF: LazyLock<Vec<(usize, Option<&'static str>)>> = LazyLock::new(|| {
    METRICS
        .iter()
        .map(|metric| {
            let (family, quantile) = family_of(metric);
            let index = FAMILIES.iter().position(|known| *known == family);
            (index.unwrap_or_default(), quantile)
        })
        .collect()
});

fn family_of(metric: &str) -> (String, Option<&'static str>) {
    for (suffix, quantile) in QUANTILE_LABELS {
        if let Some(stem) = metric.strip_suffix(suffix) {
            return (format!("cx_{stem}"), Some(quantile));
        }
    }
    (format!("cx_{metric}"), None)
}

/// The gauge samples of one segment's rows (one per window), by family (`FAMILIES`), each
/// line ending in a newline; cx_tickets_open once. Absent values are left out. (Written piece
/// by piece: a page of 5,000 series is 200,000 samples.)
pub fn series_samples(rows: &[Row]) -> Vec<String> {
    let mut families = vec![String::new(); FAMILIES.len()];
    let Some(first) = rows.first() else {
        return families;
    };
    let mut segment = String::new();
    for (name, value) in LABELS.iter().zip(&first.labels).skip(1) {
        let comma = if segment.is_empty() { "" } else { "," };
        let _ = write!(segment, "{comma}{name}=\"{}\"", escape(value));
    }
    for row in rows {
        let labels = format!("window=\"{}\",{segment}", escape(&row.labels[0]));
        for (value, (family, quantile)) in row.metrics.iter().zip(SAMPLE_OF.iter()) {
            if *value == Value::Absent {
                continue;
            }
            let lines = &mut families[*family];
            lines.push_str(&FAMILIES[*family]);
            lines.push('{');
            lines.push_str(&labels);
            if let Some(quantile) = quantile {
                lines.push_str(",quantile=\"");
                lines.push_str(quantile);
                lines.push('"');
            }
            lines.push_str("} ");
            push_sample_value(lines, *value);
            lines.push('\n');
        }
    }
    let backlog = &mut families[FAMILIES.len() - 1];
    let _ = write!(backlog, "{TICKETS_OPEN}{{{segment}}} ");
    push_sample_value(backlog, Value::Count(first.tickets_open));
    backlog.push('\n');
    families
}

/// A sample's value as the text format writes it: a float, with Go's spellings of the
/// infinities and NaN.
fn push_sample_value(lines: &mut String, value: Value) {
    match value {
        Value::Count(count) => {
            lines.push_str(itoa::Buffer::new().format(count));
            lines.push_str(".0");
        }
        Value::Real(real) if real.is_finite() => {
            lines.push_str(zmij::Buffer::new().format_finite(real));
        }
        Value::Real(real) if real.is_nan() => lines.push_str("NaN"),
        Value::Real(real) => lines.push_str(if real > 0.0 { "+Inf" } else { "-Inf" }),
        Value::Absent => {}
    }
}

/// The samples of every segment, each family's together under its HELP and TYPE lines.
pub fn render<'a>(parts: impl Iterator<Item = &'a [String]> + Clone) -> String {
    let mut page = String::new();
    for (index, family) in FAMILIES.iter().enumerate() {
        let samples = parts.clone().map(|part| part[index].as_str());
        if samples.clone().all(str::is_empty) {
            continue;
        }
        let _ = write!(
            page,
            "# HELP {family} {}\n# TYPE {family} gauge\n",
            escape_help(help(family))
        );
        for lines in samples {
            page.push_str(lines);
        }
    }
    page
}

fn escape(label_value: &str) -> String {
    label_value
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Each metric family's HELP line: what a person reads in Grafana's metric browser.
pub fn help(family: &str) -> &'static str {
    match family {
        "cx_nps" => {
            "Net Promoter Score (-100 to 100) of the window's NPS survey responses: promoters \
             minus detractors, as a percentage of all responses"
        }
        "cx_nps_margin_of_error" => "95% margin of error of the NPS, in NPS points either side",
        "cx_nps_responses" => {
            "NPS survey responses counted in the window (a ticket's latest answer)"
        }
        "cx_nps_promoters" => "NPS responses in the window that scored 9 or 10 (promoters)",
        "cx_nps_passives" => "NPS responses in the window that scored 7 or 8 (passives)",
        "cx_nps_detractors" => "NPS responses in the window that scored 0 to 6 (detractors)",
        "cx_csat_ratio" => "Share (0-1) of the window's CSAT responses that scored 4 or 5",
        "cx_csat_ratio_lower" => "Lower end of the 95% Wilson interval of the CSAT ratio",
        "cx_csat_ratio_upper" => "Upper end of the 95% Wilson interval of the CSAT ratio",
        "cx_csat_responses" => {
            "CSAT survey responses counted in the window (a ticket's latest answer)"
        }
        "cx_csat_satisfied" => "CSAT responses in the window that scored 4 or 5 (satisfied)",
        "cx_csat_score_avg" => "Mean CSAT score (1-5) of the window's responses",
        "cx_ces_score_avg" => "Mean Customer Effort Score (1-7) of the window's responses",
        "cx_ces_low_effort_ratio" => "Share (0-1) of the window's CES responses that scored 5 to 7",
        "cx_ces_responses" => "Customer Effort Score survey responses counted in the window",
        "cx_first_response_seconds" => {
            "First response time in seconds (opened to the first public agent reply), \
             quantiles over the first replies made in the window"
        }
        "cx_first_response_seconds_avg" => {
            "Mean first response time in seconds of the first replies made in the window"
        }
        "cx_first_response_count" => {
            "Tickets whose first public agent reply was made in the window"
        }
        "cx_resolution_seconds" => {
            "Time to resolution in seconds (opened to the first resolution), quantiles over \
             the tickets first resolved in the window"
        }
        "cx_resolution_seconds_avg" => {
            "Mean time to resolution in seconds of the tickets first resolved in the window"
        }
        "cx_resolution_count" => {
            "Tickets first resolved in the window whose opening is known (the ones a time to \
             resolution is measured for)"
        }
        "cx_tickets_opened" => "Tickets opened in the window",
        "cx_tickets_resolved" => "Tickets resolved for the first time in the window",
        "cx_first_response_sla_breach_ratio" => {
            "Share (0-1) of the window's first responses slower than the SLA target of their \
             ticket's priority"
        }
        "cx_resolution_sla_breach_ratio" => {
            "Share (0-1) of the window's first resolutions slower than the SLA target of their \
             ticket's priority"
        }
        "cx_one_touch_ratio" => {
            "Share (0-1) of the tickets first resolved in the window that had at most one \
             public agent reply before it"
        }
        "cx_first_response_sla_breaches" => {
            "First responses in the window slower than the SLA target of their ticket's priority"
        }
        "cx_resolution_sla_breaches" => {
            "First resolutions in the window slower than the SLA target of their ticket's \
             priority"
        }
        "cx_one_touch_tickets" => {
            "Tickets first resolved in the window with at most one public agent reply before it"
        }
        "cx_full_resolution_seconds" => {
            "Full resolution time in seconds (opened to the latest resolution, of tickets \
             resolved now), quantiles over latest resolutions in the window"
        }
        "cx_full_resolution_seconds_avg" => {
            "Mean full resolution time in seconds of the tickets resolved now whose latest \
             resolution was in the window"
        }
        "cx_full_resolution_count" => {
            "Tickets resolved now whose latest resolution was in the window"
        }
        "cx_ticket_reopens" => "Reopens of resolved tickets in the window",
        "cx_reopened_ratio" => {
            "Share (0-1) of the tickets first resolved in the window that were reopened since"
        }
        "cx_reopened_tickets" => "Tickets first resolved in the window and reopened since",
        "cx_first_contact_resolution_ratio" => {
            "Share (0-1) of the tickets first resolved in the window that were one-touch and \
             never reopened"
        }
        "cx_first_contact_resolutions" => {
            "Tickets first resolved in the window that were one-touch and never reopened \
             (first contact resolutions)"
        }
        "cx_first_response_business_seconds" => {
            "First response time in business seconds (inside the team's opening hours), \
             quantiles over the first replies made in the window"
        }
        "cx_first_response_business_seconds_avg" => {
            "Mean first response time in business seconds of the first replies made in the \
             window"
        }
        "cx_resolution_business_seconds" => {
            "Time to resolution in business seconds (inside the team's opening hours), \
             quantiles over the tickets first resolved in the window"
        }
        "cx_resolution_business_seconds_avg" => {
            "Mean time to resolution in business seconds of the tickets first resolved in the \
             window"
        }
        TICKETS_OPEN => {
            "Tickets open now, the backlog: opened and not resolved, or reopened after their \
             last resolution"
        }
        _ => "",
    }
}

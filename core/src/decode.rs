//! Decode and validate one input record into a typed event, or say why it is invalid.
//!
//! The JSON Schemas in `schemas/` are the published truth of what is valid (docs/contract.md
//! section 2 and 7.1); this module follows them field by field, and `tests/test_decode.py`
//! holds the two to the same verdicts on hostile and random records. Reasons name the field
//! and quote at most `QUOTE_CHARS` characters of the value: they travel in a Kafka header.

use serde::Deserialize;
use serde_json::{Map, Value};

/// An event more than this after its record's Kafka timestamp is invalid (contract section 2).
pub const FUTURE_TOLERANCE_SECONDS: f64 = 5.0 * 60.0;

/// Amounts are kept in integer millionths of the currency unit (contract 7.1).
pub const MILLIONTHS: i64 = 1_000_000;

/// Nesting deeper than this is refused before parsing, as orjson refused it: a record nested
/// 100,000 levels deep must not exhaust the stack.
pub const MAX_DEPTH: usize = 1024;

const MAX_STRING_CHARS: usize = 128;
const MAX_MRR: f64 = 1e9;
const QUOTE_CHARS: usize = 40;

const PRIORITIES: [&str; 4] = ["low", "normal", "high", "urgent"];
const AUTHORS: [&str; 3] = ["agent", "customer", "bot"];
const SURVEYS: [&str; 3] = ["nps", "csat", "ces"];
const STATUSES: [&str; 4] = ["active", "trialing", "paused", "canceled"];

/// The six input topics, named without any CX_TOPIC_PREFIX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    TicketOpened,
    TicketReplied,
    TicketResolved,
    TicketReopened,
    SurveyAnswered,
    SubscriptionUpdated,
}

impl Topic {
    pub const ALL: [Topic; 6] = [
        Topic::TicketOpened,
        Topic::TicketReplied,
        Topic::TicketResolved,
        Topic::TicketReopened,
        Topic::SurveyAnswered,
        Topic::SubscriptionUpdated,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Topic::TicketOpened => "ticket-opened",
            Topic::TicketReplied => "ticket-replied",
            Topic::TicketResolved => "ticket-resolved",
            Topic::TicketReopened => "ticket-reopened",
            Topic::SurveyAnswered => "survey-answered",
            Topic::SubscriptionUpdated => "subscription-updated",
        }
    }

    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|topic| topic.name() == name)
    }

    /// The fields its schema requires.
    fn required(self) -> &'static [&'static str] {
        match self {
            Topic::TicketOpened | Topic::TicketResolved | Topic::TicketReopened => {
                &["event_id", "ticket_id", "occurred_at"]
            }
            Topic::TicketReplied => &["event_id", "ticket_id", "occurred_at", "author"],
            Topic::SurveyAnswered => &["event_id", "occurred_at", "survey", "score"],
            Topic::SubscriptionUpdated => &[
                "event_id",
                "account_id",
                "subscription_id",
                "occurred_at",
                "status",
                "mrr",
            ],
        }
    }
}

/// The dimensions a ticket or survey response is reported under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub team: String,
    pub channel: String,
    pub priority: &'static str,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub event_id: String,
    /// POSIX seconds, as Python's datetime reads the timestamp (whole microseconds).
    pub occurred_at: f64,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    TicketOpened {
        ticket_id: String,
        segment: Segment,
        account_id: Option<String>,
    },
    TicketReplied {
        ticket_id: String,
        author: &'static str,
        public: bool,
    },
    TicketResolved {
        ticket_id: String,
    },
    TicketReopened {
        ticket_id: String,
    },
    SurveyAnswered {
        ticket_id: Option<String>,
        survey: &'static str,
        score: i64,
        segment: Segment,
        account_id: Option<String>,
    },
    SubscriptionUpdated {
        account_id: String,
        subscription_id: String,
        /// What the subscription adds to its account's MRR from occurred_at on, in
        /// millionths: its mrr while active, else 0.
        contribution: i64,
    },
}

/// Why a record cannot be processed: a reason a person can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid(pub String);

/// Decode a record value of an input topic.
///
/// `record_time` is the record's Kafka timestamp: an event more than five minutes after it is
/// invalid, a verdict that a replay of the same record reaches again. A subscription event in
/// another currency than `currency` (CX_CURRENCY) is invalid: amounts are never converted.
pub fn decode(
    topic: Topic,
    value: Option<&[u8]>,
    record_time: f64,
    currency: &str,
) -> Result<Event, Invalid> {
    let value = value.ok_or_else(|| Invalid("record has no value".into()))?;
    let fields = match parse(value)? {
        Value::Object(fields) => fields,
        other => {
            return Err(Invalid(format!(
                "value is JSON {}, not an object",
                python_type(&other)
            )));
        }
    };
    let fields = Fields(&fields);
    for name in topic.required() {
        if !fields.0.contains_key(*name) {
            return Err(violation("", format!("\"{name}\" is a required property")));
        }
    }
    let event_id = fields.required_string("event_id")?;
    let stated_time = fields.timestamp_text()?;
    let occurred_at = match parse_timestamp(stated_time) {
        Ok(moment) => moment,
        Err(TimestampError::Format) => {
            return Err(violation(
                "occurred_at",
                format!("{} is not a \"date-time\"", quoted_str(stated_time)),
            ));
        }
        Err(TimestampError::YearZero) => {
            return Err(Invalid(format!(
                "occurred_at {} is before the year 1",
                quoted_str(stated_time)
            )));
        }
    };
    let body = body(topic, &fields, currency)?;
    if occurred_at > record_time + FUTURE_TOLERANCE_SECONDS {
        let ahead = occurred_at - record_time;
        return Err(Invalid(format!(
            "occurred_at {stated_time} is {ahead:.0}s after the record's timestamp"
        )));
    }
    Ok(Event {
        event_id: event_id.to_owned(),
        occurred_at,
        body,
    })
}

fn body(topic: Topic, fields: &Fields, currency: &str) -> Result<Body, Invalid> {
    Ok(match topic {
        Topic::TicketOpened => Body::TicketOpened {
            ticket_id: fields.required_string("ticket_id")?.to_owned(),
            segment: fields.segment()?,
            account_id: fields.string("account_id")?.map(str::to_owned),
        },
        Topic::TicketReplied => Body::TicketReplied {
            ticket_id: fields.required_string("ticket_id")?.to_owned(),
            author: fields.one_of("author", &AUTHORS)?.unwrap_or("agent"),
            public: fields.boolean("public")?.unwrap_or(true),
        },
        Topic::TicketResolved => Body::TicketResolved {
            ticket_id: fields.required_string("ticket_id")?.to_owned(),
        },
        Topic::TicketReopened => Body::TicketReopened {
            ticket_id: fields.required_string("ticket_id")?.to_owned(),
        },
        Topic::SurveyAnswered => {
            let score = fields.integer("score")?;
            let survey = fields.one_of("survey", &SURVEYS)?.unwrap_or("nps");
            let (least, most) = match survey {
                "nps" => (0, 10),
                "csat" => (1, 5),
                _ => (1, 7),
            };
            let score = match score {
                Some(score) if score < least as f64 => {
                    let message = format!("{score} is less than the minimum of {least}");
                    return Err(violation("score", message));
                }
                Some(score) if score > most as f64 => {
                    let message = format!("{score} is greater than the maximum of {most}");
                    return Err(violation("score", message));
                }
                // within a survey's range: a small whole number
                Some(score) => score as i64,
                None => 0,
            };
            Body::SurveyAnswered {
                ticket_id: fields.string("ticket_id")?.map(str::to_owned),
                survey,
                score,
                segment: fields.segment()?,
                account_id: fields.string("account_id")?.map(str::to_owned),
            }
        }
        Topic::SubscriptionUpdated => {
            let account_id = fields.required_string("account_id")?.to_owned();
            let subscription_id = fields.required_string("subscription_id")?.to_owned();
            fields.string("plan")?;
            let status = fields.one_of("status", &STATUSES)?;
            let mrr = fields.mrr()?;
            let stated = fields.currency()?.unwrap_or(currency);
            if stated != currency {
                return Err(Invalid(format!(
                    "currency {stated} is not CX_CURRENCY ({currency})"
                )));
            }
            Body::SubscriptionUpdated {
                account_id,
                subscription_id,
                contribution: if status == Some("active") { mrr } else { 0 },
            }
        }
    })
}

/// The record's JSON, refused when it is nested deeper than `MAX_DEPTH`.
fn parse(value: &[u8]) -> Result<Value, Invalid> {
    if nesting_depth(value) > MAX_DEPTH {
        return Err(Invalid(format!(
            "value is not JSON: nested more than {MAX_DEPTH} levels deep"
        )));
    }
    let mut reader = serde_json::Deserializer::from_slice(value);
    reader.disable_recursion_limit();
    let parsed = Value::deserialize(&mut reader).and_then(|parsed| {
        reader.end()?;
        Ok(parsed)
    });
    parsed.map_err(|error| Invalid(format!("value is not JSON: {error}")))
}

/// How deep arrays and objects nest in a JSON text (brackets inside strings do not count).
fn nesting_depth(text: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in text {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// What Python calls the type of a decoded JSON value: the reasons have always said so.
fn python_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(number) if number.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

fn violation(field: &str, message: String) -> Invalid {
    Invalid(format!("schema violation at /{field}: {message}"))
}

/// A value as a reason quotes it: strings cut to `QUOTE_CHARS` characters, containers elided.
fn quoted(value: &Value) -> String {
    match value {
        Value::String(text) => quoted_str(text),
        Value::Array(_) => "[...]".into(),
        Value::Object(_) => "{...}".into(),
        other => other.to_string(),
    }
}

fn quoted_str(text: &str) -> String {
    let mut cut: String = text.chars().take(QUOTE_CHARS).collect();
    if cut.len() < text.len() {
        cut.push_str("...");
    }
    Value::String(cut).to_string()
}

/// A record's fields, read as its topic's schema types them.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    /// A string of 1 to 128 characters, when present.
    fn string(&self, name: &str) -> Result<Option<&'a str>, Invalid> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => {
                let length = text.chars().count();
                if length == 0 {
                    Err(violation(name, "\"\" is shorter than 1 character".into()))
                } else if length > MAX_STRING_CHARS {
                    let message = format!(
                        "{} is longer than {MAX_STRING_CHARS} characters",
                        quoted_str(text)
                    );
                    Err(violation(name, message))
                } else {
                    Ok(Some(text))
                }
            }
            Some(other) => Err(not_of_type(name, other, "string")),
        }
    }

    /// A string field the schema requires (its presence was checked first).
    fn required_string(&self, name: &str) -> Result<&'a str, Invalid> {
        self.string(name)?
            .ok_or_else(|| violation("", format!("\"{name}\" is a required property")))
    }

    /// occurred_at's text, of any length (its format decides).
    fn timestamp_text(&self) -> Result<&'a str, Invalid> {
        match self.0.get("occurred_at") {
            Some(Value::String(text)) => Ok(text),
            Some(other) => Err(not_of_type("occurred_at", other, "string")),
            None => Err(violation(
                "",
                "\"occurred_at\" is a required property".into(),
            )),
        }
    }

    /// One of the enum's values, when present.
    fn one_of(
        &self,
        name: &str,
        options: &[&'static str],
    ) -> Result<Option<&'static str>, Invalid> {
        let Some(value) = self.0.get(name) else {
            return Ok(None);
        };
        let chosen = value
            .as_str()
            .and_then(|text| options.iter().find(|option| **option == text));
        match chosen {
            Some(option) => Ok(Some(option)),
            None => Err(violation(
                name,
                format!("{} is not one of {options:?}", quoted(value)),
            )),
        }
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, Invalid> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(other) => Err(not_of_type(name, other, "boolean")),
        }
    }

    /// A JSON Schema integer (a number without a fraction, 4.0 included), when present.
    fn integer(&self, name: &str) -> Result<Option<f64>, Invalid> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Number(number)) => match number.as_f64() {
                Some(whole) if whole.fract() == 0.0 => Ok(Some(whole)),
                _ => Err(not_of_type(name, &Value::Number(number.clone()), "integer")),
            },
            Some(other) => Err(not_of_type(name, other, "integer")),
        }
    }

    fn segment(&self) -> Result<Segment, Invalid> {
        Ok(Segment {
            team: self.string("team")?.unwrap_or("unassigned").to_owned(),
            channel: self.string("channel")?.unwrap_or("unknown").to_owned(),
            priority: self.one_of("priority", &PRIORITIES)?.unwrap_or("normal"),
        })
    }

    /// The subscription's mrr in millionths (0 <= mrr < 1e9 currency units).
    fn mrr(&self) -> Result<i64, Invalid> {
        let Some(value) = self.0.get("mrr") else {
            return Ok(0);
        };
        let Value::Number(number) = value else {
            return Err(not_of_type("mrr", value, "number"));
        };
        let amount = number.as_f64().unwrap_or(f64::INFINITY);
        if amount < 0.0 {
            return Err(violation(
                "mrr",
                format!("{number} is less than the minimum of 0"),
            ));
        }
        if amount >= MAX_MRR {
            let message = format!("{number} is greater than or equal to the maximum of 1000000000");
            return Err(violation("mrr", message));
        }
        Ok(match number.as_i64() {
            Some(whole) => whole * MILLIONTHS,
            None => to_millionths(amount),
        })
    }

    /// ISO 4217 (three capital letters), when present.
    fn currency(&self) -> Result<Option<&'a str>, Invalid> {
        match self.0.get("currency") {
            None => Ok(None),
            Some(Value::String(code))
                if code.len() == 3 && code.bytes().all(|byte| byte.is_ascii_uppercase()) =>
            {
                Ok(Some(code))
            }
            Some(Value::String(code)) => Err(violation(
                "currency",
                format!("{} does not match \"^[A-Z]{{3}}$\"", quoted_str(code)),
            )),
            Some(other) => Err(not_of_type("currency", other, "string")),
        }
    }
}

fn not_of_type(field: &str, value: &Value, kind: &str) -> Invalid {
    violation(
        field,
        format!("{} is not of type \"{kind}\"", quoted(value)),
    )
}

/// A non-negative amount in currency units, in integer millionths rounded half to even. The
/// float is taken as the shortest decimal that reads back as it (its JSON text, for any number
/// written with up to 15 significant digits), not as its binary value.
pub fn to_millionths(amount: f64) -> i64 {
    // Rust writes a float as its shortest round-trip decimal, without an exponent; the absolute
    // value, since -0.0 passes the minimum of 0
    let text = amount.abs().to_string();
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let digits = |part: &str| {
        part.chars()
            .filter_map(|digit| digit.to_digit(10))
            .fold(0i64, |n, digit| n * 10 + i64::from(digit))
    };
    let kept = &fraction[..fraction.len().min(6)];
    let mut millionths =
        digits(whole) * MILLIONTHS + digits(kept) * 10i64.pow(6 - kept.len() as u32);
    let rest = &fraction[kept.len()..];
    let first = rest.bytes().next().unwrap_or(b'0');
    let beyond_half = rest.bytes().skip(1).any(|digit| digit != b'0');
    if first > b'5' || (first == b'5' && (beyond_half || millionths % 2 == 1)) {
        millionths += 1;
    }
    millionths
}

#[derive(Debug, PartialEq, Eq)]
pub enum TimestampError {
    /// Not an RFC 3339 date-time with an offset.
    Format,
    /// Year 0000: valid RFC 3339, before anything Python's datetime (and so cx-stream) reads.
    YearZero,
}

/// RFC 3339 with an offset -> POSIX seconds. The offset is required: event time is absolute.
///
/// As the schemas' "date-time" format: a lowercase t and z are allowed, and a leap second
/// (:60) where the time is 23:59 in UTC, read as the last second of its minute plus one, as
/// POSIX time counts it. Fractions are cut to whole microseconds.
pub fn parse_timestamp(text: &str) -> Result<f64, TimestampError> {
    let bytes = text.as_bytes();
    let number = |start: usize, length: usize| -> Result<i64, TimestampError> {
        let part = bytes
            .get(start..start + length)
            .ok_or(TimestampError::Format)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(TimestampError::Format);
        }
        Ok(part
            .iter()
            .fold(0, |n, digit| n * 10 + i64::from(digit - b'0')))
    };
    let expect = |at: usize, allowed: &[u8]| match bytes.get(at) {
        Some(byte) if allowed.contains(byte) => Ok(()),
        _ => Err(TimestampError::Format),
    };
    let year = number(0, 4)?;
    expect(4, b"-")?;
    let month = number(5, 2)?;
    expect(7, b"-")?;
    let day = number(8, 2)?;
    expect(10, b"Tt")?;
    let hour = number(11, 2)?;
    expect(13, b":")?;
    let minute = number(14, 2)?;
    expect(16, b":")?;
    let second = number(17, 2)?;
    let mut at = 19;
    let mut microseconds = 0;
    if bytes.get(at) == Some(&b'.') {
        let digits = bytes[at + 1..]
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        if digits == 0 {
            return Err(TimestampError::Format);
        }
        let kept = digits.min(6);
        microseconds = number(at + 1, kept)? * 10i64.pow(6 - kept as u32);
        at += 1 + digits;
    }
    let offset_minutes = match bytes.get(at) {
        Some(b'Z' | b'z') if at + 1 == bytes.len() => 0,
        Some(sign @ (b'+' | b'-')) if at + 6 == bytes.len() => {
            expect(at + 3, b":")?;
            let (hours, minutes) = (number(at + 1, 2)?, number(at + 4, 2)?);
            if hours > 23 || minutes > 59 {
                return Err(TimestampError::Format);
            }
            (if *sign == b'+' { 1 } else { -1 }) * (hours * 60 + minutes)
        }
        _ => return Err(TimestampError::Format),
    };
    if hour > 23 || minute > 59 || second > 60 {
        return Err(TimestampError::Format);
    }
    let utc_minute = (hour * 60 + minute - offset_minutes).rem_euclid(24 * 60);
    if second == 60 && utc_minute != 23 * 60 + 59 {
        return Err(TimestampError::Format);
    }
    let (Ok(month), Ok(day)) = (i8::try_from(month), i8::try_from(day)) else {
        return Err(TimestampError::Format);
    };
    let year = i16::try_from(year).map_err(|_| TimestampError::Format)?;
    let date = jiff::civil::Date::new(year, month, day).map_err(|_| TimestampError::Format)?;
    if year == 0 {
        return Err(TimestampError::YearZero);
    }
    let days = date.duration_since(jiff::civil::date(1970, 1, 1)).as_secs() / 86_400;
    let seconds = days * 86_400 + hour * 3600 + (minute - offset_minutes) * 60 + second;
    Ok(posix_seconds(seconds * 1_000_000 + microseconds))
}

/// Whole microseconds as seconds, rounded once where they fit a float's 53 bits (every time
/// from the year 1685 to 2255), as Python's datetime computes them.
fn posix_seconds(microseconds: i64) -> f64 {
    const EXACT: i64 = 1 << 53;
    if microseconds.abs() < EXACT {
        microseconds as f64 / 1e6
    } else {
        let (whole, part) = (
            microseconds.div_euclid(1_000_000),
            microseconds.rem_euclid(1_000_000),
        );
        whole as f64 + part as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1.8e9;

    fn invalid(topic: Topic, value: &str) -> String {
        match decode(topic, Some(value.as_bytes()), NOW, "USD") {
            Err(Invalid(reason)) => reason,
            Ok(event) => panic!("{value} decoded as {event:?}"),
        }
    }

    #[test]
    fn timestamps_are_read_as_python_reads_them() {
        assert_eq!(
            parse_timestamp("2026-01-01T10:00:00+01:00"),
            Ok(1767258000.0)
        );
        assert_eq!(
            parse_timestamp("2026-01-01T09:00:00.250Z"),
            Ok(1767258000.25)
        );
        assert_eq!(
            parse_timestamp("2026-11-22t08:00:00z"),
            parse_timestamp("2026-11-22T08:00:00Z")
        );
        assert_eq!(
            parse_timestamp("2016-12-31T23:59:60.5+00:00"),
            Ok(1483228800.5)
        );
        assert_eq!(
            parse_timestamp("2016-12-31T22:59:60-01:00"),
            Ok(1483228800.0)
        );
        assert_eq!(
            parse_timestamp("2026-01-01T10:00:00.1234567Z"),
            Ok(1767261600.123456)
        );
        assert_eq!(parse_timestamp("1000-01-01T00:00:00Z"), Ok(-30610224000.0));
        assert_eq!(
            parse_timestamp("0000-01-01T00:00:00Z"),
            Err(TimestampError::YearZero)
        );
        for wrong in [
            "2016-12-31T10:00:60Z",
            "2026-02-29T10:00:00Z",
            "2026-01-01T10:00:00",
            "2026-01-01 10:00:00Z",
            "2026-01-01T10:00Z",
            "2026-01-01T10:00:00.Z",
            "2026-01-01T10:00:00+0530",
            "2026-01-01T10:00:00+24:00",
            "2026-01-01T10:00:00,5Z",
            "2026-1-01T10:00:00Z",
            "yesterday",
            "",
        ] {
            assert_eq!(
                parse_timestamp(wrong),
                Err(TimestampError::Format),
                "{wrong}"
            );
        }
    }

    #[test]
    fn amounts_round_half_to_even_on_their_decimal_text() {
        assert_eq!(to_millionths(19.99), 19_990_000);
        assert_eq!(to_millionths(0.0000005), 0);
        assert_eq!(to_millionths(0.0000015), 2);
        assert_eq!(to_millionths(0.00000150001), 2);
        assert_eq!(to_millionths(0.0000025), 2);
        assert_eq!(to_millionths(999999999.9999995), 999_999_999_999_999 + 1);
        assert_eq!(to_millionths(1e-7), 0);
        assert_eq!(to_millionths(-0.0), 0);
    }

    #[test]
    fn reasons_name_the_field() {
        let base = r#""event_id": "e", "occurred_at": "2026-01-01T10:00:00Z""#;
        assert!(invalid(Topic::TicketOpened, &format!("{{{base}}}")).contains("ticket_id"));
        let p0 = format!(r#"{{{base}, "ticket_id": "t", "priority": "p0"}}"#);
        assert!(invalid(Topic::TicketOpened, &p0).contains("/priority"));
        let nps = format!(r#"{{{base}, "survey": "nps", "score": 11}}"#);
        assert!(invalid(Topic::SurveyAnswered, &nps).contains("/score"));
        let fraction = format!(r#"{{{base}, "survey": "ces", "score": 4.5}}"#);
        assert!(invalid(Topic::SurveyAnswered, &fraction).contains("integer"));
        assert!(invalid(Topic::TicketOpened, "[1, 2]").contains("list, not an object"));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(invalid(Topic::TicketOpened, &deep).contains("nested more than"));
    }

    #[test]
    fn a_long_value_is_quoted_short() {
        let long = format!(
            r#"{{"event_id": "{}", "ticket_id": "t", "occurred_at": "2026-01-01T10:00:00Z"}}"#,
            "é".repeat(50_000)
        );
        assert!(invalid(Topic::TicketOpened, &long).len() < 200);
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let value = br#"{"event_id": "s", "occurred_at": "2026-01-01T09:00:00Z", "survey": "csat", "score": 4.0}"#;
        let event = decode(Topic::SurveyAnswered, Some(value), NOW, "USD");
        let Ok(Event {
            body:
                Body::SurveyAnswered {
                    score,
                    segment,
                    ticket_id,
                    ..
                },
            ..
        }) = event
        else {
            panic!("{event:?}");
        };
        assert_eq!((score, ticket_id), (4, None));
        assert_eq!(
            segment,
            Segment {
                team: "unassigned".into(),
                channel: "unknown".into(),
                priority: "normal"
            }
        );
    }
}

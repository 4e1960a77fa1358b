//! The cx-partials messages between the stages: each input partition's window totals per
//! series, as JSON. A message carries changed series of one dimension and one input partition:
//! {"partials": [partial, ...]}, at most about MESSAGE_BYTES of them (a large organisation's
//! teams would not fit in the 1 MB Kafka takes). The last message of a full republish also
//! says {"complete": {"dimension": d, "source_partition": p, "values": [...]}}: `values` are
//! every series of d that p has. (A message written before `values` existed named them all in
//! its own partials.) A partial is {"dimension", "value", "source_partition",
//! "removed", "tickets_open", "windows": {window: tally}} (the last two unless removed), a
//! tally {"counts": {name: amount}, "sketches": {name: [zeros, [[key, count], ...]]}}.

use std::collections::BTreeMap;

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::tally::{Bin, COUNT_NAMES, SKETCH_NAMES, Tally, ZERO_KEY, count_index, sketch_index};
use crate::windows::{self, DIMENSIONS, PartitionWindows, SeriesKey};

/// A tally in its JSON form, written: without zero counts and empty sketches.
struct TallyJson<'a>(&'a Tally);

impl Serialize for TallyJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let tally = self.0;
        let mut map = serializer.serialize_map(Some(2))?;
        let counts: BTreeMap<&str, f64> = COUNT_NAMES
            .iter()
            .zip(tally.counts)
            .filter(|(_, amount)| *amount != 0.0)
            .map(|(name, amount)| (*name, amount))
            .collect();
        map.serialize_entry("counts", &counts)?;
        let mut sketches = BTreeMap::new();
        for (index, name) in SKETCH_NAMES.iter().enumerate() {
            let bins = tally.sketch(index as u8);
            if bins.is_empty() {
                continue;
            }
            let zeros = bins
                .first()
                .filter(|bin| bin.key == ZERO_KEY)
                .map_or(0, |bin| bin.count);
            let pairs: Vec<(i32, i64)> = bins
                .iter()
                .filter(|bin| bin.key != ZERO_KEY)
                .map(|bin| (bin.key, bin.count))
                .collect();
            sketches.insert(*name, (zeros, pairs));
        }
        map.serialize_entry("sketches", &sketches)?;
        map.end()
    }
}

/// A series' windows, by window name, in the windows' order.
struct WindowsJson<'a>(&'a [(String, Tally)]);

impl Serialize for WindowsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, tally) in self.0 {
            map.serialize_entry(name, &TallyJson(tally))?;
        }
        map.end()
    }
}

/// One series' totals over one input partition; `totals` None: no state refers to it any
/// more (removed).
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    pub dimension: String,
    pub value: String,
    pub source_partition: i64,
    pub totals: Option<Totals>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub tickets_open: i64,
    pub windows: Vec<(String, Tally)>,
}

#[derive(Serialize)]
struct PartialOut<'a> {
    dimension: &'a str,
    value: &'a str,
    source_partition: i64,
    removed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    tickets_open: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    windows: Option<WindowsJson<'a>>,
}

impl<'a> PartialOut<'a> {
    fn of(partial: &'a Partial) -> Self {
        PartialOut {
            dimension: &partial.dimension,
            value: &partial.value,
            source_partition: partial.source_partition,
            removed: partial.totals.is_none(),
            tickets_open: partial.totals.as_ref().map(|totals| totals.tickets_open),
            windows: partial.totals.as_ref().map(|t| WindowsJson(&t.windows)),
        }
    }
}

#[derive(Serialize)]
struct CompleteOut<'a> {
    dimension: &'a str,
    source_partition: i64,
    values: Vec<&'a str>,
}

/// The partial of one series over the windows of one input partition (one per state table).
pub fn series_partial(
    parts: &mut [&mut PartitionWindows],
    key: &SeriesKey,
    source_partition: i64,
) -> Partial {
    let totals = windows::series_totals(parts, key).map(|(tickets_open, totals)| Totals {
        tickets_open,
        windows: parts
            .first()
            .map(|part| {
                part.specs
                    .iter()
                    .map(|spec| spec.name.clone())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .zip(totals)
            .collect(),
    });
    Partial {
        dimension: DIMENSIONS[usize::from(key.0)].to_owned(),
        value: key.1.to_string(),
        source_partition,
        totals,
    }
}

/// The size a message's partials are kept under, unless a single partial is larger.
pub const MESSAGE_BYTES: usize = 256 * 1024;

/// The cx-partials messages of `partials` (all of one dimension and source partition); with
/// `complete`, a full republish's (at least one message, the last one marked).
pub fn messages(partials: &[Partial], complete: Option<(&str, i64)>) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut current = Vec::new();
    for partial in partials {
        let written = serde_json::to_vec(&PartialOut::of(partial)).unwrap_or_default();
        if !current.is_empty() && current.len() + written.len() > MESSAGE_BYTES {
            messages.push(close(current, None));
            current = Vec::new();
        }
        current.push(if current.is_empty() { b'[' } else { b',' });
        current.extend(written);
    }
    let complete = complete.map(|(dimension, source_partition)| CompleteOut {
        dimension,
        source_partition,
        values: partials
            .iter()
            .filter(|partial| partial.totals.is_some())
            .map(|partial| partial.value.as_str())
            .collect(),
    });
    if !current.is_empty() || complete.is_some() {
        messages.push(close(current, complete));
    }
    messages
}

/// {"partials": <the partials' list, opened>], "complete": ...}
fn close(mut list: Vec<u8>, complete: Option<CompleteOut<'_>>) -> Vec<u8> {
    if list.is_empty() {
        list.push(b'[');
    }
    let mut message = br#"{"partials":"#.to_vec();
    message.append(&mut list);
    message.push(b']');
    if let Some(complete) = complete {
        message.extend(br#","complete":"#);
        message.extend(serde_json::to_vec(&complete).unwrap_or_default());
    }
    message.push(b'}');
    message
}

/// A partial as the merging stage's table keeps it: its JSON as it came (`raw`, an object),
/// with the cx-partials partition it came on.
pub fn stored(raw: &[u8], via: i64) -> Vec<u8> {
    let mut value = raw.strip_suffix(b"}").unwrap_or(raw).to_vec();
    value.extend(br#","via":"#);
    value.extend(itoa::Buffer::new().format(via).as_bytes());
    value.push(b'}');
    value
}

#[derive(Deserialize)]
struct TallyIn {
    #[serde(default)]
    counts: BTreeMap<String, f64>,
    #[serde(default)]
    sketches: BTreeMap<String, (i64, Vec<(i32, i64)>)>,
}

#[derive(Deserialize)]
struct PartialIn {
    dimension: String,
    value: String,
    source_partition: i64,
    removed: bool,
    #[serde(default)]
    tickets_open: i64,
    #[serde(default)]
    windows: BTreeMap<String, TallyIn>,
    #[serde(default)]
    via: Option<i64>,
}

#[derive(Deserialize)]
struct CompleteIn {
    dimension: String,
    source_partition: i64,
    #[serde(default)]
    values: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct MessageIn<'a> {
    #[serde(borrow)]
    partials: Vec<&'a RawValue>,
    complete: Option<CompleteIn>,
}

/// Why a message or stored partial could not be read.
#[derive(Debug, PartialEq)]
pub struct Unreadable(pub String);

impl From<serde_json::Error> for Unreadable {
    fn from(error: serde_json::Error) -> Self {
        Unreadable(error.to_string())
    }
}

fn tally_of(json: TallyIn) -> Result<Tally, Unreadable> {
    let mut tally = Tally::default();
    for (name, amount) in json.counts {
        let index = count_index(&name).ok_or_else(|| Unreadable(format!("count {name}")))?;
        tally.add_count(index, amount);
    }
    let mut bins = Vec::new();
    for (name, (zeros, pairs)) in json.sketches {
        let index = sketch_index(&name).ok_or_else(|| Unreadable(format!("sketch {name}")))?;
        let sketch = index as u8;
        bins.push(Bin {
            sketch,
            key: ZERO_KEY,
            count: zeros,
        });
        bins.extend(
            pairs
                .into_iter()
                .map(|(key, count)| Bin { sketch, key, count }),
        );
    }
    tally.set_bins(bins);
    Ok(tally)
}

fn partial_of(json: PartialIn) -> Result<(Partial, Option<i64>), Unreadable> {
    let totals = if json.removed {
        None
    } else {
        let mut windows = Vec::with_capacity(json.windows.len());
        for (name, tally) in json.windows {
            windows.push((name, tally_of(tally)?));
        }
        Some(Totals {
            tickets_open: json.tickets_open,
            windows,
        })
    };
    let partial = Partial {
        dimension: json.dimension,
        value: json.value,
        source_partition: json.source_partition,
        totals,
    };
    Ok((partial, json.via))
}

/// A full republish's word: `values` are every series of `dimension` that `source_partition`
/// has.
#[derive(Debug, PartialEq)]
pub struct Complete {
    pub dimension: String,
    pub source_partition: i64,
    pub values: Vec<String>,
}

/// What a cx-partials message carries: its partials, and in a full republish what it names
/// completely. A message of a single partial (as written before they were grouped, and so
/// still in the topic after an upgrade) is read too.
/// Each partial comes with its JSON as it was sent.
pub type Carried<'a> = (Vec<(Partial, &'a [u8])>, Option<Complete>);

pub fn read_message(bytes: &[u8]) -> Result<Carried<'_>, Unreadable> {
    let json = match serde_json::from_slice::<MessageIn>(bytes) {
        Ok(json) => json,
        Err(_) => MessageIn {
            partials: vec![serde_json::from_slice::<&RawValue>(bytes)?],
            complete: None,
        },
    };
    let mut partials = Vec::with_capacity(json.partials.len());
    for raw in json.partials {
        let partial = partial_of(serde_json::from_str::<PartialIn>(raw.get())?)?.0;
        partials.push((partial, raw.get().as_bytes()));
    }
    let complete = json.complete.map(|complete| Complete {
        values: complete.values.unwrap_or_else(|| {
            let named = partials
                .iter()
                .filter(|(partial, _)| partial.totals.is_some());
            named.map(|(partial, _)| partial.value.clone()).collect()
        }),
        dimension: complete.dimension,
        source_partition: complete.source_partition,
    });
    Ok((partials, complete))
}

/// A partial stored by the merging stage, and the cx-partials partition it came on.
pub fn read_stored(bytes: &[u8]) -> Result<(Partial, i64), Unreadable> {
    let (partial, via) = partial_of(serde_json::from_slice::<PartialIn>(bytes)?)?;
    let via = via.ok_or_else(|| Unreadable("no via".into()))?;
    Ok((partial, via))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(removed: bool) -> Partial {
        let mut tally = Tally::default();
        tally.add_count(0, 3.0);
        tally.set_bins(vec![
            Bin {
                sketch: 0,
                key: ZERO_KEY,
                count: 2,
            },
            Bin {
                sketch: 0,
                key: 7,
                count: 1,
            },
        ]);
        Partial {
            dimension: "team".into(),
            value: "bé \"q\"".into(),
            source_partition: 3,
            totals: (!removed).then(|| Totals {
                tickets_open: 4,
                windows: vec![("1h".into(), tally)],
            }),
        }
    }

    #[test]
    fn messages_read_back_as_written_each_under_the_size_the_last_one_complete() {
        let mut written = vec![partial(true)];
        for number in 0..3000 {
            written.push(Partial {
                value: format!("team-{number}"),
                ..partial(false)
            });
        }
        let messages = messages(&written, Some(("team", 3)));
        assert!(messages.len() > 1);
        let mut read = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            assert!(message.len() <= MESSAGE_BYTES + 2048);
            let (partials, complete) = read_message(message).expect("readable");
            read.extend(partials.into_iter().map(|(partial, _)| partial));
            assert_eq!(complete.is_some(), index == messages.len() - 1);
            if let Some(complete) = complete {
                assert_eq!(complete.values.len(), 3000);
                assert_eq!(complete.values[0], "team-0");
            }
        }
        assert_eq!(read, written);
        let empty = self::messages(&[], Some(("all", 1)));
        let (nothing, complete) = read_message(&empty[0]).expect("readable");
        assert!(nothing.is_empty() && complete.is_some_and(|c| c.values.is_empty()));
        assert!(self::messages(&[], None).is_empty());
    }

    #[test]
    fn a_complete_message_without_values_names_its_own_partials() {
        let old = br#"{"partials":[{"dimension":"team","value":"a","source_partition":3,
            "removed":false,"tickets_open":1,"windows":{}}],
            "complete":{"dimension":"team","source_partition":3}}"#;
        let (_, complete) = read_message(old).expect("readable");
        assert_eq!(complete.map(|c| c.values), Some(vec!["a".to_owned()]));
    }

    #[test]
    fn a_stored_partial_keeps_its_partition_and_a_single_partial_is_a_message() {
        let message = &messages(&[partial(false)], None)[0];
        let (read, _) = read_message(message).expect("readable");
        let bytes = stored(read[0].1, 2);
        assert_eq!(read_stored(&bytes), Ok((partial(false), 2)));
        let (read, complete) = read_message(&bytes).expect("readable");
        assert_eq!(read[0].0, partial(false));
        assert_eq!((read.len(), complete), (1, None));
    }

    #[test]
    fn unknown_names_and_broken_json_are_unreadable() {
        let unknown = br#"{"partials":[{"dimension":"all","value":"all","source_partition":0,
            "removed":false,"tickets_open":0,"windows":{"1h":{"counts":{"nope":1}}}}]}"#;
        assert!(read_message(unknown).is_err());
        assert!(read_message(b"{").is_err());
        assert!(read_stored(&messages(&[partial(false)], None)[0]).is_err());
    }
}

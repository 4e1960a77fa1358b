//! Stage 2: the latest partial of every (series, source partition), kept by the worker that
//! owns the series' cx-partials partition, summed over source partitions, exported on
//! /metrics and as cx-metrics snapshots.
//!
//! Values over the segment cap fold into "other". A series is merged and rendered again only
//! when one of its partials changed: under traffic a scrape finds a few series changed, and
//! rendering all of them each time cost more than the rest of the page.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::export::{self, Row};
use crate::partials::{self, Partial, Totals, Unreadable};
use crate::tally::Tally;

/// Segment labels with a meaning of their own: the whole, and the values folded over the cap.
const ALL: &str = "all";
const OTHER: &str = "other";

/// (dimension, value, source partition): one partial's place.
type EntryKey = (String, String, i64);
/// (dimension, label): one exported segment.
type SegmentKey = (String, String);

struct Entry {
    via: i64,
    totals: Totals,
    /// The version at which it last changed: a segment is merged again only when one of its
    /// entries' stamps moved.
    stamp: u64,
}

/// One exported segment: the entries it was merged from (and their stamps), its rows, and
/// what was written of them, each written when first asked for.
struct Merged {
    /// Its entries' stamps, ordered (stamps are unique: one per change).
    stamps: Vec<u64>,
    via: i64,
    rows: Vec<Row>,
    samples: Option<Vec<String>>,
    snapshots: Option<Vec<(String, Arc<str>)>>,
}

struct View {
    version: u64,
    owned: Vec<i64>,
    segments: BTreeMap<SegmentKey, Merged>,
    page: Option<Arc<str>>,
}

/// A table write: each cx-partials partition's (store key, value, None to delete).
pub type Writes = BTreeMap<i64, FxHashMap<Vec<u8>, Option<Vec<u8>>>>;

pub struct Merge {
    cap: usize,
    windows: Vec<String>,
    business_hours: bool,
    entries: FxHashMap<EntryKey, Entry>,
    /// Bumped at every change: a view of the same version and partitions is current.
    version: u64,
    view: Option<View>,
    /// Each cx-metrics key sent: the cx-partials partition its segment came on, and the value
    /// sent (without its as_of).
    published: FxHashMap<String, (i64, Arc<str>)>,
}

/// The table key of an entry, as Faust's JSON key codec writes the str key the Python merge
/// stage used (a JSON array in a JSON string): tables written before stay readable.
pub fn store_key((dimension, value, source_partition): &EntryKey) -> Vec<u8> {
    let inner = serde_json::to_string(&(dimension, value, source_partition)).unwrap_or_default();
    serde_json::to_vec(&inner).unwrap_or_default()
}

impl Merge {
    pub fn new(cap: usize, windows: Vec<String>, business_hours: bool) -> Self {
        Merge {
            cap,
            windows,
            business_hours,
            entries: FxHashMap::default(),
            version: 0,
            view: None,
            published: FxHashMap::default(),
        }
    }

    /// Apply a run of cx-partials messages, each with the cx-partials partition it came on:
    /// only the newest partial of each (series, source partition) among them counts (a partial
    /// is a series' whole totals), so a merging stage that fell behind catches up by applying a
    /// fraction of what it was sent. Returns the table's writes, and the messages that could
    /// not be read (skipped).
    pub fn apply(&mut self, messages: &[(&[u8], i64)]) -> (Writes, Vec<(usize, Unreadable)>) {
        let mut carried = Vec::with_capacity(messages.len());
        let mut unreadable = Vec::new();
        for (index, (bytes, via)) in messages.iter().enumerate() {
            match partials::read_message(bytes) {
                Ok(read) => carried.push((read, *via)),
                Err(error) => unreadable.push((index, error)),
            }
        }
        let mut seen: FxHashSet<EntryKey> = FxHashSet::default();
        let mut newest: Vec<Vec<bool>> = vec![Vec::new(); carried.len()];
        for (((partials, _), _), newest) in carried.iter().zip(&mut newest).rev() {
            *newest = partials
                .iter()
                .map(|(p, _)| seen.insert(key_of(p)))
                .collect();
        }
        let mut writes = Writes::new();
        for (((partials, complete), via), newest) in carried.into_iter().zip(newest) {
            if let Some(complete) = complete {
                let named: FxHashSet<&str> = complete.values.iter().map(String::as_str).collect();
                let lacking: Vec<EntryKey> = self
                    .entries
                    .keys()
                    .filter(|(dimension, value, partition)| {
                        *dimension == complete.dimension
                            && *partition == complete.source_partition
                            && !named.contains(value.as_str())
                    })
                    .cloned()
                    .collect();
                for key in lacking {
                    self.remove(key, &mut writes);
                }
            }
            for (partial, newest) in partials.into_iter().zip(newest) {
                if newest {
                    self.put(partial, via, &mut writes);
                }
            }
        }
        (writes, unreadable)
    }

    fn put(&mut self, (partial, raw): (Partial, &[u8]), via: i64, writes: &mut Writes) {
        let key = key_of(&partial);
        let Some(totals) = partial.totals else {
            self.remove(key, writes);
            return;
        };
        let value = partials::stored(raw, via);
        writes
            .entry(via)
            .or_default()
            .insert(store_key(&key), Some(value));
        self.version += 1;
        let stamp = self.version;
        self.entries.insert(key, Entry { via, totals, stamp });
    }

    fn remove(&mut self, key: EntryKey, writes: &mut Writes) {
        if let Some(entry) = self.entries.remove(&key) {
            writes
                .entry(entry.via)
                .or_default()
                .insert(store_key(&key), None);
            self.version += 1;
        }
    }

    /// Replace every entry with the table's (after a recovery). Returns how many stored values
    /// could not be read (left out).
    pub fn load<'a>(&mut self, stored: impl Iterator<Item = &'a [u8]>) -> usize {
        self.entries.clear();
        self.view = None;
        self.version += 1;
        let mut unreadable = 0;
        for bytes in stored {
            match partials::read_stored(bytes) {
                Ok((partial, via)) => {
                    let key = key_of(&partial);
                    if let Some(totals) = partial.totals {
                        self.version += 1; // stamps stay unique
                        let stamp = self.version;
                        self.entries.insert(key, Entry { via, totals, stamp });
                    }
                }
                Err(_) => unreadable += 1,
            }
        }
        unreadable
    }

    /// The segments of the entries that came on the `owned` cx-partials partitions, merged:
    /// taken out, for the caller to put back.
    fn take_view(&mut self, owned: &[i64]) -> View {
        let mut owned = owned.to_vec();
        owned.sort_unstable();
        let earlier = match self.view.take() {
            Some(view) if view.version == self.version && view.owned == owned => return view,
            earlier => earlier.map(|view| view.segments).unwrap_or_default(),
        };
        let mut earlier = earlier;
        let segments = self
            .segments_of(&owned)
            .into_iter()
            .map(|(segment, entries)| {
                let mut stamps: Vec<u64> = entries.iter().map(|entry| entry.stamp).collect();
                stamps.sort_unstable();
                let merged = match earlier.remove(&segment) {
                    Some(cached) if cached.stamps == stamps => cached,
                    _ => self.merged(&segment, stamps, &entries),
                };
                (segment, merged)
            })
            .collect();
        View {
            version: self.version,
            owned,
            segments,
            page: None,
        }
    }

    /// The entries of each exported segment, after folding values over the cap. The first
    /// `cap` values of a dimension in sorted order keep their own label and the rest fold into
    /// "other": sorting (not arrival order) keeps the choice a function of the set of values.
    /// A value spelled "all" or "other" is folded, so that it is never taken for the whole or
    /// exported twice.
    fn segments_of(&self, owned: &[i64]) -> BTreeMap<SegmentKey, Vec<&Entry>> {
        let mine: Vec<(&EntryKey, &Entry)> = self
            .entries
            .iter()
            .filter(|(_, entry)| owned.binary_search(&entry.via).is_ok())
            .collect();
        let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for ((dimension, value, _), _) in &mine {
            if dimension != ALL && value != ALL && value != OTHER {
                values.entry(dimension).or_default().insert(value);
            }
        }
        let kept: FxHashSet<(&str, &str)> = values
            .iter()
            .flat_map(|(dimension, values)| {
                values
                    .iter()
                    .take(self.cap)
                    .map(|value| (*dimension, *value))
            })
            .collect();
        let mut segments: BTreeMap<SegmentKey, Vec<&Entry>> = BTreeMap::new();
        for ((dimension, value, _), entry) in mine {
            let label = if dimension == ALL {
                ALL
            } else if kept.contains(&(dimension.as_str(), value.as_str())) {
                value
            } else {
                OTHER
            };
            segments
                .entry((dimension.clone(), label.to_owned()))
                .or_default()
                .push(entry);
        }
        segments
    }

    fn merged(
        &self,
        (dimension, label): &SegmentKey,
        stamps: Vec<u64>,
        entries: &[&Entry],
    ) -> Merged {
        let mut tickets_open = 0;
        let mut totals: Vec<Tally> = vec![Tally::default(); self.windows.len()];
        let mut via = 0;
        for entry in entries {
            via = entry.via;
            tickets_open += entry.totals.tickets_open;
            for (name, tally) in &entry.totals.windows {
                if let Some(index) = self.windows.iter().position(|known| known == name) {
                    totals[index].merge(tally, 1);
                }
            }
        }
        let mut segment = [ALL.to_owned(), ALL.to_owned(), ALL.to_owned()];
        if let Some(index) = export::LABELS[1..]
            .iter()
            .position(|name| name == dimension)
        {
            segment[index] = label.clone();
        }
        let rows = self
            .windows
            .iter()
            .zip(&totals)
            .map(|(window, tally)| {
                let [team, channel, priority] = segment.clone();
                Row {
                    labels: [window.clone(), team, channel, priority],
                    metrics: export::window_metrics(tally, self.business_hours),
                    tickets_open,
                }
            })
            .collect();
        Merged {
            stamps,
            via,
            rows,
            samples: None,
            snapshots: None,
        }
    }

    /// The rows this worker exports: those of the segments whose cx-partials partition it owns.
    #[cfg(test)]
    pub fn rows(&mut self, owned: &[i64]) -> Vec<Row> {
        let view = self.take_view(owned);
        let rows = view
            .segments
            .values()
            .flat_map(|merged| merged.rows.iter().cloned());
        let rows = rows.collect();
        self.view = Some(view);
        rows
    }

    pub fn row_count(&mut self, owned: &[i64]) -> usize {
        let view = self.take_view(owned);
        let count = view.segments.values().map(|merged| merged.rows.len()).sum();
        self.view = Some(view);
        count
    }

    /// The rows on /metrics, rendered again only where they changed.
    pub fn exposition(&mut self, owned: &[i64]) -> Arc<str> {
        let mut view = self.take_view(owned);
        let page = view
            .page
            .get_or_insert_with(|| render(&mut view.segments))
            .clone();
        self.view = Some(view);
        page
    }

    /// cx-metrics: each exported row's value (with `as_of`) when it changed since last sent, and
    /// a tombstone (None) when a row this worker exported is gone (folded into "other", or its
    /// last state forgotten): a compacted topic would otherwise keep its last snapshot for
    /// good. A row whose segment moved to another worker is left to that worker.
    pub fn snapshots(&mut self, owned: &[i64], as_of: &str) -> Vec<(String, Option<Vec<u8>>)> {
        let mut view = self.take_view(owned);
        let mut current: FxHashMap<&str, (i64, &Arc<str>)> = FxHashMap::default();
        for merged in view.segments.values_mut() {
            if merged.snapshots.is_none() {
                let bodies = merged
                    .rows
                    .iter()
                    .map(|row| (row.key(), row.snapshot_body().into()));
                merged.snapshots = Some(bodies.collect());
            }
        }
        for merged in view.segments.values() {
            for (key, body) in merged.snapshots.iter().flatten() {
                current.insert(key, (merged.via, body));
            }
        }
        let mut sent = Vec::new();
        self.published.retain(|key, (via, _)| {
            let kept = current.contains_key(key.as_str());
            if !kept && owned.contains(via) {
                sent.push((key.clone(), None)); // gone, not moved to another worker
            }
            kept
        });
        let mut changed: Vec<(&str, i64, &Arc<str>)> = current
            .into_iter()
            .filter(|(key, (_, body))| {
                self.published
                    .get(*key)
                    .is_none_or(|(_, sent)| !Arc::ptr_eq(sent, body) && sent != *body)
            })
            .map(|(key, (via, body))| (key, via, body))
            .collect();
        changed.sort_unstable_by_key(|(key, _, _)| *key);
        for (key, via, body) in changed {
            let value = format!("{body},\"as_of\":\"{as_of}\"}}");
            self.published.insert(key.to_owned(), (via, body.clone()));
            sent.push((key.to_owned(), Some(value.into_bytes())));
        }
        self.view = Some(view);
        sent
    }

    /// How many cx-metrics keys this worker has sent and not taken back.
    pub fn published(&self) -> usize {
        self.published.len()
    }
}

/// Every segment's samples (written where they are not yet), on one page.
fn render(segments: &mut BTreeMap<SegmentKey, Merged>) -> Arc<str> {
    for merged in segments.values_mut() {
        if merged.samples.is_none() {
            merged.samples = Some(export::series_samples(&merged.rows));
        }
    }
    let parts = segments
        .values()
        .filter_map(|merged| merged.samples.as_deref());
    export::render(parts).into()
}

fn key_of(partial: &Partial) -> EntryKey {
    (
        partial.dimension.clone(),
        partial.value.clone(),
        partial.source_partition,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::Value;

    fn partial(dimension: &str, value: &str, source_partition: i64, opened: f64) -> Partial {
        let mut tally = Tally::default();
        tally.add_count(0, opened); // tickets_opened
        Partial {
            dimension: dimension.into(),
            value: value.into(),
            source_partition,
            totals: Some(Totals {
                tickets_open: 1,
                windows: vec![("1h".into(), tally)],
            }),
        }
    }

    fn merge_of(partials: &[Partial], via: i64) -> Merge {
        let mut merge = Merge::new(1, vec!["1h".into()], false);
        let message = &partials::messages(partials, None)[0];
        let (_, unreadable) = merge.apply(&[(message, via)]);
        assert!(unreadable.is_empty());
        merge
    }

    fn opened(rows: &[Row]) -> Vec<(String, Value)> {
        rows.iter()
            .map(|row| (row.key(), row.metrics[23]))
            .collect()
    }

    #[test]
    fn values_over_the_cap_and_reserved_spellings_fold_into_other() {
        let partials = [
            partial("team", "b", 0, 1.0),
            partial("team", "a", 1, 2.0),
            partial("team", "other", 0, 4.0),
            partial("team", "all", 1, 8.0),
            partial("team", "a", 0, 16.0),
        ];
        let mut merge = merge_of(&partials, 0);
        let key = |team: &str| format!("window=1h,team={team},channel=all,priority=all");
        assert_eq!(
            opened(&merge.rows(&[0])),
            vec![
                (key("a"), Value::Count(18)),
                (key("other"), Value::Count(13))
            ]
        );
        assert!(merge.rows(&[1]).is_empty()); // another worker's partition
    }

    #[test]
    fn snapshots_are_sent_when_changed_and_taken_back_when_gone_not_moved() {
        let mut merge = merge_of(
            &[partial("all", "all", 0, 1.0), partial("team", "a", 0, 1.0)],
            0,
        );
        let sent = merge.snapshots(&[0], "T");
        assert_eq!(sent.len(), 2);
        let value = sent[0].1.as_deref().unwrap_or_default();
        let json: serde_json::Value = serde_json::from_slice(value).unwrap_or_default();
        assert_eq!(json["tickets_opened"], 1);
        assert_eq!(json["as_of"], "T");
        assert!(merge.snapshots(&[0], "T2").is_empty()); // nothing changed
        let gone = Partial {
            totals: None,
            ..partial("team", "a", 0, 1.0)
        };
        let message = &partials::messages(&[gone], None)[0];
        merge.apply(&[(message, 0)]);
        let key = "window=1h,team=a,channel=all,priority=all".to_owned();
        assert_eq!(merge.snapshots(&[0], "T3"), vec![(key, None)]);
        // the whole's partition moved to another worker: left to it, no tombstone
        assert!(merge.snapshots(&[1], "T4").is_empty());
        assert_eq!(merge.published(), 0);
    }
}

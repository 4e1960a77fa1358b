//! Event-time rolling windows of one input partition: buckets of tallies, with retraction.
//!
//! A window W covers event times (now - W, now]. Each window keeps buckets W/120 wide, so the
//! error at its lower edge is at most W/120 (the contract allows W/60), plus a running total of
//! its buckets: adding an observation touches one bucket and the total, and moving the clock
//! forward subtracts the buckets that fell out. The upper edge is exact: an observation stamped
//! in the future (up to five minutes is valid) waits, unbucketed, until the clock reaches it.
//!
//! An observation counts in four series (the whole, its team, channel and priority) and, in
//! each, in a bucket and a running total per window. So observing only stages it, once per
//! window, under its full segment; `flush` then adds each staged tally to the series it counts
//! in. Observations of a batch that share a segment and a bucket are added up first.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::collections::hash_map::Entry;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::tally::{Tally, Unreadable, sketch_key};

pub const BUCKETS_PER_WINDOW: f64 = 120.0;

/// Calls of `advance` (the partials timer, every 0.25 s: so about 5 s) a bucket stays a tally
/// after it was last written, before it is packed. A replayed backlog writes the same buckets
/// batch after batch; packing them after one idle tick cost 12% of its time.
const PACK_AFTER_TICKS: u64 = 20;

/// The layout of a checkpoint and how observations are tallied: a release that changes either
/// raises it, and its first start derives the windows from the states again.
const CHECKPOINT_FORMAT: i64 = 2;
pub const META_KEY: &[u8] = b"m";
const BUCKET_TAG: u8 = b'b';
const TOTAL_TAG: u8 = b't';

/// The series dimensions, in the order of `Segment`'s fields after "all".
pub const DIMENSIONS: [&str; 4] = ["all", "team", "channel", "priority"];

/// (team, channel, priority).
pub type Segment = [Arc<str>; 3];

/// (dimension index into DIMENSIONS, value): the whole is (0, "all").
pub type SeriesKey = (u8, Arc<str>);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Opened,
    Backlog,
    FirstResponse,
    Resolved,
    Resolution,
    FullResolution,
    Reopen,
    Nps,
    Csat,
    Ces,
}

impl Kind {
    const ALL: [Kind; 10] = [
        Kind::Opened,
        Kind::Backlog,
        Kind::FirstResponse,
        Kind::Resolved,
        Kind::Resolution,
        Kind::FullResolution,
        Kind::Reopen,
        Kind::Nps,
        Kind::Csat,
        Kind::Ces,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Opened => "opened",
            Kind::Backlog => "backlog",
            Kind::FirstResponse => "first_response",
            Kind::Resolved => "resolved",
            Kind::Resolution => "resolution",
            Kind::FullResolution => "full_resolution",
            Kind::Reopen => "reopen",
            Kind::Nps => "nps",
            Kind::Csat => "csat",
            Kind::Ces => "ces",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Kinds whose state refers to its segment's series (a ticket, a response): a series
    /// goes when nothing refers to it and nothing in it is open.
    fn references(self) -> bool {
        matches!(self, Kind::Opened | Kind::Nps | Kind::Csat | Kind::Ces)
    }
}

/// One contribution of a ticket or survey slot to the metrics, at event time `at` (see
/// stream/tickets.py, which makes them).
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub kind: Kind,
    pub at: f64,
    pub segment: Segment,
    /// a duration in seconds or a survey score
    pub value: f64,
    /// the SLA breach (durations) or one-touch (resolved)
    pub flag: bool,
    /// the duration in business seconds (with a schedule)
    pub business: Option<f64>,
    /// whether a ticket first resolved at `at` was reopened since
    pub reopened: bool,
}

// Observations never hold NaN: equality is total.
impl Eq for Observation {}

impl Hash for Observation {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // + 0.0: -0.0 and 0.0 are equal, so they must hash alike
        self.kind.hash(state);
        (self.at + 0.0).to_bits().hash(state);
        self.segment.hash(state);
        (self.value + 0.0).to_bits().hash(state);
        self.flag.hash(state);
        self.business
            .map(|business| (business + 0.0).to_bits())
            .hash(state);
        self.reopened.hash(state);
    }
}

/// Positions in tally::COUNT_NAMES and tally::SKETCH_NAMES.
mod at {
    pub const TICKETS_OPENED: usize = 0;
    pub const FIRST_RESPONSE: usize = 1;
    pub const RESOLUTION: usize = 5;
    pub const FULL_RESOLUTION: usize = 9;
    pub const TICKETS_RESOLVED: usize = 11;
    pub const TICKET_REOPENS: usize = 15;
    pub const NPS_PROMOTERS: usize = 16;
    pub const CSAT: usize = 19;
    pub const CES: usize = 22;
    pub const FIRST_RESPONSE_SKETCH: u8 = 0;
    pub const RESOLUTION_SKETCH: u8 = 2;
    pub const FULL_RESOLUTION_SKETCH: u8 = 4;
}

pub fn nps_category(score: i64) -> &'static str {
    if score >= 9 {
        "promoter"
    } else if score >= 7 {
        "passive"
    } else {
        "detractor"
    }
}

pub fn is_csat_satisfied(score: i64) -> bool {
    score >= 4
}

pub fn is_ces_low_effort(score: i64) -> bool {
    score >= 5
}

/// Add (sign 1) or retract (sign -1) what one observation adds to every tally it counts in.
fn contribute(observation: &Observation, tally: &mut Tally, sign: i64) {
    let signed = sign as f64;
    let value = observation.value;
    let mut add = |index: usize, amount: f64| {
        if amount != 0.0 {
            tally.add_count(index, signed * amount);
        }
    };
    let whole = |yes: bool| f64::from(u8::from(yes));
    let mut sketches: [Option<(u8, f64)>; 2] = [None, None];
    match observation.kind {
        Kind::Opened => add(at::TICKETS_OPENED, 1.0),
        Kind::FirstResponse | Kind::Resolution => {
            let (first, sketch) = if observation.kind == Kind::FirstResponse {
                (at::FIRST_RESPONSE, at::FIRST_RESPONSE_SKETCH)
            } else {
                (at::RESOLUTION, at::RESOLUTION_SKETCH)
            };
            add(first, 1.0);
            add(first + 1, value);
            add(first + 2, whole(observation.flag));
            sketches[0] = Some((sketch, value));
            if let Some(business) = observation.business {
                add(first + 3, business);
                sketches[1] = Some((sketch + 1, business));
            }
        }
        Kind::FullResolution => {
            add(at::FULL_RESOLUTION, 1.0);
            add(at::FULL_RESOLUTION + 1, value);
            sketches[0] = Some((at::FULL_RESOLUTION_SKETCH, value));
        }
        Kind::Resolved => {
            add(at::TICKETS_RESOLVED, 1.0);
            add(at::TICKETS_RESOLVED + 1, whole(observation.flag));
            add(at::TICKETS_RESOLVED + 2, whole(observation.reopened));
            add(
                at::TICKETS_RESOLVED + 3,
                whole(observation.flag && !observation.reopened),
            );
        }
        Kind::Reopen => add(at::TICKET_REOPENS, 1.0),
        Kind::Nps => {
            let offset = match nps_category(value as i64) {
                "promoter" => 0,
                "passive" => 1,
                _ => 2,
            };
            add(at::NPS_PROMOTERS + offset, 1.0);
        }
        Kind::Csat | Kind::Ces => {
            let (first, good) = if observation.kind == Kind::Csat {
                (at::CSAT, is_csat_satisfied(value as i64))
            } else {
                (at::CES, is_ces_low_effort(value as i64))
            };
            add(first, 1.0);
            add(first + 1, value);
            add(first + 2, whole(good));
        }
        Kind::Backlog => {}
    }
    tally.observations += sign;
    for (sketch, seconds) in sketches.into_iter().flatten() {
        tally.add_bin(sketch, sketch_key(seconds), sign);
    }
}

/// A bucket's tally while batches write to it, packed once they have moved on. Most buckets
/// of a long window are written for a while and then only read when they expire.
#[derive(Clone, Debug)]
enum Bucket {
    Open(Box<Tally>),
    Packed(Box<[u8]>),
}

impl Bucket {
    fn into_tally(self) -> Result<Tally, Unreadable> {
        match self {
            Bucket::Open(tally) => Ok(*tally),
            Bucket::Packed(packed) => Tally::unpack(&packed),
        }
    }

    /// Its tally, unpacked in place if it was packed (an unreadable one counts as empty).
    fn opened(&mut self) -> &mut Tally {
        if let Bucket::Packed(packed) = self {
            *self = Bucket::Open(Box::new(Tally::unpack(packed).unwrap_or_default()));
        }
        match self {
            Bucket::Open(tally) => tally,
            Bucket::Packed(_) => unreachable!("unpacked above"),
        }
    }

    fn packed(&self) -> Box<[u8]> {
        match self {
            Bucket::Open(tally) => tally.pack().into(),
            Bucket::Packed(packed) => packed.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Window {
    buckets: HashMap<i64, Bucket>,
    pub total: Tally,
}

impl Window {
    /// How many buckets it holds.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }
}

/// One series' state: how many tickets and responses refer to it, its backlog, its windows.
#[derive(Clone, Debug)]
pub struct Series {
    pub windows: Vec<Window>,
    pub references: i64,
    pub tickets_open: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub name: String,
    pub seconds: f64,
}

impl Spec {
    fn bucket_seconds(&self) -> f64 {
        self.seconds / BUCKETS_PER_WINDOW
    }

    fn lowest_bucket(&self, now: f64) -> i64 {
        ((now - self.seconds) / self.bucket_seconds()).floor() as i64
    }
}

type BucketPlace = (SeriesKey, usize, i64);

/// All series of one input partition (of one state table), kept current as observations come
/// and go.
#[derive(Debug)]
pub struct PartitionWindows {
    pub specs: Vec<Spec>,
    pub now: f64,
    pub series: HashMap<SeriesKey, Series>,
    /// Series changed since the caller last took them.
    pub changed: HashSet<SeriesKey>,
    lowest: Vec<i64>,
    strings: HashSet<Arc<str>>,
    staged: HashMap<(Segment, usize, i64), Tally>,
    /// Per segment: [references, tickets_open] added since the last flush.
    staged_counts: HashMap<Segment, [i64; 2]>,
    /// Buckets held as tallies, with the tick (`advance`) they were last written in.
    open: HashMap<BucketPlace, u64>,
    /// Buckets changed (or gone) since the last checkpoint.
    dirty: HashSet<BucketPlace>,
    /// Stored entries of an earlier checkpoint that the next one deletes.
    superseded: HashSet<Vec<u8>>,
    /// Series removed since the last checkpoint: their totals are deleted with it.
    gone: HashSet<SeriesKey>,
    tick: u64,
    /// Observations stamped after `now`, with their multiplicity.
    pending: HashMap<Observation, i64>,
}

impl PartitionWindows {
    pub fn new(specs: Vec<Spec>, now: f64) -> PartitionWindows {
        let lowest = specs.iter().map(|spec| spec.lowest_bucket(now)).collect();
        PartitionWindows {
            specs,
            now,
            series: HashMap::default(),
            changed: HashSet::default(),
            lowest,
            strings: HashSet::default(),
            staged: HashMap::default(),
            staged_counts: HashMap::default(),
            open: HashMap::default(),
            dirty: HashSet::default(),
            superseded: HashSet::default(),
            gone: HashSet::default(),
            tick: 0,
            pending: HashMap::default(),
        }
    }

    /// One shared copy of each label value (a segment's strings are in every observation).
    pub fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(known) = self.strings.get(text) {
            return known.clone();
        }
        let shared: Arc<str> = Arc::from(text);
        self.strings.insert(shared.clone());
        shared
    }

    fn series_keys(&mut self, segment: &Segment) -> [SeriesKey; 4] {
        let all = self.intern("all");
        [
            (0, all),
            (1, segment[0].clone()),
            (2, segment[1].clone()),
            (3, segment[2].clone()),
        ]
    }

    /// Replace each state's observations `before` by its observations `after`, as multisets
    /// (two reopens may share a time): what is in both stays as it is. Then flush, adding to
    /// the running totals unless `totals` is false (a rebuild sums them once at the end).
    pub fn fold(&mut self, changes: &[(Vec<Observation>, Vec<Observation>)], totals: bool) {
        for (before, after) in changes {
            let mut retracted: Vec<&Observation> = before.iter().collect();
            for observation in after {
                match retracted.iter().position(|old| *old == observation) {
                    Some(same) => {
                        retracted.swap_remove(same);
                    }
                    None => self.observe(observation, 1),
                }
            }
            for observation in retracted {
                self.observe(observation, -1);
            }
        }
        self.flush(totals);
    }

    fn observe(&mut self, observation: &Observation, sign: i64) {
        let kind = observation.kind;
        if kind.references() || kind == Kind::Backlog {
            let counts = self
                .staged_counts
                .entry(observation.segment.clone())
                .or_default();
            counts[usize::from(kind == Kind::Backlog)] += sign;
            if kind == Kind::Backlog {
                return;
            }
        }
        if observation.at > self.now {
            let count = self.pending.entry(observation.clone()).or_default();
            *count += sign;
            if *count == 0 {
                self.pending.remove(observation);
            }
            return;
        }
        self.stage(observation, sign);
    }

    fn stage(&mut self, observation: &Observation, sign: i64) {
        for (position, spec) in self.specs.iter().enumerate() {
            let index = (observation.at / spec.bucket_seconds()).floor() as i64;
            if index < self.lowest[position] {
                continue; // older than the window: still in ticket state, in no window
            }
            let tally = self
                .staged
                .entry((observation.segment.clone(), position, index))
                .or_default();
            contribute(observation, tally, sign);
        }
    }

    fn series_entry(&mut self, key: &SeriesKey) -> &mut Series {
        let windows = self.specs.len();
        self.series.entry(key.clone()).or_insert_with(|| Series {
            windows: (0..windows)
                .map(|_| Window {
                    buckets: HashMap::default(),
                    total: Tally::default(),
                })
                .collect(),
            references: 0,
            tickets_open: 0,
        })
    }

    /// Add what is staged to the buckets (and, with `totals`, the running totals) of every
    /// series it counts in.
    pub fn flush(&mut self, totals: bool) {
        let staged_counts = std::mem::take(&mut self.staged_counts);
        let staged = std::mem::take(&mut self.staged);
        let mut touched: HashSet<SeriesKey> = HashSet::default();
        for (segment, [references, tickets_open]) in staged_counts {
            for key in self.series_keys(&segment) {
                let series = self.series_entry(&key);
                series.references += references;
                series.tickets_open += tickets_open;
                touched.insert(key);
            }
        }
        // in a fixed order: float sums then come out the same in every process (and for a
        // packed bucket as for one that was not), as they did in Python's ordered dicts
        let mut staged: Vec<_> = staged.into_iter().collect();
        staged.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for ((segment, position, index), tally) in staged {
            for key in self.series_keys(&segment) {
                let tick = self.tick;
                let window = &mut self.series_entry(&key).windows[position];
                // merged where it lies: no move of the tally out of its box and back
                let emptied = match window.buckets.entry(index) {
                    Entry::Vacant(_) if tally.observations < 0 => continue, // retracted after it expired
                    Entry::Vacant(_) if tally.observations == 0 => true,
                    Entry::Vacant(vacant) => {
                        vacant.insert(Bucket::Open(Box::new(tally.clone())));
                        false
                    }
                    Entry::Occupied(mut occupied) => {
                        // merged where it lies, not moved out of its box and back
                        let bucket = occupied.get_mut().opened();
                        bucket.merge(&tally, 1);
                        let emptied = bucket.observations == 0;
                        if emptied {
                            occupied.remove();
                        }
                        emptied
                    }
                };
                if totals {
                    window.total.merge(&tally, 1);
                }
                let place = (key.clone(), position, index);
                if emptied {
                    self.open.remove(&place);
                } else {
                    self.open.insert(place.clone(), tick);
                }
                self.dirty.insert(place);
                touched.insert(key);
            }
        }
        for key in &touched {
            let Some(series) = self.series.get(key) else {
                continue;
            };
            if series.references <= 0 && series.tickets_open <= 0 {
                for (position, window) in series.windows.iter().enumerate() {
                    self.dirty.extend(
                        window
                            .buckets
                            .keys()
                            .map(|index| (key.clone(), position, *index)),
                    );
                }
                self.series.remove(key);
                self.gone.insert(key.clone());
            }
        }
        self.changed.extend(touched);
    }

    /// Move the windows to wall-clock `now`: expire old buckets, count what came due, and pack
    /// the buckets nothing was written to lately.
    pub fn advance(&mut self, now: f64) {
        self.flush(true);
        self.pack(true);
        if now <= self.now {
            return;
        }
        self.now = now;
        for position in 0..self.specs.len() {
            let lowest = self.specs[position].lowest_bucket(now);
            if lowest != self.lowest[position] {
                self.lowest[position] = lowest;
                self.expire(position);
            }
        }
        self.stage_due();
        self.flush(true);
    }

    /// Drop the buckets of one window that are older than its lowest bucket.
    fn expire(&mut self, position: usize) {
        let lowest = self.lowest[position];
        for (key, series) in &mut self.series {
            let window = &mut series.windows[position];
            let mut old: Vec<i64> = window
                .buckets
                .keys()
                .copied()
                .filter(|index| *index < lowest)
                .collect();
            old.sort_unstable(); // (see flush)
            for index in old {
                if let Some(bucket) = window.buckets.remove(&index) {
                    window
                        .total
                        .merge(&bucket.into_tally().unwrap_or_default(), -1);
                }
                let place = (key.clone(), position, index);
                self.open.remove(&place);
                self.dirty.insert(place);
                self.changed.insert(key.clone());
            }
        }
    }

    fn stage_due(&mut self) {
        let now = self.now;
        let mut due: Vec<Observation> = self
            .pending
            .keys()
            .filter(|observation| observation.at <= now)
            .cloned()
            .collect();
        due.sort_unstable_by(|a, b| {
            // (see flush); equal observations are one key, so this order is total
            a.at.total_cmp(&b.at)
                .then_with(|| a.value.total_cmp(&b.value))
                .then_with(|| a.segment.cmp(&b.segment))
                .then_with(|| a.kind.name().cmp(b.kind.name()))
                .then_with(|| (a.flag, a.reopened).cmp(&(b.flag, b.reopened)))
                .then_with(|| {
                    a.business
                        .map(f64::to_bits)
                        .cmp(&b.business.map(f64::to_bits))
                })
        });
        for observation in due {
            if let Some(count) = self.pending.remove(&observation) {
                self.stage(&observation, count);
            }
        }
    }

    /// Set every window's running total to the sum of its buckets (after a rebuild).
    pub fn sum_buckets(&mut self) {
        for series in self.series.values_mut() {
            for window in &mut series.windows {
                let mut total = Tally::default();
                let mut bins = Vec::new();
                let mut indexes: Vec<&i64> = window.buckets.keys().collect();
                indexes.sort_unstable(); // (see flush)
                for index in indexes {
                    match &window.buckets[index] {
                        Bucket::Open(tally) => total.add_unsorted(tally, &mut bins),
                        Bucket::Packed(packed) => total
                            .add_unsorted(&Tally::unpack(packed).unwrap_or_default(), &mut bins),
                    }
                }
                total.set_bins(bins);
                window.total = total;
            }
        }
    }

    /// Pack the buckets nothing was written to in the last PACK_AFTER_TICKS calls (or all).
    pub fn pack(&mut self, idle_only: bool) {
        let tick = self.tick;
        let idle: Vec<BucketPlace> = self
            .open
            .iter()
            .filter(|(_, written)| !idle_only || **written + PACK_AFTER_TICKS <= tick)
            .map(|(place, _)| place.clone())
            .collect();
        for place in idle {
            self.open.remove(&place);
            let (key, position, index) = &place;
            let Some(series) = self.series.get_mut(key) else {
                continue;
            };
            if let Some(bucket) = series.windows[*position].buckets.get_mut(index)
                && let Bucket::Open(tally) = bucket
            {
                *bucket = Bucket::Packed(tally.pack().into());
            }
        }
        self.tick += 1;
    }

    /// The series now held.
    pub fn keys(&self) -> impl Iterator<Item = &SeriesKey> {
        self.series.keys()
    }

    /// What changed since the last checkpoint, as store entries (None: delete), with the meta
    /// entry saying what the windows were derived with and how many states they add up.
    ///
    /// Written in the same store write as the states they add up, a checkpoint lets a restart
    /// load the windows (`restore`) instead of deriving them from every state. The buckets go
    /// packed, and each window's running total with them, so that loading unpacks nothing but
    /// the totals.
    pub fn checkpoint_entries(
        &mut self,
        derived_with: &str,
        entries: i64,
    ) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.flush(true);
        let mut out: HashMap<Vec<u8>, Option<Vec<u8>>> = self
            .superseded
            .drain()
            .map(|stored| (stored, None))
            .collect();
        let mut totals: HashSet<(SeriesKey, usize)> = self
            .gone
            .drain()
            .flat_map(|key| (0..self.specs.len()).map(move |position| (key.clone(), position)))
            .collect();
        for (key, position, index) in self.dirty.drain() {
            let bucket = self
                .series
                .get(&key)
                .and_then(|series| series.windows[position].buckets.get(&index));
            out.insert(
                tagged(
                    BUCKET_TAG,
                    &json!([DIMENSIONS[usize::from(key.0)], &*key.1, position, index]),
                ),
                bucket.map(|bucket| bucket.packed().into_vec()),
            );
            totals.insert((key, position));
        }
        for (key, position) in totals {
            let total = self
                .series
                .get(&key)
                .map(|series| series.windows[position].total.pack());
            out.insert(
                tagged(
                    TOTAL_TAG,
                    &json!([DIMENSIONS[usize::from(key.0)], &*key.1, position]),
                ),
                total,
            );
        }
        let series: Vec<Value> = self
            .series
            .iter()
            .map(|((dimension, value), series)| {
                json!([
                    DIMENSIONS[usize::from(*dimension)],
                    &**value,
                    series.references,
                    series.tickets_open
                ])
            })
            .collect();
        let pending: Vec<Value> = self
            .pending
            .iter()
            .map(|(observation, count)| {
                let [team, channel, priority] = &observation.segment;
                json!([
                    observation.kind.name(),
                    observation.at,
                    [&**team, &**channel, &**priority],
                    observation.value,
                    observation.flag,
                    observation.business,
                    observation.reopened,
                    count
                ])
            })
            .collect();
        let meta = json!({
            "derived_with": derived_with,
            "entries": entries,
            "format": CHECKPOINT_FORMAT,
            "now": self.now,
            "series": series,
            "pending": pending,
        });
        out.insert(META_KEY.to_vec(), Some(meta.to_string().into_bytes()));
        out.into_iter().collect()
    }

    /// Have the next checkpoint replace the stored one (entries of `restore`) entirely.
    pub fn supersede(&mut self, stored: impl IntoIterator<Item = Vec<u8>>) {
        self.superseded.extend(stored);
    }

    /// The windows a checkpoint's entries hold, moved to `now`, and the number of states they
    /// add up. None when there is no checkpoint to trust: none at all, one of another format
    /// or derived with other settings, one made at a later time (the clock went back), or one
    /// that cannot be read.
    pub fn restore(
        specs: Vec<Spec>,
        now: f64,
        entries: &[(Vec<u8>, Vec<u8>)],
        derived_with: &str,
    ) -> Option<(PartitionWindows, i64)> {
        let meta: Value = entries
            .iter()
            .find(|(key, _)| key == META_KEY)
            .and_then(|(_, value)| serde_json::from_slice(value).ok())?;
        let trusted = meta["format"].as_i64() == Some(CHECKPOINT_FORMAT)
            && meta["derived_with"].as_str() == Some(derived_with)
            && meta["now"].as_f64().is_some_and(|then| then <= now);
        if !trusted {
            return None;
        }
        let mut windows = PartitionWindows::new(specs, now);
        windows.load(entries, &meta).ok()?;
        Some((windows, meta["entries"].as_i64()?))
    }

    fn load(&mut self, entries: &[(Vec<u8>, Vec<u8>)], meta: &Value) -> Result<(), Unreadable> {
        for held in meta["series"].as_array().ok_or(Unreadable)? {
            let (key, rest) = self.series_key_of(held)?;
            let [references, tickets_open] = rest else {
                return Err(Unreadable);
            };
            let series = self.series_entry(&key);
            series.references = references.as_i64().ok_or(Unreadable)?;
            series.tickets_open = tickets_open.as_i64().ok_or(Unreadable)?;
        }
        for (stored, value) in entries {
            let Some((&tag, json)) = stored.split_first() else {
                continue;
            };
            if tag != BUCKET_TAG && tag != TOTAL_TAG {
                continue;
            }
            let place: Value = serde_json::from_slice(json).map_err(|_| Unreadable)?;
            let (key, rest) = self.series_key_of(&place)?;
            let position = rest.first().and_then(Value::as_u64).ok_or(Unreadable)? as usize;
            let specs = self.specs.len();
            let Some(series) = self.series.get_mut(&key) else {
                // of a series gone before the checkpoint: delete it
                self.superseded.insert(stored.clone());
                continue;
            };
            let window = series
                .windows
                .get_mut(position)
                .filter(|_| position < specs);
            let window = window.ok_or(Unreadable)?;
            let tally = Tally::unpack(value)?;
            if tag == BUCKET_TAG {
                let index = rest.get(1).and_then(Value::as_i64).ok_or(Unreadable)?;
                window
                    .buckets
                    .insert(index, Bucket::Packed(value.clone().into()));
            } else {
                window.total = tally;
            }
        }
        for waiting in meta["pending"].as_array().ok_or(Unreadable)? {
            let observation = self.observation_of(waiting)?;
            let count = waiting.get(7).and_then(Value::as_i64).ok_or(Unreadable)?;
            self.pending.insert(observation, count);
        }
        for position in 0..self.specs.len() {
            self.expire(position);
        }
        self.stage_due();
        self.flush(true);
        self.changed = self.series.keys().cloned().collect();
        Ok(())
    }

    fn series_key_of<'v>(
        &mut self,
        held: &'v Value,
    ) -> Result<(SeriesKey, &'v [Value]), Unreadable> {
        let fields = held.as_array().ok_or(Unreadable)?;
        let (Some(dimension), Some(value)) = (fields.first(), fields.get(1)) else {
            return Err(Unreadable);
        };
        let dimension = DIMENSIONS
            .iter()
            .position(|known| Some(*known) == dimension.as_str())
            .ok_or(Unreadable)?;
        let value = self.intern(value.as_str().ok_or(Unreadable)?);
        Ok(((dimension as u8, value), &fields[2..]))
    }

    fn observation_of(&mut self, fields: &Value) -> Result<Observation, Unreadable> {
        let field = |index: usize| fields.get(index).ok_or(Unreadable);
        let text = |value: &Value| value.as_str().map(str::to_owned).ok_or(Unreadable);
        let segment = field(2)?.as_array().ok_or(Unreadable)?;
        let [team, channel, priority] = segment.as_slice() else {
            return Err(Unreadable);
        };
        let (team, channel, priority) = (text(team)?, text(channel)?, text(priority)?);
        let business = field(5)?;
        Ok(Observation {
            kind: Kind::from_name(field(0)?.as_str().ok_or(Unreadable)?).ok_or(Unreadable)?,
            at: field(1)?.as_f64().ok_or(Unreadable)?,
            segment: [
                self.intern(&team),
                self.intern(&channel),
                self.intern(&priority),
            ],
            value: field(3)?.as_f64().ok_or(Unreadable)?,
            flag: field(4)?.as_bool().ok_or(Unreadable)?,
            business: if business.is_null() {
                None
            } else {
                Some(business.as_f64().ok_or(Unreadable)?)
            },
            reopened: field(6)?.as_bool().ok_or(Unreadable)?,
        })
    }
}

fn tagged(tag: u8, key: &Value) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(key.to_string().as_bytes());
    out
}

/// The totals of a series held in parts (one per state table) as one tally per window, with
/// its backlog; None when no part holds it any more.
pub fn series_totals(
    parts: &mut [&mut PartitionWindows],
    key: &SeriesKey,
) -> Option<(i64, Vec<Tally>)> {
    let mut found: Option<(i64, Vec<Tally>)> = None;
    for part in parts.iter_mut() {
        part.flush(true);
        let Some(series) = part.series.get(key) else {
            continue;
        };
        match &mut found {
            None => {
                found = Some((
                    series.tickets_open,
                    series.windows.iter().map(|w| w.total.clone()).collect(),
                ))
            }
            Some((open, totals)) => {
                *open += series.tickets_open;
                for (total, window) in totals.iter_mut().zip(&series.windows) {
                    total.merge(&window.total, 1);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_700_000_000.0;

    fn windows() -> PartitionWindows {
        let spec = |name: &str, seconds: f64| Spec {
            name: name.into(),
            seconds,
        };
        PartitionWindows::new(vec![spec("1h", 3600.0), spec("24h", 86400.0)], NOW)
    }

    fn observation(windows: &mut PartitionWindows, kind: Kind, at: f64, value: f64) -> Observation {
        Observation {
            kind,
            at,
            segment: [
                windows.intern("billing"),
                windows.intern("email"),
                windows.intern("high"),
            ],
            value,
            flag: false,
            business: None,
            reopened: false,
        }
    }

    #[test]
    fn a_checkpoint_restores_the_same_totals_and_waiting_observations() {
        let mut original = windows();
        let opened = observation(&mut original, Kind::Opened, NOW - 600.0, 0.0);
        let reply = observation(&mut original, Kind::FirstResponse, NOW - 60.0, 540.0);
        let future = observation(&mut original, Kind::Csat, NOW + 100.0, 5.0);
        original.fold(&[(vec![], vec![opened, reply, future])], true);
        original.pack(false);
        let entries: Vec<(Vec<u8>, Vec<u8>)> = original
            .checkpoint_entries("rules", 1)
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| (key, value)))
            .collect();
        assert!(
            PartitionWindows::restore(original.specs.clone(), NOW, &entries, "other").is_none()
        );
        let (mut restored, states) =
            PartitionWindows::restore(original.specs.clone(), NOW + 200.0, &entries, "rules")
                .expect("a checkpoint");
        assert_eq!(states, 1);
        original.advance(NOW + 200.0);
        let key: SeriesKey = (1, restored.intern("billing"));
        for (mine, theirs) in [&mut original, &mut restored]
            .map(|windows| series_totals(&mut [windows], &key))
            .windows(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
        {
            assert_eq!(mine, theirs);
            let (_, totals) = mine.expect("the series");
            assert_eq!(totals[0].counts[at::CSAT], 1.0);
            assert_eq!(totals[0].counts[at::FIRST_RESPONSE + 1], 540.0);
        }
    }

    #[test]
    fn retracting_everything_removes_the_series() {
        let mut windows = windows();
        let opened = observation(&mut windows, Kind::Opened, NOW - 10.0, 0.0);
        windows.fold(&[(vec![], vec![opened.clone()])], true);
        assert_eq!(windows.series.len(), 4);
        windows.fold(&[(vec![opened], vec![])], true);
        assert!(windows.series.is_empty());
    }
}

//! Accounts, their subscriptions and their MRR timeline (docs/contract.md 7.1-7.3), and what an
//! account adds to its partition's totals at an evaluation instant (7.3-7.5).
//!
//! An account's state keeps every distinct subscription event it was sent (each the whole state
//! of one subscription from its `occurred_at` on), so that any order of arrival, and any
//! re-sent event, gives the same state. Amounts are integer millionths of the currency unit.
//! The batches apply events to the states in Python (stream/accounts.py) and store them as
//! `AccountState.to_json` writes them; this module reads them.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::account_health::{self, BANDS, DRIVERS, NO_EXPERIENCE, Snapshot, Weights, snapshot_at};
use crate::experience::AccountObservation;
use crate::tickets::Unreadable;

/// One subscription's state from `at` on: what it adds to its account's MRR (its mrr in
/// millionths while active, else 0). Stored as [at, event_id, subscription_id, contribution].
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(from = "StoredEvent")]
pub struct SubscriptionEvent {
    pub at: f64,
    pub event_id: String,
    pub subscription_id: String,
    pub contribution: i64,
}

type StoredEvent = (f64, String, String, i64);

impl From<StoredEvent> for SubscriptionEvent {
    fn from((at, event_id, subscription_id, contribution): StoredEvent) -> Self {
        SubscriptionEvent {
            at,
            event_id,
            subscription_id,
            contribution,
        }
    }
}

/// Instants compared as Python compares floats (0.0 == -0.0), in a total order that sorting
/// can rely on (JSON holds no NaN).
fn time_order(a: f64, b: f64) -> Ordering {
    (a + 0.0).total_cmp(&(b + 0.0))
}

/// What one ticket or survey slot last sent the account: the state's version and all its
/// observations. Stored as [version, [observation, ...]].
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(from = "(i64, Vec<AccountObservation>)")]
pub struct Source {
    pub version: i64,
    pub observations: Vec<AccountObservation>,
}

impl From<(i64, Vec<AccountObservation>)> for Source {
    fn from((version, observations): (i64, Vec<AccountObservation>)) -> Self {
        Source {
            version,
            observations,
        }
    }
}

/// The account's experience by source (ticket:<id> or survey:<slot>), in the order Python's
/// dict holds them: stored as a JSON object in that order, and read in it, since the order of
/// observations at one instant follows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sources(pub Vec<(String, Source)>);

impl<'de> Deserialize<'de> for Sources {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Sources;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("an object of sources")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Sources, A::Error> {
                let mut sources = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    sources.push(entry);
                }
                Ok(Sources(sources))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

/// No event yet is -inf, stored as null: JSON has no infinity.
mod latest_or_null {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NEG_INFINITY))
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct AccountState {
    pub partition: i64,
    /// Every distinct subscription event, in (at, event_id, ...) order.
    #[serde(rename = "subscription_events")]
    pub events: Vec<SubscriptionEvent>,
    /// Digests of every event id applied (a re-sent one is a duplicate), stored sorted.
    pub seen: BTreeSet<i64>,
    /// The latest occurred_at of the events (retention is judged by it); -inf before any.
    #[serde(deserialize_with = "latest_or_null::deserialize")]
    pub latest: f64,
    /// Its tickets' and survey responses' observations, by source.
    #[serde(default)]
    pub experience: Sources,
}

impl AccountState {
    /// A state as the accounts table stores it (JSON).
    pub fn read(stored: &[u8]) -> Result<AccountState, Unreadable> {
        serde_json::from_slice(stored)
            .map_err(|error| Unreadable(format!("a stored account: {error}")))
    }

    /// The latest instant of its observations (-inf without any).
    pub fn latest_observation(&self) -> f64 {
        self.experience
            .0
            .iter()
            .map(|(_, source)| latest_at(&source.observations))
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// Every observation of its experience in time order; at one instant, in the order of the
    /// sources and of each one's observations (a stable sort, as Python's).
    pub fn observations(&self) -> Vec<AccountObservation> {
        let mut all: Vec<AccountObservation> = self
            .experience
            .0
            .iter()
            .flat_map(|(_, source)| source.observations.iter().cloned())
            .collect();
        all.sort_by(|a, b| time_order(a.at(), b.at()));
        all
    }

    /// Whether the account may be forgotten (7.2): not paying at `now`, and no event nor any
    /// observation newer than `horizon`.
    pub fn is_forgettable(&self, horizon: f64, now: f64) -> bool {
        let latest = self.latest.max(self.latest_observation());
        // (an MRR beyond 64 bits, which Python's AccountBook refuses too, keeps it)
        latest < horizon && Timeline::of(&self.events).is_ok_and(|line| line.mrr_at(now) == 0)
    }
}

fn latest_at(observations: &[AccountObservation]) -> f64 {
    observations
        .iter()
        .map(AccountObservation::at)
        .fold(f64::NEG_INFINITY, f64::max)
}

/// An account's MRR timeline: the instants its MRR changed at, ascending, and its MRR from
/// each on. Before the first, its MRR is 0.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    pub times: Vec<f64>,
    pub amounts: Vec<i64>,
}

impl Timeline {
    /// The timeline of events in (at, event_id) order: at each instant each subscription's
    /// state is its event with the latest occurred_at up to then, ties to the greater event_id
    /// (the last of them in this order). Only changes are kept. Unreadable where the MRR
    /// leaves 64 bits (a damaged state, or thousands of subscriptions at decoding's bound of
    /// 1e15 millionths each), which Python's AccountBook, keeping it in an int64 array,
    /// refuses too.
    pub fn of(events: &[SubscriptionEvent]) -> Result<Timeline, Unreadable> {
        let mut contributions: Vec<(&str, i64)> = Vec::new();
        let mut total: i64 = 0;
        let mut line = Timeline::default();
        for (index, event) in events.iter().enumerate() {
            // an account has a few subscriptions: a list beats a map
            let position = contributions
                .iter()
                .position(|(subscription, _)| *subscription == event.subscription_id)
                .unwrap_or_else(|| {
                    contributions.push((&event.subscription_id, 0));
                    contributions.len() - 1
                });
            let held = &mut contributions[position].1;
            total = event
                .contribution
                .checked_sub(*held)
                .and_then(|change| total.checked_add(change))
                .ok_or_else(|| Unreadable("an account's MRR beyond 64 bits".to_owned()))?;
            *held = event.contribution;
            let last_at_instant = events.get(index + 1).is_none_or(|next| next.at != event.at);
            if last_at_instant && total != line.amounts.last().copied().unwrap_or(0) {
                line.times.push(event.at);
                line.amounts.push(total);
            }
        }
        Ok(line)
    }

    /// How many changes are at or before `moment` (Python's bisect_right).
    fn changes_until(&self, moment: f64) -> usize {
        self.times.partition_point(|at| *at <= moment)
    }

    /// The MRR just after `changes` changes.
    fn after(&self, changes: usize) -> i64 {
        changes
            .checked_sub(1)
            .and_then(|last| self.amounts.get(last))
            .copied()
            .unwrap_or(0)
    }

    /// The MRR at `moment` (the changes at `moment` included).
    pub fn mrr_at(&self, moment: f64) -> i64 {
        self.after(self.changes_until(moment))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Movement {
    New,
    Reactivation,
    Expansion,
    Contraction,
    Churn,
}

impl Movement {
    /// Where its amount is in a window's FIELDS.
    fn mrr_field(self) -> usize {
        5 + self as usize
    }

    /// Where its count is in a window's FIELDS, for the kinds that count accounts.
    fn accounts_field(self) -> Option<usize> {
        match self {
            Movement::New => Some(10),
            Movement::Reactivation => Some(11),
            Movement::Churn => Some(12),
            Movement::Expansion | Movement::Contraction => None,
        }
    }
}

/// The movement of an MRR change from `before` to `after` (7.2) and its amount.
pub fn movement(before: i64, after: i64, paid_before: bool) -> Option<(Movement, i128)> {
    let (before, after) = (i128::from(before), i128::from(after));
    if before == after {
        None
    } else if before == 0 {
        let kind = if paid_before {
            Movement::Reactivation
        } else {
            Movement::New
        };
        Some((kind, after))
    } else if after == 0 {
        Some((Movement::Churn, before))
    } else if after > before {
        Some((Movement::Expansion, after - before))
    } else {
        Some((Movement::Contraction, before - after))
    }
}

/// What an account adds to the totals of one account window, in this order: the cohort
/// (paying at s) and its MRR at s, the cohort's accounts paying at as_of, its MRR at as_of
/// (NRR's numerator) and its min(MRR at as_of, MRR at s) (GRR's), the movement amounts by kind
/// (Movement's order) and the accounts of new, reactivation and churn.
pub const FIELDS: [&str; 13] = [
    "cohort_accounts",
    "cohort_mrr",
    "retained_accounts",
    "retained_mrr",
    "grr_mrr",
    "new_mrr",
    "reactivation_mrr",
    "expansion_mrr",
    "contraction_mrr",
    "churn_mrr",
    "new_accounts",
    "reactivation_accounts",
    "churn_accounts",
];

/// Where a driver group's cohort count is in a window's driver totals (its churned count
/// follows): per driver, exposed then not exposed.
pub fn driver_slot(driver: usize, exposed: bool) -> usize {
    4 * driver + if exposed { 0 } else { 2 }
}

/// Where a band's count is in band totals (its churned count, or MRR, follows).
pub fn band_slot(band: account_health::Band) -> usize {
    2 * band.index()
}

// 128 bits: a partition's sums of 64-bit amounts (Python's are unbounded)
type WindowTotals = [i128; FIELDS.len()];
type DriverTotals = [i128; 4 * DRIVERS.len()];
type BandTotals = [i128; 2 * BANDS.len()];

/// Sums over accounts at one evaluation instant: at as_of the MRR, the paying accounts and per
/// health band their count and MRR (band_slot); per account window the FIELDS, and the cohort
/// with its churned accounts per driver group (driver_slot) and per band at s. Its JSON is
/// Python's `Totals.to_json` (the fields in that order).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Totals {
    pub bands: Vec<BandTotals>,
    pub drivers: Vec<DriverTotals>,
    pub health: BandTotals,
    pub mrr: i128,
    pub paying: i128,
    pub windows: Vec<WindowTotals>,
}

impl Totals {
    pub fn new(windows: usize) -> Totals {
        Totals {
            bands: vec![[0; 2 * BANDS.len()]; windows],
            drivers: vec![[0; 4 * DRIVERS.len()]; windows],
            health: [0; 2 * BANDS.len()],
            mrr: 0,
            paying: 0,
            windows: vec![[0; FIELDS.len()]; windows],
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // (integers in arrays and a struct: nothing serde_json can fail on)
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// How an account's support experience is judged: CX_EXPERIENCE_LOOKBACK (seconds) and
/// CX_HEALTH_WEIGHTS.
#[derive(Clone, Debug, PartialEq)]
pub struct ExperienceRules {
    pub lookback: f64,
    pub weights: Weights,
}

/// What an evaluation reads of an account: its MRR timeline, its observations in time order,
/// and whether it has had a subscription event (only such an account is in a cohort or has a
/// health record).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccountView {
    pub line: Timeline,
    pub observations: Vec<AccountObservation>,
    pub subscribed: bool,
}

impl AccountView {
    pub fn of(state: &AccountState) -> Result<AccountView, Unreadable> {
        Ok(AccountView {
            line: Timeline::of(&state.events)?,
            observations: state.observations(),
            subscribed: !state.events.is_empty(),
        })
    }

    fn experience(&self, moment: f64, rules: &ExperienceRules) -> Snapshot {
        if self.observations.is_empty() {
            return NO_EXPERIENCE;
        }
        snapshot_at(&self.observations, moment, rules.lookback, &rules.weights)
    }
}

/// Add what an account contributes at `as_of` to `totals`, for the account windows of
/// `windows` seconds (as many as the totals have); returns its experience at `as_of`.
pub fn evaluate(
    account: &AccountView,
    as_of: f64,
    windows: &[f64],
    rules: &ExperienceRules,
    totals: &mut Totals,
) -> Snapshot {
    let current = account.experience(as_of, rules);
    let line = &account.line;
    if line.times.is_empty() {
        return current;
    }
    let end = line.changes_until(as_of);
    let now = line.after(end);
    if now != 0 {
        totals.mrr += i128::from(now);
        totals.paying += 1;
        totals.health[band_slot(current.band)] += 1;
        totals.health[band_slot(current.band) + 1] += i128::from(now);
    }
    let per_window = windows
        .iter()
        .zip(&mut totals.windows)
        .zip(&mut totals.drivers)
        .zip(&mut totals.bands);
    for (((seconds, window), drivers), bands) in per_window {
        let start = line.changes_until(as_of - seconds);
        let then = line.after(start);
        if then != 0 {
            window[0] += 1;
            window[1] += i128::from(then);
            window[3] += i128::from(now);
            window[4] += i128::from(now.min(then));
            window[2] += i128::from(now != 0);
            // the cohort split by the experience at s: exposure judged before the churn
            let before = account.experience(as_of - seconds, rules);
            let churned = i128::from(now == 0);
            for (driver, exposed) in before.drivers.iter().enumerate() {
                let slot = driver_slot(driver, *exposed);
                drivers[slot] += 1;
                drivers[slot + 1] += churned;
            }
            bands[band_slot(before.band)] += 1;
            bands[band_slot(before.band) + 1] += churned;
        }
        let (earlier, changes) = line.amounts.split_at(start.min(end));
        let changes = changes.get(..end.saturating_sub(start)).unwrap_or_default();
        // (Python: any(amounts[:start]) at first, then `after > 0` for each change)
        let mut paid_before = earlier.iter().any(|amount| *amount != 0);
        let mut before = then;
        for after in changes.iter().copied() {
            if let Some((kind, amount)) = movement(before, after, paid_before) {
                window[kind.mrr_field()] += amount;
                if let Some(counted) = kind.accounts_field() {
                    window[counted] += 1;
                }
            }
            paid_before = paid_before || after > 0;
            before = after;
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account_health::Band;
    use crate::tickets::event_digest;

    const DAY: f64 = 86400.0;

    fn event(at: f64, event_id: &str, subscription: &str, amount: i64) -> SubscriptionEvent {
        SubscriptionEvent {
            at,
            event_id: event_id.to_owned(),
            subscription_id: subscription.to_owned(),
            contribution: amount,
        }
    }

    /// An account's state as the batches build it: its distinct events in (at, event_id)
    /// order.
    fn account(events: &[SubscriptionEvent]) -> AccountState {
        let mut distinct: Vec<SubscriptionEvent> = Vec::new();
        for event in events {
            if !distinct.iter().any(|held| held.event_id == event.event_id) {
                distinct.push(event.clone());
            }
        }
        distinct.sort_by(|a, b| time_order(a.at, b.at).then_with(|| a.event_id.cmp(&b.event_id)));
        AccountState {
            partition: 0,
            latest: distinct
                .iter()
                .map(|e| e.at)
                .fold(f64::NEG_INFINITY, f64::max),
            seen: distinct.iter().map(|e| event_digest(&e.event_id)).collect(),
            events: distinct,
            experience: Sources::default(),
        }
    }

    fn with_experience(
        mut state: AccountState,
        source: &str,
        observations: Vec<AccountObservation>,
    ) -> AccountState {
        state.experience.0.push((
            source.to_owned(),
            Source {
                version: 1,
                observations,
            },
        ));
        state
    }

    fn rules() -> ExperienceRules {
        ExperienceRules {
            lookback: 90.0 * DAY,
            weights: Weights::default(),
        }
    }

    /// One window of `seconds`, evaluated at `as_of`: its FIELDS.
    fn window_of(state: &AccountState, as_of: f64, seconds: f64) -> WindowTotals {
        let mut totals = Totals::new(1);
        evaluate(
            &AccountView::of(state).expect("64-bit amounts"),
            as_of,
            &[seconds],
            &rules(),
            &mut totals,
        );
        totals.windows[0]
    }

    #[test]
    fn the_timeline_keeps_changes_and_ties_go_to_the_greater_event_id() {
        let state = account(&[
            event(10.0, "a", "s1", 100),
            event(10.0, "b", "s2", 50),
            // s1 at 20 twice: "d" is the greater event id, its 0 is the state from 20 on
            event(20.0, "d", "s1", 0),
            event(20.0, "c", "s1", 70),
            // no change at 30: not in the timeline
            event(30.0, "e", "s2", 50),
            event(40.0, "f", "s2", 0),
        ]);
        let line = Timeline::of(&state.events).expect("64-bit amounts");
        assert_eq!(line.times, vec![10.0, 20.0, 40.0]);
        assert_eq!(line.amounts, vec![150, 50, 0]);
        assert_eq!(line.mrr_at(9.9), 0);
        assert_eq!(line.mrr_at(10.0), 150);
        assert_eq!(line.mrr_at(39.0), 50);
        assert_eq!(line.mrr_at(40.0), 0);
    }

    #[test]
    fn movements_new_expansion_contraction_churn_reactivation() {
        assert_eq!(movement(5, 5, false), None);
        assert_eq!(movement(0, 7, false), Some((Movement::New, 7)));
        assert_eq!(movement(0, 7, true), Some((Movement::Reactivation, 7)));
        assert_eq!(movement(4, 7, true), Some((Movement::Expansion, 3)));
        assert_eq!(movement(7, 4, true), Some((Movement::Contraction, 3)));
        assert_eq!(movement(7, 0, true), Some((Movement::Churn, 7)));
        // new at day 1, expansion at 2, contraction at 3, churn at 4, reactivation at 5,
        // all in a window (0, 10 days]
        let state = account(&[
            event(1.0 * DAY, "a", "s", 100),
            event(2.0 * DAY, "b", "s", 150),
            event(3.0 * DAY, "c", "s", 120),
            event(4.0 * DAY, "d", "s", 0),
            event(5.0 * DAY, "e", "s", 80),
        ]);
        let window = window_of(&state, 10.0 * DAY, 10.0 * DAY);
        // no cohort (nothing paid at s = 0); new 100, reactivation 80, expansion 50,
        // contraction 30, churn 120; one new, one reactivation, one churn
        assert_eq!(window, [0, 0, 0, 0, 0, 100, 80, 50, 30, 120, 1, 1, 1]);
        // a window (3.5 days, 10 days]: a cohort of 1 at 120 (since day 3), retained (80 at
        // as_of), NRR 80, GRR min(80, 120) = 80; the churn of 120 at day 4, then a
        // reactivation (it paid before) of 80
        let window = window_of(&state, 10.0 * DAY, 6.5 * DAY);
        assert_eq!(window, [1, 120, 1, 80, 80, 0, 80, 0, 0, 120, 0, 1, 1]);
    }

    #[test]
    fn changes_at_one_instant_are_one_movement() {
        // s1 goes 100 -> 0 and s2 0 -> 100 at the same instant: no movement at all
        let state = account(&[
            event(1.0 * DAY, "a", "s1", 100),
            event(5.0 * DAY, "b", "s1", 0),
            event(5.0 * DAY, "c", "s2", 100),
            // and at day 6 s1 back at 30 and s2 down to 90: one expansion of 20
            event(6.0 * DAY, "d", "s1", 30),
            event(6.0 * DAY, "e", "s2", 90),
        ]);
        let window = window_of(&state, 10.0 * DAY, 8.0 * DAY);
        assert_eq!(window, [1, 100, 1, 120, 100, 0, 0, 20, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn cohort_edge_cases() {
        let state = account(&[
            event(10.0 * DAY, "a", "s", 100),
            event(20.0 * DAY, "b", "s", 0),
        ]);
        // s exactly at the first change: the change at s is in the cohort's MRR (paying at s),
        // not a movement of the window
        let window = window_of(&state, 15.0 * DAY, 5.0 * DAY);
        assert_eq!(window, [1, 100, 1, 100, 100, 0, 0, 0, 0, 0, 0, 0, 0]);
        // as_of exactly at the churn: churned at as_of, the cohort retains nothing
        let window = window_of(&state, 20.0 * DAY, 5.0 * DAY);
        assert_eq!(window, [1, 100, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 1]);
        // s exactly at the churn: no cohort, no movement
        let window = window_of(&state, 25.0 * DAY, 5.0 * DAY);
        assert_eq!(window, [0; 13]);
        // new and churned within the window: counted as both, never in the cohort
        let window = window_of(&state, 25.0 * DAY, 20.0 * DAY);
        assert_eq!(window, [0, 0, 0, 0, 0, 100, 0, 0, 0, 100, 1, 0, 1]);
        // before its first event: nothing
        assert_eq!(window_of(&state, 9.0 * DAY, 5.0 * DAY), [0; 13]);
    }

    #[test]
    fn paying_accounts_and_health_totals_and_the_cohort_split_by_experience() {
        let state = with_experience(
            account(&[event(0.0, "a", "s", 100)]),
            "survey:1",
            vec![AccountObservation::Csat(5.0 * DAY, 1)],
        );
        let mut totals = Totals::new(2);
        let view = AccountView::of(&state).expect("64-bit amounts");
        // at day 10: csat 1 of 1 unsatisfied (score 0, red); windows of 8 and 2 days: s at
        // day 2 (no observation yet: unknown, not exposed) and day 8 (red, exposed)
        let current = evaluate(
            &view,
            10.0 * DAY,
            &[8.0 * DAY, 2.0 * DAY],
            &rules(),
            &mut totals,
        );
        assert_eq!((current.score, current.band), (Some(0.0), Band::Red));
        assert_eq!((totals.mrr, totals.paying), (100, 1));
        assert_eq!(totals.health, [1, 100, 0, 0, 0, 0, 0, 0]);
        let unknown = band_slot(Band::Unknown);
        assert_eq!(totals.bands[0][unknown], 1);
        assert_eq!(totals.bands[1][band_slot(Band::Red)], 1);
        let csat_unsatisfied = 2;
        assert_eq!(totals.drivers[0][driver_slot(csat_unsatisfied, false)], 1);
        assert_eq!(totals.drivers[1][driver_slot(csat_unsatisfied, true)], 1);
        // every driver splits the whole cohort; none churned
        assert_eq!(totals.drivers[1].iter().sum::<i128>(), 5);
    }

    #[test]
    fn forgettable_when_not_paying_and_nothing_newer_than_the_horizon() {
        let state = account(&[event(10.0, "a", "s", 100), event(20.0, "b", "s", 0)]);
        assert!(state.is_forgettable(20.5, 30.0));
        assert!(!state.is_forgettable(20.0, 30.0)); // its latest event is not older
        assert!(!state.is_forgettable(20.5, 15.0)); // paying at 15
        let observed = with_experience(state, "ticket:t", vec![AccountObservation::Frt(25.0, 0)]);
        assert!(!observed.is_forgettable(20.5, 30.0));
        assert!(account(&[]).is_forgettable(0.0, 0.0));
    }

    /// Written by Python: orjson.dumps(AccountState(...).to_json()).
    const PYTHON_WRITTEN: &str = concat!(
        r#"{"partition":2,"subscription_events":[[1800000000.0,"e-1","sub-1",29000000],"#,
        r#"[1800086400.5,"e-2","sub-1",0]],"seen":[506309167196952638,3563339379545017759],"#,
        r#""latest":1800086400.5,"experience":{"ticket:t-9":[3,[["frt",1799990000.0,1],"#,
        r#"["ttr",1799990100.0,0],["reopen",1799990200.0],["resolved",1799990150.0,null],"#,
        r#"["resolved",1799990160.0,1799990200.0]]],"survey:r-1":[1,[["nps",1799990000.0,6,"#,
        r#""r-1"],["csat",1799990000.0,4],["ces",1799990000.0,5]]],"ticket:gone":[7,[]]}}"#
    );

    #[test]
    fn reads_a_state_python_wrote() {
        let state = AccountState::read(PYTHON_WRITTEN.as_bytes()).expect("Python's state");
        assert_eq!(state.partition, 2);
        assert_eq!(state.events[1], event(1800086400.5, "e-2", "sub-1", 0));
        assert!(state.seen.contains(&event_digest("e-1")));
        assert_eq!(state.latest, 1800086400.5);
        let sources: Vec<&str> = state.experience.0.iter().map(|(s, _)| s.as_str()).collect();
        // in the order written, not sorted
        assert_eq!(sources, ["ticket:t-9", "survey:r-1", "ticket:gone"]);
        let ticket = &state.experience.0[0].1;
        assert_eq!(ticket.version, 3);
        assert_eq!(
            ticket.observations[3..],
            [
                AccountObservation::Resolved(1799990150.0, None),
                AccountObservation::Resolved(1799990160.0, Some(1799990200.0)),
            ]
        );
        assert_eq!(
            state.experience.0[1].1.observations[0],
            AccountObservation::Nps(1799990000.0, 6, "r-1".to_owned())
        );
        // at one instant, observations keep the sources' order
        let first: Vec<&str> = state.observations()[..4].iter().map(|o| o.name()).collect();
        assert_eq!(first, ["frt", "nps", "csat", "ces"]);
    }

    #[test]
    fn a_new_account_reads_latest_null_as_no_event_and_an_older_one_without_experience() {
        let stored =
            br#"{"partition":1,"subscription_events":[],"seen":[],"latest":null,"experience":{}}"#;
        let read = AccountState::read(stored).expect("a new account");
        assert_eq!(read.latest, f64::NEG_INFINITY);
        let older = br#"{"partition":1,"subscription_events":[],"seen":[],"latest":null}"#;
        assert_eq!(AccountState::read(older), Ok(read));
    }

    #[test]
    fn a_corrupt_state_is_unreadable_not_a_panic() {
        for corrupt in [
            &b""[..],
            b"{\"partition\":1",
            b"[1, 2]",
            br#"{"partition":1,"subscription_events":[[1.0,"a"]],"seen":[],"latest":null}"#,
            br#"{"partition":1,"subscription_events":[],"seen":["x"],"latest":null}"#,
            br#"{"partition":1,"subscription_events":[],"seen":[],"latest":null,
                "experience":{"t":[1,[["sla",1.0,1]]]}}"#,
            br#"{"partition":1,"subscription_events":[],"seen":[],"latest":null,
                "experience":{"t":[1,[["frt",1.0]]]}}"#,
            br#"{"partition":1,"subscription_events":[],"seen":[],"latest":null,
                "experience":{"t":[1,[["reopen",1.0,2.0]]]}}"#,
        ] {
            let read = AccountState::read(corrupt);
            assert!(read.is_err(), "{}", String::from_utf8_lossy(corrupt));
        }
    }

    #[test]
    fn an_mrr_beyond_64_bits_is_unreadable_and_partitions_sum_beyond_it() {
        let state = account(&[event(1.0, "a", "s1", i64::MAX), event(1.0, "b", "s2", 1)]);
        assert!(AccountView::of(&state).is_err());
        assert!(!state.is_forgettable(10.0, 0.0));
        // two accounts of i64::MAX: their sum is in the totals
        let mut totals = Totals::new(0);
        let view = AccountView::of(&account(&[event(1.0, "a", "s1", i64::MAX)]));
        let view = view.expect("64-bit amounts");
        for _ in 0..2 {
            evaluate(&view, 2.0, &[], &rules(), &mut totals);
        }
        assert_eq!(totals.mrr, 2 * i128::from(i64::MAX));
    }

    #[test]
    fn totals_json_is_pythons() {
        let mut totals = Totals::new(1);
        totals.mrr = 5;
        totals.windows[0][12] = 1;
        let written = String::from_utf8(totals.to_json()).expect("UTF-8");
        // json.dumps(Totals(1).to_json()) with mrr 5 and churn_accounts 1, spaces removed
        let python = concat!(
            r#"{"bands":[[0,0,0,0,0,0,0,0]],"drivers":[[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]],"#,
            r#""health":[0,0,0,0,0,0,0,0],"mrr":5,"paying":0,"windows":[[0,0,0,0,0,0,0,0,0,0,0,0,1]]}"#
        );
        assert_eq!(written, python);
    }
}

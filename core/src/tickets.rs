//! Per-ticket state and per-survey-slot state, and the observations they contribute.
//!
//! A state keeps only what the metrics need: the earliest ticket-opened (its segment wins), the
//! two earliest public agent replies (the first is the first response; the second decides
//! one-touch), its resolutions and reopens in status order (docs/contract.md section 3: the
//! first resolution, the latest one, whether it is resolved now, which reopens count), and for
//! a survey slot the response that currently counts. It also keeps a digest of every event id
//! applied to it (so that a re-sent event of any kind is a duplicate) and the latest event time
//! (for retention). Every update is a lattice join (an earliest / latest pick, a set union), so
//! applying the same event twice, or events in any order, gives the same state: that is what
//! makes replays after a crash exact.
//!
//! A state's observations are a pure function of the state. When an event changes a state, the
//! windows retract the old observations and add the new ones.

use std::cmp::Ordering;

use blake2::Blake2bVar;
use blake2::digest::{Update, VariableOutput};
use serde::{Deserialize, Serialize};

use crate::business::OpeningHours;
use crate::decode::{Body, Event};
use crate::windows::{Kind, Observation, PartitionWindows};

/// A 64-bit digest of an event id: what a state keeps to recognise a re-sent event (ids may be
/// 128 characters; two ids of one ticket colliding is a 1 in 2^64 chance per pair).
pub fn event_digest(event_id: &str) -> i64 {
    let mut digest = [0u8; 8];
    let mut hasher = Blake2bVar::new(8).expect("8 bytes is a valid blake2b digest size");
    hasher.update(event_id.as_bytes());
    hasher
        .finalize_variable(&mut digest)
        .expect("the buffer is the digest's size");
    i64::from_be_bytes(digest)
}

/// (occurred_at, event_id): the order in which competing events are picked.
pub type Stamp = (f64, String);

fn stamp_order(a: &(f64, String), b: &(f64, String)) -> Ordering {
    a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1))
}

/// (team, channel, priority).
pub type Labels = (String, String, String);

/// The state of one ticket, in its stored form (JSON, as the changelogs hold it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TicketState {
    pub partition: i64,
    pub opened: Option<Stamp>,
    pub segment: Option<Labels>,
    pub agent_replies: Vec<Stamp>,
    /// Every resolution and reopen, in status order: (occurred_at, event_id, kind).
    pub status: Vec<(f64, String, String)>,
    /// Digests of every event id applied to the ticket, ordered.
    pub seen: Vec<i64>,
    /// The latest occurred_at of those events (retention is judged by it).
    pub latest: f64,
    /// The account_id of its earliest ticket-opened, like its segment.
    #[serde(default)]
    pub account: Option<String>,
}

/// The response that counts for one survey slot, and the responses the slot has seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SurveyResponse {
    pub partition: i64,
    pub stamp: Stamp,
    pub survey: String,
    pub score: i64,
    pub segment: Labels,
    pub seen: Vec<i64>,
    /// The account_id of the response that counts (its own, not its ticket's).
    #[serde(default)]
    pub account: Option<String>,
}

const RESOLVED: &str = "resolved";
const REOPENED: &str = "reopened";

fn insert_digest(seen: &mut Vec<i64>, digest: i64) {
    if let Err(at) = seen.binary_search(&digest) {
        seen.insert(at, digest);
    }
}

impl TicketState {
    pub fn new(partition: i64) -> TicketState {
        TicketState {
            partition,
            opened: None,
            segment: None,
            agent_replies: Vec::new(),
            status: Vec::new(),
            seen: Vec::new(),
            latest: f64::NEG_INFINITY,
            account: None,
        }
    }

    pub fn holds(&self, event_id: &str) -> bool {
        self.seen.binary_search(&event_digest(event_id)).is_ok()
    }

    pub fn first_resolution(&self) -> Option<f64> {
        self.status
            .iter()
            .find(|(_, _, kind)| kind == RESOLVED)
            .map(|(at, _, _)| *at)
    }

    /// Resolved now: the last of its resolutions and reopens is a resolution.
    pub fn is_resolved(&self) -> bool {
        self.status
            .last()
            .is_some_and(|(_, _, kind)| kind == RESOLVED)
    }

    /// When it was reopened: reopens whose previous status event is a resolution.
    pub fn reopens(&self) -> Vec<f64> {
        self.status
            .windows(2)
            .filter(|pair| pair[0].2 == RESOLVED && pair[1].2 == REOPENED)
            .map(|pair| pair[1].0)
            .collect()
    }

    /// The state after a ticket event it does not hold yet (the caller checks `holds`).
    pub fn apply(&mut self, event: &Event) {
        insert_digest(&mut self.seen, event_digest(&event.event_id));
        self.latest = self.latest.max(event.occurred_at);
        let stamp = (event.occurred_at, event.event_id.clone());
        match &event.body {
            Body::TicketOpened {
                segment,
                account_id,
                ..
            } => {
                let earlier = match &self.opened {
                    None => true,
                    Some(opened) => stamp_order(&stamp, opened) == Ordering::Less,
                };
                if earlier {
                    self.opened = Some(stamp);
                    self.segment = Some((
                        segment.team.clone(),
                        segment.channel.clone(),
                        segment.priority.to_owned(),
                    ));
                    self.account.clone_from(account_id);
                }
            }
            Body::TicketResolved { .. } | Body::TicketReopened { .. } => {
                let kind = if matches!(event.body, Body::TicketResolved { .. }) {
                    RESOLVED
                } else {
                    REOPENED
                };
                let entry = (stamp.0, stamp.1, kind.to_owned());
                let at = self
                    .status
                    .partition_point(|held| status_order(held, &entry) == Ordering::Less);
                self.status.insert(at, entry);
            }
            Body::TicketReplied { author, public, .. } if *author == "agent" && *public => {
                let at = self
                    .agent_replies
                    .partition_point(|held| stamp_order(held, &stamp) == Ordering::Less);
                self.agent_replies.insert(at, stamp);
                self.agent_replies.truncate(2);
            }
            _ => {}
        }
    }

    /// Negative durations (clock skew) the state holds; they are discarded from the metrics.
    pub fn anomalies(&self) -> u32 {
        let Some((opened_at, _)) = &self.opened else {
            return 0;
        };
        let before = |at: f64| u32::from(at < *opened_at);
        self.agent_replies.first().map_or(0, |(at, _)| before(*at))
            + self.first_resolution().map_or(0, before)
            + self
                .status
                .last()
                .filter(|(_, _, kind)| kind == RESOLVED)
                .map_or(0, |(at, _, _)| before(*at))
    }

    /// Whether it may be forgotten (docs/contract.md, section 3, *State retention*): nothing
    /// of it is newer than `horizon`, and it is not an open ticket.
    pub fn is_forgettable(&self, horizon: f64) -> bool {
        let open = self.opened.is_some() && !self.is_resolved();
        !open && self.latest < horizon
    }
}

fn status_order(a: &(f64, String, String), b: &(f64, String, String)) -> Ordering {
    a.0.total_cmp(&b.0)
        .then_with(|| a.1.cmp(&b.1))
        .then_with(|| a.2.cmp(&b.2))
}

impl SurveyResponse {
    pub fn holds(&self, event_id: &str) -> bool {
        self.seen.binary_search(&event_digest(event_id)).is_ok()
    }

    /// The slot after a response it does not hold yet: the response that counts is the latest
    /// by occurred_at, then by event_id. None for an event that is not a survey response.
    pub fn applied(current: Option<SurveyResponse>, event: &Event, partition: i64) -> Option<Self> {
        let Body::SurveyAnswered {
            survey,
            score,
            segment,
            account_id,
            ..
        } = &event.body
        else {
            return None;
        };
        let digest = event_digest(&event.event_id);
        let stamp = (event.occurred_at, event.event_id.clone());
        let mut seen = Vec::new();
        if let Some(mut current) = current {
            if stamp_order(&current.stamp, &stamp) != Ordering::Less {
                insert_digest(&mut current.seen, digest);
                return Some(current);
            }
            seen = current.seen;
        }
        insert_digest(&mut seen, digest);
        Some(SurveyResponse {
            partition,
            stamp,
            survey: (*survey).to_owned(),
            score: *score,
            segment: (
                segment.team.clone(),
                segment.channel.clone(),
                segment.priority.to_owned(),
            ),
            seen,
            account: account_id.clone(),
        })
    }

    /// A response that counts is its latest: the slot may go once that is older than
    /// `horizon`.
    pub fn is_forgettable(&self, horizon: f64) -> bool {
        self.stamp.0 < horizon
    }
}

/// The table key of the response `event` competes with: one per (ticket, survey kind).
pub fn survey_slot(event_id: &str, ticket_id: Option<&str>, survey: &str) -> String {
    match ticket_id {
        None => format!("event:{event_id}"),
        Some(ticket) => format!("{survey}:{ticket}"),
    }
}

pub const PRIORITIES: [&str; 4] = ["low", "normal", "high", "urgent"];

/// What a ticket's durations are judged by: SLA targets, opening hours, which clock.
#[derive(Clone, Debug)]
pub struct Rules {
    /// Seconds allowed per priority (in PRIORITIES' order) before a first response breaches.
    pub first_response: [f64; 4],
    pub resolution: [f64; 4],
    /// The default schedule and the teams with their own; None: no business time.
    pub schedules: Option<(OpeningHours, Vec<(String, OpeningHours)>)>,
    /// Whether the SLA is judged in business seconds (with schedules).
    pub business_clock: bool,
}

impl Rules {
    fn business_seconds(&self, team: &str, start: f64, end: f64) -> Option<f64> {
        let (default, teams) = self.schedules.as_ref()?;
        let hours = teams
            .iter()
            .find(|(name, _)| name == team)
            .map_or(default, |(_, hours)| hours);
        hours.business_seconds(start, end)
    }

    fn breached(
        &self,
        targets: &[f64; 4],
        priority: usize,
        seconds: f64,
        business: Option<f64>,
    ) -> bool {
        let measured = match business {
            Some(business) if self.business_clock => business,
            _ => seconds,
        };
        measured > targets[priority]
    }
}

/// A stored state that cannot be read (written by another release, or damaged).
#[derive(Debug, PartialEq)]
pub struct Unreadable(pub String);

fn priority_index(priority: &str) -> Result<usize, Unreadable> {
    PRIORITIES
        .iter()
        .position(|known| *known == priority)
        .ok_or_else(|| Unreadable(format!("not a priority: {priority:?}")))
}

fn segment_of(windows: &mut PartitionWindows, labels: &Labels) -> crate::windows::Segment {
    [
        windows.intern(&labels.0),
        windows.intern(&labels.1),
        windows.intern(&labels.2),
    ]
}

fn observation(
    kind: Kind,
    at: f64,
    segment: &crate::windows::Segment,
    value: f64,
    flag: bool,
    business: Option<f64>,
    reopened: bool,
) -> Observation {
    Observation {
        kind,
        at,
        segment: segment.clone(),
        value,
        flag,
        business,
        reopened,
    }
}

impl TicketState {
    /// Its observations (none before its ticket-opened, which brings the segment); the
    /// segment's labels are shared with `windows`'.
    pub fn observations(
        &self,
        rules: &Rules,
        windows: &mut PartitionWindows,
    ) -> Result<Vec<Observation>, Unreadable> {
        let (Some((opened_at, _)), Some(labels)) = (&self.opened, &self.segment) else {
            return Ok(Vec::new());
        };
        let opened_at = *opened_at;
        let priority = priority_index(&labels.2)?;
        let segment = segment_of(windows, labels);
        let team = &labels.0;
        let mut found = vec![observation(
            Kind::Opened,
            opened_at,
            &segment,
            0.0,
            false,
            None,
            false,
        )];
        // a first response or resolution at `at`: calendar and business time, judged by its
        // SLA target; none for a negative duration (clock skew: an anomaly)
        let duration = |kind: Kind, at: f64, targets: &[f64; 4]| {
            let seconds = at - opened_at;
            (seconds >= 0.0).then(|| {
                let business = rules.business_seconds(team, opened_at, at);
                let breached = rules.breached(targets, priority, seconds, business);
                observation(kind, at, &segment, seconds, breached, business, false)
            })
        };
        if let Some((replied_at, _)) = self.agent_replies.first() {
            found.extend(duration(
                Kind::FirstResponse,
                *replied_at,
                &rules.first_response,
            ));
        }
        if !self.is_resolved() {
            found.push(observation(
                Kind::Backlog,
                opened_at,
                &segment,
                0.0,
                false,
                None,
                false,
            ));
        }
        let Some(resolved_at) = self.first_resolution() else {
            return Ok(found);
        };
        let reopens = self.reopens();
        let replies_before = self
            .agent_replies
            .iter()
            .filter(|(at, _)| *at <= resolved_at)
            .count();
        found.push(observation(
            Kind::Resolved,
            resolved_at,
            &segment,
            0.0,
            replies_before <= 1,
            None,
            !reopens.is_empty(),
        ));
        found.extend(duration(Kind::Resolution, resolved_at, &rules.resolution));
        for at in reopens {
            found.push(observation(
                Kind::Reopen,
                at,
                &segment,
                0.0,
                false,
                None,
                false,
            ));
        }
        if let Some((latest_at, _, _)) = self.status.last().filter(|_| self.is_resolved())
            && *latest_at >= opened_at
        {
            found.push(observation(
                Kind::FullResolution,
                *latest_at,
                &segment,
                latest_at - opened_at,
                false,
                None,
                false,
            ));
        }
        Ok(found)
    }
}

impl SurveyResponse {
    pub fn observations(
        &self,
        windows: &mut PartitionWindows,
    ) -> Result<Vec<Observation>, Unreadable> {
        let kind = match self.survey.as_str() {
            "nps" => Kind::Nps,
            "csat" => Kind::Csat,
            "ces" => Kind::Ces,
            other => return Err(Unreadable(format!("not a survey: {other:?}"))),
        };
        let segment = segment_of(windows, &self.segment);
        Ok(vec![observation(
            kind,
            self.stamp.0,
            &segment,
            self.score as f64,
            false,
            None,
            false,
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Segment;

    fn event(id: &str, at: f64, body: Body) -> Event {
        Event {
            event_id: id.into(),
            occurred_at: at,
            body,
        }
    }

    fn opened(id: &str, at: f64, team: &str) -> Event {
        let segment = Segment {
            team: team.into(),
            channel: "email".into(),
            priority: "high",
        };
        let body = Body::TicketOpened {
            ticket_id: "T".into(),
            segment,
            account_id: None,
        };
        event(id, at, body)
    }

    #[test]
    fn digests_are_pythons_blake2b_of_eight_bytes() {
        // int.from_bytes(hashlib.blake2b(b"e-1", digest_size=8).digest(), "big", signed=True)
        assert_eq!(event_digest("e-1"), 3_563_339_379_545_017_759);
    }

    #[test]
    fn the_earliest_opening_wins_in_any_order_and_round_trips_as_json() {
        let events = [opened("b", 20.0, "late"), opened("a", 10.0, "early")];
        let mut forward = TicketState::new(3);
        let mut backward = TicketState::new(3);
        for event in &events {
            forward.apply(event);
        }
        for event in events.iter().rev() {
            backward.apply(event);
        }
        assert_eq!(forward, backward);
        assert_eq!(
            forward.segment.as_ref().map(|labels| labels.0.as_str()),
            Some("early")
        );
        let stored = serde_json::to_string(&forward).expect("JSON");
        assert_eq!(
            serde_json::from_str::<TicketState>(&stored).ok(),
            Some(forward)
        );
    }
}

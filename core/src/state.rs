//! A batch of ticket and survey events against their states: the duplicate check, the state
//! transitions, and, once per batch, each changed state's stored form, its change in the
//! windows and what it sends its account. The states are read once per batch (`needed`, then
//! `load`), so the caller reads its tables in one pass.

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};

use crate::decode::{Body, Event};
use crate::experience::{self, AccountObservation, ExperienceUpdate};
use crate::tickets::{Rules, SurveyResponse, TicketState, Unreadable, survey_slot};
use crate::windows::{Observation, PartitionWindows};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Tickets,
    Surveys,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Tickets => "tickets",
            Table::Surveys => "surveys",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        [Table::Tickets, Table::Surveys]
            .into_iter()
            .find(|table| table.name() == name)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Ticket(TicketState),
    Survey(SurveyResponse),
}

impl State {
    /// A state as its table stores it (JSON).
    pub fn read(table: Table, stored: &[u8]) -> Result<State, Unreadable> {
        let unreadable = |error: serde_json::Error| Unreadable(format!("a stored state: {error}"));
        Ok(match table {
            Table::Tickets => State::Ticket(serde_json::from_slice(stored).map_err(unreadable)?),
            Table::Surveys => State::Survey(serde_json::from_slice(stored).map_err(unreadable)?),
        })
    }

    pub fn stored(&self) -> Vec<u8> {
        let written = match self {
            State::Ticket(ticket) => serde_json::to_vec(ticket),
            State::Survey(response) => serde_json::to_vec(response),
        };
        // a state is numbers and strings: writing it cannot fail
        written.unwrap_or_default()
    }

    pub fn observations(
        &self,
        rules: &Rules,
        windows: &mut PartitionWindows,
    ) -> Result<Vec<Observation>, Unreadable> {
        match self {
            State::Ticket(ticket) => ticket.observations(rules, windows),
            State::Survey(response) => response.observations(windows),
        }
    }

    fn experience(&self, observations: &[Observation]) -> (Option<&str>, Vec<AccountObservation>) {
        match self {
            State::Ticket(ticket) => (
                ticket.account.as_deref(),
                experience::of_ticket(observations),
            ),
            State::Survey(response) => (
                response.account.as_deref(),
                experience::of_response(response, observations),
            ),
        }
    }

    fn version(&self) -> i64 {
        match self {
            State::Ticket(ticket) => ticket.seen.len() as i64,
            State::Survey(response) => response.seen.len() as i64,
        }
    }

    /// Whether its table's retention (docs/contract.md 3, *State retention*) has passed
    /// `horizon`.
    pub fn is_forgettable(&self, horizon: f64) -> bool {
        match self {
            State::Ticket(ticket) => ticket.is_forgettable(horizon),
            State::Survey(response) => response.is_forgettable(horizon),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    Anomaly,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Anomaly => "anomaly",
        }
    }
}

pub type StateKey = (Table, i64, String);

/// A state's observations before and after a change.
pub type Change = (Vec<Observation>, Vec<Observation>);

/// A state's stored forms before and after a change (None: there was none).
pub type StoredChange<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// A state the batch reached: as it was before the batch, as it is now, and the records that
/// changed it (by the caller's numbering).
#[derive(Debug)]
struct Touched {
    key: StateKey,
    existed: bool,
    original: Option<State>,
    current: Option<State>,
    records: Vec<usize>,
    /// Why its stored form could not be read: every record that reaches it fails.
    unreadable: Option<String>,
}

/// What settling a batch gives the caller to write and send.
#[derive(Debug, Default)]
pub struct Settled {
    /// (state, its stored form, whether the table held it before).
    pub writes: Vec<(StateKey, Vec<u8>, bool)>,
    /// What the changed states send their accounts, with the state's partition.
    pub updates: Vec<(i64, ExperienceUpdate)>,
    /// States whose change could not be worked out (a bug): left as they were before the
    /// batch; the records that changed them, and why.
    pub failures: Vec<(Vec<usize>, String)>,
}

#[derive(Debug, Default)]
pub struct Batch {
    queued: Vec<(usize, usize, Event)>,
    touched: Vec<Touched>,
    index: HashMap<StateKey, usize>,
    needed: Vec<StateKey>,
}

impl Batch {
    /// Queue a ticket or survey event (other events are not queued: false) for record
    /// `record` of input partition `partition`.
    pub fn queue(&mut self, record: usize, partition: i64, event: Event) -> bool {
        let key = match &event.body {
            Body::TicketOpened { ticket_id, .. }
            | Body::TicketReplied { ticket_id, .. }
            | Body::TicketResolved { ticket_id }
            | Body::TicketReopened { ticket_id } => (Table::Tickets, partition, ticket_id.clone()),
            Body::SurveyAnswered {
                ticket_id, survey, ..
            } => (
                Table::Surveys,
                partition,
                survey_slot(&event.event_id, ticket_id.as_deref(), survey),
            ),
            Body::SubscriptionUpdated { .. } => return false,
        };
        let at = match self.index.get(&key) {
            Some(at) => *at,
            None => {
                self.needed.push(key.clone());
                self.index.insert(key.clone(), self.touched.len());
                self.touched.push(Touched {
                    key,
                    existed: false,
                    original: None,
                    current: None,
                    records: Vec::new(),
                    unreadable: None,
                });
                self.touched.len() - 1
            }
        };
        self.queued.push((record, at, event));
        true
    }

    /// The states to read before `apply`: those queued events reach that the batch has not
    /// read yet.
    pub fn needed(&self) -> &[StateKey] {
        &self.needed
    }

    /// The stored forms of `needed()`, in its order (None: not in its table).
    pub fn load(&mut self, stored: Vec<Option<&[u8]>>) {
        for (key, value) in std::mem::take(&mut self.needed).into_iter().zip(stored) {
            let Some(&at) = self.index.get(&key) else {
                continue;
            };
            let touched = &mut self.touched[at];
            touched.existed = value.is_some();
            match value.map(|value| State::read(key.0, value)).transpose() {
                Ok(state) => {
                    touched.original.clone_from(&state);
                    touched.current = state;
                }
                Err(Unreadable(reason)) => touched.unreadable = Some(reason),
            }
        }
    }

    /// Apply the queued events to their states: each record's outcome, or why it failed.
    pub fn apply(&mut self) -> Vec<(usize, Result<Outcome, String>)> {
        std::mem::take(&mut self.queued)
            .into_iter()
            .map(|(record, at, event)| {
                let touched = &mut self.touched[at];
                if let Some(reason) = &touched.unreadable {
                    return (record, Err(reason.clone()));
                }
                match panic::catch_unwind(AssertUnwindSafe(|| apply_event(touched, &event))) {
                    Ok(outcome) => {
                        if outcome != Outcome::Duplicate {
                            touched.records.push(record);
                        }
                        (record, Ok(outcome))
                    }
                    Err(_) => {
                        // a bug: the state stays as it was before the batch, and the records
                        // that changed it in the batch fail with it (`settle`)
                        let reason = "the core failed to apply an event to its state";
                        touched.unreadable = Some(reason.into());
                        touched.current.clone_from(&touched.original);
                        (record, Err(reason.into()))
                    }
                }
            })
            .collect()
    }

    /// The (table, partition)s whose windows `settle` needs.
    pub fn partitions(&self) -> Vec<(Table, i64)> {
        let mut found: Vec<(Table, i64)> = self
            .touched
            .iter()
            .filter(|touched| !touched.records.is_empty())
            .map(|touched| (touched.key.0, touched.key.1))
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }

    /// Each state the batch changed: its stored form, its change folded into its windows (one
    /// fold per table and partition), and what it sends its account. The batch is then empty.
    pub fn settle(
        &mut self,
        rules: &Rules,
        windows: &mut HashMap<(Table, i64), &mut PartitionWindows>,
    ) -> Settled {
        let mut settled = Settled::default();
        let mut changes: HashMap<(Table, i64), Vec<Change>> = HashMap::new();
        self.index.clear();
        for touched in std::mem::take(&mut self.touched) {
            if let (Some(reason), false) = (&touched.unreadable, touched.records.is_empty()) {
                settled.failures.push((touched.records, reason.clone()));
                continue;
            }
            let (Some(current), false) = (&touched.current, touched.records.is_empty()) else {
                continue; // reached by duplicates only
            };
            let (table, partition, key) = &touched.key;
            let Some(windows) = windows.get_mut(&(*table, *partition)) else {
                settled
                    .failures
                    .push((touched.records, "no windows for its partition".into()));
                continue;
            };
            let observed = observe(touched.original.as_ref(), rules, windows)
                .and_then(|before| Ok((before, current.observations(rules, windows)?)));
            let (before, after) = match observed {
                Ok(pair) => pair,
                Err(Unreadable(reason)) => {
                    settled.failures.push((touched.records, reason));
                    continue;
                }
            };
            let source = match table {
                Table::Tickets => format!("ticket:{key}"),
                Table::Surveys => format!("survey:{key}"),
            };
            let old = match &touched.original {
                None => (None, Vec::new()),
                Some(original) => original.experience(&before),
            };
            let sent =
                experience::updates(&source, old, current.experience(&after), current.version());
            settled
                .updates
                .extend(sent.into_iter().map(|update| (*partition, update)));
            settled
                .writes
                .push((touched.key.clone(), current.stored(), touched.existed));
            changes
                .entry((*table, *partition))
                .or_default()
                .push((before, after));
        }
        for (place, folded) in changes {
            if let Some(windows) = windows.get_mut(&place) {
                windows.fold(&folded, true);
            }
        }
        settled
    }
}

fn observe(
    state: Option<&State>,
    rules: &Rules,
    windows: &mut PartitionWindows,
) -> Result<Vec<Observation>, Unreadable> {
    state.map_or(Ok(Vec::new()), |state| state.observations(rules, windows))
}

fn apply_event(touched: &mut Touched, event: &Event) -> Outcome {
    let partition = touched.key.1;
    match (touched.key.0, touched.current.take()) {
        (Table::Surveys, current) => {
            let current = current.and_then(|state| match state {
                State::Survey(response) => Some(response),
                State::Ticket(_) => None,
            });
            if current
                .as_ref()
                .is_some_and(|response| response.holds(&event.event_id))
            {
                touched.current = current.map(State::Survey);
                return Outcome::Duplicate;
            }
            touched.current = SurveyResponse::applied(current, event, partition).map(State::Survey);
            Outcome::Accepted
        }
        (Table::Tickets, current) => {
            let mut ticket = match current {
                Some(State::Ticket(ticket)) => ticket,
                _ => TicketState::new(partition),
            };
            if ticket.holds(&event.event_id) {
                touched.current = Some(State::Ticket(ticket));
                return Outcome::Duplicate;
            }
            let anomalies = ticket.anomalies();
            ticket.apply(event);
            let outcome = if ticket.anomalies() > anomalies {
                Outcome::Anomaly
            } else {
                Outcome::Accepted
            };
            touched.current = Some(State::Ticket(ticket));
            outcome
        }
    }
}

/// Fold stored states' changes into their table's windows: (before, after) stored forms,
/// None where there was none (restoring windows, forgetting states). Unreadable states are
/// skipped and their reasons returned.
pub fn fold_stored(
    table: Table,
    changes: &[StoredChange<'_>],
    rules: &Rules,
    windows: &mut PartitionWindows,
    totals: bool,
) -> Vec<String> {
    let mut unreadable = Vec::new();
    let mut folded = Vec::with_capacity(changes.len());
    for (before, after) in changes {
        let mut side = |stored: &Option<&[u8]>| -> Result<Vec<Observation>, Unreadable> {
            match stored {
                None => Ok(Vec::new()),
                Some(stored) => State::read(table, stored)?.observations(rules, windows),
            }
        };
        match side(before).and_then(|before| Ok((before, side(after)?))) {
            Ok(pair) => folded.push(pair),
            Err(Unreadable(reason)) => unreadable.push(reason),
        }
    }
    windows.fold(&folded, totals);
    unreadable
}

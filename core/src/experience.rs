//! What a ticket or survey slot sends its account (docs/contract.md 7.4; stream/experience.py
//! says how accounts keep it): the observations of 7.4 among the state's section-3
//! observations, sent whole, with the state's version, whenever they or the account change.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use crate::tickets::SurveyResponse;
use crate::windows::{Kind, Observation};

/// One observation as the account keeps it, `at` second: ("frt", at, breached), ("ttr", at,
/// breached), ("reopen", at), ("resolved", at, the ticket's first reopen after it or None),
/// ("csat", at, score), ("nps", at, score, event_id), ("ces", at, score).
#[derive(Clone, Debug, PartialEq)]
pub enum AccountObservation {
    Frt(f64, i64),
    Ttr(f64, i64),
    Reopen(f64),
    Resolved(f64, Option<f64>),
    Csat(f64, i64),
    Nps(f64, i64, String),
    Ces(f64, i64),
}

impl AccountObservation {
    pub fn name(&self) -> &'static str {
        match self {
            AccountObservation::Frt(..) => "frt",
            AccountObservation::Ttr(..) => "ttr",
            AccountObservation::Reopen(..) => "reopen",
            AccountObservation::Resolved(..) => "resolved",
            AccountObservation::Csat(..) => "csat",
            AccountObservation::Nps(..) => "nps",
            AccountObservation::Ces(..) => "ces",
        }
    }

    pub fn at(&self) -> f64 {
        match self {
            AccountObservation::Frt(at, _)
            | AccountObservation::Ttr(at, _)
            | AccountObservation::Reopen(at)
            | AccountObservation::Resolved(at, _)
            | AccountObservation::Csat(at, _)
            | AccountObservation::Nps(at, _, _)
            | AccountObservation::Ces(at, _) => *at,
        }
    }
}

/// Read from the JSON array of Python's tuple, as the accounts table stores it: ["frt", at,
/// breached], ["resolved", at, null], ["nps", at, score, event_id], ...
impl<'de> Deserialize<'de> for AccountObservation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(ObservationVisitor)
    }
}

struct ObservationVisitor;

impl<'de> Visitor<'de> for ObservationVisitor {
    type Value = AccountObservation;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an account observation: [kind, at, ...]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        fn field<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
            seq: &mut A,
            position: usize,
        ) -> Result<T, A::Error> {
            seq.next_element()?
                .ok_or_else(|| de::Error::invalid_length(position, &ObservationVisitor))
        }
        let name: String = field(&mut seq, 0)?;
        let at: f64 = field(&mut seq, 1)?;
        let observation = match name.as_str() {
            "frt" => AccountObservation::Frt(at, field(&mut seq, 2)?),
            "ttr" => AccountObservation::Ttr(at, field(&mut seq, 2)?),
            "reopen" => AccountObservation::Reopen(at),
            "resolved" => AccountObservation::Resolved(at, field(&mut seq, 2)?),
            "csat" => AccountObservation::Csat(at, field(&mut seq, 2)?),
            "nps" => AccountObservation::Nps(at, field(&mut seq, 2)?, field(&mut seq, 3)?),
            "ces" => AccountObservation::Ces(at, field(&mut seq, 2)?),
            other => {
                let kinds = &["frt", "ttr", "reopen", "resolved", "csat", "nps", "ces"];
                return Err(de::Error::unknown_variant(other, kinds));
            }
        };
        // more fields than its kind has: not written by this release, nor by Python's
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(format!("too many fields for {name:?}")));
        }
        Ok(observation)
    }
}

/// A ticket's, in a fixed order (by kind, then time), so that equal sets compare equal.
pub fn of_ticket(observations: &[Observation]) -> Vec<AccountObservation> {
    let mut reopens: Vec<f64> = observations
        .iter()
        .filter(|observation| observation.kind == Kind::Reopen)
        .map(|observation| observation.at)
        .collect();
    reopens.sort_by(f64::total_cmp);
    let mut found: Vec<AccountObservation> = observations
        .iter()
        .filter_map(|observation| {
            let at = observation.at;
            let breached = i64::from(observation.flag);
            match observation.kind {
                Kind::FirstResponse => Some(AccountObservation::Frt(at, breached)),
                Kind::Resolution => Some(AccountObservation::Ttr(at, breached)),
                Kind::Reopen => Some(AccountObservation::Reopen(at)),
                Kind::Resolved => {
                    let later = reopens.iter().copied().find(|moment| *moment >= at);
                    Some(AccountObservation::Resolved(at, later))
                }
                _ => None,
            }
        })
        .collect();
    found.sort_by(|a, b| a.name().cmp(b.name()).then(a.at().total_cmp(&b.at())));
    found
}

/// A survey response's: its score, and for NPS the response's event id.
pub fn of_response(
    response: &SurveyResponse,
    observations: &[Observation],
) -> Vec<AccountObservation> {
    observations
        .iter()
        .filter_map(|observation| {
            let (at, score) = (observation.at, observation.value as i64);
            match observation.kind {
                Kind::Nps => Some(AccountObservation::Nps(at, score, response.stamp.1.clone())),
                Kind::Csat => Some(AccountObservation::Csat(at, score)),
                Kind::Ces => Some(AccountObservation::Ces(at, score)),
                _ => None,
            }
        })
        .collect()
}

/// What one state sends an account: its source (ticket:<id> or survey:<slot>), its version
/// (how many distinct events it holds: it only grows) and all its observations.
#[derive(Clone, Debug, PartialEq)]
pub struct ExperienceUpdate {
    pub account_id: String,
    pub source: String,
    pub version: i64,
    pub observations: Vec<AccountObservation>,
}

/// What a change of one state's (account, observations) sends: the new set to its account,
/// and an empty one to the account it left.
pub fn updates(
    source: &str,
    before: (Option<&str>, Vec<AccountObservation>),
    after: (Option<&str>, Vec<AccountObservation>),
    version: i64,
) -> Vec<ExperienceUpdate> {
    if before == after {
        return Vec::new();
    }
    let ((old_account, _), (account, observations)) = (before, after);
    let mut sent = Vec::new();
    if let Some(old) = old_account.filter(|old| Some(*old) != account) {
        sent.push(ExperienceUpdate {
            account_id: old.to_owned(),
            source: source.to_owned(),
            version,
            observations: Vec::new(),
        });
    }
    if let Some(account) = account {
        sent.push(ExperienceUpdate {
            account_id: account.to_owned(),
            source: source.to_owned(),
            version,
            observations,
        });
    }
    sent
}

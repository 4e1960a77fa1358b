//! The ticket and survey states as Python's pipeline reaches them: a batch's records go into a
//! `StateBatch` in one call (decoded, queued against their states), the states they need are
//! read in one pass and loaded in one call, the events applied in one call, and the batch
//! settled in one call that folds every change into the windows and returns what to write.

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyDict, PyString, PyTuple};

use super::business::OpeningHours;
use super::windows::PyPartitionWindows;
use super::{decode_record, event_object};
use crate::decode::Body;
use crate::experience::AccountObservation;
use crate::state::{self, Batch, State, StoredChange, Table};
use crate::tickets::{self, PRIORITIES};
use crate::windows::PartitionWindows;

fn table_of(name: &str) -> PyResult<Table> {
    Table::from_name(name)
        .ok_or_else(|| PyValueError::new_err(format!("not a state table of the core: {name}")))
}

/// What a ticket's durations are judged by, for the core (stream.tickets.TicketRules makes it).
#[pyclass(frozen, module = "stream._core")]
pub struct Rules {
    inner: tickets::Rules,
}

fn targets(by_priority: &Bound<'_, PyDict>) -> PyResult<[f64; 4]> {
    let mut found = [0.0; 4];
    for (slot, priority) in found.iter_mut().zip(PRIORITIES) {
        *slot = by_priority
            .get_item(priority)?
            .ok_or_else(|| PyValueError::new_err(format!("no SLA target for priority {priority}")))?
            .extract()?;
    }
    Ok(found)
}

#[pymethods]
impl Rules {
    /// SLA targets by priority; the default schedule and the teams' own (None: no business
    /// time); whether the SLA clock is business time.
    #[new]
    #[pyo3(signature = (first_response, resolution, default = None, teams = Vec::new(), business_clock = false))]
    fn new(
        first_response: &Bound<'_, PyDict>,
        resolution: &Bound<'_, PyDict>,
        default: Option<PyRef<'_, OpeningHours>>,
        teams: Vec<(String, PyRef<'_, OpeningHours>)>,
        business_clock: bool,
    ) -> PyResult<Self> {
        let schedules = default.map(|default| {
            let teams = teams
                .iter()
                .map(|(team, hours)| (team.clone(), hours.inner().clone()))
                .collect();
            (default.inner().clone(), teams)
        });
        Ok(Rules {
            inner: tickets::Rules {
                first_response: targets(first_response)?,
                resolution: targets(resolution)?,
                schedules,
                business_clock,
            },
        })
    }
}

#[pyclass(module = "stream._core")]
#[derive(Default)]
pub struct StateBatch {
    inner: Batch,
}

type Windows<'py> = Vec<((String, i64), PyRefMut<'py, PyPartitionWindows>)>;

fn windows_map<'a>(
    windows: &'a mut Windows<'_>,
) -> PyResult<HashMap<(Table, i64), &'a mut PartitionWindows>> {
    windows
        .iter_mut()
        .map(|((table, partition), windows)| {
            Ok(((table_of(table)?, *partition), windows.inner_mut()))
        })
        .collect()
}

fn observation_tuple<'py>(
    py: Python<'py>,
    observation: &AccountObservation,
) -> PyResult<Bound<'py, PyTuple>> {
    let name = observation.name();
    match observation {
        AccountObservation::Frt(at, flag) | AccountObservation::Ttr(at, flag) => {
            (name, at, flag).into_pyobject(py)
        }
        AccountObservation::Csat(at, score) | AccountObservation::Ces(at, score) => {
            (name, at, score).into_pyobject(py)
        }
        AccountObservation::Reopen(at) => (name, at).into_pyobject(py),
        AccountObservation::Resolved(at, reopened) => (name, at, reopened).into_pyobject(py),
        AccountObservation::Nps(at, score, event_id) => {
            (name, at, score, event_id).into_pyobject(py)
        }
    }
}

#[pymethods]
impl StateBatch {
    #[new]
    fn new() -> Self {
        StateBatch::default()
    }

    /// Decode records (topic, partition, value, Kafka timestamp), numbered from `first`, and
    /// queue the ticket and survey events against their states. For each record: None
    /// (queued: its outcome comes from `apply`), the reason it is invalid (a str), a
    /// RuntimeError where the core failed on it, or a subscription-updated event for Python's
    /// accounts.
    fn decode(
        &mut self,
        py: Python<'_>,
        records: Vec<(PyBackedStr, i64, Option<PyBackedBytes>, f64)>,
        first: usize,
        currency: &str,
        segment: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<Py<PyAny>>> {
        records
            .iter()
            .enumerate()
            .map(|(offset, (topic, partition, value, record_time))| {
                match decode_record(py, topic, value.as_deref(), *record_time, currency)? {
                    Ok(event) if matches!(event.body, Body::SubscriptionUpdated { .. }) => {
                        event_object(py, event, segment)
                    }
                    Ok(event) => {
                        self.inner.queue(first + offset, *partition, event);
                        Ok(py.None())
                    }
                    Err(failure) => Ok(failure),
                }
            })
            .collect()
    }

    /// The states to read before `apply`: (table, partition, key).
    fn needed(&self) -> Vec<(&'static str, i64, String)> {
        self.inner
            .needed()
            .iter()
            .map(|(table, partition, key)| (table.name(), *partition, key.clone()))
            .collect()
    }

    /// The stored forms of `needed()`, in its order (None: not stored).
    fn load(&mut self, stored: Vec<Option<PyBackedBytes>>) {
        self.inner
            .load(stored.iter().map(|value| value.as_deref()).collect());
    }

    /// Apply the queued events: (record number, "accepted" | "duplicate" | "anomaly", or a
    /// RuntimeError for a record whose state could not be read).
    fn apply(&mut self, py: Python<'_>) -> PyResult<Vec<(usize, Py<PyAny>)>> {
        let applied = panic::catch_unwind(AssertUnwindSafe(|| self.inner.apply()))
            .map_err(|_| PyRuntimeError::new_err("the core failed to apply a batch"))?;
        applied
            .into_iter()
            .map(|(record, outcome)| {
                let outcome = match outcome {
                    Ok(outcome) => PyString::intern(py, outcome.name()).into_any().unbind(),
                    Err(reason) => PyRuntimeError::new_err(reason).into_value(py).into_any(),
                };
                Ok((record, outcome))
            })
            .collect()
    }

    /// The (table, partition)s whose windows `settle` needs.
    fn partitions(&self) -> Vec<(&'static str, i64)> {
        self.inner
            .partitions()
            .into_iter()
            .map(|(table, partition)| (table.name(), partition))
            .collect()
    }

    /// Settle the batch: each changed state's stored form (table, partition, key, value,
    /// whether it was stored before), what the changed states send their accounts (partition,
    /// account_id, source, version, observations), and the states that failed (their record
    /// numbers, why). `windows`: by (table, partition), as `partitions()` names them.
    #[allow(clippy::type_complexity)]
    fn settle<'py>(
        &mut self,
        py: Python<'py>,
        rules: &Rules,
        windows: Windows<'py>,
    ) -> PyResult<(
        Vec<(
            &'static str,
            i64,
            String,
            Bound<'py, pyo3::types::PyBytes>,
            bool,
        )>,
        Vec<(i64, String, String, i64, Bound<'py, PyTuple>)>,
        Vec<(Vec<usize>, String)>,
    )> {
        let mut windows = windows;
        let mut by_place = windows_map(&mut windows)?;
        let settled = panic::catch_unwind(AssertUnwindSafe(|| {
            self.inner.settle(&rules.inner, &mut by_place)
        }))
        .map_err(|_| PyRuntimeError::new_err("the core failed to settle a batch"))?;
        let writes = settled
            .writes
            .into_iter()
            .map(|((table, partition, key), value, existed)| {
                (
                    table.name(),
                    partition,
                    key,
                    pyo3::types::PyBytes::new(py, &value),
                    existed,
                )
            })
            .collect();
        let updates = settled
            .updates
            .into_iter()
            .map(|(partition, update)| {
                let observations = update
                    .observations
                    .iter()
                    .map(|observation| observation_tuple(py, observation))
                    .collect::<PyResult<Vec<_>>>()?;
                Ok((
                    partition,
                    update.account_id,
                    update.source,
                    update.version,
                    PyTuple::new(py, observations)?,
                ))
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok((writes, updates, settled.failures))
    }
}

/// Fold stored states' changes into a table's windows: (before, after) stored forms, None
/// where there was none. Returns why any could not be read (those are skipped).
#[pyfunction]
#[pyo3(signature = (windows, table, changes, rules, totals = true))]
fn fold_stored(
    mut windows: PyRefMut<'_, PyPartitionWindows>,
    table: &str,
    changes: Vec<(Option<PyBackedBytes>, Option<PyBackedBytes>)>,
    rules: &Rules,
    totals: bool,
) -> PyResult<Vec<String>> {
    let table = table_of(table)?;
    let borrowed: Vec<StoredChange<'_>> = changes
        .iter()
        .map(|(before, after)| (before.as_deref(), after.as_deref()))
        .collect();
    Ok(state::fold_stored(
        table,
        &borrowed,
        &rules.inner,
        windows.inner_mut(),
        totals,
    ))
}

/// Whether a stored ticket state or survey slot may be forgotten: its table's retention has
/// passed `horizon` (an unreadable one may not).
#[pyfunction]
fn forgettable(table: &str, stored: &[u8], horizon: f64) -> PyResult<bool> {
    let table = table_of(table)?;
    Ok(State::read(table, stored).is_ok_and(|state| state.is_forgettable(horizon)))
}

/// The 64-bit digest a state keeps of an event id.
#[pyfunction]
fn event_digest(event_id: &str) -> i64 {
    tickets::event_digest(event_id)
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Rules>()?;
    module.add_class::<StateBatch>()?;
    module.add_function(wrap_pyfunction!(fold_stored, module)?)?;
    module.add_function(wrap_pyfunction!(forgettable, module)?)?;
    module.add_function(wrap_pyfunction!(event_digest, module)?)?;
    Ok(())
}

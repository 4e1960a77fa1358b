//! The accounts' evaluation as Python will reach it: an `AccountBook` holds what an evaluation
//! reads of each account of the partitions a worker owns (fed with their stored states), and
//! evaluates a partition in one call. The worker does not use it yet (stream/accounts.py's
//! runs); tests/test_accounts_core.py holds the two to the same numbers.

use std::collections::{BTreeMap, HashMap};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use crate::account_health::{DRIVERS, FACTORS, Weights};
use crate::accounts::{self, AccountState, AccountView, ExperienceRules, Totals};

#[pyclass(module = "stream._core")]
#[derive(Default)]
pub struct AccountBook {
    /// Per partition, by account id (in id order, so that an evaluation's records are too).
    partitions: HashMap<i64, BTreeMap<String, AccountView>>,
}

#[pymethods]
impl AccountBook {
    #[new]
    fn new() -> Self {
        AccountBook::default()
    }

    /// The account's view from its stored state (None: forgotten); a ValueError, and no
    /// change, for a state that cannot be read.
    fn put(&mut self, partition: i64, account_id: String, stored: Option<&[u8]>) -> PyResult<()> {
        let accounts = self.partitions.entry(partition).or_default();
        let Some(stored) = stored else {
            accounts.remove(&account_id);
            return Ok(());
        };
        let view = AccountState::read(stored).and_then(|state| AccountView::of(&state));
        let view = view.map_err(|error| PyValueError::new_err(error.0))?;
        accounts.insert(account_id, view);
        Ok(())
    }

    fn drop(&mut self, partition: i64) {
        self.partitions.remove(&partition);
    }

    /// How many accounts it holds of `partition`.
    fn accounts(&self, partition: i64) -> usize {
        self.partitions.get(&partition).map_or(0, BTreeMap::len)
    }

    fn __len__(&self) -> usize {
        self.partitions.values().map(BTreeMap::len).sum()
    }

    /// Evaluate a partition's accounts at `as_of` for the account windows of
    /// `windows_seconds`: the totals (Python's Totals.to_json, as JSON bytes) and, for each
    /// account with a subscription event, in account id order, (account_id, score or None,
    /// band, factors, drivers, MRR at as_of in millionths): what health_values publishes.
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        partition: i64,
        as_of: f64,
        windows_seconds: Vec<f64>,
        lookback: f64,
        weights: HashMap<String, f64>,
    ) -> PyResult<(Bound<'py, PyBytes>, Vec<Bound<'py, PyTuple>>)> {
        let rules = ExperienceRules {
            lookback,
            weights: Weights::from_named(weights.iter().map(|(name, w)| (name.as_str(), *w))),
        };
        let factor_names = FACTORS.map(|name| PyString::intern(py, name));
        let driver_names = DRIVERS.map(|name| PyString::intern(py, name));
        let mut totals = Totals::new(windows_seconds.len());
        let mut records = Vec::new();
        for (account_id, account) in self.partitions.get(&partition).into_iter().flatten() {
            let current = accounts::evaluate(account, as_of, &windows_seconds, &rules, &mut totals);
            if !account.subscribed {
                continue;
            }
            let factors = PyDict::new(py);
            for (name, factor) in factor_names.iter().zip(current.factors) {
                if let Some(value) = factor {
                    factors.set_item(name, value)?;
                }
            }
            let drivers = PyDict::new(py);
            for (name, exposed) in driver_names.iter().zip(current.drivers) {
                drivers.set_item(name, exposed)?;
            }
            let record = (
                account_id,
                current.score,
                PyString::intern(py, current.band.name()),
                factors,
                drivers,
                account.line.mrr_at(as_of),
            );
            records.push(record.into_pyobject(py)?);
        }
        Ok((PyBytes::new(py, &totals.to_json()), records))
    }
}

/// Whether a stored account may be forgotten (7.2): not paying at `now`, and no event nor
/// observation newer than `horizon` (an unreadable one may not).
#[pyfunction]
fn account_forgettable(stored: &[u8], horizon: f64, now: f64) -> bool {
    AccountState::read(stored).is_ok_and(|state| state.is_forgettable(horizon, now))
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<AccountBook>()?;
    module.add_function(wrap_pyfunction!(account_forgettable, module)?)
}

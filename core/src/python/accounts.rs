//! The accounts' evaluation as Python reaches it: an `AccountBook` holds what an evaluation
//! reads of each account of the partitions a worker owns (fed with their stored states), and
//! evaluates a partition's accounts in a few calls. The layout of the totals (their fields,
//! drivers and bands) goes to Python too, which reads the totals on the merging side.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use crate::account_health::{BANDS, DRIVERS, FACTORS, Weights};
use crate::accounts::{self, AccountState, AccountView, ExperienceRules, Totals};

type Accounts = BTreeMap<Arc<str>, Arc<AccountView>>;

/// What an evaluation is for: the account windows (seconds), CX_EXPERIENCE_LOOKBACK and
/// CX_HEALTH_WEIGHTS (a factor not named weighs 1). Made once, used at every instant.
#[pyclass(frozen, module = "stream._core")]
pub struct AccountRules {
    windows: Vec<f64>,
    experience: ExperienceRules,
}

#[pymethods]
impl AccountRules {
    #[new]
    fn new(windows_seconds: Vec<f64>, lookback: f64, weights: HashMap<String, f64>) -> Self {
        let named = weights
            .iter()
            .map(|(name, weight)| (name.as_str(), *weight));
        AccountRules {
            windows: windows_seconds,
            experience: ExperienceRules {
                lookback,
                weights: Weights::from_named(named),
            },
        }
    }
}

#[pyclass(module = "stream._core")]
#[derive(Default)]
pub struct AccountBook {
    /// Per partition, by account id (in id order, so that an evaluation's records are too).
    /// Shared, so that a snapshot of a partition costs a reference per account.
    partitions: HashMap<i64, Accounts>,
}

#[pymethods]
impl AccountBook {
    #[new]
    fn new() -> Self {
        AccountBook::default()
    }

    /// The account's view from its stored state (None: forgotten); a ValueError, and no
    /// change, for a state that cannot be read.
    fn put(&mut self, partition: i64, account_id: &str, stored: Option<&[u8]>) -> PyResult<()> {
        let accounts = self.partitions.entry(partition).or_default();
        let Some(stored) = stored else {
            accounts.remove(account_id);
            return Ok(());
        };
        let view = AccountState::read(stored).and_then(|state| AccountView::of(&state));
        let view = view.map_err(|error| PyValueError::new_err(error.0))?;
        accounts.insert(account_id.into(), Arc::new(view));
        Ok(())
    }

    fn drop(&mut self, partition: i64) {
        self.partitions.remove(&partition);
    }

    /// A partition's accounts as they are now, unchanged by later puts: an evaluation in
    /// steps, between which batches change the book, sees one set of accounts.
    fn accounts(&self, partition: i64) -> PartitionAccounts {
        let accounts = self.partitions.get(&partition).into_iter().flatten();
        PartitionAccounts {
            accounts: accounts
                .map(|(id, view)| (Arc::clone(id), Arc::clone(view)))
                .collect(),
        }
    }
}

type Evaluation<'py> = (Bound<'py, PyBytes>, Vec<Bound<'py, PyTuple>>);

/// A snapshot of a partition's accounts, in account id order.
#[pyclass(frozen, module = "stream._core")]
pub struct PartitionAccounts {
    accounts: Vec<(Arc<str>, Arc<AccountView>)>,
}

#[pymethods]
impl PartitionAccounts {
    fn __len__(&self) -> usize {
        self.accounts.len()
    }

    /// Evaluate the accounts [start, stop) at `as_of`: their totals (Python's Totals.to_json,
    /// as JSON bytes: the steps' totals add up to the partition's) and, for each account with
    /// a subscription event, (account_id, score or None, band, factors, drivers, MRR at as_of
    /// in millionths): what health_values publishes.
    #[pyo3(signature = (as_of, rules, start = 0, stop = None))]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        as_of: f64,
        rules: &AccountRules,
        start: usize,
        stop: Option<usize>,
    ) -> PyResult<Evaluation<'py>> {
        let (windows, experience) = (&rules.windows, &rules.experience);
        let factor_names = FACTORS.map(|name| PyString::intern(py, name));
        let driver_names = DRIVERS.map(|name| PyString::intern(py, name));
        let stop = stop.unwrap_or(usize::MAX).min(self.accounts.len());
        let step = self.accounts.get(start..stop).unwrap_or_default();
        let mut totals = Totals::new(windows.len());
        let mut records = Vec::new();
        for (account_id, account) in step {
            let current = accounts::evaluate(account, as_of, windows, experience, &mut totals);
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
                &**account_id,
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
    let py = module.py();
    module.add("ACCOUNT_FIELDS", PyTuple::new(py, accounts::FIELDS)?)?;
    module.add("DRIVERS", PyTuple::new(py, DRIVERS)?)?;
    module.add("FACTORS", PyTuple::new(py, FACTORS)?)?;
    module.add("BANDS", PyTuple::new(py, BANDS)?)?;
    module.add_class::<AccountRules>()?;
    module.add_class::<AccountBook>()?;
    module.add_class::<PartitionAccounts>()?;
    module.add_function(wrap_pyfunction!(account_forgettable, module)?)
}

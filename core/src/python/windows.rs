//! The windows as Python sees them: `PartitionWindows` takes a batch's state changes in one
//! call (`fold`), and `partials_messages` writes an input partition's changed series as
//! cx-partials messages.

use std::collections::BTreeSet;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PySequence, PyString, PyTuple};

use crate::partials::{self, Partial};
use crate::windows::{self, DIMENSIONS, Kind, Observation, PartitionWindows, SeriesKey, Spec};

#[pyclass(module = "stream._core", name = "PartitionWindows")]
pub struct PyPartitionWindows {
    inner: PartitionWindows,
}

/// Window specs from Python's WindowSpec objects (anything with `name` and `seconds`).
fn specs_of(specs: &Bound<'_, PyAny>) -> PyResult<Vec<Spec>> {
    specs
        .try_iter()?
        .map(|spec| {
            let spec = spec?;
            Ok(Spec {
                name: spec.getattr("name")?.extract()?,
                seconds: spec.getattr("seconds")?.extract()?,
            })
        })
        .collect()
}

fn observation_of(
    windows: &mut PartitionWindows,
    item: &Bound<'_, PyAny>,
) -> PyResult<Observation> {
    let fields = item.cast::<PyTuple>()?;
    let kind_item = fields.get_borrowed_item(0)?;
    let kind_name = kind_item.cast::<PyString>()?;
    let kind_name = kind_name.to_str()?;
    let kind = Kind::from_name(kind_name)
        .ok_or_else(|| PyValueError::new_err(format!("not an observation kind: {kind_name}")))?;
    let segment = fields.get_borrowed_item(2)?;
    let segment = segment.cast::<PyTuple>()?;
    let mut label = |index: usize| -> PyResult<_> {
        let item = segment.get_borrowed_item(index)?;
        let text = item.cast::<PyString>()?;
        Ok(windows.intern(text.to_str()?))
    };
    let segment = [label(0)?, label(1)?, label(2)?];
    Ok(Observation {
        kind,
        at: fields.get_borrowed_item(1)?.extract()?,
        segment,
        value: fields.get_borrowed_item(3)?.extract()?,
        flag: fields.get_borrowed_item(4)?.is_truthy()?,
        business: fields.get_borrowed_item(5)?.extract()?,
        reopened: fields.get_borrowed_item(6)?.is_truthy()?,
    })
}

impl PyPartitionWindows {
    pub(crate) fn inner_mut(&mut self) -> &mut PartitionWindows {
        &mut self.inner
    }
}

fn key_of(windows: &mut PartitionWindows, (dimension, value): (&str, &str)) -> PyResult<SeriesKey> {
    let dimension = DIMENSIONS
        .iter()
        .position(|known| *known == dimension)
        .ok_or_else(|| PyValueError::new_err(format!("not a dimension: {dimension}")))?;
    Ok((dimension as u8, windows.intern(value)))
}

fn key_tuple<'py>(
    py: Python<'py>,
    (dimension, value): &SeriesKey,
) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, [DIMENSIONS[usize::from(*dimension)], &**value])
}

#[pymethods]
impl PyPartitionWindows {
    #[new]
    fn new(specs: &Bound<'_, PyAny>, now: f64) -> PyResult<Self> {
        Ok(PyPartitionWindows {
            inner: PartitionWindows::new(specs_of(specs)?, now),
        })
    }

    #[getter]
    fn now(&self) -> f64 {
        self.inner.now
    }

    /// Replace, for each changed state, its observations `before` by those `after`:
    /// a sequence of (before, after) pairs of stream.tickets.Observation sequences. With
    /// `totals` false (a rebuild) only the buckets change, until `finish_rebuild`.
    #[pyo3(signature = (changes, totals = true))]
    fn fold(&mut self, changes: &Bound<'_, PyAny>, totals: bool) -> PyResult<()> {
        let windows = &mut self.inner;
        let mut pairs = Vec::new();
        for change in changes.try_iter()? {
            let change = change?;
            let change = change.cast::<PyTuple>()?;
            let mut side = |index: usize| -> PyResult<Vec<Observation>> {
                let observations = change.get_borrowed_item(index)?;
                let observations = observations.cast::<PySequence>()?;
                observations
                    .try_iter()?
                    .map(|item| observation_of(windows, &item?))
                    .collect()
            };
            pairs.push((side(0)?, side(1)?));
        }
        self.inner.fold(&pairs, totals);
        Ok(())
    }

    /// After a rebuild's folds: sum each window's total from its buckets, and pack them all.
    fn finish_rebuild(&mut self) {
        self.inner.sum_buckets();
        self.inner.pack(false);
    }

    /// Move to wall-clock `now`: expire what fell out, count what came due, pack idle buckets.
    fn advance(&mut self, now: f64) {
        self.inner.advance(now);
    }

    #[pyo3(signature = (idle_only = true))]
    fn pack(&mut self, idle_only: bool) {
        self.inner.pack(idle_only);
    }

    /// The series changed since the last call, as (dimension, value) pairs.
    fn take_changed<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        let changed = std::mem::take(&mut self.inner.changed);
        changed.iter().map(|key| key_tuple(py, key)).collect()
    }

    /// Every series held, as (dimension, value) pairs.
    fn series_keys<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        self.inner.keys().map(|key| key_tuple(py, key)).collect()
    }

    /// (states referring to it, its tickets open, buckets held per window) of a series, or
    /// None when it is not held.
    fn series(&mut self, key: (String, String)) -> PyResult<Option<(i64, i64, Vec<usize>)>> {
        let key = key_of(&mut self.inner, (&key.0, &key.1))?;
        self.inner.flush(true);
        Ok(self.inner.series.get(&key).map(|series| {
            let buckets = series
                .windows
                .iter()
                .map(|window| window.buckets())
                .collect();
            (series.references, series.tickets_open, buckets)
        }))
    }

    /// The store entries (None: delete) that bring the stored checkpoint up to date, with
    /// `derived_with` (what else the windows depend on) and `entries` (states they add up).
    fn checkpoint_entries<'py>(
        &mut self,
        py: Python<'py>,
        derived_with: &str,
        entries: i64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (key, value) in self.inner.checkpoint_entries(derived_with, entries) {
            out.set_item(
                PyBytes::new(py, &key),
                value.map(|value| PyBytes::new(py, &value)),
            )?;
        }
        Ok(out)
    }

    /// Have the next checkpoint delete these stored entries (an earlier checkpoint's).
    fn supersede(&mut self, keys: Vec<Vec<u8>>) {
        self.inner.supersede(keys);
    }

    /// The windows a checkpoint's (key, value) entries hold, moved to `now`, and how many
    /// states they add up; None when the checkpoint is missing, unreadable or not made with
    /// `derived_with`.
    #[staticmethod]
    fn restore(
        specs: &Bound<'_, PyAny>,
        now: f64,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        derived_with: &str,
    ) -> PyResult<Option<(Self, i64)>> {
        let restored = PartitionWindows::restore(specs_of(specs)?, now, &entries, derived_with);
        Ok(restored.map(|(inner, states)| (PyPartitionWindows { inner }, states)))
    }
}

/// The cx-partials messages of one input partition (its windows, one per state table): those
/// of each dimension's series changed since the last call, keys sorted. With `complete` (a
/// full republish), every series of every dimension, each dimension's last message marked
/// complete. Returns [(dimension, message)].
#[pyfunction]
fn partials_messages<'py>(
    py: Python<'py>,
    parts: Vec<PyRefMut<'py, PyPartitionWindows>>,
    partition: i64,
    complete: bool,
) -> Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let mut parts = parts;
    let mut inner: Vec<&mut PartitionWindows> =
        parts.iter_mut().map(|part| &mut part.inner).collect();
    let mut keys: BTreeSet<(u8, Arc<str>)> = BTreeSet::new();
    for part in &mut inner {
        keys.extend(part.changed.drain());
        if complete {
            keys.extend(part.series.keys().cloned());
        }
    }
    let mut messages = Vec::new();
    for (index, dimension) in DIMENSIONS.iter().enumerate() {
        let group: Vec<Partial> = keys
            .iter()
            .filter(|key| usize::from(key.0) == index)
            .map(|key| partials::series_partial(&mut inner, key, partition))
            .collect();
        let complete = complete.then_some((*dimension, partition));
        for message in partials::messages(&group, complete) {
            messages.push((
                PyBytes::new(py, dimension.as_bytes()),
                PyBytes::new(py, &message),
            ));
        }
    }
    messages
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<PyPartitionWindows>()?;
    module.add_function(wrap_pyfunction!(partials_messages, module)?)?;
    module.add("META_KEY", PyBytes::new(module.py(), windows::META_KEY))?;
    Ok(())
}

//! The windows and tallies as Python sees them: `PartitionWindows` takes a batch's state
//! changes in one call (`fold`), `series_partial` gives a series' totals as a partial's JSON,
//! and `Tally` is what the merge stage adds partials up in.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PySequence, PyString, PyTuple};

use crate::tally::{self, Bin, COUNT_NAMES, SKETCH_NAMES, Tally, ZERO_KEY};
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

/// A series' totals over the parts of one input partition (its state tables) as a partial's
/// JSON: {"tickets_open": n, "windows": {name: tally}}; None when no part holds it.
#[pyfunction]
fn series_partial<'py>(
    py: Python<'py>,
    parts: Vec<PyRefMut<'py, PyPartitionWindows>>,
    key: (String, String),
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let mut parts = parts;
    let Some(first) = parts.first_mut() else {
        return Ok(None);
    };
    let key = key_of(&mut first.inner, (&key.0, &key.1))?;
    let mut inner: Vec<&mut PartitionWindows> =
        parts.iter_mut().map(|part| &mut part.inner).collect();
    let Some((tickets_open, totals)) = windows::series_totals(&mut inner, &key) else {
        return Ok(None);
    };
    let by_window = PyDict::new(py);
    for (spec, total) in inner[0].specs.iter().zip(&totals) {
        by_window.set_item(&spec.name, tally_json(py, total)?)?;
    }
    let partial = PyDict::new(py);
    partial.set_item("tickets_open", tickets_open)?;
    partial.set_item("windows", by_window)?;
    Ok(Some(partial))
}

/// {"counts": {name: amount}, "sketches": {name: [zeros, [[key, count], ...]]}}, without
/// zero counts and empty sketches.
fn tally_json<'py>(py: Python<'py>, tally: &Tally) -> PyResult<Bound<'py, PyDict>> {
    let sketches = PyDict::new(py);
    for (index, name) in SKETCH_NAMES.iter().enumerate() {
        let bins = tally.sketch(index as u8);
        if bins.is_empty() {
            continue;
        }
        let zeros = bins
            .first()
            .filter(|bin| bin.key == ZERO_KEY)
            .map_or(0, |bin| bin.count);
        let pairs = PyList::empty(py);
        for bin in bins.iter().filter(|bin| bin.key != ZERO_KEY) {
            pairs.append(PyTuple::new(py, [i64::from(bin.key), bin.count])?)?;
        }
        sketches.set_item(name, (zeros, pairs))?;
    }
    let json = PyDict::new(py);
    json.set_item("counts", counts_json(py, tally)?)?;
    json.set_item("sketches", sketches)?;
    Ok(json)
}

fn counts_json<'py>(py: Python<'py>, tally: &Tally) -> PyResult<Bound<'py, PyDict>> {
    let counts = PyDict::new(py);
    for (name, amount) in COUNT_NAMES.iter().zip(tally.counts) {
        if amount != 0.0 {
            counts.set_item(name, amount)?;
        }
    }
    Ok(counts)
}

/// What the merge stage adds the partials of a series up in, and reads metrics from.
#[pyclass(module = "stream._core", name = "Tally")]
#[derive(Default)]
pub struct PyTally {
    inner: Tally,
}

/// The two items of a JSON pair: a list, as orjson reads it, or a tuple.
fn pair_of<'py>(pair: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let items = match pair.cast::<PyList>() {
        Ok(list) if list.len() == 2 => (list.get_item(0)?, list.get_item(1)?),
        _ => pair.extract()?,
    };
    Ok(items)
}

fn unknown(what: &str, name: &str) -> PyErr {
    PyValueError::new_err(format!("not a tally {what}: {name}"))
}

#[pymethods]
impl PyTally {
    #[new]
    fn new() -> Self {
        PyTally::default()
    }

    #[staticmethod]
    fn from_json(data: &Bound<'_, PyDict>) -> PyResult<Self> {
        let mut tally = PyTally::default();
        tally.add_json(data)?;
        Ok(tally)
    }

    /// Add a tally in its partial JSON form (series_partial's, after a round trip).
    fn add_json(&mut self, data: &Bound<'_, PyDict>) -> PyResult<()> {
        let mut added = Tally::default();
        if let Some(counts) = data.get_item("counts")? {
            for (name, amount) in counts.cast::<PyDict>()?.iter() {
                let name = name.cast::<PyString>()?.to_str()?.to_owned();
                let index = tally::count_index(&name).ok_or_else(|| unknown("count", &name))?;
                added.add_count(index, amount.extract()?);
            }
        }
        if let Some(sketches) = data.get_item("sketches")? {
            let mut bins = Vec::new();
            for (name, value) in sketches.cast::<PyDict>()?.iter() {
                let name = name.cast::<PyString>()?.to_str()?.to_owned();
                let index = tally::sketch_index(&name).ok_or_else(|| unknown("sketch", &name))?;
                let sketch = index as u8;
                let (zeros, pairs) = pair_of(&value)?;
                bins.push(Bin {
                    sketch,
                    key: ZERO_KEY,
                    count: zeros.extract()?,
                });
                // partials carry hundreds of buckets per sketch: read straight off the list
                let pairs = pairs.cast::<PyList>()?;
                bins.reserve(pairs.len());
                for pair in pairs.iter() {
                    let (key, count) = pair_of(&pair)?;
                    bins.push(Bin {
                        sketch,
                        key: key.extract()?,
                        count: count.extract()?,
                    });
                }
            }
            added.set_bins(bins);
        }
        self.inner.merge(&added, 1);
        Ok(())
    }

    /// A count, rounded (sums of retracted floats may be a hair off a whole number).
    fn count(&self, name: &str) -> PyResult<i64> {
        let index = tally::count_index(name).ok_or_else(|| unknown("count", name))?;
        Ok(self.inner.count(index).round_ties_even() as i64)
    }

    /// Every count and sum that is not 0, by name.
    #[getter]
    fn counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        counts_json(py, &self.inner)
    }

    /// The tally in its partial JSON form.
    fn to_json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        tally_json(py, &self.inner)
    }

    /// For each q, the named sketch's value at rank floor(q * (n - 1)); None when empty.
    fn quantiles(&self, name: &str, qs: Vec<f64>) -> PyResult<Vec<Option<f64>>> {
        let index = tally::sketch_index(name).ok_or_else(|| unknown("sketch", name))?;
        Ok(self.inner.quantiles(index as u8, &qs))
    }
}

#[pyfunction]
fn nps_category(score: i64) -> &'static str {
    windows::nps_category(score)
}

#[pyfunction]
fn is_csat_satisfied(score: i64) -> bool {
    windows::is_csat_satisfied(score)
}

#[pyfunction]
fn is_ces_low_effort(score: i64) -> bool {
    windows::is_ces_low_effort(score)
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<PyPartitionWindows>()?;
    module.add_class::<PyTally>()?;
    module.add_function(wrap_pyfunction!(series_partial, module)?)?;
    module.add_function(wrap_pyfunction!(nps_category, module)?)?;
    module.add_function(wrap_pyfunction!(is_csat_satisfied, module)?)?;
    module.add_function(wrap_pyfunction!(is_ces_low_effort, module)?)?;
    module.add("META_KEY", PyBytes::new(module.py(), windows::META_KEY))?;
    Ok(())
}

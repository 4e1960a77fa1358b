//! The merge stage's bindings: a run of cx-partials messages in, the table's writes out; the
//! /metrics page and the cx-metrics snapshots as bytes.

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict};

use crate::merge::Merge;

/// The table's writes by cx-partials partition, and the messages that could not be read.
type Applied<'py> = (Bound<'py, PyDict>, Vec<(usize, String)>);

#[pyclass(module = "stream._core", name = "Merge")]
pub struct PyMerge {
    inner: Merge,
}

#[pymethods]
impl PyMerge {
    #[new]
    #[pyo3(signature = (cap, windows, business_hours = false))]
    fn new(cap: usize, windows: Vec<String>, business_hours: bool) -> Self {
        PyMerge {
            inner: Merge::new(cap, windows, business_hours),
        }
    }

    /// (messages: [(value, cx-partials partition)]) -> ({partition: {key: value or None}},
    /// [(index of a message that could not be read, why)])
    fn apply<'py>(
        &mut self,
        py: Python<'py>,
        messages: Vec<(PyBackedBytes, i64)>,
    ) -> PyResult<Applied<'py>> {
        let messages: Vec<(&[u8], i64)> = messages
            .iter()
            .map(|(bytes, via)| (bytes.as_ref(), *via))
            .collect();
        let (writes, unreadable) = self.inner.apply(&messages);
        let by_partition = PyDict::new(py);
        for (via, entries) in writes {
            let table = PyDict::new(py);
            for (key, value) in entries {
                table.set_item(PyBytes::new(py, &key), value.map(|v| PyBytes::new(py, &v)))?;
            }
            by_partition.set_item(via, table)?;
        }
        let unreadable = unreadable
            .into_iter()
            .map(|(index, why)| (index, why.0))
            .collect();
        Ok((by_partition, unreadable))
    }

    /// Replace every entry with the stored values (after a recovery); returns how many could
    /// not be read.
    fn load(&mut self, stored: Vec<PyBackedBytes>) -> usize {
        self.inner.load(stored.iter().map(|bytes| bytes.as_ref()))
    }

    fn row_count(&mut self, owned: Vec<i64>) -> usize {
        self.inner.row_count(&owned)
    }

    fn exposition<'py>(&mut self, py: Python<'py>, owned: Vec<i64>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.exposition(&owned).as_bytes())
    }

    /// [(cx-metrics key, value, or None for a tombstone)] to send.
    fn snapshots<'py>(
        &mut self,
        py: Python<'py>,
        owned: Vec<i64>,
        as_of: &str,
    ) -> Vec<(Bound<'py, PyBytes>, Option<Bound<'py, PyBytes>>)> {
        self.inner
            .snapshots(&owned, as_of)
            .into_iter()
            .map(|(key, value)| {
                let value = value.map(|v| PyBytes::new(py, &v));
                (PyBytes::new(py, key.as_bytes()), value)
            })
            .collect()
    }

    #[getter]
    fn published(&self) -> usize {
        self.inner.published()
    }
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<PyMerge>()
}

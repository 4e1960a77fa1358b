//! Business time as Python's stream/business_hours.py reaches it: its Schedule checks a
//! schedule file and keeps one `OpeningHours` per schedule.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::business;

#[pyclass(frozen, module = "stream._core")]
pub struct OpeningHours {
    inner: business::OpeningHours,
}

#[pymethods]
impl OpeningHours {
    /// `intervals`: (start, end) seconds since Monday 00:00 local, ordered and not
    /// overlapping; `holidays`: local days since 1970-01-01. ValueError for a time zone the
    /// core does not know.
    #[new]
    fn new(timezone: &str, intervals: Vec<(i64, i64)>, holidays: Vec<i64>) -> PyResult<Self> {
        let inner = business::OpeningHours::new(timezone, &intervals, &holidays).map_err(
            |business::UnknownZone(zone)| {
                PyValueError::new_err(format!("{zone:?} is not a known IANA time zone"))
            },
        )?;
        Ok(OpeningHours { inner })
    }

    /// Seconds of [start, end) (POSIX timestamps) inside opening hours; 0 if end <= start.
    fn business_seconds(&self, start: f64, end: f64) -> PyResult<f64> {
        self.inner.business_seconds(start, end).ok_or_else(|| {
            PyValueError::new_err(format!(
                "business time needs finite timestamps, got {start:?}, {end:?}"
            ))
        })
    }
}

impl OpeningHours {
    pub(crate) fn inner(&self) -> &business::OpeningHours {
        &self.inner
    }
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<OpeningHours>()
}

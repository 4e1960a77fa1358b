//! The metric math for Python's account figures (stats.py re-exports it).

use pyo3::prelude::*;

use crate::stats;

#[pyfunction]
fn ratio(part: f64, whole: f64) -> Option<f64> {
    stats::ratio(part, whole)
}

#[pyfunction]
fn nps(promoters: i64, passives: i64, detractors: i64) -> Option<f64> {
    stats::nps(promoters, passives, detractors)
}

#[pyfunction]
fn nps_margin_of_error(promoters: i64, passives: i64, detractors: i64) -> Option<f64> {
    stats::nps_margin_of_error(promoters, passives, detractors)
}

#[pyfunction]
#[pyo3(signature = (successes, trials, z = stats::Z_95))]
fn wilson_interval(successes: f64, trials: f64, z: f64) -> Option<(f64, f64)> {
    stats::wilson_interval(successes, trials, z)
}

#[pyfunction]
#[pyo3(signature = (successes1, trials1, successes2, trials2, z = stats::Z_95))]
fn newcombe_interval(
    successes1: f64,
    trials1: f64,
    successes2: f64,
    trials2: f64,
    z: f64,
) -> Option<(f64, f64, f64)> {
    stats::newcombe_interval(successes1, trials1, successes2, trials2, z)
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(ratio, module)?)?;
    module.add_function(wrap_pyfunction!(nps, module)?)?;
    module.add_function(wrap_pyfunction!(nps_margin_of_error, module)?)?;
    module.add_function(wrap_pyfunction!(wilson_interval, module)?)?;
    module.add_function(wrap_pyfunction!(newcombe_interval, module)?)
}

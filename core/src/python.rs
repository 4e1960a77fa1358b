//! The Python module `stream._core`: one call per batch of records (a call per record would
//! cost as much as the work it hands over), and the event types Python's pipeline reads.

use std::panic;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyString, PyTuple};

use crate::decode::{self, Body, Event, Invalid, Topic};

mod accounts;
mod business;
mod merge;
mod state;
mod stats;
mod windows;

#[pyclass(frozen, get_all, module = "stream._core")]
pub struct TicketOpened {
    event_id: Py<PyString>,
    ticket_id: Py<PyString>,
    occurred_at: f64,
    segment: Py<PyAny>,
    account_id: Option<Py<PyString>>,
}

#[pyclass(frozen, get_all, module = "stream._core")]
pub struct TicketReplied {
    event_id: Py<PyString>,
    ticket_id: Py<PyString>,
    occurred_at: f64,
    author: Py<PyString>,
    public: bool,
}

#[pyclass(frozen, get_all, module = "stream._core")]
pub struct TicketResolved {
    event_id: Py<PyString>,
    ticket_id: Py<PyString>,
    occurred_at: f64,
}

#[pyclass(frozen, get_all, module = "stream._core")]
pub struct TicketReopened {
    event_id: Py<PyString>,
    ticket_id: Py<PyString>,
    occurred_at: f64,
}

#[pyclass(frozen, get_all, module = "stream._core")]
pub struct SurveyAnswered {
    event_id: Py<PyString>,
    ticket_id: Option<Py<PyString>>,
    occurred_at: f64,
    survey: Py<PyString>,
    score: i64,
    segment: Py<PyAny>,
    account_id: Option<Py<PyString>>,
}

#[pyclass(frozen, get_all, module = "stream._core")]
pub struct SubscriptionUpdated {
    event_id: Py<PyString>,
    account_id: Py<PyString>,
    subscription_id: Py<PyString>,
    occurred_at: f64,
    contribution: i64,
}

/// Decode a batch of records of the input topics: for each, its event, the reason it is
/// invalid (a str), or a RuntimeError where the core failed on it (a bug, which must cost that
/// record, not the batch). `segment` is the Python type a segment is built as
/// (stream.events.Segment).
#[pyfunction]
fn decode_batch(
    py: Python<'_>,
    records: Vec<(PyBackedStr, Option<PyBackedBytes>, f64)>,
    currency: &str,
    segment: &Bound<'_, PyAny>,
) -> PyResult<Vec<Py<PyAny>>> {
    records
        .iter()
        .map(|(topic, value, record_time)| {
            match decode_record(py, topic, value.as_deref(), *record_time, currency)? {
                Ok(event) => event_object(py, event, segment),
                Err(failure) => Ok(failure),
            }
        })
        .collect()
}

/// One record decoded: its event, or what stands for its failure in Python: the reason it is
/// invalid (a str), or a RuntimeError where the core failed on it (a bug, which must cost that
/// record, not the batch). An error for a topic that is not an input topic.
pub(crate) fn decode_record(
    py: Python<'_>,
    topic: &str,
    value: Option<&[u8]>,
    record_time: f64,
    currency: &str,
) -> PyResult<Result<Event, Py<PyAny>>> {
    let topic = Topic::from_name(topic)
        .ok_or_else(|| PyValueError::new_err(format!("not an input topic: {topic}")))?;
    let decoded = panic::catch_unwind(|| decode::decode(topic, value, record_time, currency));
    Ok(match decoded {
        Ok(Ok(event)) => Ok(event),
        Ok(Err(Invalid(reason))) => Err(PyString::new(py, &reason).into_any().unbind()),
        Err(_) => {
            let error = PyRuntimeError::new_err("the core failed to decode a record");
            Err(error.into_value(py).into_any())
        }
    })
}

pub(crate) fn event_object(
    py: Python<'_>,
    event: Event,
    segment: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let text = |value: &str| PyString::new(py, value).unbind();
    let segment_of = |segment_fields: &decode::Segment| -> PyResult<Py<PyAny>> {
        let decode::Segment {
            team,
            channel,
            priority,
        } = segment_fields;
        Ok(segment.call1((team, channel, *priority))?.unbind())
    };
    let event_id = text(&event.event_id);
    let occurred_at = event.occurred_at;
    let object = match event.body {
        Body::TicketOpened {
            ticket_id,
            segment,
            account_id,
        } => Py::new(
            py,
            TicketOpened {
                event_id,
                ticket_id: text(&ticket_id),
                occurred_at,
                segment: segment_of(&segment)?,
                account_id: account_id.as_deref().map(text),
            },
        )?
        .into_any(),
        Body::TicketReplied {
            ticket_id,
            author,
            public,
        } => Py::new(
            py,
            TicketReplied {
                event_id,
                ticket_id: text(&ticket_id),
                occurred_at,
                author: PyString::intern(py, author).unbind(),
                public,
            },
        )?
        .into_any(),
        Body::TicketResolved { ticket_id } => Py::new(
            py,
            TicketResolved {
                event_id,
                ticket_id: text(&ticket_id),
                occurred_at,
            },
        )?
        .into_any(),
        Body::TicketReopened { ticket_id } => Py::new(
            py,
            TicketReopened {
                event_id,
                ticket_id: text(&ticket_id),
                occurred_at,
            },
        )?
        .into_any(),
        Body::SurveyAnswered {
            ticket_id,
            survey,
            score,
            segment,
            account_id,
        } => Py::new(
            py,
            SurveyAnswered {
                event_id,
                ticket_id: ticket_id.as_deref().map(text),
                occurred_at,
                survey: PyString::intern(py, survey).unbind(),
                score,
                segment: segment_of(&segment)?,
                account_id: account_id.as_deref().map(text),
            },
        )?
        .into_any(),
        Body::SubscriptionUpdated {
            account_id,
            subscription_id,
            contribution,
        } => Py::new(
            py,
            SubscriptionUpdated {
                event_id,
                account_id: text(&account_id),
                subscription_id: text(&subscription_id),
                occurred_at,
                contribution,
            },
        )?
        .into_any(),
    };
    Ok(object)
}

#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<TicketOpened>()?;
    module.add_class::<TicketReplied>()?;
    module.add_class::<TicketResolved>()?;
    module.add_class::<TicketReopened>()?;
    module.add_class::<SurveyAnswered>()?;
    module.add_class::<SubscriptionUpdated>()?;
    module.add_function(wrap_pyfunction!(decode_batch, module)?)?;
    module.add(
        "TOPICS",
        PyTuple::new(module.py(), Topic::ALL.map(Topic::name))?,
    )?;
    module.add("MILLIONTHS", decode::MILLIONTHS)?;
    windows::register(module)?;
    business::register(module)?;
    state::register(module)?;
    merge::register(module)?;
    stats::register(module)?;
    accounts::register(module)?;
    Ok(())
}

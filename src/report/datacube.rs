//! The request shape the datacube reports share: `POST datacube/<name>` with
//! `{"begin_date": "yyyymmdd", "end_date": "yyyymmdd"}` naming exactly one period.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use super::Refusal;
use crate::period::{Period, PeriodKind};
use crate::simulated::model::{Model, Request};
use crate::wechat::Call;

/// The call asking `path` for `period`: the body is JSON as `serde_json` writes it (the dates
/// are digits, nothing to escape), written directly, once per request.
pub fn call(path: &'static str, period: Period) -> Call {
    Call {
        asks: period,
        path,
        part: 0,
        body: format!(
            r#"{{"begin_date":"{}","end_date":"{}"}}"#,
            period.begin_date(),
            period.end_date()
        ),
    }
}

/// Simulation: the `begin_date` and `end_date` of a body, or 61500 if either is not
/// `yyyymmdd`.
pub fn dates(body: &Value) -> Result<(NaiveDate, NaiveDate), Refusal> {
    let date = |value: Option<&Value>| {
        value
            .and_then(Value::as_str)
            .filter(|text| text.len() == 8)
            .and_then(|text| NaiveDate::parse_from_str(text, "%Y%m%d").ok())
    };
    match (date(body.get("begin_date")), date(body.get("end_date"))) {
        (Some(begin), Some(end)) => Ok((begin, end)),
        _ => Err((61500, "date format error")),
    }
}

/// Simulation: the period of `kind` a datacube body names, or 61500 (not `yyyymmdd`) or 61501
/// (not exactly one aligned period).
pub fn requested(kind: PeriodKind, body: &Value) -> Result<Period, Refusal> {
    let (begin, end) = dates(body)?;
    let period = Period::containing(kind, begin);
    if period.start() != begin || period.end() != end {
        return Err((61501, "date range error"));
    }
    Ok(period)
}

/// Simulation: a datacube report's answer to `request`: the period its body names, as
/// WeChat publishes it (`answer` for it once published, `empty` before).
pub fn simulate(
    request: &Request<'_>,
    answer: impl FnOnce(&Model, Period, DateTime<Utc>) -> Value,
    empty: impl FnOnce(Period) -> Value,
) -> Result<Value, Refusal> {
    let period = requested(request.kind, request.body)?;
    request.publish(
        period,
        || answer(&request.model, period, request.now),
        || empty(period),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_names_its_period_and_the_simulation_reads_it_back() {
        let week = Period::parse_ref_date("20170306-20170312").unwrap();
        let call = call("datacube/getweanalysisappidweeklyvisittrend", week);
        assert_eq!(
            call.body,
            r#"{"begin_date":"20170306","end_date":"20170312"}"#
        );
        assert_eq!(call.endpoint(), "getweanalysisappidweeklyvisittrend");
        let body: Value = serde_json::from_str(&call.body).unwrap();
        assert_eq!(requested(PeriodKind::Weekly, &body), Ok(week));
        assert_eq!(requested(PeriodKind::Daily, &body).unwrap_err().0, 61501);
        let bad = serde_json::json!({"begin_date": "2017-03-06", "end_date": "20170312"});
        assert_eq!(requested(PeriodKind::Weekly, &bad).unwrap_err().0, 61500);
    }
}

//! Days as the `wxaapi` and `wxa/business` APIs take them: a span of whole Beijing days given
//! as Unix seconds (from 00:00 of the first day to 23:59:59 of the last), at most
//! [`MAX_DAYS`] days per call.

use chrono::{DateTime, NaiveDate, Utc};

use crate::period::{beijing_date, Period, PeriodKind};
use crate::simulated::model::Refusal;

/// The longest span one call may ask for.
pub const MAX_DAYS: usize = 30;

/// The Unix seconds of 00:00 of `first`'s day and of 23:59:59 of `last`'s day.
pub fn seconds(first: Period, last: Period) -> (i64, i64) {
    (
        first.start_instant().timestamp(),
        last.end_instant().timestamp() - 1,
    )
}

/// Consecutive daily periods, oldest first, cut into spans of at most [`MAX_DAYS`] days:
/// (first, last) of each.
pub fn spans(periods: &[Period]) -> Vec<(Period, Period)> {
    periods
        .chunks(MAX_DAYS)
        .map(|chunk| (chunk[0], chunk[chunk.len() - 1]))
        .collect()
}

/// The days of `start..=end` (Unix seconds), or `None` if they are not whole Beijing days.
pub fn days(start: i64, end: i64) -> Option<(NaiveDate, NaiveDate)> {
    let at = |seconds: i64| DateTime::<Utc>::from_timestamp(seconds, 0);
    let (first, last) = (beijing_date(at(start)?), beijing_date(at(end)?));
    let whole = Period::containing(PeriodKind::Daily, first).start_instant() == at(start)?
        && Period::containing(PeriodKind::Daily, last).end_instant() == at(end + 1)?;
    (whole && first <= last).then_some((first, last))
}

/// Simulation: the days a span asks for, refused as WeChat would: 61500 when the seconds are
/// not whole days, 61501 when the span is longer than [`MAX_DAYS`] or ends after yesterday.
pub fn requested(
    start: Option<i64>,
    end: Option<i64>,
    yesterday: NaiveDate,
) -> Result<(NaiveDate, NaiveDate), Refusal> {
    let (first, last) = start
        .zip(end)
        .and_then(|(start, end)| days(start, end))
        .ok_or((61500, "time format error"))?;
    if (last - first).num_days() >= MAX_DAYS as i64 || last > yesterday {
        return Err((61501, "date range error"));
    }
    Ok((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> Period {
        Period::parse_ref_date(text).unwrap()
    }

    #[test]
    fn a_span_is_whole_beijing_days_and_reads_back() {
        let (start, end) = seconds(day("20191029"), day("20191030"));
        // 2019-10-29 00:00 Beijing is 2019-10-28 16:00 UTC.
        assert_eq!(start, 1_572_278_400);
        assert_eq!(end, start + 2 * 86_400 - 1);
        let first = day("20191029").start();
        assert_eq!(days(start, end), Some((first, day("20191030").start())));
        assert_eq!(days(start + 1, end), None);
        let yesterday = day("20191031").start();
        assert!(requested(Some(start), Some(end), yesterday).is_ok());
        assert_eq!(
            requested(Some(start), None, yesterday).unwrap_err().0,
            61500
        );
        let long = seconds(day("20190901"), day("20191001"));
        assert_eq!(
            requested(Some(long.0), Some(long.1), yesterday)
                .unwrap_err()
                .0,
            61501
        );
    }

    #[test]
    fn consecutive_days_are_cut_into_spans_of_thirty() {
        let periods: Vec<Period> = std::iter::successors(Some(day("20240101")), |p| Some(p.next()))
            .take(65)
            .collect();
        let cut = spans(&periods);
        assert_eq!(cut.len(), 3);
        assert_eq!(cut[0], (periods[0], periods[29]));
        assert_eq!(cut[2], (periods[60], periods[64]));
    }
}

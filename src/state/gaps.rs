//! The periods no running exporter held (the exporter was down, or every attempt failed),
//! kept per app in `gaps.json` beside its held periods: what `backfill --missing` fetches.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{read, StateDir, FORMAT};
use crate::period::{Period, PeriodKind};
use crate::report::Report;

/// The periods no running exporter held, per (report, kind), oldest first: between one held
/// period and the next (the exporter was down, or every attempt failed), what
/// `backfill --missing` fetches.
pub type Gaps = BTreeMap<(Report, PeriodKind), Vec<Period>>;

/// The most gaps kept per report and kind (a year of days and then some).
pub const MAX_GAPS: usize = 400;

/// Records in `gaps` the periods of (`report`, `kind`) between `previous` and `held`, if
/// any; `true` if there were.
pub fn record_gap(
    gaps: &mut Gaps,
    (report, kind): (Report, PeriodKind),
    previous: Period,
    held: Period,
) -> bool {
    if held <= previous.next() {
        return false;
    }
    let list = gaps.entry((report, kind)).or_default();
    let mut period = previous.next();
    let mut missed = Vec::new();
    while period < held {
        missed.push(period);
        if missed.len() > MAX_GAPS {
            missed.remove(0);
        }
        period = period.next();
    }
    list.extend(missed);
    list.sort();
    list.dedup();
    if list.len() > MAX_GAPS {
        list.drain(..list.len() - MAX_GAPS);
    }
    true
}

#[derive(Serialize, Deserialize)]
struct GapsFile {
    format: u32,
    appid: String,
    gaps: Vec<GapFile>,
}

#[derive(Serialize, Deserialize)]
struct GapFile {
    report: String,
    kind: PeriodKind,
    periods: Vec<String>,
}

/// The gaps kept for `appid` under the storage `root`, read without its lock (`backfill`
/// reads beside a running exporter); a file that does not read gives none, with a warning.
pub fn read_gaps(root: &Path, appid: &str) -> Gaps {
    let path = root.join("apps").join(appid).join("gaps.json");
    let mut gaps = Gaps::new();
    let Some(text) = read(&path) else {
        return gaps;
    };
    let file = match serde_json::from_slice::<GapsFile>(&text) {
        Ok(file) if file.format <= FORMAT && file.appid == appid => file,
        Ok(_) => {
            tracing::warn!(file = %path.display(), "state file of another app or a later version ignored");
            return gaps;
        }
        Err(error) => {
            tracing::warn!(file = %path.display(), problem = %error, "state file ignored");
            return gaps;
        }
    };
    for entry in file.gaps {
        let Some(report) = Report::by_name(&entry.report) else {
            continue;
        };
        let periods = entry
            .periods
            .iter()
            .filter_map(|text| Period::parse_ref_date(text))
            .filter(|period| period.kind() == entry.kind)
            .take(MAX_GAPS)
            .collect();
        gaps.insert((report, entry.kind), periods);
    }
    gaps
}

impl StateDir {
    /// Keeps the periods no running exporter held of `appid`.
    pub fn save_gaps(&self, appid: &str, gaps: &Gaps) {
        let file = GapsFile {
            format: FORMAT,
            appid: appid.to_string(),
            gaps: gaps
                .iter()
                .map(|((report, kind), periods)| GapFile {
                    report: report.name().to_string(),
                    kind: *kind,
                    periods: periods.iter().map(|period| period.ref_date()).collect(),
                })
                .collect(),
        };
        if let Ok(bytes) = serde_json::to_vec(&file) {
            self.send(self.app_dir(appid).join("gaps.json"), bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> Period {
        Period::parse_ref_date(text).unwrap()
    }

    #[test]
    fn the_periods_between_two_held_ones_are_a_gap_and_the_list_stays_bounded() {
        let job = (Report::by_name("visit_trend").unwrap(), PeriodKind::Daily);
        let mut gaps = Gaps::new();
        // (previous held, newly held, recorded, the gap list after)
        let table: [(&str, &str, bool, &[&str]); 4] = [
            ("20240604", "20240605", false, &[]),
            ("20240604", "20240604", false, &[]),
            (
                "20240604",
                "20240608",
                true,
                &["20240605", "20240606", "20240607"],
            ),
            (
                "20240608",
                "20240610",
                true,
                &["20240605", "20240606", "20240607", "20240609"],
            ),
        ];
        for (previous, held, recorded, after) in table {
            assert_eq!(
                record_gap(&mut gaps, job, day(previous), day(held)),
                recorded
            );
            let list: Vec<String> = gaps
                .get(&job)
                .map(|list| list.iter().map(|period| period.ref_date()).collect())
                .unwrap_or_default();
            assert_eq!(list, after, "{previous} -> {held}");
        }
        // Years away: only the newest MAX_GAPS are kept.
        assert!(record_gap(&mut gaps, job, day("20240610"), day("20270101")));
        let list = &gaps[&job];
        assert_eq!(list.len(), MAX_GAPS);
        assert_eq!(list.last().unwrap().ref_date(), "20261231");
    }

    #[test]
    fn gaps_read_back_as_written_and_a_broken_file_gives_none() {
        let root = std::env::temp_dir().join(format!("wme-gaps-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = StateDir::open(&root).unwrap();
        let job = (Report::by_name("retention").unwrap(), PeriodKind::Weekly);
        let mut gaps = Gaps::new();
        record_gap(
            &mut gaps,
            job,
            Period::parse_ref_date("20240527-20240602").unwrap(),
            Period::parse_ref_date("20240617-20240623").unwrap(),
        );
        std::fs::create_dir_all(root.join("apps/wx1234567890abcdef")).unwrap();
        dir.save_gaps("wx1234567890abcdef", &gaps);
        assert!(dir.flush(std::time::Duration::from_secs(5)));
        assert_eq!(read_gaps(&root, "wx1234567890abcdef"), gaps);
        assert_eq!(read_gaps(&root, "wx0000000000000000"), Gaps::new());
        std::fs::write(root.join("apps/wx1234567890abcdef/gaps.json"), "{oops").unwrap();
        assert_eq!(read_gaps(&root, "wx1234567890abcdef"), Gaps::new());
        drop(dir);
        let _ = std::fs::remove_dir_all(&root);
    }
}

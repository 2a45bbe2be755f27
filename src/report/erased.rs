//! The registry's view of a report: [`ReportSpec`] with its types erased, so that reports with
//! different pieces and snapshots sit in one list.
//!
//! Every [`ReportSpec`] is an [`AnyReport`] through the blanket implementation below, which is
//! the only place that turns typed pieces and snapshots into `Any` and back. A piece or
//! snapshot always comes back to the report that made it, so the downcasts cannot fail; if
//! one ever did, the value would be treated as missing (never as a zero, never a panic).

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::Settings;
use super::{Publication, ReportSpec};
use crate::exposition::Samples;
use crate::period::{Period, PeriodKind};
use crate::simulated::model::{Refusal, Request};
use crate::wechat::{Call, WeChatError};

/// One call's answer, read by its report.
pub type Piece = Arc<dyn Any + Send + Sync>;

/// A report's snapshot, as held and rendered.
pub trait SnapshotData: Any + fmt::Debug + Send + Sync {}

impl<T: Any + fmt::Debug + Send + Sync> SnapshotData for T {}

/// A report with its types erased; see [`ReportSpec`] for what each method means.
pub trait AnyReport: Sync {
    /// The `report` label.
    fn name(&self) -> &'static str;
    /// The period kinds.
    fn kinds(&self) -> &'static [PeriodKind];
    /// Whether the report goes first for its kinds.
    fn gates(&self) -> bool;
    /// Whether the report is left out of `reports.enabled` by default.
    fn opt_in(&self) -> bool;
    /// What tells that a period is published.
    fn publication(&self) -> Publication;
    /// Whether WeChat answers past periods.
    fn has_history(&self) -> bool;
    /// How often the current period is fetched again, if it is.
    fn refresh(&self, reports: &Settings) -> Option<std::time::Duration>;
    /// The calls of a backfill of `periods`.
    fn history_calls(&self, periods: &[Period], reports: &Settings) -> Vec<Call>;
    /// Reads the answer to a backfill call into pieces, each under the call it stands for.
    fn parse_history(&self, call: &Call, answer: Value) -> Result<Vec<(Call, Piece)>, WeChatError>;
    /// The API path for `kind`.
    fn path(&self, kind: PeriodKind) -> &'static str;
    /// The calls of `period`.
    fn calls(&self, period: Period, reports: &Settings) -> Vec<Call>;
    /// Reads an answer into a piece.
    fn parse(&self, call: &Call, answer: Value) -> Result<Option<Piece>, WeChatError>;
    /// The snapshot of `period` from its pieces, published (use [`super::Report::assemble`]).
    fn snapshot(
        &self,
        period: Period,
        pieces: &[Option<&Piece>],
        reports: &Settings,
    ) -> Option<Arc<dyn SnapshotData>>;
    /// How many families the report exports.
    fn family_count(&self) -> usize;
    /// The name and HELP of family number `family`.
    fn family(&self, family: usize) -> (&'static str, &'static str);
    /// Writes the samples of family number `family` of `snapshot`.
    fn write(
        &self,
        family: usize,
        snapshot: &dyn SnapshotData,
        kind: PeriodKind,
        out: &mut Samples<'_>,
    );
    /// Simulation: the answer to a call.
    fn simulate(&self, request: &Request<'_>) -> Result<Value, Refusal>;
}

impl<R: ReportSpec> AnyReport for R {
    fn name(&self) -> &'static str {
        R::NAME
    }

    fn kinds(&self) -> &'static [PeriodKind] {
        R::KINDS
    }

    fn gates(&self) -> bool {
        R::GATE
    }

    fn opt_in(&self) -> bool {
        R::OPT_IN
    }

    fn publication(&self) -> Publication {
        R::PUBLICATION
    }

    fn has_history(&self) -> bool {
        R::HISTORY
    }

    fn refresh(&self, reports: &Settings) -> Option<std::time::Duration> {
        ReportSpec::refresh(self, reports)
    }

    fn history_calls(&self, periods: &[Period], reports: &Settings) -> Vec<Call> {
        ReportSpec::history_calls(self, periods, reports)
    }

    fn parse_history(&self, call: &Call, answer: Value) -> Result<Vec<(Call, Piece)>, WeChatError> {
        let pieces = ReportSpec::parse_history(self, call, answer)?;
        Ok(pieces
            .into_iter()
            .map(|(call, piece)| (call, Arc::new(piece) as Piece))
            .collect())
    }

    fn path(&self, kind: PeriodKind) -> &'static str {
        ReportSpec::path(self, kind)
    }

    fn calls(&self, period: Period, reports: &Settings) -> Vec<Call> {
        ReportSpec::calls(self, period, reports)
    }

    fn parse(&self, call: &Call, answer: Value) -> Result<Option<Piece>, WeChatError> {
        let piece = ReportSpec::parse(self, call, answer)?;
        Ok(piece.map(|piece| Arc::new(piece) as Piece))
    }

    fn snapshot(
        &self,
        period: Period,
        pieces: &[Option<&Piece>],
        reports: &Settings,
    ) -> Option<Arc<dyn SnapshotData>> {
        let typed: Vec<Option<&R::Piece>> = pieces
            .iter()
            .map(|piece| piece.and_then(|piece| piece.downcast_ref::<R::Piece>()))
            .collect();
        Some(Arc::new(ReportSpec::snapshot(
            self, period, &typed, reports,
        )))
    }

    fn family_count(&self) -> usize {
        R::FAMILIES.len()
    }

    fn family(&self, family: usize) -> (&'static str, &'static str) {
        (R::FAMILIES[family].name, R::FAMILIES[family].help)
    }

    fn write(
        &self,
        family: usize,
        snapshot: &dyn SnapshotData,
        kind: PeriodKind,
        out: &mut Samples<'_>,
    ) {
        let snapshot: &dyn Any = snapshot;
        if let Some(snapshot) = snapshot.downcast_ref::<R::Snapshot>() {
            (R::FAMILIES[family].samples)(snapshot, kind, out);
        }
    }

    fn simulate(&self, request: &Request<'_>) -> Result<Value, Refusal> {
        ReportSpec::simulate(self, request)
    }
}

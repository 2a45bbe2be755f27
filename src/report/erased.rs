//! The registry's view of a report: [`ReportSpec`] with its types erased at the edge, so that
//! reports with different pieces and snapshots sit in one list.
//!
//! Outside its module a report's types never appear: answers go in ([`Pieces`] reads them
//! and keeps them typed, inside the generic code below) and a [`Snapshot`] comes out, which
//! renders itself. Nothing is turned into `Any` and back, so nothing can fail to come back.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::{Publication, ReportSpec, Settings};
use crate::exposition::Samples;
use crate::period::{Period, PeriodKind};
use crate::simulated::model::{Refusal, Request};
use crate::wechat::wire::Answer;
use crate::wechat::{Call, WeChatError};

/// What is exported of one period of a report: it writes its own families.
pub trait Snapshot: fmt::Debug + Send + Sync {
    /// Writes the samples of the report's family number `family`, for a period of `kind`.
    fn write(&self, family: usize, kind: PeriodKind, out: &mut Samples<'_>);
}

/// A report's own snapshot, as a [`Snapshot`].
struct Typed<R: ReportSpec>(R::Snapshot);

impl<R: ReportSpec> fmt::Debug for Typed<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<R: ReportSpec> Snapshot for Typed<R> {
    fn write(&self, family: usize, kind: PeriodKind, out: &mut Samples<'_>) {
        (R::FAMILIES[family].samples)(&self.0, kind, out);
    }
}

/// `snapshot`, a report's own, as held and rendered.
pub fn typed<R: ReportSpec>(snapshot: R::Snapshot) -> Arc<dyn Snapshot> {
    Arc::new(Typed::<R>(snapshot))
}

/// The answers of one report read into its pieces and kept typed, by the app (for `backfill`,
/// which holds many; `0` otherwise) and the call of [`ReportSpec::calls`] they answer; then
/// assembled into the snapshot of a period. The one conversion from answers to what is
/// exported: the poller, the state, `backfill` and the tests all go through it.
pub struct Pieces {
    typed: Box<dyn ErasedPieces>,
}

impl Pieces {
    pub(super) fn new(typed: Box<dyn ErasedPieces>) -> Pieces {
        Pieces { typed }
    }

    /// Reads `answer`, to `call` (one of a period's calls) of `app`; `Ok(false)` when it holds
    /// nothing (which means "not published", never a zero).
    pub fn read(
        &mut self,
        app: usize,
        call: &Call,
        answer: Answer<'_>,
    ) -> Result<bool, WeChatError> {
        self.typed.read(app, call, answer)
    }

    /// Reads `answer`, to one of `backfill`'s history calls of `app`, into the pieces of the
    /// period calls it stands for; how many it held.
    pub fn read_history(
        &mut self,
        app: usize,
        call: &Call,
        answer: Answer<'_>,
    ) -> Result<usize, WeChatError> {
        self.typed.read_history(app, call, answer)
    }

    /// What `app` exports of `period`, from the pieces of its calls; `None` when they show
    /// that the period is not published ([`Publication`]).
    pub fn assemble(
        &self,
        app: usize,
        period: Period,
        settings: &Settings,
    ) -> Option<Arc<dyn Snapshot>> {
        self.typed
            .published(app, period, settings)
            .then(|| self.typed.snapshot(app, period, settings))
    }

    /// Forgets the piece of `app` for `call`, if any (to replay another answer to it).
    pub fn forget(&mut self, app: usize, call: &Call) {
        self.typed.forget(app, call);
    }

    /// Whether a piece of `app` is held for `call`.
    pub fn holds(&self, app: usize, call: &Call) -> bool {
        self.typed.holds(app, call)
    }

    /// As [`Pieces::assemble`], whatever the first call answered: for the tests of an
    /// answer to a later call alone.
    pub fn assemble_any(
        &self,
        app: usize,
        period: Period,
        settings: &Settings,
    ) -> Arc<dyn Snapshot> {
        self.typed.snapshot(app, period, settings)
    }
}

impl Clone for Pieces {
    fn clone(&self) -> Pieces {
        Pieces {
            typed: self.typed.boxed_clone(),
        }
    }
}

impl fmt::Debug for Pieces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pieces")
    }
}

/// [`Pieces`] of one report, with the report's types.
pub(super) trait ErasedPieces: Send + Sync {
    fn read(&mut self, app: usize, call: &Call, answer: Answer<'_>) -> Result<bool, WeChatError>;
    fn read_history(
        &mut self,
        app: usize,
        call: &Call,
        answer: Answer<'_>,
    ) -> Result<usize, WeChatError>;
    fn holds(&self, app: usize, call: &Call) -> bool;
    fn forget(&mut self, app: usize, call: &Call);
    fn boxed_clone(&self) -> Box<dyn ErasedPieces>;
    fn published(&self, app: usize, period: Period, settings: &Settings) -> bool;
    fn snapshot(&self, app: usize, period: Period, settings: &Settings) -> Arc<dyn Snapshot>;
}

/// The typed pieces of report `R`, by app and call (shared, so that a copy is cheap).
struct TypedPieces<R: ReportSpec> {
    report: &'static R,
    pieces: HashMap<(usize, Call), Arc<R::Piece>>,
}

impl<R: ReportSpec> TypedPieces<R> {
    /// The pieces of `period`'s calls, in their order (`None` where there is none).
    fn of(&self, app: usize, period: Period, settings: &Settings) -> Vec<Option<&R::Piece>> {
        self.report
            .calls(period, settings)
            .into_iter()
            .map(|call| self.pieces.get(&(app, call)).map(|piece| &**piece))
            .collect()
    }
}

impl<R: ReportSpec> ErasedPieces for TypedPieces<R> {
    fn read(&mut self, app: usize, call: &Call, answer: Answer<'_>) -> Result<bool, WeChatError> {
        let piece = self.report.parse(call, answer)?;
        let holds = piece.is_some();
        if let Some(piece) = piece {
            self.pieces.insert((app, call.clone()), Arc::new(piece));
        }
        Ok(holds)
    }

    fn read_history(
        &mut self,
        app: usize,
        call: &Call,
        answer: Answer<'_>,
    ) -> Result<usize, WeChatError> {
        let pieces = self.report.parse_history(call, answer)?;
        let held = pieces.len();
        for (call, piece) in pieces {
            self.pieces.insert((app, call), Arc::new(piece));
        }
        Ok(held)
    }

    fn holds(&self, app: usize, call: &Call) -> bool {
        self.pieces.contains_key(&(app, call.clone()))
    }

    fn forget(&mut self, app: usize, call: &Call) {
        self.pieces.remove(&(app, call.clone()));
    }

    fn boxed_clone(&self) -> Box<dyn ErasedPieces> {
        Box::new(TypedPieces {
            report: self.report,
            pieces: self.pieces.clone(),
        })
    }

    fn published(&self, app: usize, period: Period, settings: &Settings) -> bool {
        let pieces = self.of(app, period, settings);
        match R::PUBLICATION {
            Publication::First => pieces.first().is_some_and(Option::is_some),
            Publication::AnyCall => pieces.iter().any(Option::is_some),
        }
    }

    fn snapshot(&self, app: usize, period: Period, settings: &Settings) -> Arc<dyn Snapshot> {
        let pieces = self.of(app, period, settings);
        typed::<R>(self.report.snapshot(period, &pieces, settings))
    }
}

/// A report with its types erased; see [`ReportSpec`] for what each method means.
pub(super) trait ErasedReport: Sync {
    fn name(&self) -> &'static str;
    fn kinds(&self) -> &'static [PeriodKind];
    fn gates(&self) -> bool;
    fn opt_in(&self) -> bool;
    fn publication(&self) -> Publication;
    fn has_history(&self) -> bool;
    fn refresh(&self, settings: &Settings) -> Option<std::time::Duration>;
    fn max_series(&self, kind: PeriodKind, settings: &Settings) -> usize;
    fn history_calls(&self, periods: &[Period], settings: &Settings) -> Vec<Call>;
    fn path(&self, kind: PeriodKind) -> &'static str;
    fn calls(&self, period: Period, settings: &Settings) -> Vec<Call>;
    /// An empty store of the report's pieces.
    fn pieces(&'static self) -> Pieces;
    fn family_count(&self) -> usize;
    fn family(&self, family: usize) -> (&'static str, &'static str);
    fn simulate(&self, request: &Request<'_>) -> Result<Value, Refusal>;
}

impl<R: ReportSpec> ErasedReport for R {
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

    fn refresh(&self, settings: &Settings) -> Option<std::time::Duration> {
        ReportSpec::refresh(self, settings)
    }

    fn max_series(&self, kind: PeriodKind, settings: &Settings) -> usize {
        ReportSpec::max_series(self, kind, settings)
    }

    fn history_calls(&self, periods: &[Period], settings: &Settings) -> Vec<Call> {
        ReportSpec::history_calls(self, periods, settings)
    }

    fn path(&self, kind: PeriodKind) -> &'static str {
        ReportSpec::path(self, kind)
    }

    fn calls(&self, period: Period, settings: &Settings) -> Vec<Call> {
        ReportSpec::calls(self, period, settings)
    }

    fn pieces(&'static self) -> Pieces {
        Pieces::new(Box::new(TypedPieces {
            report: self,
            pieces: HashMap::new(),
        }))
    }

    fn family_count(&self) -> usize {
        R::FAMILIES.len()
    }

    fn family(&self, family: usize) -> (&'static str, &'static str) {
        (R::FAMILIES[family].name, R::FAMILIES[family].help)
    }

    fn simulate(&self, request: &Request<'_>) -> Result<Value, Refusal> {
        ReportSpec::simulate(self, request)
    }
}

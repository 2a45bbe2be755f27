//! The `backfill` command from start to end: plan, fetch with progress drawn on stderr, write
//! the file aside and rename it (a reader never sees half of it), summarise.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::fetch::fetch;
use super::history::History;
use super::openmetrics::Written;
use super::plan::plan;
use super::progress::Progress;
use super::Options;
use crate::clock::Clock;
use crate::config::Config;

/// How a backfill ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every call answered.
    Complete,
    /// Some calls failed; everything fetched is written all the same.
    Incomplete,
    /// The flags do not make a backfill (the problem was printed).
    Refused,
}

/// Backfills `options` of `config` into `output` (standard output if `None`).
pub async fn run(
    config: &Config,
    options: &Options,
    output: Option<&Path>,
) -> anyhow::Result<Outcome> {
    let plan = match plan(config, options, Clock::system().now()) {
        Ok(plan) => plan,
        Err(problem) => {
            eprintln!("error: {problem}");
            return Ok(Outcome::Refused);
        }
    };
    let (first, last) = plan.range();
    eprintln!(
        "backfill: {} ({}), {first} to {last}: {} periods to fetch",
        plan.app_names().join(", "),
        config.api_base_url,
        plan.fetches()
    );
    if options.dry_run {
        for line in plan.calls_by_app() {
            println!("{line}");
        }
        return Ok(Outcome::Complete);
    }
    let progress = Arc::new(Progress::new(plan.fetches()));
    let drawing = tokio::spawn(draw_progress(progress.clone()));
    let history = fetch(config, plan, Clock::system(), progress.clone()).await;
    drawing.abort();
    let _ = drawing.await;
    let history = history.context("building the HTTP client")?;
    let terminal = std::io::stderr().is_terminal();
    eprintln!(
        "{}{}",
        if terminal { "\r\x1b[2K" } else { "" },
        progress.line(0)
    );
    let written = write_history(&history, output)?;
    Ok(summarise(&history, written, output))
}

/// Writes the history to `output` (aside, then renamed, so that a reader never sees half a
/// file) or to standard output.
fn write_history(history: &History, output: Option<&Path>) -> anyhow::Result<Written> {
    let Some(path) = output else {
        let mut writer = std::io::BufWriter::new(std::io::stdout().lock());
        let written = history.write_openmetrics(&mut writer)?;
        writer.flush()?;
        return Ok(written);
    };
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let written = history
        .write_openmetrics(&mut writer)
        .and_then(|written| writer.flush().map(|()| written))
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path)
        .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
    Ok(written)
}

/// Prints the summary and the failed calls.
fn summarise(history: &History, written: Written, output: Option<&Path>) -> Outcome {
    let summary = history.summary();
    eprintln!("backfill: {summary}");
    eprintln!(
        "backfill: wrote {} samples of {} series to {}",
        written.samples,
        written.series,
        output.map_or("standard output".into(), |path| path.display().to_string())
    );
    if summary.failed.is_empty() {
        return Outcome::Complete;
    }
    eprintln!("backfill: {} periods failed:", summary.failed.len());
    const SHOWN: usize = 100;
    for failure in summary.failed.iter().take(SHOWN) {
        eprintln!("  {failure}");
    }
    if summary.failed.len() > SHOWN {
        eprintln!("  ... and {} more", summary.failed.len() - SHOWN);
    }
    eprintln!("backfill: run again for the failed days; periods already in Prometheus are simply written again");
    Outcome::Incomplete
}

/// Draws `progress` on stderr until aborted: a bar redrawn in place on a terminal, otherwise
/// a plain line every 10% or 30 seconds.
async fn draw_progress(progress: Arc<Progress>) {
    let terminal = std::io::stderr().is_terminal();
    let mut shown_tenth = 0;
    let mut shown_at = std::time::Instant::now();
    loop {
        if terminal {
            eprint!("\r\x1b[2K{}", progress.line(30));
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let tenth = 10 * progress.done() / progress.total().max(1);
        if tenth > shown_tenth || shown_at.elapsed() >= Duration::from_secs(30) {
            eprintln!("backfill: {}", progress.line(0));
            shown_tenth = tenth;
            shown_at = std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

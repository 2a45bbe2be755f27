//! The shipped artefacts checked with the real tools: the alert rules with `promtool test
//! rules` and backtested on a year (`backtest`), the dashboards' queries on a real Prometheus fed by backfill and a live exporter,
//! the mixin rendered by `jsonnet`, the Dockerfile, the compose stack and the Helm chart with `helm`, `docker-compose` and
//! `kubernetes-validate`.

#[path = "../exporter/common/mod.rs"]
mod common;

mod backtest;
mod dashboards;
mod deploy;
mod mixin;
mod readme;
mod rules;
mod victoria;

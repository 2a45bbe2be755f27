//! The apps: each `[apps.NAME]` table (or discovered entry) checked into a domain `App`
//! (its AppID, its token source, its secret read from a file), names bounded in messages.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::domain::{App, AppId, Secret, TokenSource};
use crate::report::Overrides as ReportOverrides;

use super::per_app::{labels, report_overrides};
use super::*;

/// Apps as a source lists them (the configuration, a discovery source): each app, and what
/// those that set `reports` of their own set, by app name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Listed {
    /// The apps, ordered by name.
    pub apps: Vec<App>,
    /// What apps set of their own over `[reports]`, by name.
    pub reports: BTreeMap<String, ReportOverrides>,
}

/// Every app, ordered by name; an appid configured twice is a problem.
pub(super) fn validate_apps(raw: BTreeMap<String, RawApp>, problems: &mut Problems) -> Listed {
    let mut listed = Listed::default();
    let mut seen_appids: BTreeMap<AppId, String> = BTreeMap::new();
    for (name, raw) in raw {
        let key = format!("apps.{}", bounded_name(&name));
        if let Some((app, overrides)) = raw.validate(&name, &key, problems) {
            if let Some(other) = seen_appids.insert(app.appid.clone(), name.clone()) {
                problems.add(
                    &format!("{key}.appid"),
                    format!("{} is also the appid of apps.{other}; each Mini Program must be configured once", app.appid),
                );
            }
            if let Some(overrides) = overrides {
                listed.reports.insert(name.clone(), overrides);
            }
            listed.apps.push(app);
        }
    }
    listed
}

/// One app as a discovery source lists it: the keys of an `[apps.NAME]` table and its name;
/// an AppSecret only by file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListedApp {
    name: String,
    appid: Option<String>,
    #[serde(default)]
    token_source: Option<String>,
    #[serde(default)]
    secret_file: Option<PathBuf>,
    #[serde(default)]
    token_url: Option<String>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    reports: Option<RawReportOverrides>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// The apps `listed` (a discovery source's entries), checked as the configuration's apps are
/// (secret files are read now): every problem names its app (`apps.NAME...`).
pub fn listed_apps(listed: Vec<ListedApp>) -> Result<Listed, Vec<String>> {
    let mut problems = Problems::default();
    let mut raw = BTreeMap::new();
    for app in listed {
        let key = format!("apps.{}", bounded_name(&app.name));
        let entry = RawApp {
            appid: app.appid,
            secret: None,
            secret_file: app.secret_file,
            token_source: app.token_source,
            token_url: app.token_url,
            token_file: app.token_file,
            reports: app.reports,
            labels: app.labels,
        };
        if raw.insert(app.name.clone(), entry).is_some() {
            problems.add(&key, "is listed twice");
        }
    }
    let apps = validate_apps(raw, &mut problems);
    if problems.0.is_empty() {
        Ok(apps)
    } else {
        Err(problems.0)
    }
}

/// An app name as problems show it: cut, so that a huge name cannot make a huge message.
pub(super) fn bounded_name(name: &str) -> String {
    let mut shown: String = name.chars().take(MAX_NAME).collect();
    if name.chars().count() > MAX_NAME {
        shown.push('…');
    }
    shown
}

/// The longest app name: it is a label value of every series of the app.
pub const MAX_NAME: usize = 64;

impl RawApp {
    pub(super) fn validate(
        self,
        name: &str,
        key: &str,
        problems: &mut Problems,
    ) -> Option<(App, Option<ReportOverrides>)> {
        let before = problems.0.len();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            problems.add(
                key,
                "the app name may hold only letters, digits, '_' and '-'",
            );
        } else if name.len() > MAX_NAME {
            problems.add(
                key,
                format!("the app name is longer than {MAX_NAME} characters"),
            );
        }
        let appid = self.appid(key, problems);
        let token = self.token_source(key, problems);
        let overrides = self
            .reports
            .as_ref()
            .map(|raw| report_overrides(raw, &format!("{key}.reports"), problems));
        let labels = self.labels.as_ref().map_or_else(Vec::new, |raw| {
            labels(raw, &format!("{key}.labels"), problems)
        });
        match (appid, problems.0.len() == before) {
            (Some(appid), true) => Some((
                App {
                    name: name.to_string(),
                    appid,
                    token: token.expect("no problem means a token source"),
                    labels,
                },
                overrides,
            )),
            _ => None,
        }
    }

    pub(super) fn appid(&self, key: &str, problems: &mut Problems) -> Option<AppId> {
        match self.appid.as_deref() {
            Some(text) => {
                let appid = AppId::parse(text);
                if appid.is_none() {
                    problems.add(
                        &format!("{key}.appid"),
                        format!("{:?} is not a Mini Program AppID (\"wx\" and 16 letters or digits; see the admin console under Development > Development Settings)", bounded_name(text.trim())),
                    );
                }
                appid
            }
            None => {
                problems.add(
                    &format!("{key}.appid"),
                    "is missing; set it to the Mini Program's AppID (\"wx...\")",
                );
                None
            }
        }
    }

    pub(super) fn token_source(&self, key: &str, problems: &mut Problems) -> Option<TokenSource> {
        let source = self.token_source.as_deref().unwrap_or("stable_token");
        let token = match source {
            "stable_token" | "token" => self.secret_token(source, key, problems),
            "url" => self.token_url(key, problems),
            "file" => match &self.token_file {
                Some(path) => Some(TokenSource::File(path.clone())),
                None => {
                    problems.add(
                        &format!("{key}.token_file"),
                        "is required with token_source = \"file\"",
                    );
                    None
                }
            },
            other => {
                problems.add(
                    &format!("{key}.token_source"),
                    format!("{other:?} is not a token source; use \"stable_token\" (default), \"token\", \"url\" or \"file\""),
                );
                None
            }
        };
        if matches!(source, "url" | "file") && (self.secret.is_some() || self.secret_file.is_some())
        {
            problems.add(key, format!("secret and secret_file are not used with token_source = \"{source}\"; remove them"));
        }
        token
    }

    /// `stable_token` or `token`: the AppSecret, and no token location.
    pub(super) fn secret_token(
        &self,
        source: &str,
        key: &str,
        problems: &mut Problems,
    ) -> Option<TokenSource> {
        let secret = self.secret(key, problems);
        for (field, set) in [
            ("token_url", self.token_url.is_some()),
            ("token_file", self.token_file.is_some()),
        ] {
            if set {
                problems.add(
                    &format!("{key}.{field}"),
                    format!(
                        "is only used with token_source = \"{}\"; remove it or change token_source",
                        &field[6..]
                    ),
                );
            }
        }
        secret.map(|secret| {
            if source == "token" {
                TokenSource::Token(secret)
            } else {
                TokenSource::StableToken(secret)
            }
        })
    }

    pub(super) fn token_url(&self, key: &str, problems: &mut Problems) -> Option<TokenSource> {
        match self.token_url.as_deref().map(str::trim) {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Some(TokenSource::Url(url.to_string()))
            }
            Some(url) => {
                problems.add(
                    &format!("{key}.token_url"),
                    format!("{url:?} is not an http(s) URL"),
                );
                None
            }
            None => {
                problems.add(
                    &format!("{key}.token_url"),
                    "is required with token_source = \"url\"",
                );
                None
            }
        }
    }

    pub(super) fn secret(&self, key: &str, problems: &mut Problems) -> Option<Secret> {
        match (&self.secret, &self.secret_file) {
            (Some(_), Some(_)) => {
                problems.add(key, "set either secret or secret_file, not both");
                None
            }
            (Some(SecretText(secret)), None) if !secret.trim().is_empty() => {
                Some(Secret::new(secret.trim()))
            }
            (Some(_), None) => {
                problems.add(&format!("{key}.secret"), "is empty");
                None
            }
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(text) if !text.trim().is_empty() => Some(Secret::new(text.trim())),
                Ok(_) => {
                    problems.add(
                        &format!("{key}.secret_file"),
                        format!("{} is empty", path.display()),
                    );
                    None
                }
                Err(error) => {
                    problems.add(
                        &format!("{key}.secret_file"),
                        format!("cannot read {}: {error}", path.display()),
                    );
                    None
                }
            },
            (None, None) => {
                problems.add(
                    key,
                    format!("no AppSecret: set secret_file (or secret, or the environment variable {ENV_PREFIX}APPS__{}__SECRET)", key[5..].to_uppercase()),
                );
                None
            }
        }
    }
}

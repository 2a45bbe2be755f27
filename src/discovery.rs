//! App discovery, in the manner of Prometheus' file_sd and http_sd: files matching globs and
//! an HTTP endpoint that list apps (`[discovery]`).
//!
//! Each file and the URL is a source with its own last good list: a source that fails (a
//! file that does not parse, an endpoint that answers 500) keeps the list it gave last, and
//! says why in a log line; a file that is gone lists nothing. [`Discovery::changed`] tells
//! whether the matched files changed since they were read, so that a new file is picked up
//! within seconds, and every source is read again each `refresh_interval`. A file whose new
//! list drops apps is applied only once it has not changed for one more check: a file being
//! rewritten in place is, for a moment, a valid shorter list.
//!
//! What a source lists is bounded before anything is built from it: 16 MiB of JSON, 4 MiB of
//! YAML nested at most [`MAX_DEPTH`] levels, [`MAX_APPS`] apps (the rest are left out, with a
//! warning). Reading and parsing run off the runtime threads, and the bearer token of the URL
//! never appears in a log line, even when the endpoint echoes it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::{listed_apps, Config, Discovery as Settings, Listed, ListedApp};
use crate::domain::{App, Shard};

/// The largest JSON list read from a file or the URL.
const MAX_LIST: usize = 16 << 20;

/// The largest YAML list read: YAML is parsed into events first, several times its size.
pub const MAX_YAML: usize = 4 << 20;

/// The deepest nesting of a YAML list taken (a list of apps is 2 or 3 levels deep).
pub const MAX_DEPTH: usize = 32;

/// The most apps one source may list; the rest are left out.
pub const MAX_APPS: usize = 50_000;

/// What identifies a version of a file: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

/// What each file listed, or why it did not read.
type Read = Vec<(PathBuf, Result<Listed, Vec<String>>)>;

/// The sources and what each last listed.
pub struct Discovery {
    settings: Settings,
    shard: Shard,
    http: reqwest::Client,
    /// The last good list of each source, by source name (a file's path, or the URL).
    lists: BTreeMap<String, Listed>,
    /// The files matched when they were last read, and their stamps.
    stamps: BTreeMap<PathBuf, Stamp>,
    /// Files whose new list dropped apps, and the stamp it was read at: applied if the file
    /// is still so at the next read.
    shrinking: BTreeMap<PathBuf, Stamp>,
    /// Why each source that failed at its last read did, by source name.
    problems: BTreeMap<String, String>,
}

impl Discovery {
    /// The sources of `settings`, for the apps of `shard`; nothing read yet.
    pub fn new(settings: Settings, shard: Shard) -> Discovery {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "wechat-miniprogram-exporter/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .unwrap_or_default();
        Discovery {
            settings,
            shard,
            http,
            lists: BTreeMap::new(),
            stamps: BTreeMap::new(),
            shrinking: BTreeMap::new(),
            problems: BTreeMap::new(),
        }
    }

    /// Whether sources are configured.
    pub fn is_configured(&self) -> bool {
        self.settings.is_configured()
    }

    /// Whether a URL is configured.
    pub fn has_url(&self) -> bool {
        self.settings.url.is_some()
    }

    /// How often every source is read again.
    pub fn refresh_interval(&self) -> Duration {
        self.settings.refresh_interval
    }

    /// The last good list of every source, by source name.
    pub fn lists(&self) -> impl Iterator<Item = (&String, &Listed)> {
        self.lists.iter()
    }

    /// Why the sources that failed at their last read did, by source name, each problem
    /// naming its source (their last good list stays in [`Discovery::lists`]).
    pub fn problems(&self) -> impl Iterator<Item = (&String, &String)> {
        self.problems.iter()
    }

    /// Whether the files matching the globs are not those read last, or have changed (or one
    /// is waiting to be confirmed shorter). Looks at the file system: run it off the runtime.
    pub fn changed(&self) -> bool {
        !self.shrinking.is_empty() || matched(&self.settings.files) != self.stamps
    }

    /// Reads the files again, off the runtime threads; `true` if some list changed.
    pub async fn read_files(&mut self) -> bool {
        let globs = self.settings.files.clone();
        let shard = self.shard;
        let read = tokio::task::spawn_blocking(move || {
            let now = matched(&globs);
            let lists: Read = now
                .keys()
                .map(|path| (path.clone(), read_file(path, shard)))
                .collect();
            (now, lists)
        })
        .await;
        let Ok((now, lists)) = read else {
            return false;
        };
        self.take_files(now, lists)
    }

    /// Keeps what the files listed (see [`Discovery::read_files`]).
    fn take_files(&mut self, now: BTreeMap<PathBuf, Stamp>, lists: Read) -> bool {
        let before = self.lists.clone();
        let url = self.settings.url.clone();
        self.lists.retain(|source, _| {
            Some(source) == url.as_ref() || now.contains_key(Path::new(source))
        });
        self.problems
            .retain(|source, _| Some(source) == url.as_ref());
        let mut shrinking = BTreeMap::new();
        for (path, read) in lists {
            let source = path.display().to_string();
            match read {
                Ok(apps) => {
                    let stamp = now.get(&path).copied().flatten();
                    let dropped = self.lists.get(&source).is_some_and(|old| {
                        old.apps
                            .iter()
                            .any(|app| !apps.apps.iter().any(|new| new.name == app.name))
                    });
                    let confirmed = self.shrinking.get(&path) == Some(&stamp);
                    if dropped && !confirmed {
                        // Maybe half written: taken if it is still so at the next check.
                        shrinking.insert(path, stamp);
                        continue;
                    }
                    self.lists.insert(source, apps);
                }
                Err(problems) => {
                    let kept = self
                        .lists
                        .get(&source)
                        .map_or(0, |listed| listed.apps.len());
                    let problems = problems.join("; ");
                    tracing::warn!(source, problems = %problems, kept, "discovery file not read; its last list stays");
                    self.problems.insert(source, problems);
                }
            }
        }
        self.shrinking = shrinking;
        self.stamps = now;
        self.lists != before
    }

    /// Asks the URL again; `true` if its list changed.
    pub async fn read_url(&mut self) -> bool {
        let Some(url) = self.settings.url.clone() else {
            return false;
        };
        let token = match &self.settings.bearer_token_file {
            Some(file) => match std::fs::read_to_string(file) {
                Ok(token) => Some(token.trim().to_string()),
                Err(error) => {
                    let kept = self.lists.get(&url).map_or(0, |listed| listed.apps.len());
                    let problem = format!("cannot read {}: {error}", file.display());
                    tracing::warn!(source = %url, problem, kept, "discovery URL not asked; its last list stays");
                    self.problems
                        .insert(url.clone(), format!("{url}: {problem}"));
                    return false;
                }
            },
            None => None,
        };
        match self.fetch(&url, token.as_deref()).await {
            Ok(apps) => {
                self.problems.remove(&url);
                self.lists.insert(url, apps.clone()) != Some(apps)
            }
            Err(problem) => {
                let problem = scrub(&problem, token.as_deref());
                let kept = self.lists.get(&url).map_or(0, |listed| listed.apps.len());
                tracing::warn!(source = %url, problem, kept, "discovery URL failed; its last list stays");
                self.problems
                    .insert(url.clone(), format!("{url}: {problem}"));
                false
            }
        }
    }

    async fn fetch(&self, url: &str, token: Option<&str>) -> Result<Listed, String> {
        let mut request = self.http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let mut response = request
            .send()
            .await
            .map_err(|error| error.without_url().to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP status {}", response.status().as_u16()));
        }
        let yaml = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.contains("yaml"));
        let limit = if yaml { MAX_YAML } else { MAX_LIST };
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| error.without_url().to_string())?
        {
            if body.len() + chunk.len() > limit {
                return Err(format!("the list is larger than {} MiB", limit >> 20));
            }
            body.extend_from_slice(&chunk);
        }
        let (source, shard) = (url.to_string(), self.shard);
        tokio::task::spawn_blocking(move || {
            let text = String::from_utf8(body).map_err(|_| "the list is not UTF-8".to_string())?;
            parse(&text, yaml, &source, shard).map_err(|problems| problems.join("; "))
        })
        .await
        .map_err(|error| error.to_string())?
    }
}

/// `text` without `secret` (a bearer token an endpoint may echo).
fn scrub(text: &str, secret: Option<&str>) -> String {
    match secret.filter(|secret| !secret.is_empty()) {
        Some(secret) => text.replace(secret, "<redacted>"),
        None => text.to_string(),
    }
}

/// What `check-config` says of the discovery sources of `config`, read once: each source
/// and its apps, the problems (a source that fails, apps that clash), and the apps of every
/// source merged (the configuration's alone if they clash).
pub async fn check(config: &Config) -> (Vec<String>, Vec<String>, Listed) {
    let mut lines = Vec::new();
    if !config.discovery.is_configured() {
        return (lines, Vec::new(), config.listed());
    }
    let mut discovery = Discovery::new(config.discovery.clone(), config.shard);
    discovery.read_files().await;
    discovery.read_url().await;
    let failed: Vec<String> = discovery
        .problems()
        .map(|(_, problem)| format!("discovery source {problem}"))
        .collect();
    let mut sources = vec![("the configuration".to_string(), config.listed())];
    for (source, listed) in discovery.lists() {
        lines.push(format!(
            "  discovery source {source}: {} Mini Program(s)",
            listed.apps.len()
        ));
        for app in &listed.apps {
            lines.push(format!(
                "    {} ({}), token from {}",
                app.name,
                app.appid,
                app.token.name()
            ));
        }
        sources.push((format!("discovery source {source}"), listed.clone()));
    }
    let (problems, merged) = match merge_apps(&sources) {
        Ok(merged) => {
            lines.push(format!("  {} Mini Program(s) in all", merged.apps.len()));
            (failed, merged)
        }
        Err(clashes) => (failed.into_iter().chain(clashes).collect(), config.listed()),
    };
    (lines, problems, merged)
}

/// The apps a source lists (`source` names it in problems), as JSON or YAML: a list of
/// `{name, appid, token_source, secret_file | token_url | token_file}`, parsed into that type
/// alone, at most [`MAX_APPS`] (the rest left out, with a warning), checked as the
/// configuration's apps are. Only the apps of `shard` are kept.
fn discovered_apps(
    text: &str,
    yaml: bool,
    source: &str,
    shard: Shard,
) -> Result<Listed, Vec<String>> {
    let mut listed: Vec<ListedApp> = if yaml {
        serde_yaml::from_str(text).map_err(|error| vec![format!("{source}: {error}")])?
    } else {
        serde_json::from_str(text).map_err(|error| vec![format!("{source}: {error}")])?
    };
    if listed.len() > MAX_APPS {
        tracing::warn!(
            source,
            listed = listed.len(),
            kept = MAX_APPS,
            "the discovery source lists more apps than one exporter polls; the rest are left out (shard the apps)"
        );
        listed.truncate(MAX_APPS);
    }
    let mut apps = listed_apps(listed).map_err(|problems| {
        problems
            .into_iter()
            .map(|problem| format!("{source}: {problem}"))
            .collect::<Vec<_>>()
    })?;
    apps.apps.retain(|app| shard.owns(&app.appid));
    let kept: Vec<&str> = apps.apps.iter().map(|app| app.name.as_str()).collect();
    apps.reports.retain(|name, _| kept.contains(&name.as_str()));
    Ok(apps)
}

/// The apps of every source (the configuration file and each discovery source, by name),
/// ordered by name, each with the report settings its source gives it; an app name or an
/// appid in two sources is a problem naming both.
pub fn merge_apps(sources: &[(String, Listed)]) -> Result<Listed, Vec<String>> {
    let mut names: BTreeMap<&str, (&str, &App)> = BTreeMap::new();
    let mut appids: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut reports = BTreeMap::new();
    for (source, listed) in sources {
        for app in &listed.apps {
            if let Some((other, _)) = names.get(app.name.as_str()) {
                problems.push(format!(
                    "app {:?} is in {other} and in {source}; an app name must be unique",
                    app.name
                ));
                continue;
            }
            if let Some((other, other_name)) = appids.get(app.appid.as_str()) {
                problems.push(format!("appid {} is app {other_name:?} in {other} and app {:?} in {source}; each Mini Program must be listed once", app.appid, app.name));
                continue;
            }
            names.insert(&app.name, (source, app));
            appids.insert(&app.appid, (source, &app.name));
            if let Some(overrides) = listed.reports.get(&app.name) {
                reports.insert(app.name.clone(), overrides.clone());
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let apps = names.into_values().map(|(_, app)| app.clone()).collect();
    Ok(Listed { apps, reports })
}

/// The apps a list holds, bounded before it is parsed: YAML nested at most [`MAX_DEPTH`].
fn parse(text: &str, yaml: bool, source: &str, shard: Shard) -> Result<Listed, Vec<String>> {
    if yaml {
        let depth = yaml_depth(text);
        if depth > MAX_DEPTH {
            return Err(vec![format!(
                "{source}: nested {depth} levels deep; a list of apps is nested 2 or 3 (at most {MAX_DEPTH})"
            )]);
        }
    }
    discovered_apps(text, yaml, source, shard)
}

/// How deeply YAML `text` nests, at least: the flow collections (`[`, `{`) open at once, plus
/// the block levels (indentations, and `- ` entries) of the line.
fn yaml_depth(text: &str) -> usize {
    let mut deepest = 0;
    let mut flow = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if flow == 0 && !trimmed.is_empty() && !trimmed.starts_with('#') {
            let indent = line.len() - trimmed.len();
            while indents.last().is_some_and(|last| *last >= indent) {
                indents.pop();
            }
            indents.push(indent);
            let dashes = trimmed.split(' ').take_while(|part| *part == "-").count();
            deepest = deepest.max(indents.len() + dashes);
        }
        let mut quote: Option<char> = None;
        for c in trimmed.chars() {
            match (quote, c) {
                (Some(open), c) if c == open => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => {
                    flow += 1;
                    deepest = deepest.max(indents.len() + flow);
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
        }
    }
    deepest
}

/// The apps a file lists: YAML for `.yaml` and `.yml`, JSON otherwise.
fn read_file(path: &Path, shard: Shard) -> Result<Listed, Vec<String>> {
    let source = path.display().to_string();
    let yaml = matches!(
        path.extension().and_then(|extension| extension.to_str()),
        Some("yaml" | "yml")
    );
    let limit = if yaml { MAX_YAML } else { MAX_LIST };
    let metadata = std::fs::metadata(path).map_err(|error| vec![format!("{source}: {error}")])?;
    if !metadata.is_file() {
        return Err(vec![format!("{source}: not a regular file")]);
    }
    if metadata.len() > limit as u64 {
        return Err(vec![format!("{source}: larger than {} MiB", limit >> 20)]);
    }
    let text = std::fs::read_to_string(path).map_err(|error| vec![format!("{source}: {error}")])?;
    parse(&text, yaml, &source, shard)
}

/// The files matching `globs` now, with their stamps: globs as Prometheus' file_sd has them,
/// in the file name only (`*`, `?` and `[...]`).
fn matched(globs: &[String]) -> BTreeMap<PathBuf, Stamp> {
    let mut files = BTreeMap::new();
    for glob in globs {
        let (dir, pattern) = match glob.rsplit_once('/') {
            Some(("", pattern)) => ("/", pattern),
            Some((dir, pattern)) => (dir, pattern),
            None => (".", glob.as_str()),
        };
        let Ok(pattern) = glob::Pattern::new(pattern) else {
            continue;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if !name.starts_with('.') && pattern.matches(name) && path.is_file() {
                let stamp = std::fs::metadata(&path)
                    .ok()
                    .and_then(|metadata| Some((metadata.modified().ok()?, metadata.len())));
                files.insert(path, stamp);
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_match_as_file_sd_globs_do() {
        let matches =
            |pattern: &str, name: &str| glob::Pattern::new(pattern).unwrap().matches(name);
        for (pattern, name, expected) in [
            ("*.yaml", "apps.yaml", true),
            ("*.yaml", "apps.yml", false),
            ("apps-?.json", "apps-1.json", true),
            ("apps-?.json", "apps-12.json", false),
            ("*", "anything", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("exact.json", "exact.json", true),
            ("apps-[0-9].json", "apps-7.json", true),
            ("apps-[0-9].json", "apps-x.json", false),
            ("apps-[!0-9].json", "apps-x.json", true),
        ] {
            assert_eq!(matches(pattern, name), expected, "{pattern} {name}");
        }
    }

    #[test]
    fn yaml_nesting_is_measured_before_parsing() {
        assert_eq!(yaml_depth("- name: a\n  appid: wx1\n- name: b\n"), 2);
        assert_eq!(yaml_depth("[{name: a, appid: wx1}]"), 3);
        assert!(yaml_depth(&"[".repeat(1000)) > MAX_DEPTH);
        let block: String = (0..100)
            .map(|depth| format!("{}a:\n", " ".repeat(depth)))
            .collect();
        assert!(yaml_depth(&block) > MAX_DEPTH);
        let dashes = format!("{}x\n", "- ".repeat(100));
        assert!(yaml_depth(&dashes) > MAX_DEPTH);
        assert_eq!(yaml_depth("- name: '[[[['\n  # [[[[[\n"), 2);
    }

    #[tokio::test]
    async fn a_file_that_does_not_read_keeps_its_last_list_and_a_gone_file_lists_nothing() {
        let dir = std::env::temp_dir().join(format!("wme-discovery-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("apps.json");
        let entry = |name: &str, appid: &str| {
            format!(
                r#"{{"name": "{name}", "appid": "{appid}", "token_source": "url", "token_url": "http://t/{{appid}}"}}"#
            )
        };
        let two = format!(
            "[{}, {}]",
            entry("shop", "wx1234567890abcdef"),
            entry("blog", "wx2234567890abcdef")
        );
        std::fs::write(&file, &two).unwrap();
        let settings = Settings {
            files: vec![format!("{}/*.json", dir.display())],
            refresh_interval: Duration::from_secs(60),
            ..Settings::default()
        };
        let mut discovery = Discovery::new(settings, Shard::default());
        assert!(discovery.read_files().await);
        assert_eq!(discovery.lists().next().unwrap().1.apps.len(), 2);
        std::fs::write(&file, "[{\"name\": ").unwrap();
        assert!(discovery.changed());
        assert!(
            !discovery.read_files().await,
            "the broken file keeps its list"
        );
        assert_eq!(discovery.lists().next().unwrap().1.apps.len(), 2);
        // A shorter list: maybe a file half rewritten; taken once it stays so.
        std::fs::write(&file, format!("[{}]", entry("shop", "wx1234567890abcdef"))).unwrap();
        assert!(!discovery.read_files().await, "not yet");
        assert_eq!(discovery.lists().next().unwrap().1.apps.len(), 2);
        assert!(discovery.changed(), "checked again");
        assert!(discovery.read_files().await, "unchanged since: taken");
        assert_eq!(discovery.lists().next().unwrap().1.apps.len(), 1);
        std::fs::remove_file(&file).unwrap();
        assert!(discovery.read_files().await);
        assert_eq!(discovery.lists().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bearer_token_is_scrubbed_from_what_the_endpoint_echoes() {
        let echoed = "invalid type: string \"Bearer s3cr3t-t0ken\", expected a sequence";
        assert_eq!(
            scrub(echoed, Some("s3cr3t-t0ken")),
            "invalid type: string \"Bearer <redacted>\", expected a sequence"
        );
        assert_eq!(scrub("x", None), "x");
    }
}

//! App discovery, in the manner of Prometheus' file_sd and http_sd: files matching globs and
//! an HTTP endpoint that list apps (`[discovery]`).
//!
//! Each file and the URL is a source with its own last good list: a source that fails (a
//! file that does not parse, an endpoint that answers 500) keeps the list it gave last, and
//! says why in a log line; a file that is gone lists nothing. [`Discovery::changed`] tells
//! whether the matched files changed since they were read, so that a new file is picked up
//! within seconds, and every source is read again each `refresh_interval`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::{discovered_apps, App, Discovery as Settings, Shard};

/// The largest list read from a file or the URL.
const MAX_LIST: usize = 16 << 20;

/// What identifies a version of a file: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

/// The sources and what each last listed.
pub struct Discovery {
    settings: Settings,
    shard: Shard,
    http: reqwest::Client,
    /// The last good list of each source, by source name (a file's path, or the URL).
    lists: BTreeMap<String, Vec<App>>,
    /// The files matched when they were last read, and their stamps.
    stamps: BTreeMap<PathBuf, Stamp>,
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
        }
    }

    /// Whether sources are configured.
    pub fn is_configured(&self) -> bool {
        self.settings.is_configured()
    }

    /// How often every source is read again.
    pub fn refresh_interval(&self) -> Duration {
        self.settings.refresh_interval
    }

    /// The last good list of every source, by source name.
    pub fn lists(&self) -> impl Iterator<Item = (&String, &Vec<App>)> {
        self.lists.iter()
    }

    /// Whether the files matching the globs are not those read last, or have changed.
    pub fn changed(&self) -> bool {
        matched(&self.settings.files) != self.stamps
    }

    /// Reads the files again; `true` if some list changed.
    pub fn read_files(&mut self) -> bool {
        let before = self.lists.clone();
        let now = matched(&self.settings.files);
        let url = self.settings.url.clone();
        self.lists.retain(|source, _| {
            Some(source) == url.as_ref() || now.contains_key(Path::new(source))
        });
        for path in now.keys() {
            let source = path.display().to_string();
            match read_file(path, self.shard) {
                Ok(apps) => {
                    self.lists.insert(source, apps);
                }
                Err(problems) => {
                    let kept = self.lists.get(&source).map_or(0, Vec::len);
                    tracing::warn!(source, problems = %problems.join("; "), kept, "discovery file not read; its last list stays");
                }
            }
        }
        self.stamps = now;
        self.lists != before
    }

    /// Asks the URL again; `true` if its list changed.
    pub async fn read_url(&mut self) -> bool {
        let Some(url) = self.settings.url.clone() else {
            return false;
        };
        match self.fetch(&url).await {
            Ok(apps) => self.lists.insert(url, apps.clone()) != Some(apps),
            Err(problem) => {
                let kept = self.lists.get(&url).map_or(0, Vec::len);
                tracing::warn!(source = %url, problem, kept, "discovery URL failed; its last list stays");
                false
            }
        }
    }

    async fn fetch(&self, url: &str) -> Result<Vec<App>, String> {
        let mut request = self.http.get(url);
        if let Some(file) = &self.settings.bearer_token_file {
            let token = std::fs::read_to_string(file)
                .map_err(|error| format!("cannot read {}: {error}", file.display()))?;
            request = request.bearer_auth(token.trim());
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
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| error.without_url().to_string())?
        {
            if body.len() + chunk.len() > MAX_LIST {
                return Err(format!("the list is larger than {} MiB", MAX_LIST >> 20));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(body).map_err(|_| "the list is not UTF-8".to_string())?;
        discovered_apps(&text, yaml, url, self.shard).map_err(|problems| problems.join("; "))
    }
}

/// The apps a file lists: YAML for `.yaml` and `.yml`, JSON otherwise.
fn read_file(path: &Path, shard: Shard) -> Result<Vec<App>, Vec<String>> {
    let source = path.display().to_string();
    let metadata = std::fs::metadata(path).map_err(|error| vec![format!("{source}: {error}")])?;
    if metadata.len() > MAX_LIST as u64 {
        return Err(vec![format!(
            "{source}: larger than {} MiB",
            MAX_LIST >> 20
        )]);
    }
    let text = std::fs::read_to_string(path).map_err(|error| vec![format!("{source}: {error}")])?;
    let yaml = matches!(
        path.extension().and_then(|extension| extension.to_str()),
        Some("yaml" | "yml")
    );
    discovered_apps(&text, yaml, &source, shard)
}

/// The files matching `globs` now, with their stamps.
fn matched(globs: &[String]) -> BTreeMap<PathBuf, Stamp> {
    let mut files = BTreeMap::new();
    for glob in globs {
        let (dir, pattern) = match glob.rsplit_once('/') {
            Some(("", pattern)) => ("/", pattern),
            Some((dir, pattern)) => (dir, pattern),
            None => (".", glob.as_str()),
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if !name.starts_with('.') && wildcard(pattern, name) && path.is_file() {
                let stamp = std::fs::metadata(&path)
                    .ok()
                    .and_then(|metadata| Some((metadata.modified().ok()?, metadata.len())));
                files.insert(path, stamp);
            }
        }
    }
    files
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters and `?` one.
fn wildcard(pattern: &str, name: &str) -> bool {
    let (pattern, name): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), name.chars().collect());
    // The classic two-pointer match with backtracking to the last star.
    let (mut p, mut n, mut star, mut mark) = (0, 0, None, 0);
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some(p);
            mark = n;
            p += 1;
        } else if let Some(at) = star {
            p = at + 1;
            mark += 1;
            n = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_shells_do() {
        for (pattern, name, matches) in [
            ("*.yaml", "apps.yaml", true),
            ("*.yaml", "apps.yml", false),
            ("apps-?.json", "apps-1.json", true),
            ("apps-?.json", "apps-12.json", false),
            ("*", "anything", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("exact.json", "exact.json", true),
        ] {
            assert_eq!(wildcard(pattern, name), matches, "{pattern} {name}");
        }
    }

    #[test]
    fn a_file_that_does_not_read_keeps_its_last_list_and_a_gone_file_lists_nothing() {
        let dir = std::env::temp_dir().join(format!("wme-discovery-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("apps.json");
        std::fs::write(
            &file,
            r#"[{"name": "shop", "appid": "wx1234567890abcdef", "token_source": "url", "token_url": "http://t/{appid}"}]"#,
        )
        .unwrap();
        let settings = Settings {
            files: vec![format!("{}/*.json", dir.display())],
            refresh_interval: Duration::from_secs(60),
            ..Settings::default()
        };
        let mut discovery = Discovery::new(settings, Shard::default());
        assert!(discovery.read_files());
        assert_eq!(discovery.lists().next().unwrap().1[0].name, "shop");
        std::fs::write(&file, "[{\"name\": ").unwrap();
        assert!(discovery.changed());
        assert!(!discovery.read_files(), "the broken file keeps its list");
        assert_eq!(discovery.lists().count(), 1);
        std::fs::remove_file(&file).unwrap();
        assert!(discovery.read_files());
        assert_eq!(discovery.lists().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Reading the configuration's sources: the file (checked to be a UTF-8 file), the
//! environment's secrets taken as written, and figment's errors told without quoting a line.

use std::path::Path;

use super::*;

/// Checks that `file` is a readable UTF-8 file, so that a directory or a binary file is
/// named as such instead of reading as an empty configuration.
pub(super) fn check_file(file: &Path) -> Result<(), String> {
    let shown = file.display();
    let metadata = std::fs::metadata(file).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => format!(
            "the file {shown} does not exist; give the path of a TOML file (see config/example.toml)"
        ),
        _ => format!("cannot read {shown}: {error}"),
    })?;
    if metadata.is_dir() {
        return Err(format!(
            "{shown} is a directory; give the path of a TOML file (see config/example.toml)"
        ));
    }
    let bytes = std::fs::read(file).map_err(|error| format!("cannot read {shown}: {error}"))?;
    std::str::from_utf8(&bytes).map_err(|error| {
        format!(
            "{shown} is not UTF-8 text (at byte {}); a configuration is a TOML file",
            error.valid_up_to()
        )
    })?;
    Ok(())
}

/// Whether an environment key (after the prefix) is an app's secret.
pub(super) fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.starts_with("apps") && (key.ends_with("__secret") || key.ends_with(".secret"))
}

/// Every `WECHAT_MINIPROGRAM_APPS__NAME__SECRET` of the environment, as written: (name in
/// lower case, value).
pub(super) fn environment_secrets() -> Result<Vec<(String, String)>, ConfigError> {
    let mut secrets = Vec::new();
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let Some(rest) = key.get(ENV_PREFIX.len()..).filter(|_| {
            key.get(..ENV_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
        }) else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let Some(name) = lower
            .strip_prefix("apps__")
            .and_then(|r| r.strip_suffix("__secret"))
        else {
            continue;
        };
        let Ok(value) = value.into_string() else {
            return Err(ConfigError {
                problems: vec![format!(
                    "apps.{name}.secret: the environment variable {key} is not UTF-8"
                )],
            });
        };
        secrets.push((name.to_string(), value));
    }
    Ok(secrets)
}

pub(super) fn describe_figment_error(error: figment::Error) -> String {
    let key = if error.path.is_empty() {
        "configuration".to_string()
    } else {
        error.path.join(".")
    };
    let source = error
        .metadata
        .as_ref()
        .map(|metadata| format!(" (from {})", metadata.name))
        .unwrap_or_default();
    // A TOML syntax error quotes the line it is on, which may hold a secret: only the
    // position and the reason are kept.
    let kind = error.kind.to_string();
    let kind: Vec<&str> = kind
        .lines()
        .filter(|line| !line.trim_start().starts_with('|') && !is_quoted_line(line))
        .collect();
    format!("{key}: {}{source}", kind.join(" "))
}

/// A line of a TOML error that quotes the source: `12 | text`.
pub(super) fn is_quoted_line(line: &str) -> bool {
    let line = line.trim_start();
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && line[digits..].trim_start().starts_with('|')
}

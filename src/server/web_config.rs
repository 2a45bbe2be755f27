//! The web configuration of the official exporters (`--web.config.file`, the
//! exporter-toolkit YAML): TLS, basic auth and response headers.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt            # paths are relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # or NoClientCert, VerifyClientCertIfGiven
//!   client_ca_file: ca.crt
//!   min_version: TLS12               # TLS12 or TLS13
//!   cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]   # TLS 1.2 suites
//! http_server_config:
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! basic_auth_users:
//!   prometheus: $2y$10$...           # bcrypt, as `htpasswd -nbBC 10` makes it
//! ```
//!
//! The file, and the certificate, key and CA files it names, are checked for changes every
//! second in the background ([`WebConfig::watch`]) and read again when one changed: certificates
//! rotate without a restart, and a connection never waits for a file (a file that is not a
//! regular file, a FIFO say, is refused without being opened). A change that does not load is
//! logged and the running configuration stays. A certificate that has expired, or is not
//! valid yet, is a warning; its expiry is a metric. What rustls cannot do (TLS 1.0 and 1.1,
//! the client auth types that accept unverified certificates, other cipher suites) is refused
//! with the reason.
//!
//! Basic auth verifies bcrypt hashes off the runtime threads, one at a time, and answers a
//! wrong password only after a pause: a flood of wrong passwords costs one core at most and
//! never delays `/healthz`. Credentials verified once are remembered (as a keyed hash). An
//! unknown user is verified against a hash of the highest cost configured, so that timing
//! tells no user names.

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use axum::http::header::{HeaderName, HeaderValue};
use figment::providers::{Format, Yaml};
use figment::Figment;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;

/// The headers the exporter-toolkit lets a web configuration set.
const SETTABLE_HEADERS: [&str; 5] = [
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    cert_file: Option<String>,
    #[serde(default)]
    key_file: Option<String>,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<String>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
    #[serde(default)]
    cipher_suites: Option<Vec<String>>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    curve_preferences: Option<Vec<String>>,
    #[serde(default)]
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default)]
    http2: Option<bool>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
}

/// The bcrypt costs accepted: `htpasswd` makes 4 to 17; above 16, every verification would
/// take seconds.
const COSTS: std::ops::RangeInclusive<u32> = 4..=16;

/// How long a wrong password waits before it is answered.
const FAILED_AUTH_PAUSE: Duration = Duration::from_millis(500);

/// How often the files are checked for changes.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A web configuration, loaded and checked.
pub struct Loaded {
    /// The TLS acceptor, when TLS is on.
    pub tls: Option<TlsAcceptor>,
    /// Users and their bcrypt hashes, when basic auth is on.
    users: BTreeMap<String, String>,
    /// A hash of nothing anyone knows, of the highest cost of `users`, verified for unknown
    /// users.
    dummy: String,
    /// Headers added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The files it was read from, to notice changes.
    files: Vec<PathBuf>,
    /// When the server certificate stops being valid (Unix time), and when it starts.
    pub validity: Option<(i64, i64)>,
}

impl Loaded {
    /// Whether requests need credentials.
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }
}

/// What a file looked like when it was read.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// The configuration in effect and the stamps of its files.
struct Current {
    loaded: Arc<Loaded>,
    stamps: Vec<Stamp>,
    /// The stamps of the last change that failed to load, so that it is logged once.
    failed: Option<Vec<Stamp>>,
}

/// A web configuration file, read again when it (or a file it names) changes.
pub struct WebConfig {
    path: PathBuf,
    current: RwLock<Current>,
    /// Credentials already verified, as hashes: bcrypt is slow on purpose, and a scraper
    /// sends the same credentials every time.
    verified: Mutex<HashSet<u64>>,
    keys: (u64, u64),
    /// One bcrypt verification at a time.
    verifying: tokio::sync::Semaphore,
}

impl WebConfig {
    /// Reads and checks the file: what is wrong is the error.
    pub fn load(path: &Path) -> Result<WebConfig, String> {
        let loaded = load(path)?;
        warn_of_validity(path, &loaded);
        let stamps = loaded.files.iter().map(|file| stamp(file)).collect();
        Ok(WebConfig {
            path: path.to_path_buf(),
            current: RwLock::new(Current {
                loaded: Arc::new(loaded),
                stamps,
                failed: None,
            }),
            verified: Mutex::new(HashSet::new()),
            keys: (fastrand::u64(..), fastrand::u64(..)),
            verifying: tokio::sync::Semaphore::new(1),
        })
    }

    /// The configuration in effect; never waits for a file.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.read().expect("web config lock").loaded.clone()
    }

    /// Checks the files every second, off the runtime threads, and swaps in the configuration
    /// read again after a change (`on_loaded` sees each one); until `shutdown` turns true.
    pub async fn watch(
        self: Arc<Self>,
        on_loaded: impl Fn(&Loaded) + Send + 'static,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        on_loaded(&self.current());
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let web = self.clone();
            let reloaded = tokio::task::spawn_blocking(move || web.reload_if_changed()).await;
            if let Ok(Some(loaded)) = reloaded {
                on_loaded(&loaded);
            }
        }
    }

    /// Reads the configuration again if one of its files changed; the new one, if it loads.
    fn reload_if_changed(&self) -> Option<Arc<Loaded>> {
        let (files, stamps, failed) = {
            let current = self.current.read().expect("web config lock");
            (
                current.loaded.files.clone(),
                current.stamps.clone(),
                current.failed.clone(),
            )
        };
        let now: Vec<Stamp> = files.iter().map(|file| stamp(file)).collect();
        if now == stamps || failed.as_ref() == Some(&now) {
            return None;
        }
        let loaded = load(&self.path);
        let mut current = self.current.write().expect("web config lock");
        match loaded {
            Ok(loaded) => {
                tracing::info!(file = %self.path.display(), "web configuration read again");
                warn_of_validity(&self.path, &loaded);
                current.stamps = loaded.files.iter().map(|file| stamp(file)).collect();
                current.loaded = Arc::new(loaded);
                current.failed = None;
                self.verified.lock().expect("auth cache lock").clear();
                Some(current.loaded.clone())
            }
            Err(problem) => {
                tracing::error!(file = %self.path.display(), error = %problem, "the changed web configuration does not load; the running one stays");
                current.failed = Some(now);
                None
            }
        }
    }

    /// Whether an `Authorization` header holds the credentials of a configured user.
    pub async fn authorized(&self, loaded: &Loaded, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        let known = loaded.users.get(&user);
        // An unknown user is as slow as a known one, so that timing tells no user names.
        let hash = known.unwrap_or(&loaded.dummy).clone();
        let mut hasher = std::hash::DefaultHasher::new();
        (self.keys, &user, &password, &hash).hash(&mut hasher);
        let key = hasher.finish();
        if known.is_some()
            && self
                .verified
                .lock()
                .expect("auth cache lock")
                .contains(&key)
        {
            return true;
        }
        let ok = match self.verifying.acquire().await {
            Ok(_permit) => tokio::task::spawn_blocking(move || {
                bcrypt::verify(&password, &hash).unwrap_or(false)
            })
            .await
            .unwrap_or(false),
            Err(_) => false,
        };
        let ok = ok && known.is_some();
        if ok {
            let mut verified = self.verified.lock().expect("auth cache lock");
            if verified.len() >= 1024 {
                verified.clear();
            }
            verified.insert(key);
        } else {
            tokio::time::sleep(FAILED_AUTH_PAUSE).await;
        }
        ok
    }
}

/// Logs a server certificate that has expired or is not valid yet.
fn warn_of_validity(path: &Path, loaded: &Loaded) {
    let Some((not_after, not_before)) = loaded.validity else {
        return;
    };
    let now = chrono::Utc::now().timestamp();
    let shown = |seconds: i64| {
        chrono::DateTime::from_timestamp(seconds, 0).map_or(seconds.to_string(), |t| t.to_rfc3339())
    };
    if now > not_after {
        tracing::warn!(file = %path.display(), not_after = %shown(not_after), "the TLS certificate has expired: clients will refuse it");
    } else if now < not_before {
        tracing::warn!(file = %path.display(), not_before = %shown(not_before), "the TLS certificate is not valid yet: clients will refuse it");
    }
}

/// The user and password of a `Basic` authorization.
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Refuses a path that is not a regular file (a FIFO, a device, a directory) before anything
/// opens it: opening a FIFO would wait for a writer.
fn regular_file(path: &Path, key: &str) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_file() => Ok(()),
        Ok(_) => Err(format!("{key}: {} is not a regular file", path.display())),
        Err(error) => Err(format!("{key}: {}: {error}", path.display())),
    }
}

fn load(path: &Path) -> Result<Loaded, String> {
    regular_file(path, "--web.config.file")?;
    let raw: RawWebConfig = Figment::from(Yaml::file_exact(path))
        .extract()
        .map_err(|error| {
            let errors: Vec<String> = error.into_iter().map(|e| e.to_string()).collect();
            format!("{}: {}", path.display(), errors.join("; "))
        })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut files = vec![path.to_path_buf()];
    let tls = match raw.tls_server_config {
        Some(tls) => Some(tls_acceptor(tls, base, &mut files)?),
        None => None,
    };
    let users = raw.basic_auth_users.unwrap_or_default();
    let mut highest = *COSTS.start();
    for (user, hash) in &users {
        if !(hash.starts_with("$2") && hash.len() == 60) || user.contains(':') {
            return Err(format!(
                "basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nbBC 10 USER PASSWORD`)"
            ));
        }
        let cost = hash.get(4..6).and_then(|cost| cost.parse::<u32>().ok());
        match cost {
            Some(cost) if COSTS.contains(&cost) => highest = highest.max(cost),
            _ => {
                return Err(format!(
                    "basic_auth_users.{user}: the bcrypt cost must be from {} to {} (htpasswd -C)",
                    COSTS.start(),
                    COSTS.end()
                ))
            }
        }
    }
    let dummy = if users.is_empty() {
        String::new()
    } else {
        bcrypt::hash(format!("{:x}", fastrand::u128(..)), highest).unwrap_or_default()
    };
    let headers = headers(raw.http_server_config)?;
    let validity = match &tls {
        Some((_, validity)) => *validity,
        None => None,
    };
    Ok(Loaded {
        tls: tls.map(|(acceptor, _)| acceptor),
        users,
        dummy,
        headers,
        files,
        validity,
    })
}

fn headers(http: Option<RawHttp>) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let Some(http) = http else {
        return Ok(Vec::new());
    };
    let _ = http.http2;
    let mut headers = Vec::new();
    for (name, value) in http.headers.unwrap_or_default() {
        let Some(allowed) = SETTABLE_HEADERS
            .iter()
            .find(|h| h.eq_ignore_ascii_case(&name))
        else {
            return Err(format!(
                "http_server_config.headers.{name}: only {} can be set",
                SETTABLE_HEADERS.join(", ")
            ));
        };
        let value = HeaderValue::from_str(&value)
            .map_err(|_| format!("http_server_config.headers.{name}: not a header value"))?;
        headers.push((HeaderName::from_static(static_lower(allowed)), value));
    }
    Ok(headers)
}

fn static_lower(name: &str) -> &'static str {
    match name {
        "Strict-Transport-Security" => "strict-transport-security",
        "X-Content-Type-Options" => "x-content-type-options",
        "X-Frame-Options" => "x-frame-options",
        "X-XSS-Protection" => "x-xss-protection",
        _ => "content-security-policy",
    }
}

/// The acceptor, and the validity (not after, not before) of the server's certificate.
type Acceptor = (TlsAcceptor, Option<(i64, i64)>);

fn tls_acceptor(tls: RawTls, base: &Path, files: &mut Vec<PathBuf>) -> Result<Acceptor, String> {
    let unsupported = [
        ("client_allowed_sans", tls.client_allowed_sans.is_some()),
        ("curve_preferences", tls.curve_preferences.is_some()),
    ];
    if let Some((key, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(format!(
            "tls_server_config.{key}: not supported by this exporter (rustls)"
        ));
    }
    // The settings first, then the files they name.
    let provider = Arc::new(provider(tls.cipher_suites.as_deref())?);
    let versions = versions(tls.min_version.as_deref(), tls.max_version.as_deref())?;
    let (certs, key) = server_identity(&tls, base, files)?;
    let validity = certs
        .first()
        .and_then(|leaf| super::certificate::validity(leaf));
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|error| format!("tls_server_config: {error}"))?;
    let builder = match client_verifier(&tls, base, files, provider)? {
        None => builder.with_no_client_auth(),
        Some(verifier) => builder.with_client_cert_verifier(verifier),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|error| {
        format!("tls_server_config: the certificate and key do not go together: {error}")
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The server's cipher suite order wins, as the exporter-toolkit's default says.
    config.ignore_client_order = tls.prefer_server_cipher_suites.unwrap_or(true);
    Ok((TlsAcceptor::from(Arc::new(config)), validity))
}

/// The path of the file a `tls_server_config` key names, relative to the configuration.
fn tls_file(base: &Path, key: &str, name: Option<&String>) -> Result<PathBuf, String> {
    let name = name.ok_or(format!("tls_server_config.{key} is required"))?;
    Ok(base.join(name))
}

/// The server's certificate chain and key, from `cert_file` and `key_file`.
fn server_identity(
    tls: &RawTls,
    base: &Path,
    files: &mut Vec<PathBuf>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let cert_file = tls_file(base, "cert_file", tls.cert_file.as_ref())?;
    let key_file = tls_file(base, "key_file", tls.key_file.as_ref())?;
    regular_file(&cert_file, "tls_server_config.cert_file")?;
    regular_file(&key_file, "tls_server_config.key_file")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_file)
        .and_then(|certs| certs.collect())
        .map_err(|error| {
            format!(
                "tls_server_config.cert_file: {}: {error}",
                cert_file.display()
            )
        })?;
    let key = PrivateKeyDer::from_pem_file(&key_file).map_err(|error| {
        format!(
            "tls_server_config.key_file: {}: {error}",
            key_file.display()
        )
    })?;
    files.extend([cert_file, key_file]);
    Ok((certs, key))
}

/// How client certificates are verified (`client_auth_type`, `client_ca_file`): `None` when
/// they are not asked for.
fn client_verifier(
    tls: &RawTls,
    base: &Path,
    files: &mut Vec<PathBuf>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, String> {
    let auth = tls.client_auth_type.as_deref().unwrap_or("NoClientCert");
    match auth {
        "NoClientCert" => return Ok(None),
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {}
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(format!("tls_server_config.client_auth_type: {auth} accepts certificates nobody verified, which rustls does not do; use VerifyClientCertIfGiven or RequireAndVerifyClientCert"));
        }
        other => {
            return Err(format!("tls_server_config.client_auth_type: {other:?} is not one of NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"));
        }
    }
    let failed = |error: String| format!("tls_server_config.client_ca_file: {error}");
    let ca_file = tls_file(base, "client_ca_file", tls.client_ca_file.as_ref())?;
    regular_file(&ca_file, "tls_server_config.client_ca_file")?;
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&ca_file)
        .map_err(|error| failed(format!("{}: {error}", ca_file.display())))?;
    for cert in certs {
        let cert = cert.map_err(|error| failed(error.to_string()))?;
        roots.add(cert).map_err(|error| failed(error.to_string()))?;
    }
    files.push(ca_file);
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let verifier = if auth == "VerifyClientCertIfGiven" {
        verifier.allow_unauthenticated()
    } else {
        verifier
    };
    let verifier = verifier
        .build()
        .map_err(|error| failed(error.to_string()))?;
    Ok(Some(verifier))
}

/// The TLS versions from `min_version` to `max_version` (TLS 1.2 and 1.3 by default).
fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let rank = |key: &str, value: Option<&str>, default: u8| match value {
        None => Ok(default),
        Some("TLS12") => Ok(2),
        Some("TLS13") => Ok(3),
        Some(other @ ("TLS10" | "TLS11")) => Err(format!(
            "tls_server_config.{key}: {other} is not supported (rustls speaks TLS 1.2 and 1.3)"
        )),
        Some(other) => Err(format!(
            "tls_server_config.{key}: {other:?} is not TLS12 or TLS13"
        )),
    };
    let (min, max) = (rank("min_version", min, 2)?, rank("max_version", max, 3)?);
    let versions: Vec<_> = [(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(rank, _)| (min..=max).contains(rank))
        .map(|(_, version)| version)
        .collect();
    if versions.is_empty() {
        return Err("tls_server_config: min_version is above max_version".into());
    }
    Ok(versions)
}

/// The ring provider, with only the named TLS 1.2 suites if any (Go names; TLS 1.3 suites
/// are not configurable, as in Go).
fn provider(suites: Option<&[String]>) -> Result<rustls::crypto::CryptoProvider, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    let Some(suites) = suites else {
        return Ok(provider);
    };
    let name = |suite: &rustls::SupportedCipherSuite| format!("{:?}", suite.suite());
    let mut chosen: Vec<rustls::SupportedCipherSuite> = provider
        .cipher_suites
        .iter()
        .filter(|suite| suite.version() == &rustls::version::TLS13)
        .copied()
        .collect();
    for wanted in suites {
        let normalized = if wanted.ends_with("CHACHA20_POLY1305") {
            format!("{wanted}_SHA256")
        } else {
            wanted.clone()
        };
        let found = provider
            .cipher_suites
            .iter()
            .find(|suite| name(suite) == normalized);
        match found {
            Some(suite) => chosen.push(*suite),
            None => {
                let known: Vec<String> = provider
                    .cipher_suites
                    .iter()
                    .filter(|suite| suite.version() == &rustls::version::TLS12)
                    .map(name)
                    .collect();
                return Err(format!(
                    "tls_server_config.cipher_suites: {wanted} is not supported; use some of {}",
                    known.join(", ")
                ));
            }
        }
    }
    provider.cipher_suites = chosen;
    Ok(provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_users_are_verified_at_the_highest_configured_cost() {
        let dir = std::env::temp_dir().join(format!("wme-web-dummy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (low, high) = (
            bcrypt::hash("one", 4).unwrap(),
            bcrypt::hash("two", 6).unwrap(),
        );
        let path = dir.join("web.yml");
        std::fs::write(
            &path,
            format!("basic_auth_users:\n  low: '{low}'\n  high: '{high}'\n"),
        )
        .unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(&loaded.dummy[..7], "$2b$06$", "{}", loaded.dummy);
        std::fs::write(&path, format!("basic_auth_users:\n  low: '{low}'\n")).unwrap();
        assert_eq!(&load(&path).unwrap().dummy[..7], "$2b$04$");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

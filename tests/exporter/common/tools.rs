//! Real clients and tools for the web tests: `openssl` for certificates, `htpasswd` for
//! bcrypt hashes, `curl` for requests, and the exporter's binary on a free port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `program` with `args`; panics with its output unless it succeeds.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("{program} (scripts/install-tools installs it): {error}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{text}"
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A certificate authority and what it signed, made by `openssl` in a directory.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// A CA named `name` in `dir/name.crt` and `dir/name.key`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &pki.path(&format!("{name}.key")),
                "-out",
                &pki.path(&format!("{name}.crt")),
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        pki
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// A certificate for `name` signed by the CA `ca`: for the server (127.0.0.1) or a
    /// client. Written to `dir/name.crt` and `dir/name.key`.
    pub fn sign(&self, ca: &str, name: &str, server: bool) {
        self.sign_at(ca, name, server, None);
    }

    /// As [`Pki::sign`], signed as if the clock showed `at` (a `faketime` time such as
    /// `"2020-01-01 00:00:00"`): a certificate valid for two days from then.
    pub fn sign_at(&self, ca: &str, name: &str, server: bool, at: Option<&str>) {
        let extensions = self.path(&format!("{name}.ext"));
        let usage = if server {
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
        } else {
            "extendedKeyUsage=clientAuth\n"
        };
        std::fs::write(&extensions, usage).unwrap();
        let (key, csr, crt) = (
            self.path(&format!("{name}.key")),
            self.path(&format!("{name}.csr")),
            self.path(&format!("{name}.crt")),
        );
        run(
            "openssl",
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        let (ca_crt, ca_key) = (
            self.path(&format!("{ca}.crt")),
            self.path(&format!("{ca}.key")),
        );
        let (program, mut args) = match at {
            Some(at) => ("faketime", vec![at, "openssl"]),
            None => ("openssl", vec![]),
        };
        args.extend([
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &extensions,
        ]);
        run(program, &args);
    }
}

/// A bcrypt hash of `password`, as `htpasswd -nbBC 10` makes it.
pub fn htpasswd(user: &str, password: &str) -> String {
    let line = run("htpasswd", &["-nbBC", "10", user, password]);
    line.trim().split_once(':').unwrap().1.to_string()
}

/// What `curl` got: its exit code, the status (0 if none), headers and body.
pub struct Fetched {
    pub code: i32,
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// `curl` with `args` (a URL among them), a 10 s timeout, headers and status captured.
pub fn curl(args: &[&str]) -> Fetched {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl (scripts/install-tools installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (rest, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let (headers, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    Fetched {
        code: output.status.code().unwrap_or(-1),
        status: status.trim().parse().unwrap_or(0),
        headers: headers.to_string(),
        body: body.to_string(),
    }
}

/// The exporter's binary with `args`, once its port takes connections; killed when dropped.
pub struct Binary {
    pub child: Child,
    pub address: std::net::SocketAddr,
    /// What it wrote on stderr so far (read all along, so that it never blocks on a full pipe).
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Binary {
    /// Starts the binary with `args` and `--web.listen-address` on a free port.
    pub fn start(args: &[&str]) -> Binary {
        Binary::start_with(
            Command::new(env!("CARGO_BIN_EXE_wechat-miniprogram-exporter")),
            args,
        )
    }

    /// As [`Binary::start`], from a prepared `command` (a wrapper such as `prlimit`).
    pub fn start_with(mut command: Command, args: &[&str]) -> Binary {
        let address = super::free_address();
        if !args.iter().any(|arg| arg.starts_with("--storage.path")) {
            // Never the default ./data in the working directory.
            let storage = std::env::temp_dir().join(format!(
                "wme-storage-{}-{}",
                std::process::id(),
                address.port()
            ));
            command.arg(format!("--storage.path={}", storage.display()));
        }
        if !args.iter().any(|arg| arg.starts_with("--log.level")) {
            command.arg("--log.level=warn");
        }
        let mut child = command
            .args(args)
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let written = stderr.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            while let Ok(read) = std::io::Read::read(&mut pipe, &mut buffer) {
                if read == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buffer[..read]);
                written.lock().unwrap().push_str(&text);
            }
        });
        let started = Instant::now();
        while std::net::TcpStream::connect(address).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the exporter never listened"
            );
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the exporter exited ({status}) before it listened: {}",
                    stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Binary {
            child,
            address,
            stderr,
        }
    }

    /// What the binary wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `https://127.0.0.1:PORT{path}` or `http://...`.
    pub fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.address)
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

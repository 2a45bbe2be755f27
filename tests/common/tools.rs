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
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &self.path(&format!("{ca}.crt")),
                "-CAkey",
                &self.path(&format!("{ca}.key")),
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &extensions,
            ],
        );
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
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        if !args.iter().any(|arg| arg.starts_with("--storage.path")) {
            // Never the default ./data in the working directory.
            let storage = std::env::temp_dir().join(format!(
                "wme-storage-{}-{}",
                std::process::id(),
                address.port()
            ));
            command.arg(format!("--storage.path={}", storage.display()));
        }
        let child = command
            .args(args)
            .arg(format!("--web.listen-address={address}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(address).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the exporter never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Binary { child, address }
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

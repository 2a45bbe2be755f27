//! Names the commit the binary is built from, for `--version`: the `SOURCE_REVISION` variable
//! when set (the image's build passes it, as its context holds no `.git`), else `git rev-parse
//! HEAD` in a checkout, else nothing. The build date is `SOURCE_DATE_EPOCH` when set
//! (reproducible builds), else the time of the build. (The names the binary reads are not under
//! `WECHAT_MINIPROGRAM_`, which is the configuration's: cargo sets them when it runs tests too.)

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

const REVISION: &str = "SOURCE_REVISION";

fn main() {
    println!("cargo:rerun-if-env-changed={REVISION}");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let revision = std::env::var(REVISION)
        .ok()
        .filter(|revision| !revision.trim().is_empty())
        .map(|revision| revision.trim().to_string())
        .or_else(git_head);
    if let Some(revision) = revision {
        println!("cargo:rustc-env=EXPORTER_BUILD_REVISION={revision}");
    }
    let date = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|epoch| epoch.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs())
        });
    println!("cargo:rustc-env=EXPORTER_BUILD_EPOCH={date}");
}

/// The commit checked out, and the files that change with it, watched for a rebuild.
fn git_head() -> Option<String> {
    let git_dir = run(&["rev-parse", "--git-dir"])?;
    println!("cargo:rerun-if-changed={git_dir}/HEAD");
    if let Some(reference) = run(&["symbolic-ref", "-q", "HEAD"]) {
        println!("cargo:rerun-if-changed={git_dir}/{reference}");
        println!("cargo:rerun-if-changed={git_dir}/packed-refs");
    }
    run(&["rev-parse", "HEAD"]).filter(|head| head.len() == 40)
}

fn run(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

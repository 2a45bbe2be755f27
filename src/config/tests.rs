//! The configuration's contract: defaults, every bad key named with its fix, secrets never
//! printed.

use super::*;
use crate::domain::{Polling, TokenSource};
use crate::report::{Report, ReportSet, Settings as ReportSettings};
use std::time::Duration;

const APP: &str = "[apps.shop]\nappid = \"wx1234567890abcdef\"\nsecret = \"s3cr3t\"\n";

fn problems(text: &str) -> Vec<String> {
    Config::from_toml(text).unwrap_err().problems
}

#[test]
fn defaults_match_the_documented_contract() {
    let config = Config::from_toml(APP).unwrap();
    assert_eq!(config.listen_address, "0.0.0.0:10050".parse().unwrap());
    assert_eq!(config.api_base_url, "https://api.weixin.qq.com");
    assert_eq!(config.polling.not_ready_retry, Duration::from_secs(1800));
    assert_eq!(
        config.polling.error_backoff_initial,
        Duration::from_secs(30)
    );
    assert_eq!(config.polling.error_backoff_max, Duration::from_secs(1800));
    assert_eq!(config.polling.concurrency, 4);
    assert_eq!(config.polling, Polling::default(), "one set of defaults");
    assert_eq!(config.reports.pages_top, 20);
    assert_eq!(config.apps[0].name, "shop");
    assert!(
        matches!(&config.apps[0].token, TokenSource::StableToken(secret) if secret.expose() == "s3cr3t")
    );
}

#[test]
fn every_bad_key_is_named_with_its_fix() {
    let found = problems(
        "listen_address = \"nowhere\"\n[polling]\nnot_ready_retry = \"soon\"\nconcurrency = 0\n[reports]\npages_top = 500\n\
         [apps.shop]\nappid = \"wx123\"\n[apps.blog]\nappid = \"wx1234567890abcdef\"\ntoken_source = \"magic\"\n",
    );
    let keys: Vec<&str> = found.iter().map(|p| p.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "listen_address",
            "polling.not_ready_retry",
            "polling.concurrency",
            "reports.pages_top",
            "apps.blog.token_source",
            "apps.shop.appid",
            "apps.shop",
        ],
        "{found:#?}"
    );
    assert!(found[1].contains("\"30m\""), "{}", found[1]);
    assert!(
        found[6].contains("WECHAT_MINIPROGRAM_APPS__SHOP__SECRET"),
        "{}",
        found[6]
    );
}

#[test]
fn absurd_numbers_and_durations_are_refused_with_the_allowed_range() {
    let found = problems(&format!(
        "{APP}[polling]\nconcurrency = 9223372036854775807\nnot_ready_retry = \"1ns\"\n\
         error_backoff_initial = \"1ns\"\nerror_backoff_max = \"300000years\"\nrequest_timeout = \"1h\"\n\
         [reports]\nquota_interval = \"1s\"\n"
    ));
    let expected = [
        "polling.not_ready_retry: \"1ns\" is out of range; use from 1m to 1day",
        "polling.error_backoff_initial: \"1ns\" is out of range; use from 100ms to 1h",
        "polling.error_backoff_max: \"300000years\" is out of range; use from 1s to 1day",
        "polling.request_timeout: \"1h\" is out of range; use from 1s to 10m",
        "polling.concurrency: 9223372036854775807 must be between 1 and 64",
        "reports.quota_interval: \"1s\" is out of range; use from 10m to 1day",
    ];
    assert_eq!(found, expected);
}

#[test]
fn a_toml_error_never_quotes_the_line_it_is_on() {
    let found = problems("[apps.shop]\nappid = \"wx1234567890abcdef\"\nsecret = 0123secret\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(!found[0].contains("0123secret"), "{found:?}");
    assert!(found[0].contains("line 3"), "{found:?}");
    let config =
        Config::from_toml("[apps.shop]\nappid = \"wx1234567890abcdef\"\nsecret = 123456\n")
            .unwrap();
    let TokenSource::StableToken(secret) = &config.apps[0].token else {
        panic!()
    };
    assert_eq!(secret.expose(), "123456", "an all-digit secret is a secret");
}

#[test]
fn reports_are_named_from_the_registry_and_their_settings_checked() {
    let found = problems(&format!(
        "{APP}[reports]\nenabled = [\"visit_trend\", \"visits\"]\nportrait_ranges = [\"2d\"]\njs_errors_top = 101\nportrait_top = 0\n"
    ));
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(
        found.iter().any(|p| p.starts_with(
            "reports.enabled: \"visits\" is not a report; the reports are visit_trend, retention"
        )),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("reports.portrait_ranges: \"2d\"")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("reports.js_errors_top: 101 must be between 1 and 100")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("reports.portrait_top: 0 must be between 1 and 500")),
        "{found:#?}"
    );

    let config = Config::from_toml(&format!(
        "{APP}[reports]\nenabled = [\"quota\", \"quota\"]\n"
    ))
    .unwrap();
    let report = |name| Report::by_name(name).unwrap();
    assert_eq!(config.reports.enabled, ReportSet::of([report("quota")]));
    let defaults = Config::from_toml(APP).unwrap().reports;
    assert!(defaults.is_enabled(report("js_errors")) && !defaults.is_enabled(report("quota")));
    assert_eq!(defaults, ReportSettings::default(), "one set of defaults");
}

#[test]
fn unknown_keys_and_wrong_types_are_reported_with_their_path() {
    let found = problems(&format!("{APP}[polling]\nconcurency = 3\n"));
    assert!(found[0].contains("concurency"), "{found:?}");
    let found = problems(&format!("{APP}[reports]\npages_top = \"many\"\n"));
    assert!(found[0].starts_with("reports.pages_top"), "{found:?}");
}

#[test]
fn secrets_come_from_files_and_are_never_printed() {
    let dir = std::env::temp_dir().join(format!("wmpe-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shop");
    std::fs::write(&path, "from-a-file\n").unwrap();
    let config = Config::from_toml(&format!(
        "[apps.shop]\nappid = \"wx1234567890abcdef\"\nsecret_file = \"{}\"\n",
        path.display()
    ))
    .unwrap();
    let TokenSource::StableToken(secret) = &config.apps[0].token else {
        panic!()
    };
    assert_eq!(secret.expose(), "from-a-file");
    assert!(!format!("{config:?}").contains("from-a-file"));

    let found = problems(
        "[apps.shop]\nappid = \"wx1234567890abcdef\"\nsecret_file = \"/nonexistent/secret\"\n",
    );
    assert!(
        found[0].starts_with("apps.shop.secret_file: cannot read /nonexistent/secret"),
        "{found:?}"
    );
}

#[test]
fn external_token_sources_need_their_location_and_no_secret() {
    let config = Config::from_toml(
        "[apps.a]\nappid = \"wx1234567890abcdef\"\ntoken_source = \"url\"\ntoken_url = \"http://tokens.internal/{appid}\"\n\
         [apps.b]\nappid = \"wx2234567890abcdef\"\ntoken_source = \"file\"\ntoken_file = \"/run/token\"\n",
    )
    .unwrap();
    assert!(matches!(&config.apps[0].token, TokenSource::Url(url) if url.ends_with("{appid}")));
    assert!(matches!(&config.apps[1].token, TokenSource::File(_)));
    let found = problems(
        "[apps.a]\nappid = \"wx1234567890abcdef\"\ntoken_source = \"url\"\nsecret = \"x\"\n",
    );
    assert_eq!(found.len(), 2, "{found:?}");
}

#[test]
fn the_same_appid_twice_is_refused() {
    let found = problems(&format!(
        "{APP}[apps.shop2]\nappid = \"wx1234567890abcdef\"\nsecret = \"x\"\n"
    ));
    assert!(
        found[0].contains("also the appid of apps.shop"),
        "{found:?}"
    );
}

#[test]
fn listen_addresses_in_exporter_style() {
    assert_eq!(
        parse_listen_address(":9100"),
        Some("0.0.0.0:9100".parse().unwrap())
    );
    assert_eq!(
        parse_listen_address("localhost:1"),
        Some("127.0.0.1:1".parse().unwrap())
    );
    assert_eq!(
        parse_listen_address("[::1]:80"),
        Some("[::1]:80".parse().unwrap())
    );
    assert_eq!(parse_listen_address("nowhere"), None);
}

#[test]
fn shards_split_the_apps_stably_and_completely() {
    let appids: Vec<String> = (0..300).map(|n| format!("wx{n:016x}")).collect();
    let shards: Vec<Shard> = (0..3).map(|n| Shard::new(n, 3).unwrap()).collect();
    let mut sizes = [0; 3];
    for appid in &appids {
        let owners: Vec<u32> = shards
            .iter()
            .filter(|shard| shard.owns(appid))
            .map(|shard| shard.index)
            .collect();
        assert_eq!(owners.len(), 1, "{appid}: {owners:?}");
        sizes[owners[0] as usize] += 1;
    }
    assert!(sizes.iter().all(|&n| (70..=130).contains(&n)), "{sizes:?}");
    // The assignment is a contract (FNV-1a 64 of the appid, modulo the shards): it must
    // not change between versions.
    assert!(Shard::new(2, 3).unwrap().owns("wx5a1e0c2b7d9f3e41"));
    assert!(Shard::default().owns("anything"));
    assert!(Shard::new(3, 3).unwrap_err().contains("0 to 2"));
    assert!(Shard::new(0, 0).is_err());
}

#[test]
fn an_app_sets_any_report_key_of_its_own_over_the_global_value() {
    let text = format!(
        "[reports]\npages_top = 30\n{APP}[apps.shop.reports]\npages_top = 5\nenabled = [\"visit_trend\", \"visit_page\"]\nportrait_ranges = [\"7d\"]\n\
         [apps.blog]\nappid = \"wx2234567890abcdef\"\nsecret = \"s\"\n"
    );
    let config = Config::from_toml(&text).unwrap();
    let shop = config.reports_of("shop");
    assert_eq!(shop.pages_top, 5);
    assert_eq!(
        shop.enabled,
        ReportSet::of(["visit_trend", "visit_page"].map(|name| Report::by_name(name).unwrap()))
    );
    assert_eq!(shop.portrait_ranges, [7]);
    assert_eq!(
        shop.js_errors_top, 10,
        "a key it leaves out is the global value"
    );
    let blog = config.reports_of("blog");
    assert_eq!(blog.pages_top, 30);
    assert_eq!(blog, config.reports);
}

#[test]
fn a_bad_report_key_of_an_app_is_named_with_its_full_key() {
    let found = problems(&format!(
        "{APP}[apps.shop.reports]\npages_top = 0\nenabled = [\"nope\"]\nquota_interval = \"1m\"\n"
    ));
    let keys: Vec<&str> = found.iter().map(|p| p.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "apps.shop.reports.pages_top",
            "apps.shop.reports.enabled",
            "apps.shop.reports.quota_interval",
        ],
        "{found:#?}"
    );
    let unknown = problems(&format!("{APP}[apps.shop.reports]\npagez = 5\n"));
    assert!(
        unknown[0].starts_with("apps.shop.reports.pagez"),
        "{unknown:?}"
    );
}

#[test]
fn an_app_has_labels_of_its_own_and_reserved_or_invalid_ones_are_refused() {
    let config = Config::from_toml(&format!(
        "{APP}[apps.shop.labels]\nteam = \"growth\"\nbrand = \"星巴克\"\n"
    ))
    .unwrap();
    assert_eq!(
        config.apps[0].labels,
        [
            ("brand".to_string(), "星巴克".to_string()),
            ("team".to_string(), "growth".to_string())
        ]
    );
    let long = "x".repeat(MAX_LABEL_VALUE + 1);
    let found = problems(&format!(
        "{APP}[apps.shop.labels]\napp = \"a\"\n__meta = \"b\"\n\"1team\" = \"c\"\nreport = \"d\"\nowner = \"{long}\"\n\"a-b\" = \"e\"\n"
    ));
    let keys: Vec<&str> = found.iter().map(|p| p.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "apps.shop.labels.1team",
            "apps.shop.labels.__meta",
            "apps.shop.labels.a-b",
            "apps.shop.labels.app",
            "apps.shop.labels.owner",
            "apps.shop.labels.report",
        ],
        "{found:#?}"
    );
    assert!(found[3].contains("own series"), "{}", found[3]);
}

#[test]
fn a_calendar_file_is_read_and_a_bad_one_is_named() {
    let dir = std::env::temp_dir().join(format!("wme-calendar-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(&good, "- {date: 2027-01-01, kind: holiday, name: 元旦}\n").unwrap();
    let config =
        Config::from_toml(&format!("[calendar]\nfile = \"{}\"\n{APP}", good.display())).unwrap();
    assert!(config.calendar.covers(2027));
    assert!(!Config::from_toml(APP).unwrap().calendar.covers(2027));
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "- {date: 2027-01-01, kind: feast}\n").unwrap();
    let found = problems(&format!("[calendar]\nfile = \"{}\"\n{APP}", bad.display()));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("calendar.file: "), "{found:?}");
    assert!(found[0].contains("kind \"feast\""), "{found:?}");
    let missing = problems(&format!(
        "[calendar]\nfile = \"{}\"\n{APP}",
        dir.join("none.yaml").display()
    ));
    assert!(
        missing[0].starts_with("calendar.file: cannot read"),
        "{missing:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

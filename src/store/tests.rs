//! The store's tests: one rendering per change, gzip without the text, rendering aside, large
//! expositions in sealed memory files.

use super::*;
use crate::domain::{Secret, TokenSource};

fn store() -> Store {
    let app = App {
        name: "shop".into(),
        appid: crate::domain::AppId::parse("wx1234567890abcdef").unwrap(),
        token: TokenSource::StableToken(Secret::new("s")),
        labels: Vec::new(),
    };
    Store::new(&[app], Arc::new(SelfMetrics::new()))
}

#[test]
fn a_large_outdated_rendering_is_served_while_the_next_is_rendered_aside() {
    let store = Arc::new(store());
    store.render_aside.store(0, Ordering::Relaxed);
    let first = store.exposition_now(true)[0].clone();
    store.up(AppSlot(0), false);
    // The change is not waited for: the last rendering comes back at once...
    assert_eq!(store.exposition_now(true)[0].as_ptr(), first.as_ptr());
    // ...and the new one follows, rendered off the scrape path.
    let started = Instant::now();
    while store.exposition_now(true)[0].as_ptr() == first.as_ptr() {
        assert!(started.elapsed() < Duration::from_secs(5), "never rendered");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&store.metrics(true)[..]),
        &mut text,
    )
    .unwrap();
    assert!(text.contains("wechat_miniprogram_up{appid=\"wx1234567890abcdef\",app=\"shop\"} 0"));
    // Small expositions are rendered at once, as before.
    store.render_aside.store(RENDER_ASIDE, Ordering::Relaxed);
    let before = store.exposition_now(true)[0].clone();
    store.up(AppSlot(0), true);
    assert_ne!(store.exposition_now(true)[0].as_ptr(), before.as_ptr());
}

#[test]
fn scrapes_reuse_one_rendering_until_something_changes() {
    let store = store();
    let first = store.exposition(false)[0].clone();
    assert_eq!(first.as_ptr(), store.exposition(false)[0].as_ptr());
    let gzipped = store.exposition(true)[0].clone();
    assert_eq!(gzipped.as_ptr(), store.exposition(true)[0].as_ptr());

    store.up(AppSlot(0), false);
    assert_ne!(first.as_ptr(), store.exposition(false)[0].as_ptr());
    let changed = store.metrics(false);
    assert!(String::from_utf8_lossy(&changed)
        .contains("wechat_miniprogram_up{appid=\"wx1234567890abcdef\",app=\"shop\"} 0"));
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&store.metrics(true)[..]),
        &mut text,
    )
    .unwrap();
    // The same exposition, but for the process metrics, read anew for each.
    let without_process = |text: &str| -> String {
        text.lines()
            .filter(|line| !line.contains("process_"))
            .map(|line| format!("{line}\n"))
            .collect()
    };
    assert_eq!(
        without_process(&text),
        without_process(&String::from_utf8_lossy(&changed))
    );
    assert!(text.contains("process_resident_memory_bytes "), "{text}");
}

#[test]
fn scrapers_asking_for_gzip_alone_never_make_the_store_hold_the_text() {
    let store = store();
    store.up(AppSlot(0), false);
    let gzipped = store.metrics(true);
    let held = |store: &Store| {
        let rendered = store.rendered.lock().unwrap();
        rendered
            .as_ref()
            .map(|r| (r.text.is_some(), r.gzip.is_some()))
    };
    assert_eq!(held(&store), Some((false, true)));
    let text = store.metrics(false);
    assert_eq!(held(&store), Some((true, true)));
    let mut unzipped = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&gzipped[..]),
        &mut unzipped,
    )
    .unwrap();
    assert_eq!(
        unzipped,
        String::from_utf8_lossy(&text),
        "one second of process metrics"
    );
}

#[test]
fn ready_only_after_every_first_round() {
    let store = store();
    assert!(!store.is_ready());
    store.first_round_done(AppSlot(0));
    assert!(store.is_ready());
}

#[test]
fn a_large_text_exposition_is_sent_from_a_sealed_memory_file_as_the_gzip_one_is() {
    let apps: Vec<App> = (0..2000)
        .map(|n| App {
            name: format!("shop-{n}"),
            appid: crate::domain::AppId::parse(&format!("wx{n:016x}")).unwrap(),
            token: TokenSource::StableToken(Secret::new("s")),
            labels: Vec::new(),
        })
        .collect();
    let large = Store::new(&apps, Arc::new(SelfMetrics::new()));
    let text = large.exposition(false);
    assert!(
        text[0].len() > crate::sealed::SEALED_FROM,
        "{}",
        text[0].len()
    );
    assert!(crate::sealed::is_sealed(&text[0]));
    // A small one stays on the heap, written as any response.
    assert!(!crate::sealed::is_sealed(&store().exposition(false)[0]));
}

#[test]
fn a_scrape_is_answered_at_once_only_with_what_the_last_one_got_while_nothing_changed() {
    let store = store();
    assert!(
        store.exposition_kept(true).is_none(),
        "nothing rendered yet"
    );
    let served = store.exposition(true);
    let kept = store.exposition_kept(true).expect("kept");
    assert_eq!(kept, served);
    assert_eq!(
        kept[0].as_ptr(),
        served[0].as_ptr(),
        "the same bytes, not a copy"
    );
    assert!(
        store.exposition_kept(false).is_none(),
        "the text was never asked for"
    );
    let text = store.exposition(false);
    assert_eq!(store.exposition_kept(false).expect("kept"), text);

    store.up(AppSlot(0), false);
    assert!(store.exposition_kept(true).is_none(), "the state changed");
    assert!(store.exposition_kept(false).is_none(), "the state changed");
    store.exposition(true);
    // While a rendering holds the last one, nobody waits for it here.
    let rendering = store.rendered.lock().unwrap();
    assert!(store.exposition_kept(true).is_none());
    drop(rendering);
    assert!(store.exposition_kept(true).is_some());
    // Process metrics older than a second are read anew, on a thread that may block.
    std::thread::sleep(TAIL_KEPT + Duration::from_millis(50));
    assert!(store.exposition_kept(true).is_none());
}

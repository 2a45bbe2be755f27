//! The schedule's tables: what is due, what an attempt asks for, how a job stands, when
//! to wake.

use super::*;
use chrono::TimeZone as _;

/// 2024-06-DD HH:MM in Beijing.
fn at(day: u32, hour: u32) -> DateTime<Utc> {
    crate::period::beijing()
        .with_ymd_and_hms(2024, 6, day, hour, 0, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn day(day: u32) -> Period {
    Period::containing(
        PeriodKind::Daily,
        chrono::NaiveDate::from_ymd_opt(2024, 6, day).unwrap(),
    )
}

fn report(name: &str) -> Report {
    Report::by_name(name).unwrap()
}

/// The daily job of `name` in a schedule of every default report where the trend (the
/// gate) holds `trend` and the report `name` holds `held`.
fn schedule(trend: Option<u32>, name: &str, held: Option<u32>) -> (Schedule, usize) {
    let mut resume = Resume::default();
    let fetched = at(1, 12);
    for (holder, period) in [("visit_trend", trend), (name, held)] {
        if let Some(period) = period {
            resume
                .held
                .insert((report(holder), PeriodKind::Daily), (day(period), fetched));
        }
    }
    let schedule = Schedule::new(&Polling::default(), &ReportSettings::default(), resume);
    let job = schedule
        .jobs
        .iter()
        .position(|job| job.report == report(name) && job.kind == PeriodKind::Daily)
        .unwrap();
    (schedule, job)
}

/// Something that happens to a job of a schedule.
type Change<'a> = dyn Fn(&mut Schedule, usize) + 'a;

#[test]
fn a_job_is_ok_waiting_failing_or_unauthorized_and_only_the_token_and_the_gate_take_the_app_down() {
    let now = at(5, 12);
    let moment = Moment::from_start(Duration::from_secs(1000));
    let reaction = Reaction {
        retry: crate::policy::Retry::After(Duration::from_secs(60)),
        pause_app: false,
    };
    let retry = Deadline::Moment(moment.after(Duration::from_secs(60)));
    let error = |class| ("an error".to_string(), class);
    // (what happens to js_errors, its state, the app up)
    let table: [(&Change<'_>, State, bool); 6] = [
        (&|_, _| {}, State::Waiting, true),
        (
            &|s, job| assert!(s.held(job, day(4), now, None)),
            State::Ok,
            true,
        ),
        (
            &|s, job| s.not_ready(job, day(4), now, retry),
            State::Waiting,
            true,
        ),
        (
            &|s, job| s.failed(job, error(ErrorClass::Transient), reaction, retry),
            State::Failing,
            true,
        ),
        (
            &|s, job| s.failed(job, error(ErrorClass::Unauthorized), reaction, retry),
            State::Unauthorized,
            true,
        ),
        (&|s, _| s.token_failed = true, State::Waiting, false),
    ];
    for (number, (change, state, up)) in table.into_iter().enumerate() {
        let (mut schedule, job) = schedule(Some(4), "js_errors", None);
        change(&mut schedule, job);
        assert_eq!(
            schedule.jobs[job].state(now, moment),
            state,
            "case {number}"
        );
        assert_eq!(
            schedule.status(job, now, moment).state,
            state,
            "case {number}"
        );
        assert_eq!(schedule.up(), up, "case {number}");
    }
    // The gate failing takes the app down; asking refused reports again is at once.
    let (mut schedule, job) = schedule(Some(4), "js_errors", None);
    let gate = schedule.gate(PeriodKind::Daily).unwrap();
    schedule.failed(gate, error(ErrorClass::Transient), reaction, retry);
    assert!(!schedule.up());
    schedule.failed(job, error(ErrorClass::Unauthorized), reaction, retry);
    assert!(schedule.ask_unauthorized_again());
    assert_eq!(schedule.jobs[job].next_attempt, Deadline::NOW);
    assert_ne!(schedule.jobs[gate].next_attempt, Deadline::NOW);
}

#[test]
fn each_job_asks_for_its_period_once_its_gate_holds_it_and_never_for_an_older_one() {
    // (report, gate holds, report holds, Beijing 2024-06-DD HH:00, due, step)
    #[rustfmt::skip]
    let table = [
        // A new exporter at noon asks for yesterday at once, the gate and the others.
        ("visit_trend", None, None, (5, 12), Some(4), Some(Step::Ask)),
        ("js_errors", Some(4), None, (5, 12), Some(4), Some(Step::Ask)),
        // Before polling.first_attempt (06:00) the gate holds the day before: a report
        // that holds nothing shows that day, never yesterday's answer (maybe "no error").
        ("visit_trend", Some(3), None, (5, 3), None, None),
        ("js_errors", Some(3), None, (5, 3), Some(4), Some(Step::PreviousOnly(true))),
        ("js_errors", Some(2), None, (5, 3), Some(4), Some(Step::PreviousOnly(false))),
        ("js_errors", None, None, (5, 3), Some(4), Some(Step::PreviousOnly(false))),
        // Holding the day before, a report waits for the hour the app publishes at.
        ("js_errors", Some(3), Some(3), (5, 3), None, None),
        // At noon it is due, but waits until the gate holds yesterday.
        ("js_errors", Some(3), Some(3), (5, 12), Some(4), Some(Step::WaitForGate)),
        ("js_errors", Some(4), Some(3), (5, 12), Some(4), Some(Step::Ask)),
        // Done: nothing is asked.
        ("js_errors", Some(4), Some(4), (5, 23), None, None),
        // The wall clock set back three days: nothing older than what is held.
        ("visit_trend", Some(4), None, (2, 12), None, None),
        ("js_errors", Some(4), Some(4), (2, 12), None, None),
    ];
    for (name, gate, held, (date, hour), due, step) in table {
        let (schedule, job) = schedule(gate, name, held);
        let now = at(date, hour);
        let found = schedule.due(job, now, Moment::default());
        assert_eq!(
            found,
            due.map(day),
            "{name}, gate {gate:?}, holds {held:?}, at {date} {hour}:00"
        );
        if let Some(target) = found {
            assert_eq!(
                Some(schedule.step(job, target)),
                step,
                "{name} at {date} {hour}:00"
            );
        }
    }
}

#[test]
fn a_first_attempt_falls_back_to_the_day_before_where_wechat_keeps_it() {
    // (report, step, falls back)
    let table = [
        ("visit_trend", Step::Ask, true),
        ("js_errors", Step::PreviousOnly(true), true),
        ("js_errors", Step::PreviousOnly(false), false),
        // WeChat keeps no past of the portrait.
        ("user_portrait", Step::Ask, false),
    ];
    for (name, step, falls_back) in table {
        let (mut schedule, job) = schedule(None, name, None);
        let expected = falls_back.then(|| day(3));
        assert_eq!(
            schedule.previous_to_try(job, day(4), step),
            expected,
            "{name}"
        );
        assert_eq!(
            schedule.previous_to_try(job, day(4), step),
            None,
            "{name}: only once"
        );
    }
}

#[test]
fn outcomes_move_the_next_attempt_and_a_pause_holds_back_the_whole_app() {
    let (mut schedule, job) = schedule(Some(4), "js_errors", Some(3));
    let now = at(5, 12);
    let moment = Moment::from_start(Duration::from_secs(1000));
    let retry = Deadline::Moment(moment.after(Duration::from_secs(1800)));
    schedule.not_ready(job, day(4), now, retry);
    assert_eq!(schedule.due(job, now, moment), None, "not before the retry");
    assert_eq!(
        schedule.due(job, now, moment.after(Duration::from_secs(1800))),
        Some(day(4))
    );
    // A newer period held is never replaced by an older one.
    assert!(schedule.held(job, day(4), now, None));
    assert!(!schedule.held(job, day(3), now, None));
    assert_eq!(schedule.jobs[job].held, Some(day(4)));
    // The per-minute quota pauses every job of the app.
    let reaction = Reaction {
        retry: crate::policy::Retry::After(Duration::from_secs(60)),
        pause_app: true,
    };
    let until = Deadline::Moment(moment.after(Duration::from_secs(60)));
    let quota = ("45011".to_string(), ErrorClass::MinuteQuota);
    schedule.failed(0, quota, reaction, until);
    assert!(schedule.is_blocked(now, moment));
    assert!(schedule.hold_back(now, moment));
    assert!(schedule.has_errors());
    assert!(!schedule.is_blocked(now, moment.after(Duration::from_secs(60))));
}

#[test]
fn the_poller_wakes_at_the_earliest_deadline_and_at_least_every_minute() {
    let now = at(5, 12);
    let moment = Moment::from_start(Duration::from_secs(5000));
    // Every job holds its latest period: a minute later, to notice a step of the clock.
    let mut resume = Resume::default();
    for report in ReportSettings::default().enabled.iter() {
        for &kind in report.kinds() {
            let latest = Period::latest_completed(kind, now);
            resume.held.insert((report, kind), (latest, now));
        }
    }
    let held = Schedule::new(&Polling::default(), &ReportSettings::default(), resume);
    assert_eq!(
        held.next_wake(now, moment),
        moment.after(Duration::from_secs(60))
    );
    // A job not yet asked: at once.
    let (fresh, _) = schedule(None, "js_errors", None);
    assert_eq!(fresh.next_wake(now, moment), moment);
}

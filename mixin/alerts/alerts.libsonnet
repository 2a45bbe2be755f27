// The alert rules. Every query reads over a one-day window (last_over_time(...[1d])), so that
// the rules work the same on scraped data and on history loaded with `backfill`; sides that
// compare days drop the scrape's labels (max without (instance, job)) so that backfilled
// history, live data and a moved exporter meet. What each alert means and what to do: README,
// section "Alerts", where each runbook URL points.
local words = { m: 'minute', h: 'hour', d: 'day' };

// '30m' -> '30 minutes', '1h' -> 'an hour', as the descriptions say it.
local spoken(duration) =
  local count = std.parseInt(std.substr(duration, 0, std.length(duration) - 1));
  local unit = words[std.substr(duration, std.length(duration) - 1, 1)];
  if count == 1 then (if unit == 'hour' then 'an hour' else 'a ' + unit)
  else '%d %ss' % [count, unit];

{
  local c = $._config,
  local selector = c.wechatMiniProgramSelector,

  // The latest day's visitors, without the scrape's labels.
  local latest = 'max without (instance, job) (last_over_time(wechat_miniprogram_visit_uv{%s,period="daily"}[1d]))' % selector,
  // The app's latest day is of one of these kinds in China's working calendar.
  local isKind(kinds) =
    '(max without (instance, job, kind) (last_over_time(wechat_miniprogram_calendar_day{%s,kind=~"%s"}[1d])) == 1)' % [selector, kinds],
  // The drop of the latest day against the days of its kind in the window (a daily subquery:
  // each day's value with that day's kind, whatever the exporter or backfill wrote them).
  local dropAgainst(comment, kinds, window) = |||
    # %(comment)s
    (
        1
      -
          %(latest)s
        /
          avg_over_time((%(latest)s and on (appid, app) %(kind)s)[%(window)s:1d])
    ) > %(threshold)g  # visitUVDropThreshold: the drop that alerts
    and on (appid, app) %(kind)s
  ||| % { comment: comment, latest: latest, kind: isKind(kinds), window: window, threshold: c.visitUVDropThreshold },

  prometheusAlerts+:: {
    groups+: [{
      name: 'wechat-miniprogram',
      rules: [
        // A workday (or make-up workday) against the workdays of the last days, a weekend day
        // against recent weekend days, a holiday against the days of the same holiday before
        // it (a holiday's first day has none, so it is never compared with a workday).
        {
          alert: 'WeChatMiniProgramVisitUVDrop',
          expr: '(\n%s)\nunless on (appid, app)\n  avg_over_time(%s[7d:1d]) < %g  # visitUVDropMinVisitors: ignore apps smaller than this\n' % [
            std.join('or\n', [
              dropAgainst('A workday against recent workdays.', 'workday|makeup_workday', c.visitUVDropWorkdayWindow),
              dropAgainst('A weekend day against recent weekend days.', 'weekend', c.visitUVDropWeekendWindow),
              dropAgainst("A holiday against the holiday's days before it.", 'holiday', c.visitUVDropHolidayWindow),
            ]),
            latest,
            c.visitUVDropMinVisitors,
          ],
          'for': c.visitUVDropFor,
          labels: { severity: 'warning' },
          annotations: {
            summary: '{{ $labels.app }}: daily visitors {{ $value | humanizePercentage }} below recent days of the same kind',
            description: "{{ $labels.app }} ({{ $labels.appid }}) had {{ with printf `last_over_time(wechat_miniprogram_visit_uv{%s,period=\"daily\",appid=\"%%s\"}[1d])` $labels.appid | query }}{{ . | first | value | humanize }}{{ end }} visitors on its latest day, {{ $value | humanizePercentage }} fewer than the average of its recent days of the same kind (workdays, weekend days, or the holiday's days before it, in China's working calendar)." % selector,
            runbook_url: c.runbookURLPattern % std.asciiLower('WeChatMiniProgramVisitUVDrop'),
          },
        },
        // Age of the newest daily trend, from the start of its day. Yesterday's data is
        // (24h + hour) old at a given Beijing hour today; the day before's is 48h + hour. So
        // an age over 48h + 18h means yesterday is still missing at 18:00 Beijing time.
        {
          alert: 'WeChatMiniProgramDataStale',
          expr: |||
            (
              time()
              -
              max by (appid, app) (
                last_over_time(wechat_miniprogram_ref_date_timestamp_seconds{%s,report="visit_trend",period="daily"}[1d])
              )
            ) > (48 + %d) * 3600  # dataStaleHour: the Beijing hour by which yesterday must be in
          ||| % [selector, c.dataStaleHour],
          'for': c.dataStaleFor,
          labels: { severity: 'warning' },
          annotations: {
            summary: "{{ $labels.app }}: yesterday's analytics are still missing",
            description: 'The newest daily visit trend of {{ $labels.app }} ({{ $labels.appid }}) is for a day that began {{ $value | humanizeDuration }} ago. WeChat publishes yesterday by about 10:00 Beijing time, sometimes 15:00.',
            runbook_url: c.runbookURLPattern % std.asciiLower('WeChatMiniProgramDataStale'),
          },
        },
        // The app's access token cannot be had, or its visit trend (the gate of its periods)
        // fails: nothing of the app comes in. A failing or refused report alone is not this.
        {
          alert: 'WeChatMiniProgramExporterDown',
          expr: 'wechat_miniprogram_up{%s} == 0' % selector,
          'for': c.exporterDownFor,
          labels: { severity: 'warning' },
          annotations: {
            summary: '{{ $labels.app }}: the exporter cannot fetch its analytics',
            description: 'Every attempt of the exporter ({{ $labels.instance }}) at some report of {{ $labels.app }} ({{ $labels.appid }}) has failed for %s. Its status page shows the error and the fix.' % spoken(c.exporterDownFor),
            runbook_url: c.runbookURLPattern % std.asciiLower('WeChatMiniProgramExporterDown'),
          },
        },
        // One report of an app keeps failing while the app itself is up.
        {
          alert: 'WeChatMiniProgramReportFailing',
          expr: 'wechat_miniprogram_report_status{%s,status="failing"} == 1' % selector,
          'for': c.reportFailingFor,
          labels: { severity: 'warning' },
          annotations: {
            summary: '{{ $labels.app }}: the {{ $labels.report }} report keeps failing',
            description: "Every attempt of the exporter ({{ $labels.instance }}) at the {{ $labels.period }} {{ $labels.report }} report of {{ $labels.app }} ({{ $labels.appid }}) has failed for %s; the app's other reports go on. Its status page shows the error." % spoken(c.reportFailingFor),
            runbook_url: c.runbookURLPattern % std.asciiLower('WeChatMiniProgramReportFailing'),
          },
        },
        // WeChat refuses the report's API to this app (48001, 61007, 76022).
        {
          alert: 'WeChatMiniProgramReportUnauthorized',
          expr: 'wechat_miniprogram_report_status{%s,status="unauthorized"} == 1' % selector,
          'for': c.reportUnauthorizedFor,
          labels: { severity: 'info' },
          annotations: {
            summary: '{{ $labels.app }} is not authorized for the {{ $labels.report }} report',
            description: "WeChat refuses the API of the {{ $labels.report }} report to {{ $labels.app }} ({{ $labels.appid }}): grant the permission in the Mini Program's admin console (or the third-party platform's authorization), or leave the report out in apps.{{ $labels.app }}.reports.enabled. The exporter asks again once a day and at a reload.",
            runbook_url: c.runbookURLPattern % std.asciiLower('WeChatMiniProgramReportUnauthorized'),
          },
        },
        {
          alert: 'WeChatMiniProgramExporterAbsent',
          expr: 'absent(wechat_miniprogram_exporter_build_info{%s})' % selector,
          'for': c.exporterAbsentFor,
          labels: { severity: 'critical' },
          annotations: {
            summary: 'No wechat-miniprogram-exporter is being scraped',
            description: 'Prometheus has had no sample of wechat_miniprogram_exporter_build_info for %s: the exporter is down or not scraped, and no Mini Program data is coming in.' % spoken(c.exporterAbsentFor),
            runbook_url: c.runbookURLPattern % std.asciiLower('WeChatMiniProgramExporterAbsent'),
          },
        },
        // The share of calls to WeChat that failed over the last hour.
        {
          alert: 'WeChatMiniProgramAPIErrors',
          expr: |||
            (
                sum by (job, instance) (increase(wechat_miniprogram_api_errors_total{%(selector)s}[1h]))
              /
                sum by (job, instance) (increase(wechat_miniprogram_api_requests_total{%(selector)s}[1h]))
            ) > %(ratio)g  # apiErrorsRatio: the share of failed calls that alerts
            and
              sum by (job, instance) (increase(wechat_miniprogram_api_errors_total{%(selector)s}[1h])) >= %(min)g  # apiErrorsMin
          ||| % { selector: selector, ratio: c.apiErrorsRatio, min: c.apiErrorsMin },
          'for': c.apiErrorsFor,
          labels: { severity: 'warning' },
          annotations: {
            summary: '{{ $value | humanizePercentage }} of the calls to WeChat fail',
            description: "{{ $value | humanizePercentage }} of the exporter's calls to the WeChat API ({{ $labels.instance }}) failed over the last hour. See wechat_miniprogram_api_errors_total by errcode.",
            runbook_url: c.runbookURLPattern % std.asciiLower('WeChatMiniProgramAPIErrors'),
          },
        },
        {
          alert: 'WeChatMiniProgramTokenFetchFailing',
          expr: |||
            sum by (job, instance) (increase(wechat_miniprogram_token_fetches_total{%s,outcome="error"}[1h])) > %g  # tokenFetchFailures
          ||| % [selector, c.tokenFetchFailures],
          'for': c.tokenFetchFor,
          labels: { severity: 'warning' },
          annotations: {
            summary: 'The exporter cannot get access tokens',
            description: '{{ $value | humanize }} access-token fetches of the exporter ({{ $labels.instance }}) failed over the last hour. Without a token no report can be fetched.',
            runbook_url: c.runbookURLPattern % std.asciiLower('WeChatMiniProgramTokenFetchFailing'),
          },
        },
        // The latest day's total launch time against the same weekday a week earlier
        // (launches follow the weekly rhythm of traffic and releases), only when both days are
        // known and 7 days apart.
        {
          alert: 'WeChatMiniProgramLaunchTimeRegression',
          expr: |||
            (
                max without (instance, job) (last_over_time(wechat_miniprogram_launch_time_seconds{%(selector)s,phase="total"}[1d]))
              /
                max without (instance, job) (last_over_time(wechat_miniprogram_launch_time_seconds{%(selector)s,phase="total"}[1d] offset 1w))
            ) > %(ratio)g  # launchTimeRatio: the slowdown that alerts
            and on (appid, app)
              max without (instance, job) (last_over_time(wechat_miniprogram_launch_time_seconds{%(selector)s,phase="total"}[1d])) >= %(min)g  # launchTimeMinSeconds: ignore launches faster than this
            and on (appid, app)
              (
                  max without (instance, job) (last_over_time(wechat_miniprogram_ref_date_timestamp_seconds{%(selector)s,report="launch_time",period="daily"}[1d]))
                -
                  max without (instance, job) (last_over_time(wechat_miniprogram_ref_date_timestamp_seconds{%(selector)s,report="launch_time",period="daily"}[1d] offset 1w))
              ) == 604800
          ||| % { selector: selector, ratio: c.launchTimeRatio, min: c.launchTimeMinSeconds },
          'for': c.launchTimeFor,
          labels: { severity: 'warning' },
          annotations: {
            summary: '{{ $labels.app }}: launching takes {{ $value | humanizePercentage }} of the time it took a week earlier',
            description: '{{ $labels.app }} ({{ $labels.appid }}) took {{ with printf `last_over_time(wechat_miniprogram_launch_time_seconds{%(selector)s,phase="total",appid="%%s"}[1d])` $labels.appid | query }}{{ . | first | value | humanizeDuration }}{{ end }} to launch on its latest day, against {{ with printf `last_over_time(wechat_miniprogram_launch_time_seconds{%(selector)s,phase="total",appid="%%s"}[1d] offset 1w)` $labels.appid | query }}{{ . | first | value | humanizeDuration }}{{ end }} on the same weekday a week earlier. The Performance and errors dashboard shows the phases (code download, first render).' % { selector: selector },
            runbook_url: c.runbookURLPattern % std.asciiLower('WeChatMiniProgramLaunchTimeRegression'),
          },
        },
        // Either the error groups of a type jump above every day of the week before, or an
        // error never seen among the top ones that week hits many times (error_id is set).
        {
          alert: 'WeChatMiniProgramJSErrorSpike',
          expr: |||
            (
                max without (instance, job) (last_over_time(wechat_miniprogram_js_error_groups{%(selector)s}[1d]))
              > %(ratio)g * max without (instance, job) (max_over_time(wechat_miniprogram_js_error_groups{%(selector)s}[7d] offset 1d))  # jsErrorGroupsRatio: against the most of the week before
              and
                (
                    max without (instance, job) (last_over_time(wechat_miniprogram_js_error_groups{%(selector)s}[1d]))
                  - max without (instance, job) (max_over_time(wechat_miniprogram_js_error_groups{%(selector)s}[7d] offset 1d))
                ) >= %(increase)g  # jsErrorGroupsMinIncrease: and at least this many more
            )
            or
            (
                max without (instance, job) (last_over_time(wechat_miniprogram_js_error_pv{%(selector)s}[1d])) >= %(pv)g  # jsErrorNewPV: occurrences a day of a new error that alert
              unless on (appid, app, error_type, error_id)
                max_over_time(wechat_miniprogram_js_error_pv{%(selector)s}[7d] offset 1d)
              and on (appid, app, error_type)
                max_over_time(wechat_miniprogram_js_error_groups{%(selector)s}[7d] offset 1d)
            )
          ||| % { selector: selector, ratio: c.jsErrorGroupsRatio, increase: c.jsErrorGroupsMinIncrease, pv: c.jsErrorNewPV },
          'for': c.jsErrorFor,
          labels: { severity: 'warning' },
          annotations: {
            summary: '{{ $labels.app }}: {{ if $labels.error_id }}a new JS error ({{ $labels.error_type }}) hit {{ $value | humanize }} times{{ else }}{{ $value | humanize }} JS error groups ({{ $labels.error_type }}), a jump{{ end }}',
            description: '{{ if $labels.error_id }}The error {{ $labels.error_id }} of {{ $labels.app }} ({{ $labels.appid }}), not among the top errors in the week before, occurred {{ $value | humanize }} times on the latest day: "{{ with printf `last_over_time(wechat_miniprogram_js_error_info{%s,appid="%%s",error_id="%%s"}[1d])` $labels.appid $labels.error_id | query }}{{ . | first | label "message" }}{{ end }}".{{ else }}{{ $labels.app }} ({{ $labels.appid }}) had {{ $value | humanize }} groups of {{ $labels.error_type }} JS errors on its latest day, more than half again the most of the week before.{{ end }} The Performance and errors dashboard lists the top errors with their messages.' % selector,
            runbook_url: c.runbookURLPattern % std.asciiLower('WeChatMiniProgramJSErrorSpike'),
          },
        },
        // The cumulative users of the latest day against some days before, only when as many
        // new days were published since (a gap in the data is WeChatMiniProgramDataStale).
        {
          alert: 'WeChatMiniProgramUsersStalled',
          expr: |||
            (
                max without (instance, job) (last_over_time(wechat_miniprogram_cumulative_users{%(selector)s}[1d]))
              -
                max without (instance, job) (last_over_time(wechat_miniprogram_cumulative_users{%(selector)s}[1d] offset %(days)dd))  # usersStalledDays: the days without a new user
            ) <= 0
            and on (appid, app)
              (
                  max without (instance, job) (last_over_time(wechat_miniprogram_ref_date_timestamp_seconds{%(selector)s,report="daily_summary",period="daily"}[1d]))
                -
                  max without (instance, job) (last_over_time(wechat_miniprogram_ref_date_timestamp_seconds{%(selector)s,report="daily_summary",period="daily"}[1d] offset %(days)dd))
              ) == %(days)d * 86400
          ||| % { selector: selector, days: c.usersStalledDays },
          'for': c.usersStalledFor,
          labels: { severity: 'warning' },
          annotations: {
            summary: '{{ $labels.app }}: no new user in %d days' % c.usersStalledDays,
            description: '{{ $labels.app }} ({{ $labels.appid }}) has had {{ with printf `last_over_time(wechat_miniprogram_cumulative_users{%s,appid="%%s"}[1d])` $labels.appid | query }}{{ . | first | value | humanize }}{{ end }} users in all for the last %d published days: nobody new came.' % [selector, c.usersStalledDays],
            runbook_url: c.runbookURLPattern % std.asciiLower('WeChatMiniProgramUsersStalled'),
          },
        },
      ],
    }],
  },
}

// What a user of the mixin changes: the selector of the exporter's series, the thresholds and
// `for` durations of the alerts, and how the dashboards are named, tagged and linked.
{
  _config+:: {
    // Every alert and every dashboard query reads only the series this selects. The default
    // is the job the compose stack and the Helm chart give the exporter, or no job at all:
    // history loaded with `backfill` has none.
    wechatMiniProgramSelector: 'job=~"wechat-miniprogram|"',

    // WeChatMiniProgramVisitUVDrop: the share fewer visitors than recent days of the same
    // kind (0.30 = 30%), the windows of those days, and the apps too small to judge.
    visitUVDropThreshold: 0.30,
    visitUVDropWorkdayWindow: '15d',
    visitUVDropWeekendWindow: '22d',
    visitUVDropHolidayWindow: '4d',
    visitUVDropMinVisitors: 100,
    visitUVDropFor: '15m',

    // WeChatMiniProgramDataStale: the Beijing hour by which yesterday must be in.
    dataStaleHour: 18,
    dataStaleFor: '10m',

    // How long an app, or one of its reports, may fail before anyone is told.
    exporterDownFor: '30m',
    reportFailingFor: '1h',
    reportUnauthorizedFor: '5m',
    exporterAbsentFor: '15m',

    // WeChatMiniProgramAPIErrors: the share of failed calls over an hour, and the fewest.
    apiErrorsRatio: 0.2,
    apiErrorsMin: 5,
    apiErrorsFor: '15m',

    // WeChatMiniProgramTokenFetchFailing: failed token fetches over an hour.
    tokenFetchFailures: 1,
    tokenFetchFor: '15m',

    // WeChatMiniProgramLaunchTimeRegression: the slowdown against a week earlier (1.30 = 30%
    // slower), and launches too fast to matter, in seconds.
    launchTimeRatio: 1.30,
    launchTimeMinSeconds: 1,
    launchTimeFor: '15m',

    // WeChatMiniProgramJSErrorSpike: error groups against the most of the week before (1.5 =
    // half again as many) and at least this many more; occurrences a day of a new error.
    jsErrorGroupsRatio: 1.5,
    jsErrorGroupsMinIncrease: 10,
    jsErrorNewPV: 100,
    jsErrorFor: '15m',

    // WeChatMiniProgramUsersStalled: published days without a new user.
    usersStalledDays: 3,
    usersStalledFor: '15m',

    // Alerts: each alert's runbook, from its name in lower case.
    runbookURLPattern: 'README.md#%s',

    // Dashboards: tags (also of the links between them), the title's prefix.
    dashboardTags: ['wechat-miniprogram'],
    dashboardNamePrefix: 'WeChat Mini Programs / ',
  },
}

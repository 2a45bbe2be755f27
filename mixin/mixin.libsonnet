// The monitoring mixin of wechat-miniprogram-exporter: its alerts, recording rules and Grafana
// dashboards, configured by `_config` (config.libsonnet). Render with scripts/mixin, or in
// your own jsonnet:
//
//   (import 'mixin/mixin.libsonnet') + { _config+:: { wechatMiniProgramSelector: 'job="wmp"' } }
(import 'config.libsonnet') +
(import 'alerts/alerts.libsonnet') +
(import 'rules/rules.libsonnet') +
(import 'dashboards/dashboards.libsonnet')

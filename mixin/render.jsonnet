// Every file the mixin generates in the repository, by path (scripts/mixin writes them, each
// ended by a newline):
// the alert rules for Prometheus and the chart, the dashboards for Grafana and the chart.
local mixin = import 'mixin.libsonnet';
local chart = 'deploy/helm/wechat-miniprogram-exporter/files/';

local alerts = |||
  # Alert rules of wechat-miniprogram-exporter, generated from the monitoring mixin (mixin/)
  # by scripts/mixin: change mixin/config.libsonnet or mixin/alerts/, not this file. Plain
  # Prometheus rule files: load with `rule_files:` (see deploy/docker-compose) or through the
  # Helm chart's PrometheusRule. What each alert means and what to do: README, section "Alerts".
||| + std.manifestYamlDoc(mixin.prometheusAlerts, indent_array_in_object=true, quote_keys=false);

{
  'deploy/prometheus/alerts.yml': alerts,
  [chart + 'alerts.yml']: alerts,
} + {
  [prefix + name]: std.manifestJsonEx(mixin.grafanaDashboards[name], '  ')
  for prefix in ['dashboards/', chart + 'dashboards/']
  for name in std.objectFields(mixin.grafanaDashboards)
}

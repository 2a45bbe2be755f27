// The Grafana dashboards, one JSON file each (as Grafana exports them, titles without the
// prefix): every query's `%(wechatMiniProgramSelector)s` is filled from `_config`, the title
// gets `dashboardNamePrefix`, the dashboard and its links get `dashboardTags`.
local names = ['audience', 'exporter', 'overview', 'pages', 'performance', 'retention', 'sources'];

local sources = {
  audience: import 'audience.json',
  exporter: import 'exporter.json',
  overview: import 'overview.json',
  pages: import 'pages.json',
  performance: import 'performance.json',
  retention: import 'retention.json',
  sources: import 'sources.json',
};

// Every query string (a target's expr, a variable's query) formatted with the config.
local queries(value, config) =
  if std.isObject(value) then {
    [key]:
      if std.member(['expr', 'query', 'definition'], key) && std.isString(value[key])
      then value[key] % config
      else queries(value[key], config)
    for key in std.objectFields(value)
  }
  else if std.isArray(value) then [queries(item, config) for item in value]
  else value;

{
  grafanaDashboards+:: {
    [name + '.json']:
      local source = sources[name];
      local config = $._config;
      queries(source, config) {
        title: config.dashboardNamePrefix + source.title,
        tags: config.dashboardTags,
        links: [link { tags: config.dashboardTags } for link in super.links],
      }
    for name in names
  },
}

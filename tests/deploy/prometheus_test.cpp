// deploy/prometheus and the engine dashboard on real components. promtool checks the alert rules
// and the example scrape configuration, and runs the rules' unit tests
// (tests/deploy/prometheus/alerts_test.yaml), which must make every alert fire once and stay
// quiet once. Then a real Prometheus scrapes a real engine every second (pipelines/jetstream.json:
// 16 partitions, state in JetStream KV, with the rule node of pipelines/jetstream-tiers.json, on a
// real nats-server and PostgreSQL, fed by fleet-sim):
// every alert rule evaluates without error and stays quiet while the engine is healthy, and every
// query of every panel of deploy/grafana/dashboards/engine.json, with Grafana's variables
// expanded, returns series with values. Every metric the dashboard and the rules use is
// documented in docs/metrics.md and exposed by the engine.
#include <gtest/gtest.h>
#include <httplib.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "build_paths.hpp"
#include "fleet_check.hpp"
#include "grafana_provisioning.hpp"
#include "nats_client.hpp"
#include "servers.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

const std::string kSource = ::fleetflow::testing::SourceDir();
const std::string kRules = kSource + "/deploy/prometheus/fleetflow-alerts.yaml";
const std::string kRuleTests = kSource + "/tests/deploy/prometheus/alerts_test.yaml";
const std::string kScrapeConfig = kSource + "/deploy/prometheus/prometheus.yml";
const std::string kDashboard = kGrafanaDir + "/dashboards/engine.json";
const std::string kDeployment = kSource + "/deploy/k8s/base/deployment.yaml";

std::vector<std::string> Matches(const std::string& text, const std::string& pattern) {
  std::vector<std::string> found;
  const std::regex re(pattern);
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator();
       ++it) {
    found.push_back((*it)[1]);
  }
  return found;
}

/// The alerts of the rule file, in order.
std::vector<std::string> AlertNames() {
  return Matches(ReadFile(kRules), R"(\n\s*- alert:\s*(\w+))");
}

/// Metric families the dashboard and the rules use: every fleetflow_ name, a histogram's series
/// (_bucket, _sum, _count) by the histogram's name when `histograms` has it.
std::set<std::string> UsedMetrics(const std::set<std::string>& histograms) {
  std::set<std::string> names;
  for (const std::string& file : {kDashboard, kRules}) {
    for (std::string name : Matches(ReadFile(file), R"(\b((?:fleetflow|process)_\w+))")) {
      const std::smatch m = [&] {
        std::smatch s;
        std::regex_match(name, s, std::regex(R"((\w+)_(bucket|sum|count))"));
        return s;
      }();
      if (!m.empty() && histograms.count(m[1])) name = m[1];
      names.insert(name);
    }
  }
  return names;
}

/// name -> type of every metric docs/metrics.md lists ("| `name` | type |").
std::map<std::string, std::string> DocumentedMetrics() {
  std::map<std::string, std::string> documented;
  const std::string docs = ReadFile(kSource + "/docs/metrics.md");
  const std::regex row(R"(\| `((?:fleetflow|process)_\w+)` \| (\w+) \|)");
  for (auto it = std::sregex_iterator(docs.begin(), docs.end(), row); it != std::sregex_iterator();
       ++it) {
    documented[(*it)[1]] = (*it)[2];
  }
  return documented;
}

std::set<std::string> Histograms(const std::map<std::string, std::string>& metrics) {
  std::set<std::string> names;
  for (const auto& [name, type] : metrics) {
    if (type == "histogram") names.insert(name);
  }
  return names;
}

TEST(PrometheusRulesTest, RuleFilePassesPromtoolCheck) {
  FF_REQUIRE_PROMETHEUS();
  const CommandResult r = RunCommand({FindServerBinary("promtool"), "check", "rules", kRules}, 60s);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const size_t alerts = AlertNames().size();
  EXPECT_GE(alerts, 15u);
  EXPECT_NE(r.out.find("SUCCESS: " + std::to_string(alerts) + " rules found"), std::string::npos)
      << "every rule is an alert: " << r.out;
}

// Each alert: a `for`, a severity, a summary and a description that points at the docs, which
// list it.
TEST(PrometheusRulesTest, EveryAlertHasForSeverityAndAnnotations) {
  const std::string text = ReadFile(kRules);
  const std::regex alert(R"(\n\s*- alert:\s*(\w+))");
  std::vector<std::pair<std::string, size_t>> starts;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), alert);
       it != std::sregex_iterator(); ++it) {
    starts.emplace_back((*it)[1], it->position() + it->length());
  }
  ASSERT_EQ(starts.size(), AlertNames().size());
  const std::string docs = ReadFile(kSource + "/docs/metrics.md");
  for (size_t i = 0; i < starts.size(); ++i) {
    const auto& [name, begin] = starts[i];
    SCOPED_TRACE(name);
    const size_t end = i + 1 < starts.size() ? starts[i + 1].second : text.size();
    const std::string body = text.substr(begin, end - begin);
    EXPECT_TRUE(std::regex_search(body, std::regex(R"(\n\s*for: \d+m\n)")));
    EXPECT_TRUE(std::regex_search(body, std::regex(R"(\n\s*severity: (critical|warning|info)\n)")));
    EXPECT_TRUE(std::regex_search(body, std::regex(R"(\n\s*summary: ")")));
    const size_t description = body.find("description:");
    EXPECT_NE(description, std::string::npos);
    EXPECT_NE(body.find("docs/metrics.md#alerts", description), std::string::npos);
    EXPECT_NE(docs.find("| `" + name + "` |"), std::string::npos) << "not in docs/metrics.md";
  }
}

/// How often the unit tests expect an alert to fire and to stay quiet.
struct Coverage {
  int firing = 0, quiet = 0;
};

/// The alert_rule_test cases of the unit test file, by alert name. An `exp_alerts:` list counts
/// as firing only when an `- exp_labels:` follows it.
std::map<std::string, Coverage> RuleTestCoverage(const std::string& text) {
  std::map<std::string, Coverage> cases;
  std::istringstream lines(text);
  std::string current;
  bool expecting_list = false;
  const std::regex name(R"(alertname:\s*(\w+))"), empty(R"(exp_alerts:\s*\[\])"),
      list(R"(exp_alerts:\s*$)"), labels(R"(^\s*- exp_labels:)");
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (expecting_list) {
      if (std::regex_search(line, labels)) ++cases[current].firing;
      expecting_list = false;
    }
    if (std::regex_search(line, m, name)) {
      current = m[1];
      cases[current];
    }
    if (std::regex_search(line, empty)) ++cases[current].quiet;
    if (std::regex_search(line, list)) expecting_list = true;
  }
  return cases;
}

TEST(PrometheusRulesTest, UnitTestsPassAndEveryAlertFiresOnceAndStaysQuietOnce) {
  FF_REQUIRE_PROMETHEUS();
  const CommandResult r =
      RunCommand({FindServerBinary("promtool"), "test", "rules", kRuleTests}, 120s);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("SUCCESS"), std::string::npos) << r.out << r.err;

  const auto cases = RuleTestCoverage(ReadFile(kRuleTests));
  const auto names = AlertNames();
  for (const auto& name : names) {
    const auto it = cases.find(name);
    ASSERT_NE(it, cases.end()) << name << " has no unit test in " << kRuleTests;
    EXPECT_GE(it->second.firing, 1) << name << " is never expected to fire";
    EXPECT_GE(it->second.quiet, 1) << name << " is never expected to stay quiet";
  }
  // A case for an alert that does not exist would expect nothing and pass.
  for (const auto& [name, _] : cases) {
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end())
        << kRuleTests << " tests " << name << ", which the rule file does not have";
  }
}

// This coverage reader itself: what counts as firing and as quiet.
TEST(PrometheusRulesTest, CoverageReaderTellsFiringFromQuiet) {
  const auto cases = RuleTestCoverage(
      "      - {eval_time: 2h, alertname: A, exp_alerts: []}\n"
      "      - eval_time: 10m\n"
      "        alertname: B\n"
      "        exp_alerts:\n"
      "          - exp_labels: {job: fleetflow}\n"
      "      - eval_time: 10m\n"
      "        alertname: C\n"
      "        exp_alerts:\n"
      "      - eval_time: 10m\n");
  EXPECT_EQ(cases.at("A").quiet, 1);
  EXPECT_EQ(cases.at("A").firing, 0);
  EXPECT_EQ(cases.at("B").firing, 1);
  EXPECT_EQ(cases.at("B").quiet, 0);
  EXPECT_EQ(cases.at("C").firing + cases.at("C").quiet, 0) << "a null list expects nothing";
}

// The example scrape configuration: promtool accepts it (Debian's promtool is built without
// Kubernetes discovery: then the kubernetes_sd_configs block is swapped for a static target and
// the rest is checked), and it selects what deploy/k8s deploys.
TEST(PrometheusRulesTest, ExampleScrapeConfigPassesPromtoolAndMatchesTheDeployment) {
  FF_REQUIRE_PROMETHEUS();
  const std::string promtool = FindServerBinary("promtool");
  TempDir dir("fleetflow-prometheus-config");
  std::ofstream(dir.File("probe.yml"))
      << "scrape_configs:\n  - job_name: probe\n    kubernetes_sd_configs:\n      - role: pod\n";
  const bool kubernetes_sd =
      RunCommand({promtool, "check", "config", dir.File("probe.yml")}, 60s).exit_code == 0;

  std::string config = ReadFile(kScrapeConfig);
  std::string checked = kScrapeConfig;
  if (!kubernetes_sd) {
    std::cout << "NOTE: " << promtool
              << " has no Kubernetes discovery (Debian's build): checking prometheus.yml with its "
                 "kubernetes_sd_configs replaced by a static target\n";
    const std::regex block(R"(\n    kubernetes_sd_configs:\n(      .*\n)+)");
    ASSERT_TRUE(std::regex_search(config, block));
    config = std::regex_replace(config, block,
                                "\n    static_configs:\n      - targets: ['127.0.0.1:9464']\n");
    std::ofstream(dir.File("prometheus.yml")) << config;
    std::filesystem::copy_file(kRules, dir.File("fleetflow-alerts.yaml"));
    checked = dir.File("prometheus.yml");
  }
  const CommandResult r = RunCommand({promtool, "check", "config", checked}, 60s);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("SUCCESS: 1 rule files found"), std::string::npos) << r.out << r.err;

  // The job the rules expect; the Deployment's pod labels, port name and port.
  config = ReadFile(kScrapeConfig);
  EXPECT_NE(config.find("  - job_name: fleetflow\n"), std::string::npos);
  EXPECT_NE(ReadFile(kRules).find("up{job=\"fleetflow\"}"), std::string::npos);
  const std::string deployment = ReadFile(kDeployment);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(config, m, std::regex(R"(label: (\S+)\n)")));
  std::istringstream labels(m[1]);
  for (std::string label; std::getline(labels, label, ',');) {
    const size_t eq = label.find('=');
    EXPECT_NE(deployment.find("        " + label.substr(0, eq) + ": " + label.substr(eq + 1)),
              std::string::npos)
        << label << " is not a pod label of " << kDeployment;
  }
  EXPECT_TRUE(
      std::regex_search(deployment, std::regex(R"(- name: metrics\n\s+containerPort: 9464\n)")));
  EXPECT_NE(config.find("names: [fleetflow]"), std::string::npos);
}

TEST(PrometheusRulesTest, EveryMetricTheDashboardAndTheRulesUseIsDocumented) {
  const auto documented = DocumentedMetrics();
  ASSERT_GE(documented.size(), 40u);
  const auto used = UsedMetrics(Histograms(documented));
  EXPECT_GE(used.size(), 25u);
  for (const auto& name : used) {
    EXPECT_TRUE(documented.count(name)) << name << " is not in docs/metrics.md";
  }
}

// ---------------------------------------------------------------------------------------------
// On a running engine

/// Grafana's regex escaping of a value of a multi-value variable in a Prometheus query
/// (prometheusSpecialRegexEscape): each special character gets two backslashes.
std::string GrafanaRegexEscape(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\\\\\";  // a backslash becomes four
      continue;
    }
    if (std::string_view("$^*{}[]'+?.()|").find(c) != std::string_view::npos) out += "\\\\";
    out += c;
  }
  return out;
}

constexpr const char* kScrapeInterval = "1s";
/// Grafana's $__rate_interval: max($__interval + scrape interval, 4 x scrape interval).
constexpr const char* kRateInterval = "4s";

/// A panel query as Grafana sends it: $__rate_interval, $__interval and the dashboard's
/// variables replaced. Throws on a variable it does not know.
std::string ExpandGrafana(std::string expr, const std::map<std::string, std::string>& vars) {
  expr = std::regex_replace(expr, std::regex(R"(\$__rate_interval\b)"), kRateInterval);
  expr = std::regex_replace(expr, std::regex(R"(\$__interval\b)"), kScrapeInterval);
  for (const auto& [name, value] : vars) {
    expr = std::regex_replace(expr, std::regex("\\$\\{" + name + "\\}|\\$" + name + "\\b"), value);
  }
  if (expr.find('$') != std::string::npos) {
    throw std::runtime_error("unexpanded variable in: " + expr);
  }
  return expr;
}

TEST(PrometheusRulesTest, GrafanaExpansion) {
  EXPECT_EQ(GrafanaRegexEscape("127.0.0.1:9464"), R"(127\\.0\\.0\\.1:9464)");
  EXPECT_EQ(GrafanaRegexEscape(R"(a\b|c)"), R"(a\\\\b\\|c)");
  EXPECT_EQ(ExpandGrafana(R"(rate(x{job="$job", instance=~"${instance}"}[$__rate_interval]))",
                          {{"job", "fleetflow"}, {"instance", ".*"}}),
            R"(rate(x{job="fleetflow", instance=~".*"}[4s]))");
  EXPECT_THROW(ExpandGrafana("x[$__range]", {}), std::runtime_error);
}

/// An instant query's result (POST /api/v1/query, as Grafana sends it): its series and how many
/// have a finite value.
struct Series {
  bool ok = false;  // HTTP 200 and "status": "success"
  int series = 0, finite = 0;
  std::string body;  // the raw answer, for failure messages
};

Series Query(int port, const std::string& expr) {
  httplib::Client http("127.0.0.1", port);
  http.set_read_timeout(10, 0);
  const auto res = http.Post("/api/v1/query", httplib::Params{{"query", expr}});
  if (!res) return {false, 0, 0, "no answer: " + httplib::to_string(res.error())};
  Series s{false, 0, 0, res->body};
  rapidjson::Document d;
  d.Parse(res->body.c_str());
  s.ok = res->status == 200 && !d.HasParseError() && Str(d, "status") == "success";
  if (!s.ok) return s;
  for (const auto& r : d["data"]["result"].GetArray()) {
    ++s.series;
    s.finite += std::isfinite(std::strtod(r["value"][1].GetString(), nullptr)) ? 1 : 0;
  }
  return s;
}

/// The values of `label` over the series `match` selects (Grafana's label_values()).
std::set<std::string> LabelValues(int port, const std::string& label, const std::string& match) {
  httplib::Client http("127.0.0.1", port);
  const auto res = http.Get(("/api/v1/label/" + label + "/values").c_str(),
                            httplib::Params{{"match[]", match}}, httplib::Headers{});
  std::set<std::string> values;
  if (!res || res->status != 200) return values;
  rapidjson::Document d;
  d.Parse(res->body.c_str());
  if (d.HasParseError() || !d.HasMember("data")) return values;
  for (const auto& v : d["data"].GetArray()) values.insert(v.GetString());
  return values;
}

struct Rule {
  std::string name, query, health, state, last_error;
  std::set<std::string> firing_reasons;  // the reason label of its firing alerts
};

std::vector<Rule> AlertRules(int port) {
  httplib::Client http("127.0.0.1", port);
  const auto res = http.Get("/api/v1/rules?type=alert");
  std::vector<Rule> rules;
  if (!res || res->status != 200) return rules;
  rapidjson::Document d;
  d.Parse(res->body.c_str());
  if (d.HasParseError() || !d.HasMember("data")) return rules;
  for (const auto& g : d["data"]["groups"].GetArray()) {
    for (const auto& r : g["rules"].GetArray()) {
      Rule rule{Str(r, "name"),  Str(r, "query"),     Str(r, "health"),
                Str(r, "state"), Str(r, "lastError"), {}};
      for (const auto& alert : r["alerts"].GetArray()) {
        if (Str(alert, "state") == "firing") {
          rule.firing_reasons.insert(Str(alert["labels"], "reason"));
        }
      }
      rules.push_back(std::move(rule));
    }
  }
  return rules;
}

/// pipelines/jetstream.json with the rule node "alarms" of pipelines/jetstream-tiers.json (its
/// rules, its alarm stream and table), written to `path`: the engine then exposes the metrics of
/// the alarm rules too.
std::string PipelineWithAlarms(const std::string& path) {
  rapidjson::Document pipeline = LoadJson(kSource + "/pipelines/jetstream.json");
  const rapidjson::Document tiers = LoadJson(kSource + "/pipelines/jetstream-tiers.json");
  const rapidjson::Value* alarms = nullptr;
  for (const auto& node : tiers["nodes"].GetArray()) {
    if (Str(node, "id") == "alarms") alarms = &node;
  }
  if (alarms == nullptr) throw std::runtime_error("jetstream-tiers.json has no node 'alarms'");
  rapidjson::Value copy(*alarms, pipeline.GetAllocator());
  pipeline["nodes"].PushBack(copy, pipeline.GetAllocator());
  rapidjson::StringBuffer out;
  rapidjson::Writer<rapidjson::StringBuffer> writer(out);
  pipeline.Accept(writer);
  std::ofstream(path) << out.GetString();
  return path;
}

TEST(PrometheusEngineE2E, AlertsStayQuietOnAHealthyEngineAndEveryPanelQueryReturnsSeries) {
  FF_REQUIRE_NATS_SERVER();
  FF_REQUIRE_POSTGRES();
  FF_REQUIRE_PROMETHEUS();
  NatsServer nats;
  nats.MapPartitions(16);
  nats.Start();
  PostgresServer pg;
  pg.Start();
  TempDir dir("fleetflow-prometheus-e2e");
  Engine engine(PipelineWithAlarms(dir.File("pipeline.json")), nats, pg, dir.File("engine.log"));
  ASSERT_TRUE(engine.WaitReady(60s)) << engine.process().ReadLog();
  const Fleet fleet = MakeFleet(10, 600);
  Process sim(SimArgs(nats, fleet, 600), dir.File("sim.log"));

  const std::string instance = "127.0.0.1:" + std::to_string(engine.port());
  PrometheusServer prom("global:\n  scrape_interval: " + std::string(kScrapeInterval) +
                        "\n  evaluation_interval: 1s\nrule_files:\n  - " + kRules +
                        "\nscrape_configs:\n  - job_name: fleetflow\n    static_configs:\n"
                        "      - targets: ['" +
                        instance + "']\n");
  prom.Start();
  const int port = prom.port();
  const auto logs = [&] {
    return "\nengine log:\n" + engine.process().ReadLog() + "\nprometheus log:\n" + prom.ReadLog();
  };

  // Rows flow, and Prometheus has them and has scraped the engine 5 times (the rules have been
  // evaluated on its samples, and rates over $__rate_interval have 4 samples).
  ASSERT_TRUE(WaitFor(
      [&] {
        return Query(port, "fleetflow_sink_rows_written_total{job=\"fleetflow\"} > 0").series > 0 &&
               Query(port, "count_over_time(up{job=\"fleetflow\"}[1m]) >= 5").series > 0;
      },
      60s))
      << logs();

  // Every alert rule of the file, loaded and evaluated without error, quiet while healthy.
  const auto names = AlertNames();
  std::vector<Rule> rules;
  ASSERT_TRUE(WaitFor(
      [&] {
        rules = AlertRules(port);
        return rules.size() == names.size() &&
               std::all_of(rules.begin(), rules.end(),
                           [](const Rule& r) { return r.health == "ok"; });
      },
      30s))
      << rules.size() << " rules of " << names.size() << logs();
  for (const Rule& rule : rules) {
    SCOPED_TRACE(rule.name + ": " + rule.query);
    EXPECT_NE(std::find(names.begin(), names.end(), rule.name), names.end());
    EXPECT_EQ(rule.last_error, "");
    EXPECT_EQ(rule.state, "inactive");
    const Series s = Query(port, rule.query);
    EXPECT_TRUE(s.ok) << s.body;
    EXPECT_EQ(s.series, 0) << "the healthy engine triggers it: " << s.body;
  }

  // Rejected input, so that the panel of rejects has series: its first reason is new.
  {
    nats::ConnectOptions options;
    options.url = nats.url();
    auto conn = nats::Connection::Connect(options);
    for (int i = 0; i < 5; ++i) conn->Publish("vehicle.bad0.speed", "not a batch");
    conn->Flush(5000);
  }
  ASSERT_TRUE(WaitFor(
      [&] { return Query(port, "fleetflow_input_rejected_total{job=\"fleetflow\"}").series > 0; },
      30s))
      << logs();
  EXPECT_TRUE(WaitFor(
      [&] {
        for (const Rule& r : AlertRules(port)) {
          if (r.name == "FleetflowNewRejectReason") return !r.firing_reasons.empty();
        }
        return false;
      },
      30s))
      << "the first reject reason is new" << logs();

  // The variables, as Grafana's label_values() gets them.
  const rapidjson::Document dash = LoadJson(kDashboard);
  std::map<std::string, std::string> vars;
  for (const auto& v : dash["templating"]["list"].GetArray()) {
    const std::string query = Str(v, "query");
    SCOPED_TRACE("variable " + Str(v, "name") + ": " + query);
    std::smatch m;
    ASSERT_TRUE(std::regex_match(query, m, std::regex(R"(label_values\((.+), (\w+)\))")));
    const auto values = LabelValues(port, m[2], ExpandGrafana(m[1], vars));
    const std::string expected = Str(v, "name") == "job" ? "fleetflow" : instance;
    EXPECT_EQ(values, std::set<std::string>{expected});
    vars[Str(v, "name")] = v["multi"].GetBool() ? GrafanaRegexEscape(expected) : expected;
  }
  ASSERT_EQ(vars.size(), 2u);

  // Every target of every panel, for the one worker and for All.
  int queries = 0;
  for (const auto& panel : dash["panels"].GetArray()) {
    for (const auto& target : panel["targets"].GetArray()) {
      for (const std::string& worker : {vars["instance"], std::string(".*")}) {
        auto with_worker = vars;
        with_worker["instance"] = worker;
        const std::string expr = ExpandGrafana(Str(target, "expr"), with_worker);
        SCOPED_TRACE("panel '" + Str(panel, "title") + "' " + Str(target, "refId") + ": " + expr);
        Series s;
        EXPECT_TRUE(WaitFor(
            [&] {
              s = Query(port, expr);
              return s.ok && s.finite > 0;
            },
            20s, 200ms))
            << (s.ok ? "no series with a value: " : "query failed: ") << s.body;
        ++queries;
      }
    }
  }
  EXPECT_GE(queries, 2 * 35);

  // The engine exposes every metric they use.
  const auto exposition = engine.Get("/metrics");
  ASSERT_TRUE(exposition.has_value());
  for (const auto& name : UsedMetrics(Histograms(DocumentedMetrics()))) {
    EXPECT_NE(exposition->find("# TYPE " + name + " "), std::string::npos)
        << name << " is not in the engine's /metrics";
  }
  std::cout << "ran " << queries << " dashboard queries and " << rules.size()
            << " alert rules on Prometheus scraping the engine\n";
}

}  // namespace
}  // namespace fleetflow::testing

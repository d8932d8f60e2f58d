// Sink throughput: timescale_sink (interpolation at the window time, COPY into a staging table,
// INSERT ... ON CONFLICT upsert, in batches of batch_rows) next to a bare COPY + upsert of the
// same rows (already interpolated) through the project's libpqxx wrapper
// (pg::Connection::CopyViaStaging, same batch size, same upsert statement), in the same run, on a
// throwaway PostgreSQL started here. Every repeat writes into fresh, empty tables of the same
// definition (the bare table is CREATE TABLE ... (LIKE <sink table> INCLUDING ALL)); the order of
// the two alternates between repeats. Rows in both tables are counted after every repeat.
//
// The sink is driven as the engine drives it (Process() per WindowBatch, then a drain Tick),
// without a graph around it; its connect and CREATE TABLE happen in its constructor and are not
// timed.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "builtin.hpp"
#include "clock.hpp"
#include "metrics.hpp"
#include "pg_client.hpp"
#include "servers.hpp"
#include "timescale_sink.hpp"

namespace fleetflow::bench {
namespace {

constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kT0 = 1'800'000'000 * kSec;

struct Settings {
  int vehicles = 5000;
  int windows = 20;
  int batch_rows = 5000;
  int repeats = 3;
  Output out;  // --scale, --csv, --summary
};

/// Columns as in pipelines/default.json.
struct ColumnDef {
  const char* name;
  const char* sensor;
  const char* field;
  const char* interpolation;
  size_t slot;
  ColumnField f;
  Interpolation mode;
};
const ColumnDef kColumns[] = {
    {"lat", "gps", "lat", "linear", 0, ColumnField::kLat, Interpolation::kLinear},
    {"lon", "gps", "lon", "linear", 0, ColumnField::kLon, Interpolation::kLinear},
    {"speed", "speed", "value", "linear", 1, ColumnField::kValue, Interpolation::kLinear},
    {"soc", "soc", "value", "previous", 2, ColumnField::kValue, Interpolation::kPrevious},
    {"torque", "torque", "value", "linear", 3, ColumnField::kValue, Interpolation::kLinear},
};

std::string SinkConfig(const std::string& conninfo, const std::string& table, int batch_rows) {
  std::string cols;
  for (const auto& c : kColumns) {
    cols += std::string(cols.empty() ? "" : ", ") + R"({"name": ")" + c.name + R"(", "sensor": ")" +
            c.sensor + R"(", "field": ")" + c.field + R"(", "interpolation": ")" + c.interpolation +
            R"("})";
  }
  return R"({"conninfo": ")" + conninfo + R"(", "table": ")" + table + R"(", "batch_rows": )" +
         std::to_string(batch_rows) + R"(, "flush_ms": 1000, "timescaledb": "auto", "columns": [)" +
         cols + "]}";
}

/// `windows` WindowBatches of `vehicles` rows, every slot bracketed by a sample before and after.
std::vector<Message> MakeWindows(const Settings& s) {
  auto sensors = std::make_shared<const std::vector<std::string>>(
      std::vector<std::string>{"gps", "speed", "soc", "torque"});
  std::vector<Message> out;
  for (int w = 0; w < s.windows; ++w) {
    WindowBatch b;
    b.window_ns = kT0 + w * kSec;
    b.sensors = sensors;
    b.rows.reserve(static_cast<size_t>(s.vehicles));
    for (int v = 0; v < s.vehicles; ++v) {
      char id[16];
      std::snprintf(id, sizeof id, "v%06d", v);
      const std::span<Slot> slots = b.AddRow(id);
      for (int k = 0; k < 4; ++k) {
        wire::Point before, after;
        before.ts_ns = b.window_ns - 40'000'000 - k * 1'000'000;
        after.ts_ns = b.window_ns + 60'000'000 + k * 1'000'000;
        before.value = 10.0 * k + v * 1e-3 + w;
        after.value = before.value + 0.5;
        if (k == 0) {
          before.has_position = after.has_position = true;
          before.lat = 48.85 + v * 1e-5 + w * 1e-6;
          before.lon = 2.35 + v * 1e-5;
          after.lat = before.lat + 1e-5;
          after.lon = before.lon + 1e-5;
        }
        slots[static_cast<size_t>(k)] = Slot{before, after};
      }
    }
    out.push_back(MakeMessage(std::move(b)));
  }
  return out;
}

/// The same rows as the sink computes them (interpolated, in pg::ValuesRow form).
std::vector<pg::ValuesRow> Interpolated(const std::vector<Message>& windows) {
  std::vector<pg::ValuesRow> rows;
  for (const auto& m : windows) {
    const auto& b = std::get<WindowBatch>(*m);
    for (const auto& r : b.rows) {
      pg::ValuesRow row{r.vehicle, b.window_ns, {}};
      for (const auto& c : kColumns) {
        row.values.push_back(InterpolateSlot(b.Slots(r)[c.slot], c.f, c.mode, b.window_ns));
      }
      rows.push_back(std::move(row));
    }
  }
  return rows;
}

class NoEmit final : public Emitter {
 public:
  void Emit(Message) override {}
};

struct Result {
  double seconds = 0, cpu_s = 0, pg_cpu_s = 0;
  uint64_t rows = 0;
};

int Main(int argc, char** argv) {
  Settings s;
  CLI::App app{
      "Sink throughput: timescale_sink next to a bare COPY + upsert of the same rows with the "
      "libpqxx wrapper, same run, throwaway PostgreSQL."};
  app.add_option("--vehicles", s.vehicles, "Rows per window")->capture_default_str();
  app.add_option("--windows", s.windows, "Windows")->capture_default_str();
  app.add_option("--batch-rows", s.batch_rows, "Rows per transaction (both)")
      ->capture_default_str();
  app.add_option("--repeats", s.repeats, "Repeats; the median counts")->capture_default_str();
  AddOutputOptions(app, s.out);
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  if (!ServersInstalled(/*nats=*/false, /*postgres=*/true)) return 1;
  testing::PostgresServer server;
  server.Start();
  const pid_t pg_pid = FindPostgresPid(server.port());
  std::printf("postgres %s (%s)\n", server.conninfo().c_str(),
              server.Psql("SHOW server_version").c_str());

  const auto windows = MakeWindows(s);
  const auto rows = Interpolated(windows);
  const std::string upsert =
      "INSERT INTO bare_rows (\"vehicle_id\", \"time\", \"lat\", \"lon\", \"speed\", \"soc\", "
      "\"torque\") SELECT vehicle_id, \"time\", v[1], v[2], v[3], v[4], v[5] FROM bench_staging "
      "ON CONFLICT (\"vehicle_id\", \"time\") DO UPDATE SET \"lat\" = EXCLUDED.\"lat\", \"lon\" "
      "= EXCLUDED.\"lon\", \"speed\" = EXCLUDED.\"speed\", \"soc\" = EXCLUDED.\"soc\", "
      "\"torque\" = EXCLUDED.\"torque\" WHERE ROW(bare_rows.\"lat\", bare_rows.\"lon\", "
      "bare_rows.\"speed\", bare_rows.\"soc\", bare_rows.\"torque\") IS DISTINCT FROM "
      "ROW(EXCLUDED.\"lat\", EXCLUDED.\"lon\", EXCLUDED.\"speed\", EXCLUDED.\"soc\", "
      "EXCLUDED.\"torque\")";
  std::printf("%zu rows (%d vehicles x %d windows), batches of %d\n", rows.size(), s.vehicles,
              s.windows, s.batch_rows);

  Registry registry;
  RegisterBuiltinOperators(registry);
  const OperatorInfo* info = registry.Find("timescale_sink");
  Config config;
  const auto errors =
      ParseOperatorConfig(*info, SinkConfig(server.conninfo(), "sink_rows", s.batch_rows), config);
  if (!errors.empty()) throw std::runtime_error(errors.front().Format());

  std::vector<Result> sink_runs, bare_runs;
  Csv csv(s.out.csv, {"scale", "contender", "rep", "rows", "seconds", "rows_per_s", "ratio",
                      "cpu_seconds", "postgres_cpu_seconds"});
  Metrics metrics;
  WallClock clock;
  auto run_sink = [&](int rep, Operator* sink) {
    const uint64_t written0 = metrics.CounterSum("sink_rows_written");
    NoEmit out;
    Result r;
    const double cpu0 = ProcessCpuSeconds(), pg0 = TreeCpuSeconds(pg_pid);
    const auto t0 = SteadyClock::now();
    for (const auto& m : windows) sink->Process(m, out);
    sink->Process(MakeMessage(Tick{clock.NowNs(), true}), out);
    r.seconds = Seconds(SteadyClock::now() - t0);
    r.cpu_s = ProcessCpuSeconds() - cpu0;
    r.pg_cpu_s = TreeCpuSeconds(pg_pid) - pg0;
    r.rows = metrics.CounterSum("sink_rows_written") - written0;
    const uint64_t in_table = std::stoull(server.Psql("SELECT count(*) FROM sink_rows"));
    if (r.rows != rows.size() || in_table != rows.size()) {
      throw std::runtime_error("sink run " + std::to_string(rep) + ": " + std::to_string(r.rows) +
                               " rows written, " + std::to_string(in_table) + " in the table");
    }
    return r;
  };
  auto run_bare = [&](int rep) {
    auto conn = pg::Connection::Connect(server.conninfo());
    Result r;
    const double cpu0 = ProcessCpuSeconds(), pg0 = TreeCpuSeconds(pg_pid);
    const auto t0 = SteadyClock::now();
    for (size_t i = 0; i < rows.size(); i += static_cast<size_t>(s.batch_rows)) {
      const size_t end = std::min(rows.size(), i + static_cast<size_t>(s.batch_rows));
      const std::vector<pg::ValuesRow> chunk(rows.begin() + static_cast<ptrdiff_t>(i),
                                             rows.begin() + static_cast<ptrdiff_t>(end));
      r.rows += conn->CopyViaStaging("bench_staging", chunk, upsert);
    }
    r.seconds = Seconds(SteadyClock::now() - t0);
    r.cpu_s = ProcessCpuSeconds() - cpu0;
    r.pg_cpu_s = TreeCpuSeconds(pg_pid) - pg0;
    const uint64_t in_table = std::stoull(server.Psql("SELECT count(*) FROM bare_rows"));
    if (r.rows != rows.size() || in_table != rows.size()) {
      throw std::runtime_error("bare run " + std::to_string(rep) + ": " + std::to_string(r.rows) +
                               " rows written, " + std::to_string(in_table) + " in the table");
    }
    return r;
  };
  for (int rep = 1; rep <= s.repeats; ++rep) {
    server.Psql("DROP TABLE IF EXISTS sink_rows; DROP TABLE IF EXISTS bare_rows");
    // The sink creates sink_rows in its constructor (not timed); the bare table copies its
    // definition.
    auto sink = info->create(OperatorContext{"sink", "timescale_sink", config, metrics, clock});
    server.Psql("CREATE TABLE bare_rows (LIKE sink_rows INCLUDING ALL)");
    Result a, b;
    if (rep % 2 == 1) {
      a = run_sink(rep, sink.get());
      b = run_bare(rep);
    } else {
      b = run_bare(rep);
      a = run_sink(rep, sink.get());
    }
    sink_runs.push_back(a);
    bare_runs.push_back(b);
    for (const auto& [name, r] : {std::pair{"timescale_sink", a}, std::pair{"bare", b}}) {
      std::printf("  %-14s run %d: %7.3f s %9.0f rows/s, cpu %.2f s, postgres cpu %.2f s\n", name,
                  rep, r.seconds, static_cast<double>(r.rows) / r.seconds, r.cpu_s, r.pg_cpu_s);
      csv.Row(s.out.scale, name, rep, r.rows, r.seconds, static_cast<double>(r.rows) / r.seconds,
              std::string(name) == "bare" ? 1.0 : b.seconds / a.seconds, r.cpu_s, r.pg_cpu_s);
    }
    std::fflush(stdout);
  }
  auto med = [](const std::vector<Result>& rs) {
    std::vector<double> v;
    for (const auto& r : rs) v.push_back(static_cast<double>(r.rows) / r.seconds);
    return Median(v);
  };
  const double sink_rps = med(sink_runs), bare_rps = med(bare_runs);
  csv.Row(s.out.scale, "timescale_sink", "median", rows.size(), "", sink_rps, sink_rps / bare_rps,
          "", "");
  csv.Row(s.out.scale, "bare", "median", rows.size(), "", bare_rps, 1.0, "", "");
  std::printf(
      "\ntimescale_sink %.0f rows/s, bare COPY + upsert %.0f rows/s: %.1f%% (goal >= 70%%)\n",
      sink_rps, bare_rps, 100 * sink_rps / bare_rps);
  AppendSummary(s.out.summary, {"sink", "rows/s", sink_rps, bare_rps, ">= 70%",
                                sink_rps / bare_rps >= 0.7 ? "yes" : "no",
                                "timescale_sink vs bare COPY + upsert (pg_client), same rows"});
  return 0;
}

}  // namespace
}  // namespace fleetflow::bench

int main(int argc, char** argv) {
  return fleetflow::bench::RunMain("ff-bench-sink", fleetflow::bench::Main, argc, argv);
}

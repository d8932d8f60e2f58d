// `fleetflow find --archive` on a production-sized archive (issue: find over 1 000 vehicles x 6
// hours), next to DuckDB asking the same question of the same files.
//
// The archive is written by the real archive operator (OperatorHarness, its default options but
// the directory and stats_subject ""): the simulator's fleet (firmware/signals.hpp) at its default
// gps rate, gps only (find reads only the position sensor), each vehicle's samples in messages of
// one second with a stream sequence per partition (16 partitions, PartitionOf), and a Tick every
// 10 simulated minutes: with flush_ms at its default (600 000) each partition writes its chunks
// then, as a worker does in production. The archive is kept in --archive-dir and reused while its
// manifest names the same parameters.
//
// Two questions, each asked --repeats times (median): (a) one hour x an axis-aligned rectangle of
// --area-fraction of the fleet's extent, centred on it; (b) the whole period x the whole extent
// (the scan rate: samples/s from find's own count). find runs in-process (Find(), oneTBB and
// GEOS on every core); DuckDB runs bench/duckdb/find.mjs (its Node API, installed with `npm ci`
// by the target ff-bench-find-node) over the same files with the pruning its SQL can express:
// day and hour folders (hive partitioning), the cell folders that meet the rectangle, then ts
// and lat/lon BETWEEN. The answers are compared line by line.
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "find.hpp"
#include "fleetflow/testkit/harness.hpp"
#include "layout.hpp"
#include "message.hpp"
#include "servers.hpp"
#include "signals.hpp"
#include "utc_time.hpp"

namespace fleetflow::bench {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kSecondNs = 1'000'000'000;
constexpr int64_t kHourNs = 3600 * kSecondNs;
constexpr const char* kManifest = "ff-bench-find.manifest";

struct Settings {
  int vehicles = 1000;
  int hours = 6;
  double gps_hz = 10;
  int partitions = 16;
  uint64_t seed = 42;
  int flush_minutes = 10;
  int batch_ms = 1000;
  std::string start = "2026-11-25T00:00:00Z";
  std::string archive_dir = "/tmp/fleetflow-bench-find";
  bool regenerate = false;
  int repeats = 3;
  double area_fraction = 0.05;
  int query_hour = 3;  // of the period: the hour of question (a)
  std::string duckdb_dir;
  bool no_duckdb = false;
  Output out;
};

/// What the generation left: read back from the manifest when reused.
struct Generated {
  uint64_t samples = 0;
  double min_lat = 90, max_lat = -90, min_lon = 180, max_lon = -180;
  double seconds = 0;      // wall time of the generation
  double cpu_seconds = 0;  // of this process (the writer thread included)
};

/// What the archive operator's defaults write, for the manifest: a gps sample through a fresh
/// operator, its line and the chunk's size (a change of the defaults' decimals or compression shows
/// here, and the archive is written again).
std::string OperatorProbe() {
  const fs::path dir =
      fs::temp_directory_path() / ("ff-bench-find-probe-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  std::string probe = "none";
  {
    testkit::OperatorHarness h("archive",
                               R"({"directory": ")" + dir.string() + R"(", "stats_subject": ""})");
    SampleBatch b;
    b.vehicle = "probe";
    b.sensor = "gps";
    for (uint32_t i = 0; i < 2; ++i) {
      wire::Point p{1'795'000'000 * kSecondNs + i * 123'456'789, i + 1, 0.0};
      p.lat = 48.123456789012 + i * 0.000123456789;
      p.lon = 2.987654321098 - i * 0.000123456789;
      p.has_position = true;
      b.points.push_back(p);
    }
    h.Feed(std::move(b));
    h.TickAt(1'795'000'000 * kSecondNs + 3600 * kSecondNs, /*drain=*/true);
  }
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || name.size() < archive::kChunkSuffix.size() ||
        name.substr(name.size() - archive::kChunkSuffix.size()) != archive::kChunkSuffix) {
      continue;
    }
    std::ifstream in(e.path(), std::ios::binary);
    std::stringstream data;
    data << in.rdbuf();
    const auto csv = archive::Decompress(data.str());
    if (!csv) continue;
    std::string line = csv->substr(csv->find('\n') + 1);
    line = line.substr(0, line.find('\n'));
    probe = line + "/" + std::to_string(data.str().size());
  }
  fs::remove_all(dir);
  return probe;
}

std::string Params(const Settings& s) {
  static const std::string probe = OperatorProbe();
  std::ostringstream p;
  p << "layout=1 probe=" << probe << " vehicles=" << s.vehicles << " hours=" << s.hours
    << " gps_hz=" << s.gps_hz << " partitions=" << s.partitions << " seed=" << s.seed
    << " flush_minutes=" << s.flush_minutes << " batch_ms=" << s.batch_ms << " start=" << s.start;
  return p.str();
}

std::optional<Generated> ReadManifest(const fs::path& dir, const std::string& params) {
  std::ifstream in(dir / kManifest);
  if (!in) return std::nullopt;
  std::string line;
  if (!std::getline(in, line) || line != "params: " + params) return std::nullopt;
  Generated g;
  bool complete = false;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::string key;
    l >> key;
    if (key == "samples:") l >> g.samples;
    if (key == "extent:") l >> g.min_lat >> g.max_lat >> g.min_lon >> g.max_lon;
    if (key == "generation_s:") l >> g.seconds >> g.cpu_seconds;
    if (key == "complete") complete = true;
  }
  if (!complete || g.samples == 0) return std::nullopt;
  return g;
}

void WriteManifest(const fs::path& dir, const std::string& params, const Generated& g) {
  std::ofstream out(dir / kManifest);
  char extent[160];
  std::snprintf(extent, sizeof extent, "%.17g %.17g %.17g %.17g", g.min_lat, g.max_lat, g.min_lon,
                g.max_lon);
  out << "params: " << params << "\nsamples: " << g.samples << "\nextent: " << extent
      << "\ngeneration_s: " << g.seconds << ' ' << g.cpu_seconds << "\ncomplete\n";
  if (!out) throw std::runtime_error("cannot write the manifest in " + dir.string());
}

/// Writes the archive with the archive operator: the simulated fleet's gps samples, one message
/// per vehicle and second, a Tick every flush_minutes of simulated time.
Generated Generate(const Settings& s, const fs::path& dir, int64_t start_ns) {
  Generated g;
  const auto wall0 = SteadyClock::now();
  const double cpu0 = ProcessCpuSeconds();
  sim::FleetConfig fleet;
  fleet.seed = s.seed;
  fleet.vehicles = s.vehicles;
  fleet.sensors = {{"gps", s.gps_hz}};
  fleet.start_ns = start_ns;
  const int64_t end_ns = start_ns + s.hours * kHourNs;
  const int64_t flush_ns = int64_t{s.flush_minutes} * 60 * kSecondNs;
  const int64_t batch_ns = int64_t{s.batch_ms} * 1'000'000;

  testkit::OperatorHarness h("archive",
                             R"({"directory": ")" + dir.string() + R"(", "stats_subject": ""})");
  std::vector<std::string> ids(s.vehicles);
  std::vector<uint32_t> partition(s.vehicles);
  std::vector<int64_t> next(s.vehicles, 0);  // the vehicle's next sample index
  std::vector<uint64_t> sequence(s.partitions, 0);
  for (int v = 0; v < s.vehicles; ++v) {
    ids[v] = sim::VehicleId(fleet, v);
    partition[v] = PartitionOf(ids[v], static_cast<uint32_t>(s.partitions));
  }
  int64_t reported = start_ns;
  for (int64_t window = start_ns; window < end_ns; window += flush_ns) {
    h.TickAt(window);  // the flush before it; the partitions' next flush counts from here
    const int64_t window_end = std::min(window + flush_ns, end_ns);
    for (int64_t batch = window; batch < window_end; batch += batch_ns) {
      const int64_t batch_end = std::min(batch + batch_ns, window_end);
      for (int v = 0; v < s.vehicles; ++v) {
        SampleBatch b;
        b.vehicle = ids[v];
        b.sensor = "gps";
        b.partition = partition[v];
        for (int64_t ts; (ts = sim::SampleTime(fleet, v, 0, next[v])) < batch_end; ++next[v]) {
          const wire::Point p =
              sim::SampleAt(fleet, v, 0, ts, static_cast<uint32_t>(next[v] & 0xffffffff));
          g.min_lat = std::min(g.min_lat, p.lat);
          g.max_lat = std::max(g.max_lat, p.lat);
          g.min_lon = std::min(g.min_lon, p.lon);
          g.max_lon = std::max(g.max_lon, p.lon);
          b.points.push_back(p);
        }
        if (b.points.empty()) continue;
        g.samples += b.points.size();
        b.sequence = ++sequence[b.partition];
        h.Feed(std::move(b));
      }
    }
    if (window_end - reported >= kHourNs) {
      reported = window_end;
      std::cerr << "  generated " << FormatUtc(window_end) << ": " << g.samples << " samples, "
                << static_cast<int>(Seconds(SteadyClock::now() - wall0)) << " s\n";
    }
  }
  // The last flush, and every flush written (a drain waits for the writer, 60 s at most a time).
  for (int i = 0; i < 20 && h.Counter("samples_archived") < g.samples; ++i) h.TickAt(end_ns, true);
  if (h.Counter("samples_archived") != g.samples) {
    throw std::runtime_error("the archive operator archived " +
                             std::to_string(h.Counter("samples_archived")) + " samples of " +
                             std::to_string(g.samples) + " fed");
  }
  g.seconds = Seconds(SteadyClock::now() - wall0);
  g.cpu_seconds = ProcessCpuSeconds() - cpu0;
  return g;
}

/// The chunks on disk.
struct Files {
  uint64_t chunks = 0, chunk_bytes = 0, summary_bytes = 0;
  std::set<std::string> cells;
};

Files CountFiles(const fs::path& dir) {
  Files f;
  for (const auto& e : fs::recursive_directory_iterator(dir / "sensor=gps")) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename().string();
    const auto ends = [&](std::string_view suffix) {
      return name.size() >= suffix.size() && name.substr(name.size() - suffix.size()) == suffix;
    };
    if (ends(archive::kChunkSuffix)) {
      ++f.chunks;
      f.chunk_bytes += e.file_size();
      const std::string cell = e.path().parent_path().filename().string();
      if (cell.rfind("cell=", 0) == 0) f.cells.insert(cell.substr(5));
    } else if (ends(archive::kSummarySuffix)) {
      f.summary_bytes += e.file_size();
    }
  }
  return f;
}

/// A question: a period and a rectangle (its bounds as the text both contenders read).
struct Question {
  std::string name;
  int64_t from_ns = 0, to_ns = 0;
  std::string min_lat, max_lat, min_lon, max_lon;
  std::string geojson_path;
  std::vector<std::string> cells;  // the archive's cells that meet it (all: empty)
  double fraction = 0;             // of the extent's area
};

std::string Fixed6(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6f", v);
  return b;
}

Question MakeQuestion(std::string name, int64_t from, int64_t to, double min_lat, double max_lat,
                      double min_lon, double max_lon, const Generated& g, const Files& files,
                      const fs::path& dir) {
  Question q;
  q.name = std::move(name);
  q.from_ns = from;
  q.to_ns = to;
  q.min_lat = Fixed6(min_lat);
  q.max_lat = Fixed6(max_lat);
  q.min_lon = Fixed6(min_lon);
  q.max_lon = Fixed6(max_lon);
  const archive::Box box{std::stod(q.min_lat), std::stod(q.max_lat), std::stod(q.min_lon),
                         std::stod(q.max_lon)};
  q.fraction = (box.max_lat - box.min_lat) * (box.max_lon - box.min_lon) /
               ((g.max_lat - g.min_lat) * (g.max_lon - g.min_lon));
  for (const std::string& cell : files.cells) {
    const auto b = archive::GeohashBox(cell);
    if (b && b->Intersects(box)) q.cells.push_back(cell);
  }
  if (q.cells.size() == files.cells.size()) q.cells.clear();
  q.geojson_path = (dir / (q.name + ".geojson")).string();
  std::ofstream(q.geojson_path) << R"({"type": "Polygon", "coordinates": [[[)" << q.min_lon << ", "
                                << q.min_lat << "], [" << q.max_lon << ", " << q.min_lat << "], ["
                                << q.max_lon << ", " << q.max_lat << "], [" << q.min_lon << ", "
                                << q.max_lat << "], [" << q.min_lon << ", " << q.min_lat
                                << "]]]}\n";
  return q;
}

std::string Rfc3339(int64_t ns) {
  std::string s;
  archive::AppendTime(s, ns);
  return s;
}

/// One answer of one contender.
struct Run {
  double wall_s = 0, cpu_s = 0;
  std::string csv;
  // find's own counts (DuckDB: none)
  uint64_t chunks = 0, by_period = 0, by_cell = 0, by_summary = 0, read = 0, samples = 0;
  size_t vehicles = 0;
};

size_t Lines(const std::string& csv) {
  const auto n = static_cast<size_t>(std::count(csv.begin(), csv.end(), '\n'));
  return n == 0 ? 0 : n - 1;
}

Run RunFind(const Question& q, const std::string& archive_dir) {
  FindArgs args;
  args.area = q.geojson_path;
  args.from = Rfc3339(q.from_ns);
  args.to = Rfc3339(q.to_ns);
  args.archive = archive_dir;
  args.format = "csv";
  std::ostringstream out, err;
  const double cpu0 = ProcessCpuSeconds();
  const auto t0 = SteadyClock::now();
  const int status = Find(args, out, err);
  Run r;
  r.wall_s = Seconds(SteadyClock::now() - t0);
  r.cpu_s = ProcessCpuSeconds() - cpu0;
  if (status != 0)
    throw std::runtime_error("find exited " + std::to_string(status) + ":\n" + err.str());
  static const std::regex kCounts(
      R"((\d+) chunks, skipped (\d+) by period, (\d+) by cell, (\d+) by summary; read (\d+) of (\d+).*, (\d+) samples scanned)");
  std::smatch m;
  const std::string e = err.str();
  if (!std::regex_search(e, m, kCounts))
    throw std::runtime_error("find's counts not found in:\n" + e);
  r.chunks = std::stoull(m[1]);
  r.by_period = std::stoull(m[2]);
  r.by_cell = std::stoull(m[3]);
  r.by_summary = std::stoull(m[4]);
  r.read = std::stoull(m[5]);
  r.samples = std::stoull(m[7]);
  r.csv = out.str();
  r.vehicles = Lines(r.csv);
  return r;
}

Run RunDuckDb(const Question& q, const Settings& s, const fs::path& work, bool with_cells,
              std::string* sql) {
  const fs::path out = work / "duckdb-answer.csv";
  const fs::path log = work / "duckdb.log";
  fs::remove(out);
  fs::remove(log);
  std::vector<std::string> argv = {"node",      s.duckdb_dir + "/find.mjs",
                                   "--root",    s.archive_dir,
                                   "--from",    Rfc3339(q.from_ns),
                                   "--to",      Rfc3339(q.to_ns),
                                   "--min-lat", q.min_lat,
                                   "--max-lat", q.max_lat,
                                   "--min-lon", q.min_lon,
                                   "--max-lon", q.max_lon,
                                   "--out",     out.string()};
  if (with_cells && !q.cells.empty()) {
    std::string cells;
    for (const std::string& c : q.cells) cells += (cells.empty() ? "" : ",") + c;
    argv.push_back("--cells");
    argv.push_back(cells);
  }
  testing::Process node(argv, log.string());
  const auto status = node.Wait(std::chrono::hours(2));
  const std::string text = node.ReadLog();
  if (status != 0) {
    throw std::runtime_error("node find.mjs exited " +
                             (status ? std::to_string(*status) : std::string("(still running)")) +
                             ":\n" + text);
  }
  static const std::regex kTiming(R"re("query_s":([0-9.e+-]+),"cpu_s":([0-9.e+-]+))re");
  std::smatch m;
  if (!std::regex_search(text, m, kTiming))
    throw std::runtime_error("no timing from find.mjs:\n" + text);
  Run r;
  r.wall_s = std::stod(m[1]);
  r.cpu_s = std::stod(m[2]);
  std::ifstream in(out);
  std::stringstream csv;
  csv << in.rdbuf();
  r.csv = csv.str();
  r.vehicles = Lines(r.csv);
  if (sql != nullptr && sql->empty()) {
    static const std::regex kSql(R"re("sql":"(.*)"\})re");
    if (std::regex_search(text, m, kSql)) {
      *sql = std::regex_replace(std::regex_replace(m[1].str(), std::regex(R"(\\n)"), "\n"),
                                std::regex(R"(\\")"), "\"");
    }
  }
  return r;
}

/// "same" when the answers are the same text; else how the vehicles differ.
std::string Compare(const std::string& find, const std::string& other) {
  if (find == other) return "same";
  const auto vehicles = [](const std::string& csv) {
    std::map<std::string, std::string> v;
    std::istringstream in(csv);
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) v[line.substr(0, line.find(','))] = line;
    return v;
  };
  const auto a = vehicles(find), b = vehicles(other);
  size_t only_find = 0, only_other = 0, differ = 0;
  for (const auto& [k, line] : a) {
    const auto it = b.find(k);
    if (it == b.end()) {
      ++only_find;
    } else if (it->second != line) {
      ++differ;
    }
  }
  for (const auto& [k, line] : b) only_other += a.count(k) == 0;
  std::ostringstream o;
  o << (only_find == 0 && only_other == 0 ? "same vehicles, " : "DIFFERENT vehicles, ") << only_find
    << " only in find, " << only_other << " only in DuckDB, " << differ
    << " with other times or counts";
  return o.str();
}

int Main(int argc, char** argv) {
  Settings s;
  CLI::App app{
      "fleetflow find --archive over a generated archive (the archive operator, the simulated "
      "fleet's gps) next to DuckDB over the same files."};
  app.add_option("--vehicles", s.vehicles, "Vehicles")->capture_default_str();
  app.add_option("--hours", s.hours, "Hours of samples")->capture_default_str();
  app.add_option("--gps-hz", s.gps_hz, "gps rate per vehicle (the simulator's default: 10)")
      ->capture_default_str();
  app.add_option("--partitions", s.partitions, "Stream partitions (PartitionOf)")
      ->capture_default_str();
  app.add_option("--seed", s.seed, "The fleet's seed")->capture_default_str();
  app.add_option("--start", s.start, "The first sample's hour (RFC 3339, UTC)")
      ->capture_default_str();
  app.add_option("--archive-dir", s.archive_dir,
                 "Where the archive is generated, and reused while its manifest names the same "
                 "parameters")
      ->capture_default_str();
  app.add_flag("--regenerate", s.regenerate, "Write the archive again even when it matches");
  app.add_option("--repeats", s.repeats, "Runs of each question (the median is reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 99));
  app.add_option("--area-fraction", s.area_fraction,
                 "Question (a): the rectangle's area, a fraction of the fleet's extent")
      ->capture_default_str();
  app.add_option("--query-hour", s.query_hour, "Question (a): which hour of the period (0-based)")
      ->capture_default_str();
  app.add_option("--duckdb-dir", s.duckdb_dir,
                 "Where find.mjs and its node_modules are (default: this build's bench/duckdb, "
                 "installed by the target ff-bench-find-node)");
  app.add_flag("--no-duckdb", s.no_duckdb, "find only");
  AddOutputOptions(app, s.out);
  CLI11_PARSE(app, argc, argv);
  if (s.query_hour < 0 || s.query_hour >= s.hours)
    throw std::runtime_error("--query-hour: 0 to --hours - 1");
  const auto start = ParseRfc3339(s.start);
  if (!start || *start % kHourNs != 0) throw std::runtime_error("--start: an RFC 3339 hour");
  if (s.duckdb_dir.empty()) s.duckdb_dir = BuildTreeProgram("bench/duckdb");
  if (!s.no_duckdb && (s.duckdb_dir.empty() ||
                       !fs::exists(fs::path(s.duckdb_dir) / "node_modules/@duckdb/node-api"))) {
    throw std::runtime_error(
        "DuckDB's Node API is not installed in " +
        (s.duckdb_dir.empty() ? std::string("<build>/bench/duckdb") : s.duckdb_dir) +
        ": build the target ff-bench-find-node (npm ci of bench/duckdb/package-lock.json), or "
        "run with --no-duckdb");
  }

  // The archive: reused, or written again.
  const fs::path dir = fs::absolute(s.archive_dir);
  s.archive_dir = dir.string();
  const std::string params = Params(s);
  std::optional<Generated> g = s.regenerate ? std::nullopt : ReadManifest(dir, params);
  bool reused = g.has_value();
  if (!g) {
    if (fs::exists(dir) && !fs::is_empty(dir) && !fs::exists(dir / kManifest)) {
      throw std::runtime_error(dir.string() +
                               " is not empty and holds no manifest of ff-bench-find: not "
                               "removed; name another --archive-dir");
    }
    fs::remove_all(dir);
    fs::create_directories(dir);
    // The manifest, incomplete until the end: a run cut short leaves a directory the next one
    // knows as its own, to write again.
    std::ofstream(dir / kManifest) << "params: " << params << '\n';
    std::cerr << "== generating the archive in " << dir.string() << " (" << params << ")\n";
    g = Generate(s, dir, *start);
    WriteManifest(dir, params, *g);
  }
  const Files files = CountFiles(dir);
  const fs::path work = fs::temp_directory_path() / ("ff-bench-find-" + std::to_string(::getpid()));
  fs::create_directories(work);
  struct RemoveWork {
    fs::path path;
    ~RemoveWork() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  } remove_work{work};

  std::printf("== find --archive vs DuckDB (%s)\n", params.c_str());
  std::printf(
      "archive: %s (%s), gps only: %d vehicles x %d h at %.4g Hz = %llu samples; %llu chunks in "
      "%zu cells, %.1f MiB of chunks (%.2f bytes per gps sample) + %.1f MiB of summaries\n",
      dir.c_str(), reused ? "reused" : "generated now", s.vehicles, s.hours, s.gps_hz,
      static_cast<unsigned long long>(g->samples), static_cast<unsigned long long>(files.chunks),
      files.cells.size(), files.chunk_bytes / 1048576.0,
      static_cast<double>(files.chunk_bytes) / static_cast<double>(g->samples),
      files.summary_bytes / 1048576.0);
  std::printf(
      "generation: %.0f s wall, %.0f s CPU (%.2f M samples/s through the archive operator)\n",
      g->seconds, g->cpu_seconds, g->samples / g->seconds / 1e6);
  std::printf("fleet extent: lat %.5f..%.5f, lon %.5f..%.5f\n", g->min_lat, g->max_lat, g->min_lon,
              g->max_lon);

  // (a) one hour x a rectangle of area_fraction of the extent, centred; (b) everything.
  const double side = std::sqrt(s.area_fraction);
  const double clat = (g->min_lat + g->max_lat) / 2, clon = (g->min_lon + g->max_lon) / 2;
  const double hlat = side * (g->max_lat - g->min_lat) / 2,
               hlon = side * (g->max_lon - g->min_lon) / 2;
  const int64_t hour_from = *start + s.query_hour * kHourNs;
  std::vector<Question> questions;
  questions.push_back(MakeQuestion("hour-area", hour_from, hour_from + kHourNs, clat - hlat,
                                   clat + hlat, clon - hlon, clon + hlon, *g, files, work));
  questions.push_back(MakeQuestion("whole-scan", *start, *start + s.hours * kHourNs,
                                   g->min_lat - 0.001, g->max_lat + 0.001, g->min_lon - 0.001,
                                   g->max_lon + 0.001, *g, files, work));

  Csv csv(s.out.csv, {"scale", "query", "contender", "run", "wall_s", "cpu_s", "chunks",
                      "pruned_period", "pruned_cell", "pruned_summary", "read", "samples_scanned",
                      "samples_per_s", "vehicles", "answer"});
  struct Row {
    std::string query, contender;
    double wall_s, cpu_s, samples_per_s;
    size_t vehicles;
    std::string answer;
    Run counts;
  };
  std::vector<Row> rows;
  std::vector<std::string> sqls;
  bool all_same = true;
  for (const Question& q : questions) {
    std::printf(
        "\n(%s) %s to %s, lat %s..%s, lon %s..%s (%.1f %% of the extent); cells that meet "
        "it: %s\n",
        q.name.c_str(), FormatUtc(q.from_ns).c_str(), FormatUtc(q.to_ns).c_str(), q.min_lat.c_str(),
        q.max_lat.c_str(), q.min_lon.c_str(), q.max_lon.c_str(), 100 * q.fraction,
        q.cells.empty() ? "all" : std::to_string(q.cells.size()).c_str());
    std::fflush(stdout);
    // find first, then DuckDB with the cells, then (question a) DuckDB with day/hour only.
    std::vector<std::string> contenders = {"find"};
    if (!s.no_duckdb) {
      contenders.push_back("duckdb");
      if (!q.cells.empty()) contenders.push_back("duckdb-no-cells");
    }
    std::map<std::string, std::vector<Run>> runs;
    std::string sql;
    for (int r = 0; r < s.repeats; ++r) {
      for (const std::string& c : contenders) {
        Run run = c == "find"
                      ? RunFind(q, s.archive_dir)
                      : RunDuckDb(q, s, work, c == "duckdb", c == "duckdb" ? &sql : nullptr);
        const Run& f = runs["find"].empty() ? run : runs["find"].front();
        const std::string answer = c == "find" ? (r == 0 ? "reference" : Compare(f.csv, run.csv))
                                               : Compare(f.csv, run.csv);
        if (answer != "same" && answer != "reference") all_same = false;
        const uint64_t samples = runs["find"].empty() ? run.samples : runs["find"].front().samples;
        csv.Row(s.out.scale, q.name, c, r + 1, run.wall_s, run.cpu_s, run.chunks, run.by_period,
                run.by_cell, run.by_summary, run.read, run.samples,
                static_cast<uint64_t>(samples / run.wall_s), run.vehicles, answer);
        std::printf("  run %d %-16s %8.3f s wall %8.3f s CPU  %zu vehicles  %s\n", r + 1, c.c_str(),
                    run.wall_s, run.cpu_s, run.vehicles, answer.c_str());
        std::fflush(stdout);
        runs[c].push_back(std::move(run));
      }
    }
    if (!sql.empty()) sqls.push_back("-- (" + q.name + ")" + sql);
    for (const std::string& c : contenders) {
      std::vector<double> wall, cpu;
      for (const Run& r : runs[c]) {
        wall.push_back(r.wall_s);
        cpu.push_back(r.cpu_s);
      }
      const Run& f = runs["find"].front();
      const Run& first = runs[c].front();
      std::string answer = c == "find" ? "reference" : Compare(f.csv, first.csv);
      for (const Run& r : runs[c]) {
        const std::string a = Compare(f.csv, r.csv);
        if (a != "same") answer = a;
      }
      Row row{q.name,
              c,
              Median(wall),
              Median(cpu),
              f.samples / Median(wall),
              first.vehicles,
              c == "find" ? "reference" : answer,
              c == "find" ? f : Run{}};
      csv.Row(s.out.scale, q.name, c, "median", row.wall_s, row.cpu_s, row.counts.chunks,
              row.counts.by_period, row.counts.by_cell, row.counts.by_summary, row.counts.read,
              row.counts.samples, static_cast<uint64_t>(row.samples_per_s), row.vehicles,
              row.answer);
      rows.push_back(std::move(row));
    }
  }

  // The table.
  std::printf("\n%-11s %-16s %7s %22s %6s %12s %9s %9s %9s %8s  %s\n", "query", "contender",
              "chunks", "pruned period/cell/sum", "read", "samples", "wall s", "CPU s", "M smp/s",
              "vehicles", "answer");
  for (const Row& r : rows) {
    char pruned[64] = "-", chunks[32] = "-", read[32] = "-", samples[32] = "-";
    if (r.contender == "find") {
      std::snprintf(pruned, sizeof pruned, "%llu/%llu/%llu",
                    static_cast<unsigned long long>(r.counts.by_period),
                    static_cast<unsigned long long>(r.counts.by_cell),
                    static_cast<unsigned long long>(r.counts.by_summary));
      std::snprintf(chunks, sizeof chunks, "%llu",
                    static_cast<unsigned long long>(r.counts.chunks));
      std::snprintf(read, sizeof read, "%llu", static_cast<unsigned long long>(r.counts.read));
      std::snprintf(samples, sizeof samples, "%llu",
                    static_cast<unsigned long long>(r.counts.samples));
    }
    std::printf("%-11s %-16s %7s %22s %6s %12s %9.3f %9.3f %9.1f %8zu  %s\n", r.query.c_str(),
                r.contender.c_str(), chunks, pruned, read, samples, r.wall_s, r.cpu_s,
                r.samples_per_s / 1e6, r.vehicles, r.answer.c_str());
  }
  std::printf("(M smp/s: the samples find scanned for the question / the median wall time)\n");
  for (const std::string& sql : sqls) std::printf("\nDuckDB's query %s\n", sql.c_str());

  // Goals.
  const auto find_row = [&](const std::string& q, const std::string& c) -> const Row* {
    for (const Row& r : rows) {
      if (r.query == q && r.contender == c) return &r;
    }
    return nullptr;
  };
  const Row* hour = find_row("hour-area", "find");
  const Row* scan = find_row("whole-scan", "find");
  const Row* hour_db = find_row("hour-area", "duckdb");
  const Row* scan_db = find_row("whole-scan", "duckdb");
  const bool hour_ok = hour->wall_s < 1.0;
  const bool scan_ok = scan->samples_per_s >= 10e6;
  const bool faster =
      hour_db && scan_db && hour->wall_s <= hour_db->wall_s && scan->wall_s <= scan_db->wall_s;
  std::printf(
      "\ngoals: (a) one hour x %.0f %% of the extent < 1 s: %.3f s: %s; (b) scan >= 10 M "
      "samples/s: %.1f M/s: %s",
      100 * questions[0].fraction, hour->wall_s, hour_ok ? "met" : "MISSED",
      scan->samples_per_s / 1e6, scan_ok ? "met" : "MISSED");
  if (!s.no_duckdb) {
    std::printf(
        "; same vehicles as DuckDB: %s; find at least as fast as DuckDB: %s (%.2fx and "
        "%.2fx DuckDB's time)",
        all_same ? "met" : "MISSED", faster ? "met" : "MISSED", hour->wall_s / hour_db->wall_s,
        scan->wall_s / scan_db->wall_s);
  }
  std::printf("\n");
  // The summary: find's figures against the goals; DuckDB's in the note (no ratio: the plot of
  // bench/run.sh draws ratios against percentage goals).
  char note[256];
  std::snprintf(note, sizeof note,
                "find --archive, %d vehicles x %d h of gps at %.4g Hz; DuckDB on the same files: "
                "%.3f s and %.3f s; same answers: %s",
                s.vehicles, s.hours, s.gps_hz, hour_db ? hour_db->wall_s : 0.0,
                scan_db ? scan_db->wall_s : 0.0,
                s.no_duckdb ? "not asked" : (all_same ? "yes" : "no"));
  AppendSummary(s.out.summary, {"find_hour", "s (one hour x 5% of the extent)", hour->wall_s, 0,
                                "< 1 s", hour_ok ? "yes" : "no", note});
  AppendSummary(s.out.summary, {"find_scan", "samples/s (whole archive)", scan->samples_per_s, 0,
                                ">= 10M", scan_ok ? "yes" : "no", note});
  if (!s.no_duckdb) {
    AppendSummary(s.out.summary,
                  {"find_vs_duckdb", "DuckDB time / find time (worst of a and b)",
                   std::min(hour_db->wall_s / hour->wall_s, scan_db->wall_s / scan->wall_s), 0,
                   ">= 1", faster ? "yes" : "no", note});
  }
  const bool ok = hour_ok && scan_ok && (s.no_duckdb || (all_same && faster));
  return ok ? 0 : 3;
}

}  // namespace
}  // namespace fleetflow::bench

int main(int argc, char** argv) {
  return fleetflow::bench::RunMain("ff-bench-find", fleetflow::bench::Main, argc, argv);
}

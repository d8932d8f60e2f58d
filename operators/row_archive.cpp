#include "row_archive.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "archive/commit.hpp"
#include "archive/ordered_writer.hpp"
#include "layout.hpp"
#include "logging.hpp"
#include "nats_config.hpp"
#include "options.hpp"
#include "row_columns.hpp"

namespace fleetflow {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kNsPerDay = 86'400'000'000'000;
constexpr int64_t kNoWindow = std::numeric_limits<int64_t>::min();
/// The commit record's marks: the newest window whose rows are in the archive, and the last
/// log segment written (every one up to it is).
constexpr char kLastWindow[] = "last_window_ns";
constexpr char kSegment[] = "segment";

/// The options of row_archive (see Spec()).
struct RowArchiveOptions {
  std::string directory;
  std::string row_set;
  std::vector<RowColumn> columns;
  archive::Period period = archive::Period::kHour;
  int64_t cell_precision = 5;
  int64_t zstd_level = 9;
  int64_t position_decimals = 5;
  int64_t value_digits = 4;
  int64_t retention_days = 0;
  std::string stats_subject;
  NatsClientOptions nats;
};

int64_t PeriodStart(int64_t ts, archive::Period period) {
  const int64_t p = archive::PeriodNs(period);
  return ts - ((ts % p) + p) % p;
}

/// A log segment's name in the commit directory: p<partition>-<segment>.log.
std::string SegmentName(uint32_t partition, uint64_t segment) {
  return "p" + std::to_string(partition) + "-" + std::to_string(segment) + ".log";
}

/// The segment number of a file of `partition`'s log; nullopt for any other file.
std::optional<uint64_t> SegmentOf(const std::string& file, uint32_t partition) {
  const std::string prefix = "p" + std::to_string(partition) + "-";
  if (file.rfind(prefix, 0) != 0 || file.size() <= prefix.size() + 4 ||
      file.substr(file.size() - 4) != ".log") {
    return std::nullopt;
  }
  uint64_t n = 0;
  const char* first = file.data() + prefix.size();
  const char* last = file.data() + file.size() - 4;
  const auto [end, ec] = std::from_chars(first, last, n);
  if (ec != std::errc() || end != last) return std::nullopt;
  return n;
}

/// One logged row: its window, cell and CSV line (vehicle_id,ts,values; no newline).
struct LoggedRow {
  int64_t window_ns = 0;
  std::string_view cell;
  std::string_view vehicle;
  std::string_view line;
};

/// What a log segment holds: its rows in the order logged, and the length of its complete
/// blocks (each ends with "#<window_ns>\n"; what follows the last one was torn by a crash).
struct ParsedLog {
  std::vector<LoggedRow> rows;
  size_t complete = 0;
  int64_t first_window = kNoWindow;
  int64_t last_window = kNoWindow;
};

/// Parses a segment's text (`text` must outlive the result).
ParsedLog ParseLog(std::string_view text) {
  ParsedLog log;
  size_t block_start = 0;  // index in rows of the block's first row
  for (size_t at = 0; at < text.size();) {
    const size_t nl = text.find('\n', at);
    if (nl == std::string_view::npos) break;  // torn
    const std::string_view line = text.substr(at, nl - at);
    at = nl + 1;
    if (!line.empty() && line[0] == '#') {
      int64_t w = 0;
      const auto [end, ec] = std::from_chars(line.data() + 1, line.data() + line.size(), w);
      if (ec != std::errc() || end != line.data() + line.size()) break;
      for (size_t i = block_start; i < log.rows.size(); ++i) log.rows[i].window_ns = w;
      block_start = log.rows.size();
      log.complete = at;
      if (log.first_window == kNoWindow) log.first_window = w;
      log.last_window = std::max(log.last_window, w);
      continue;
    }
    const size_t c1 = line.find(',');
    const size_t c2 = c1 == std::string_view::npos ? c1 : line.find(',', c1 + 1);
    if (c2 == std::string_view::npos) break;
    log.rows.push_back(
        {0, line.substr(0, c1), line.substr(c1 + 1, c2 - c1 - 1), line.substr(c1 + 1)});
  }
  log.rows.resize(block_start);  // the rows of a torn block
  return log;
}

std::string ReadWhole(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// The field `index` of a CSV line without quotes ("" when it has fewer).
std::string_view Field(std::string_view line, size_t index) {
  size_t at = 0;
  for (size_t i = 0; i < index; ++i) {
    at = line.find(',', at);
    if (at == std::string_view::npos) return {};
    ++at;
  }
  const size_t end = line.find(',', at);
  return line.substr(at, end == std::string_view::npos ? std::string_view::npos : end - at);
}

std::optional<double> Number(std::string_view text) {
  if (text.empty()) return std::nullopt;
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

class RowArchive final : public Operator {
 public:
  RowArchive(const OperatorContext& ctx, const RowArchiveOptions& options)
      : node_(ctx.node_id),
        o_(options),
        values_(options.columns),
        root_(options.directory),
        commits_(root_, ctx.node_id),
        stats_(ctx, options.nats, options.stats_subject),
        logged_(ctx.metrics.GetCounter(
            "rows_logged", "Rows appended to a partition's log (in the archive once written).",
            ctx.labels())),
        archived_(ctx.metrics.GetCounter("rows_archived", "Rows written into committed chunks.",
                                         ctx.labels())),
        in_archive_(ctx.metrics.GetCounter(
            "rows_in_archive",
            "Rows of windows a partition had logged or committed, emitted again after a "
            "hand-over or a restart: skipped.",
            ctx.labels())),
        replaced_(ctx.metrics.GetCounter(
            "rows_replaced",
            "Rows emitted again for a window they were logged for (a late sample's correction): "
            "the newer one is archived.",
            ctx.labels())),
        late_(ctx.metrics.GetCounter(
            "rows_late",
            "Rows of a period whose chunks were already written (a correction after it): not "
            "archived.",
            ctx.labels())),
        dropped_(ctx.metrics.GetCounter(
            "rows_dropped",
            "Rows that could not be appended to the log for 5 minutes (a failing disk): not "
            "archived.",
            ctx.labels())),
        ignored_(ctx.metrics.GetCounter(
            "batches_ignored", "Input that is no window join's rows (statistics): not archived.",
            ctx.labels())),
        chunks_(ctx.metrics.GetCounter("chunks_committed",
                                       "Chunks renamed into place (each with its summary).",
                                       ctx.labels())),
        bytes_(ctx.metrics.GetCounter("archive_bytes_written",
                                      "Bytes of committed chunks (compressed).", ctx.labels())),
        failures_(ctx.metrics.GetCounter(
            "flush_failures", "Segments that could not be written (tried again).", ctx.labels())),
        expired_(ctx.metrics.GetCounter("archive_days_expired",
                                        "Days of chunks deleted by the retention.", ctx.labels())) {
    values_.CountErrorsIn(ctx.metrics, ctx.labels());
    for (size_t c = 0; c < o_.columns.size(); ++c) {
      if (o_.columns[c].derived()) continue;
      if (o_.columns[c].field == ColumnField::kLat && !lat_) lat_ = c;
      if (o_.columns[c].field == ColumnField::kLon && !lon_) lon_ = c;
    }
    header_ = "vehicle_id,ts";
    for (const RowColumn& c : o_.columns) header_ += "," + c.name;
  }

  ~RowArchive() override {
    for (auto& [_, part] : partitions_) Close(part);
  }

  void Process(const Message& in, Emitter& out) override {
    if (const auto* b = std::get_if<WindowBatch>(in.get())) {
      Add(*b);
    } else if (std::holds_alternative<StatsBatch>(*in)) {
      if (ignored_.value() == 0) {
        spdlog::error(
            "row_archive '{}': its input is statistics, not a window join's rows: "
            "ignored (connect it to a window_join)",
            node_);
      }
      ignored_.Inc();
    } else if (const auto* t = std::get_if<Tick>(in.get())) {
      OnTick(*t);
      out.Emit(in);
    } else if (const auto* e = std::get_if<PartitionEvent>(in.get())) {
      OnPartitionEvent(*e);
      out.Emit(in);
    }
  }

 private:
  struct Partition {
    bool restored = false;
    int64_t committed = kNoWindow;     // windows up to it are in committed chunks
    int64_t skip_through = kNoWindow;  // logged before this owner took over: not again
    uint64_t segment = 0;              // the open segment
    int64_t segment_period = kNoWindow;
    int fd = -1;
    bool unsynced = false;
    std::set<int64_t> windows;  // logged in the open segment (a correction replaces)
    std::unordered_map<std::string, std::string> cell_of;  // by vehicle: its newest cell
  };

  // ---- The graph's thread.

  void Add(const WindowBatch& b) {
    if (b.rows.empty()) return;
    Partition& part = Restored(b.partition);
    const size_t n = b.rows.size();
    if (b.window_ns <= part.committed || b.window_ns <= part.skip_through) {
      in_archive_.Inc(n);
      return;
    }
    const int64_t period = PeriodStart(b.window_ns, o_.period);
    if (part.segment_period != kNoWindow && period < part.segment_period) {
      late_.Inc(n);
      return;
    }
    if (part.segment_period != kNoWindow && period > part.segment_period) Rotate(b.partition, part);
    part.segment_period = period;
    if (!part.windows.insert(b.window_ns).second) replaced_.Inc(n);

    const RowValues::Values values = values_.Of(b);
    std::string text;
    text.reserve(n * (header_.size() + 40));
    std::string line;
    for (size_t r = 0; r < b.rows.size(); ++r) {
      const WindowRow& row = b.rows[r];
      line.clear();
      line += row.vehicle;
      line += ',';
      archive::AppendTime(line, b.window_ns);
      std::optional<double> lat, lon;
      for (size_t c = 0; c < o_.columns.size(); ++c) {
        line += ',';
        const std::optional<double>& v = values[r][c];
        if (!v) continue;
        if (o_.columns[c].derived() || o_.columns[c].field == ColumnField::kValue) {
          archive::AppendSignificant(line, *v, static_cast<int>(o_.value_digits));
        } else {
          archive::AppendFixed(line, *v, static_cast<int>(o_.position_decimals));
          if (c == lat_) lat = v;
          if (c == lon_) lon = v;
        }
      }
      std::string& cell = part.cell_of[row.vehicle];
      if (lat && lon) {
        cell = archive::Geohash(*lat, *lon, static_cast<int>(o_.cell_precision));
      } else if (cell.empty()) {
        cell = archive::kNoCell;
      }
      text += cell;
      text += ',';
      text += line;
      text += '\n';
    }
    text += '#';
    text += std::to_string(b.window_ns);
    text += '\n';
    if (Log(b.partition, part, text, n)) logged_.Inc(n);
  }

  /// Appends whole blocks to the partition's open segment. A disk that fails is tried again
  /// (after 1 s, doubling to 30 s; the graph waits here, as the window join's rows are nowhere
  /// else) for 5 minutes, after which the rows are dropped, counted and logged; false then.
  bool Log(uint32_t p, Partition& part, std::string_view text, size_t rows) {
    int64_t backoff_ms = 1000;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(5);
    while (true) {
      try {
        Open(p, part);
        Append(part, text);
        part.unsynced = true;
        return true;
      } catch (const std::exception& e) {
        failures_.Inc();
        if (std::chrono::steady_clock::now() >= give_up) {
          dropped_.Inc(rows);
          errors_log_.Log("append", spdlog::level::err,
                          std::string(e.what()) + ": " + std::to_string(rows) +
                              " rows dropped after 5 minutes of failures");
          return false;
        }
        errors_log_.Log("append", spdlog::level::err,
                        std::string(e.what()) + " (tried again in " +
                            std::to_string(backoff_ms / 1000) + " s; the graph waits)");
        std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));  // the retry's pace
        backoff_ms = std::min<int64_t>(backoff_ms * 2, 30'000);
      }
    }
  }

  void OnTick(const Tick& t) {
    for (auto& [p, part] : partitions_) {
      Sync(part);
      if (t.drain && !part.windows.empty()) Rotate(p, part);
    }
    if (o_.retention_days > 0 && OwnsRetention() && t.now_ns >= next_retention_ns_) {
      next_retention_ns_ = t.now_ns + 3'600'000'000'000;  // hourly
      writer_.Enqueue(Job{0, std::nullopt, t.now_ns});
    }
    if (t.drain && !WaitWritten(std::nullopt, std::chrono::seconds(60))) {
      spdlog::error(
          "row_archive '{}': the drain could not write every log segment within 60 s; they are "
          "in the directory's log, written by the next start",
          node_);
    }
  }

  void OnPartitionEvent(const PartitionEvent& e) {
    any_partition_event_ = true;
    if (e.kind == PartitionEvent::Kind::kAssigned) {
      const auto it = partitions_.find(e.partition);
      if (it != partitions_.end()) Close(it->second);
      partitions_.erase(e.partition);  // what another worker logged since is in the directory
      owned_.insert(e.partition);
      Restored(e.partition);
      return;
    }
    owned_.erase(e.partition);
    const auto it = partitions_.find(e.partition);
    if (it == partitions_.end()) return;
    Rotate(e.partition, it->second);  // in the archive now, not when a next owner comes
    if (!WaitWritten(e.partition, std::chrono::seconds(30))) {
      spdlog::error(
          "row_archive '{}': partition {} revoked before its log was written (30 s): its next "
          "owner writes it",
          node_, e.partition);
      DropJobs(e.partition);
    }
    partitions_.erase(it);
  }

  bool OwnsRetention() const { return !any_partition_event_ || owned_.count(0) > 0; }

  /// The partition, restored on first use: its commit record finished, the segments of its log
  /// left handed to the writer, the newest window they hold noted (not logged again).
  Partition& Restored(uint32_t p) {
    Partition& part = partitions_[p];
    if (part.restored) return part;
    part.restored = true;
    uint64_t written = 0;
    if (const auto r = commits_.Recover(p)) {
      const auto w = r->marks.find(kLastWindow);
      const auto s = r->marks.find(kSegment);
      if (w != r->marks.end()) part.committed = static_cast<int64_t>(w->second);
      if (s != r->marks.end()) written = s->second;
    }
    std::vector<uint64_t> segments;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(commits_.dir(), ec)) {
      const auto n = SegmentOf(entry.path().filename().string(), p);
      if (!n || !entry.is_regular_file(ec)) continue;
      if (*n <= written && written > 0) {
        fs::remove(entry.path(), ec);  // written: its deletion was cut short
      } else {
        segments.push_back(*n);
      }
    }
    std::sort(segments.begin(), segments.end());
    // Every segment left is written, the last one too (a previous owner's writer that is still
    // at it after its 30 s would otherwise see rows appended behind it); the rows go on in a new
    // one, after the windows logged.
    part.segment = std::max(written, segments.empty() ? 0 : segments.back()) + 1;
    for (const uint64_t n : segments) {
      const fs::path path = commits_.dir() / SegmentName(p, n);
      std::string text;
      try {
        text = ReadWhole(path);
      } catch (const std::exception& e) {
        spdlog::error("row_archive '{}': {}", node_, e.what());
        continue;
      }
      const ParsedLog log = ParseLog(text);
      if (log.complete < text.size()) fs::resize_file(path, log.complete, ec);  // a torn tail
      part.skip_through = std::max(part.skip_through, log.last_window);
      writer_.Enqueue(Job{p, n, 0});
    }
    if (!segments.empty()) {
      spdlog::info(
          "row_archive '{}': partition {}: writes the {} segment(s) of its log left (windows up "
          "to {} ns)",
          node_, p, segments.size(), part.skip_through);
    }
    return part;
  }

  void Open(uint32_t p, Partition& part) {
    if (part.fd >= 0) return;
    const fs::path path = commits_.dir() / SegmentName(p, part.segment);
    part.fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (part.fd < 0) {
      throw std::runtime_error("row_archive '" + node_ + "': cannot open " + path.string() + ": " +
                               strerror(errno));
    }
  }

  /// Appends `text` to the open segment; throws when it cannot, leaving no part of it there
  /// (a torn block before the next one would end the log when it is read).
  void Append(Partition& part, std::string_view text) {
    const off_t start = ::lseek(part.fd, 0, SEEK_END);
    size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = ::write(part.fd, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const std::string why = n == 0 ? "nothing written" : strerror(errno);
        if (start >= 0 && ::ftruncate(part.fd, start) != 0) {
          spdlog::error("row_archive '{}': cannot cut a failed append off its log: {}", node_,
                        strerror(errno));
        }
        ::close(part.fd);
        part.fd = -1;
        throw std::runtime_error("row_archive '" + node_ + "': cannot append to its log: " + why);
      }
      done += static_cast<size_t>(n);
    }
  }

  void Sync(Partition& part) {
    if (part.fd < 0 || !part.unsynced) return;
    if (::fdatasync(part.fd) != 0) {
      errors_log_.Log("sync", spdlog::level::err,
                      "row_archive '" + node_ + "': cannot sync its log: " + strerror(errno));
      return;
    }
    part.unsynced = false;
  }

  void Close(Partition& part) {
    Sync(part);
    if (part.fd >= 0) ::close(part.fd);
    part.fd = -1;
  }

  /// Closes the open segment and hands it to the writer; the next one is opened on the next
  /// rows.
  void Rotate(uint32_t p, Partition& part) {
    Close(part);
    if (part.windows.empty()) return;
    writer_.Enqueue(Job{p, part.segment, 0});
    ++part.segment;
    part.windows.clear();
    part.segment_period = kNoWindow;
  }

  // ---- The writer thread: segments in order, each committed before the next.

  struct Job {
    uint32_t partition = 0;
    std::optional<uint64_t> segment;  // none: the retention's turn
    int64_t now_ns = 0;               // the retention's clock
  };

  bool WaitWritten(std::optional<uint32_t> p, std::chrono::seconds limit) {
    return writer_.WaitDone([&](const Job& j) { return j.segment && (!p || j.partition == *p); },
                            limit);
  }

  void DropJobs(uint32_t p) {
    writer_.Remove([&](const Job& j) { return j.segment && j.partition == p; });
  }

  void Run(const Job& job) {
    if (job.segment) {
      Write(job.partition, *job.segment);
    } else {
      Expire(job.now_ns);
    }
  }

  bool Failed(const Job& job, const std::exception& e, int64_t retry_ms) {
    failures_.Inc();
    errors_log_.Log("write", spdlog::level::err,
                    "row_archive '" + node_ + "': " + e.what() +
                        (job.segment ? " (tried again in " + std::to_string(retry_ms / 1000) + " s)"
                                     : " (the next hourly run tries again)"));
    return job.segment.has_value();
  }

  /// A chunk: a period and a cell, its rows sorted by vehicle then time.
  struct ChunkRows {
    std::vector<const LoggedRow*> rows;
  };

  /// Writes a log segment as its chunks, commits them and deletes it. Throws when a step fails
  /// (nothing of it is in the archive unless its record was stored; then the next try or the
  /// partition's next owner finishes the renames).
  void Write(uint32_t p, uint64_t segment) {
    const fs::path path = commits_.dir() / SegmentName(p, segment);
    if (!fs::exists(path)) return;  // written by another owner
    const std::string text = ReadWhole(path);
    const ParsedLog log = ParseLog(text);
    // The rows in order, a window logged again (a correction) once: its last.
    std::vector<const LoggedRow*> rows;
    rows.reserve(log.rows.size());
    for (const LoggedRow& r : log.rows) rows.push_back(&r);
    std::stable_sort(rows.begin(), rows.end(), [](const LoggedRow* a, const LoggedRow* b) {
      return std::tie(a->vehicle, a->window_ns) < std::tie(b->vehicle, b->window_ns);
    });
    std::vector<const LoggedRow*> kept;
    kept.reserve(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      if (i + 1 < rows.size() && rows[i + 1]->vehicle == rows[i]->vehicle &&
          rows[i + 1]->window_ns == rows[i]->window_ns) {
        continue;
      }
      kept.push_back(rows[i]);
    }
    std::map<std::pair<int64_t, std::string_view>, ChunkRows> chunks;
    for (const LoggedRow* r : kept) {
      chunks[{PeriodStart(r->window_ns, o_.period), r->cell}].rows.push_back(r);
    }

    archive::CommitRecord record;
    record.marks[kLastWindow] = static_cast<uint64_t>(std::max<int64_t>(log.last_window, 0));
    record.marks[kSegment] = segment;
    if (const auto previous = commits_.Read(p)) {  // never back (an empty segment)
      for (auto& [name, value] : record.marks) {
        const auto it = previous->marks.find(name);
        if (it != previous->marks.end()) value = std::max(value, it->second);
      }
    }
    std::vector<archive::Summary> summaries;
    std::vector<std::pair<int64_t, std::string>> places;
    for (const auto& [key, chunk] : chunks) {
      const auto& [period, cell] = key;
      archive::Summary s;
      s.row_set = o_.row_set;
      s.columns = header_;
      s.partition = p;
      s.samples = chunk.rows.size();
      s.first_ns = chunk.rows.front()->window_ns;
      s.last_ns = s.first_ns;
      std::string csv = header_ + "\n";
      csv.reserve(chunk.rows.size() * (header_.size() + 24));
      for (const LoggedRow* r : chunk.rows) {
        s.first_ns = std::min(s.first_ns, r->window_ns);
        s.last_ns = std::max(s.last_ns, r->window_ns);
        if (s.vehicles.empty() || s.vehicles.back() != r->vehicle) {
          s.vehicles.emplace_back(r->vehicle);
        }
        if (lat_ && lon_) {
          const auto lat = Number(Field(r->line, 2 + *lat_));
          const auto lon = Number(Field(r->line, 2 + *lon_));
          if (lat && lon) {
            if (!s.box) s.box = archive::Box{*lat, *lat, *lon, *lon};
            s.box->min_lat = std::min(s.box->min_lat, *lat);
            s.box->max_lat = std::max(s.box->max_lat, *lat);
            s.box->min_lon = std::min(s.box->min_lon, *lon);
            s.box->max_lon = std::max(s.box->max_lon, *lon);
          }
        }
        csv += r->line;
        csv += '\n';
      }
      s.positions = s.box.has_value();
      const std::string data = archive::Compress(csv, static_cast<int>(o_.zstd_level));
      s.bytes = data.size();
      // Named by the windows it holds: the same rows make the same name, whoever writes them.
      const std::string name = "part-" + std::to_string(p) + "-" + std::to_string(s.first_ns) +
                               "-" + std::to_string(s.last_ns);
      const std::string chunk_path =
          archive::ChunkFolder(archive::RowsFolder(o_.row_set), period, o_.period, cell) + "/" +
          name + std::string(archive::kChunkSuffix);
      const std::string staged =
          commits_.StagedName(p, std::to_string(segment) + "." + std::to_string(places.size()));
      archive::WriteSynced(root_ / (staged + ".json.tmp"), archive::ToJson(s));
      archive::WriteSynced(root_ / (staged + ".csv.zst.tmp"), data);
      record.files.push_back({staged + ".json.tmp", archive::SummaryPathOf(chunk_path)});
      record.files.push_back({staged + ".csv.zst.tmp", chunk_path});
      summaries.push_back(std::move(s));
      places.emplace_back(period, std::string(cell));
    }
    if (!summaries.empty()) archive::SyncDirectory(root_ / "_tmp");
    commits_.Store(p, record);
    commits_.Apply(record);
    fs::remove(path);
    uint64_t n = 0, bytes = 0;
    for (size_t i = 0; i < summaries.size(); ++i) {
      n += summaries[i].samples;
      bytes += summaries[i].bytes;
      stats_.Publish(summaries[i], places[i].first, places[i].second, record.files[2 * i + 1].to);
    }
    archived_.Inc(n);
    bytes_.Inc(bytes);
    chunks_.Inc(summaries.size());
  }

  /// Deletes the days wholly older than retention_days.
  void Expire(int64_t now_ns) {
    for (const fs::path& day : archive::ExpireDays(root_, archive::RowsFolder(o_.row_set),
                                                   now_ns - o_.retention_days * kNsPerDay)) {
      expired_.Inc();
      spdlog::info("row_archive '{}': retention: deleted {}", node_, day.string());
    }
  }

  const std::string node_;
  const RowArchiveOptions o_;
  RowValues values_;  // the rows' values (o_.columns)
  const fs::path root_;
  const archive::Commits commits_;
  std::string header_;
  std::optional<size_t> lat_, lon_;  // the columns of the cell's position

  // The graph's thread:
  std::map<uint32_t, Partition> partitions_;
  std::set<uint32_t> owned_;
  bool any_partition_event_ = false;
  int64_t next_retention_ns_ = 0;

  // The writer's:
  archive::StatsPublisher stats_;
  RateLimitedLog errors_log_;

  Counter& logged_;
  Counter& archived_;
  Counter& in_archive_;
  Counter& replaced_;
  Counter& late_;
  Counter& dropped_;
  Counter& ignored_;
  Counter& chunks_;
  Counter& bytes_;
  Counter& failures_;
  Counter& expired_;
  // Last: its thread starts once the rest is there, and ends before it goes.
  archive::OrderedWriter<Job> writer_{
      [this](const Job& j) { Run(j); },
      [this](const Job& j, const std::exception& e, int64_t ms) { return Failed(j, e, ms); }};
};

const OptionsSpec<RowArchiveOptions>& Spec() {
  using O = RowArchiveOptions;
  return StaticSpec<O>([](OptionsSpec<O>& c) {
    OptionsSpec<RowColumn> columns;
    columns
        .String("name",
                "The column's name in the CSV header: 1 to 63 lower-case letters, digits and _, "
                "starting with a letter or _; not vehicle_id or ts.",
                &RowColumn::name)
        .Required()
        .Pattern("^[a-z_][a-z0-9_]{0,62}$",
                 "1 to 63 lower-case letters, digits and _, starting with a letter or _")
        .Example("\"speed\"");
    DeclareRowColumnFields(columns, /*statistics=*/false, "an empty field");

    c.String("directory",
             "Where the archive is written (created when missing), as archive's directory: a "
             "local disk or a volume every worker mounts; workers sharing partitions must share "
             "it (a partition's next owner goes on with its log). Layout: docs/archive.md.",
             &O::directory)
        .Required()
        .MinLength(1)
        .Example(R"("/var/lib/fleetflow/archive")");
    c.String("row_set",
             "The name of the rows' top folder, rows=<row_set>: one per row_archive of a "
             "directory.",
             &O::row_set)
        .Default("telemetry_1s")
        .Pattern(kSensorNamePattern, kSensorNameWords);
    c.ObjectArray("columns",
                  "The columns after vehicle_id and ts (the window time), each one field of one "
                  "sensor interpolated at the window time, or an expression over the other "
                  "columns, as timescale_sink computes its columns.",
                  &O::columns, columns)
        .MinItems(1)
        .DefaultJson(
            R"([{"name":"lat","sensor":"gps","field":"lat","interpolation":"linear","expression":""},)"
            R"({"name":"lon","sensor":"gps","field":"lon","interpolation":"linear","expression":""},)"
            R"({"name":"speed","sensor":"speed","field":"value","interpolation":"linear","expression":""},)"
            R"({"name":"soc","sensor":"soc","field":"value","interpolation":"linear","expression":""},)"
            R"({"name":"torque","sensor":"torque","field":"value","interpolation":"linear","expression":""}])");
    c.Enum("period",
           "The time folders and the chunks: one chunk per partition, period and cell. hour "
           "(day=<date>/hour=<HH>) or day (day=<date>), by the window time in UTC.",
           &O::period, {{"hour", archive::Period::kHour}, {"day", archive::Period::kDay}})
        .Default("hour");
    c.Integer("cell_precision",
              "Characters of the geohash of the cell folders, from the row's first lat and lon "
              "columns (a row without them: its vehicle's last cell, cell=none before any).",
              &O::cell_precision)
        .Default(int64_t{5})
        .Min(1)
        .Max(8);
    c.Integer("zstd_level",
              "zstd's compression level of the chunks (1 fastest; 19 smallest). A chunk is "
              "compressed once, an hour's rows of a partition on the writer thread: 9 is 13.7 "
              "bytes a row, 3 is 16.6 for 1.4 us less CPU a row (docs/BENCHMARKS.md section 13).",
              &O::zstd_level)
        .Default(int64_t{9})
        .Min(1)
        .Max(19);
    c.Integer("position_decimals",
              "Decimals of the lat and lon columns: 5 is about 1.1 m, finer than a GPS fix.",
              &O::position_decimals)
        .Default(int64_t{5})
        .Min(1)
        .Max(15);
    c.Integer("value_digits",
              "Significant digits of the value columns (17: exact). 4 keeps what the sensors "
              "measure (a speed to 0.01 km/h, a state of charge to 0.01 %) for about three "
              "quarters of the bytes of 7 (docs/BENCHMARKS.md section 13).",
              &O::value_digits)
        .Default(int64_t{4})
        .Min(1)
        .Max(17);
    c.Integer("retention_days",
              "Days of rows kept: a day folder wholly older than this (by the engine clock) is "
              "deleted, checked every hour by the worker that owns partition 0. 0: kept for ever.",
              &O::retention_days)
        .Default(int64_t{0})
        .Min(0);
    c.String("stats_subject",
             "Each committed chunk's summary (node, row_set, period, cell, partition, vehicles, "
             "rows, bytes, path) is published here as JSON on core NATS; empty: not published.",
             &O::stats_subject)
        .Default("fleetflow.archive.stats");
    c.Include(&O::nats, NatsClientSpec());
    c.Rule(
        "Each column has a sensor or an expression, and each expression compiles over the "
        "columns it may use.",
        [](const O& o, std::vector<ConfigProblem>& out) { CheckRowColumns(o.columns, out); });
  });
}

/// `fleetflow validate --connect`: the directory can be written.
std::vector<ConnectFinding> CheckConnect(const Config& config) {
  const RowArchiveOptions o = Spec().Parse(config);
  std::error_code ec;
  fs::path dir(o.directory);
  while (!dir.empty() && !fs::exists(dir, ec)) dir = dir.parent_path();
  if (dir.empty()) dir = ".";
  if (::access(dir.c_str(), W_OK) != 0) {
    return {{ConnectFinding::Level::kProblem, "row archive directory " + o.directory + ": " +
                                                  dir.string() + " is not writable by this user"}};
  }
  return {{fs::exists(o.directory, ec) ? ConnectFinding::Level::kOk : ConnectFinding::Level::kNote,
           "row archive directory " + o.directory +
               (fs::exists(o.directory, ec)
                    ? " is writable"
                    : " is created at start (in " + dir.string() + ", writable)")}};
}

}  // namespace

void RegisterRowArchive(Registry& registry) {
  OperatorInfo info = TypedOperator<RowArchive>(
      "row_archive",
      "Writes a window join's aligned rows into a directory for years at a known cost: "
      "zstd-compressed CSV chunks by period and geohash cell, each with a summary "
      "(docs/archive.md), exactly once through a log kept in the directory.",
      PortKind::kRows, PortKind::kNone, Spec());
  info.check_connect = CheckConnect;
  registry.Add(std::move(info));
}

}  // namespace fleetflow

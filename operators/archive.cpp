#include "archive.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "archive/commit.hpp"
#include "archive/ordered_writer.hpp"
#include "jetstream.hpp"
#include "layout.hpp"
#include "logging.hpp"
#include "nats_config.hpp"
#include "options.hpp"
#include "state/jetstream_kv_snapshots.hpp"

namespace fleetflow {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kNsPerMs = 1'000'000;
constexpr int64_t kNsPerDay = 86'400'000'000'000;
/// The commit record's mark: the last stream sequence whose samples are in the archive.
constexpr char kLastSequence[] = "last_sequence";

/// The options of archive (see Spec()).
struct ArchiveOptions {
  enum class Backend { kMemory, kJetStreamKv };
  std::string directory;
  archive::Period period = archive::Period::kHour;
  int64_t cell_precision = 5;
  std::vector<std::string> sensors;
  int64_t flush_ms = 600'000;
  int64_t max_buffered_samples = 4'000'000;
  int64_t zstd_level = 3;
  int64_t position_decimals = 5;
  int64_t value_digits = 7;
  int64_t retention_days = 0;
  std::string stats_subject;
  Backend backend = Backend::kMemory;
  std::string bucket;
  KvBucketSettings bucket_settings;
  NatsClientOptions nats;
};

/// One sample held for a flush: its vehicle and cell (indexes into the partition's names of
/// them) and itself.
struct Held {
  uint32_t vehicle = 0;
  uint32_t cell = 0;
  wire::Point point;
};

/// The samples of one sensor in one period, of every cell: a sample delivered twice is found
/// there, whatever cell each copy was given.
struct SeriesKey {
  std::string sensor;
  int64_t period_start = 0;
  bool operator<(const SeriesKey& o) const {
    return std::tie(sensor, period_start) < std::tie(o.sensor, o.period_start);
  }
};

/// A chunk: a sensor, a period and a cell.
struct ChunkKey {
  std::string sensor;
  int64_t period_start = 0;
  std::string cell;
  bool operator<(const ChunkKey& o) const {
    return std::tie(sensor, period_start, cell) < std::tie(o.sensor, o.period_start, o.cell);
  }
};

/// What a partition gathered since its last flush, handed to the writer.
struct Flush {
  uint32_t partition = 0;
  uint64_t first_sequence = 0;  // of the messages in it (0: no sequences)
  uint64_t last_sequence = 0;
  int64_t made_ns = 0;  // engine clock: names the chunks of a source without sequences
  std::shared_ptr<const std::vector<std::string>> vehicles;
  std::shared_ptr<const std::vector<std::string>> cells;
  std::map<SeriesKey, std::vector<Held>> series;
  size_t samples = 0;
};

/// A chunk made from a Flush, before it is written.
struct Made {
  ChunkKey key;
  std::string data;  // compressed
  archive::Summary summary;
  uint64_t duplicates = 0;
};

class Archive final : public Operator {
 public:
  Archive(const OperatorContext& ctx, const ArchiveOptions& options,
          std::shared_ptr<SnapshotStore> memory_checkpoints = nullptr)
      : node_(ctx.node_id),
        o_(options),
        clock_(ctx.clock),
        root_(options.directory),
        commits_(root_, ctx.node_id),
        wanted_(options.sensors.begin(), options.sensors.end()),
        stats_(ctx, options.nats, options.stats_subject),
        archived_(ctx.metrics.GetCounter("samples_archived",
                                         "Samples written into committed chunks.", ctx.labels())),
        duplicates_(ctx.metrics.GetCounter(
            "samples_duplicate",
            "Samples delivered twice within a flush (the same time and sequence number): "
            "archived once.",
            ctx.labels())),
        in_archive_(ctx.metrics.GetCounter(
            "samples_in_archive",
            "Samples of messages up to a partition's commit record, read again after a "
            "hand-over or a restart: in the archive already, skipped.",
            ctx.labels())),
        ignored_(ctx.metrics.GetCounter("samples_ignored",
                                        "Samples of sensors that are not archived.", ctx.labels())),
        chunks_(ctx.metrics.GetCounter("chunks_committed",
                                       "Chunks renamed into place (each with its summary).",
                                       ctx.labels())),
        bytes_(ctx.metrics.GetCounter("archive_bytes_written",
                                      "Bytes of committed chunks (compressed).", ctx.labels())),
        failures_(ctx.metrics.GetCounter(
            "flush_failures", "Flushes that could not be written (tried again).", ctx.labels())),
        expired_(ctx.metrics.GetCounter("archive_days_expired",
                                        "Days of chunks deleted by the retention.", ctx.labels())),
        buffered_(ctx.metrics.GetGauge(
            "samples_buffered", "Samples gathered for a flush, not yet committed.", ctx.labels())) {
    if (o_.backend == ArchiveOptions::Backend::kJetStreamKv) {
      checkpoints_ = OpenKvSnapshots(ctx, o_.nats, o_.bucket, o_.bucket_settings);
    } else {
      checkpoints_ = std::move(memory_checkpoints);
    }
  }

  void Process(const Message& in, Emitter& out) override {
    if (const auto* b = std::get_if<SampleBatch>(in.get())) {
      Add(*b);
    } else if (const auto* t = std::get_if<Tick>(in.get())) {
      OnTick(*t);
      out.Emit(in);
    } else if (const auto* e = std::get_if<PartitionEvent>(in.get())) {
      OnPartitionEvent(*e);
      out.Emit(in);
    }
  }

  bool Ready() const override { return !checkpoints_ || checkpoints_->Ready(); }

 private:
  struct Partition {
    bool restored = false;
    uint64_t committed = 0;  // the last sequence flushed, or the commit record's
    uint64_t first = 0;      // the first sequence gathered since the last flush
    uint64_t taken = 0;      // the last
    int64_t since_ns = 0;    // the clock when the first sample since the last flush came
    int64_t made_ns = 0;     // the last flush's Flush::made_ns
    size_t samples = 0;
    std::map<SeriesKey, std::vector<Held>> series;
    // The names of vehicles and cells, by index (they only grow).
    std::shared_ptr<std::vector<std::string>> vehicles =
        std::make_shared<std::vector<std::string>>();
    std::unordered_map<std::string, uint32_t> index;
    std::shared_ptr<std::vector<std::string>> cells =
        std::make_shared<std::vector<std::string>>(1, std::string(archive::kNoCell));
    std::unordered_map<std::string, uint32_t> cell_index{{std::string(archive::kNoCell), 0}};
    std::vector<uint32_t> cell_of;  // by vehicle: the cell of its newest position seen
  };

  void Add(const SampleBatch& b) {
    if (b.restored || b.points.empty()) return;
    if (!wanted_.empty() && wanted_.count(b.sensor) == 0) {
      ignored_.Inc(b.points.size());
      return;
    }
    Partition& part = Restored(b.partition);
    if (b.sequence != 0 && b.sequence <= part.committed) {
      in_archive_.Inc(b.points.size());
      return;
    }
    if (part.samples == 0) part.since_ns = clock_.NowNs();
    if (b.sequence != 0) {
      if (part.first == 0) part.first = b.sequence;
      part.taken = std::max(part.taken, b.sequence);
    }
    auto [it, inserted] =
        part.index.try_emplace(b.vehicle, static_cast<uint32_t>(part.vehicles->size()));
    if (inserted) {
      part.vehicles->push_back(b.vehicle);
      part.cell_of.push_back(0);
    }
    const uint32_t vehicle = it->second;
    std::vector<Held>* series = nullptr;
    SeriesKey key{b.sensor, 0};
    const int64_t period = archive::PeriodNs(o_.period);
    for (const wire::Point& p : b.points) {
      if (p.has_position) {
        const std::string cell =
            archive::Geohash(p.lat, p.lon, static_cast<int>(o_.cell_precision));
        const auto [c, added] =
            part.cell_index.try_emplace(cell, static_cast<uint32_t>(part.cells->size()));
        if (added) part.cells->push_back(cell);
        part.cell_of[vehicle] = c->second;
      }
      const int64_t start = p.ts_ns - ((p.ts_ns % period) + period) % period;
      if (series == nullptr || start != key.period_start) {
        key.period_start = start;
        series = &part.series[key];
      }
      series->push_back({vehicle, part.cell_of[vehicle], p});
    }
    part.samples += b.points.size();
    buffered_.Set(static_cast<double>(buffered_total_ += b.points.size()));
    if (part.samples >= static_cast<size_t>(o_.max_buffered_samples)) {
      StartFlush(b.partition, part);
      WaitForRoom();
    }
  }

  void OnTick(const Tick& t) {
    for (auto& [p, part] : partitions_) {
      if (part.samples > 0 && (t.drain || t.now_ns - part.since_ns >= o_.flush_ms * kNsPerMs)) {
        StartFlush(p, part);
      }
    }
    WaitForRoom();  // a writer behind the flushes holds the graph here too
    if (o_.retention_days > 0 && OwnsRetention() && t.now_ns >= next_retention_ns_) {
      next_retention_ns_ = t.now_ns + 3'600'000'000'000;  // hourly
      writer_.Enqueue(Job{std::nullopt, t.now_ns});
    }
    if (t.drain) {
      if (!WaitWritten(std::nullopt, std::chrono::seconds(60))) {
        spdlog::error(
            "archive '{}': the drain could not write every flush within 60 s; what was not "
            "written is read again from the stream by the next start",
            node_);
      }
      if (checkpoints_ && !checkpoints_->Sync()) {
        spdlog::warn("archive '{}': a checkpoint was not stored at the drain", node_);
      }
    }
  }

  void OnPartitionEvent(const PartitionEvent& e) {
    any_partition_event_ = true;
    if (e.kind == PartitionEvent::Kind::kAssigned) {
      partitions_.erase(e.partition);  // what another worker wrote since is in its record
      owned_.insert(e.partition);
      Restored(e.partition);
      return;
    }
    owned_.erase(e.partition);
    const auto it = partitions_.find(e.partition);
    if (it == partitions_.end()) return;
    if (it->second.samples > 0) StartFlush(e.partition, it->second);
    if (!WaitWritten(e.partition, std::chrono::seconds(30))) {
      spdlog::error(
          "archive '{}': partition {} revoked before its last flush was written (30 s): "
          "dropped here; its next owner reads it again from the stream",
          node_, e.partition);
      DropJobs(e.partition);
    }
    if (checkpoints_) {
      checkpoints_->Sync();
      checkpoints_->Forget(e.partition);
    }
    partitions_.erase(it);
  }

  /// The partition, restored from its commit record on first use: the renames of its last
  /// flush finished, what no record names deleted, the sequence up to which it is archived.
  Partition& Restored(uint32_t p) {
    Partition& part = partitions_[p];
    if (part.restored) return part;
    part.restored = true;
    if (const auto r = commits_.Recover(p)) part.committed = Mark(*r, kLastSequence);
    return part;
  }

  static uint64_t Mark(const archive::CommitRecord& r, const std::string& name) {
    const auto it = r.marks.find(name);
    return it == r.marks.end() ? 0 : it->second;
  }

  bool OwnsRetention() const { return !any_partition_event_ || owned_.count(0) > 0; }

  void StartFlush(uint32_t p, Partition& part) {
    Flush f;
    f.partition = p;
    f.first_sequence = part.first;
    f.last_sequence = part.taken;
    // Distinct per flush, even two at one clock time (a replay's clock stands still between
    // recorded times); the same again when the same recording is replayed into the archive.
    f.made_ns = part.made_ns = std::max(clock_.NowNs(), part.made_ns + 1);
    f.vehicles = part.vehicles;
    f.cells = part.cells;
    f.series = std::move(part.series);
    f.samples = part.samples;
    part.series.clear();
    part.samples = 0;
    part.first = 0;
    // A message delivered again from now on (its acknowledgement was late) is in this flush.
    part.committed = std::max(part.committed, part.taken);
    // The names grow only; new tables for the next flush keep those handed over intact.
    part.vehicles = std::make_shared<std::vector<std::string>>(*part.vehicles);
    part.cells = std::make_shared<std::vector<std::string>>(*part.cells);
    writer_.Enqueue(Job{std::move(f), 0});
  }

  // ---- The writer thread: flushes in order, each committed before the next.

  struct Job {
    std::optional<Flush> flush;  // none: the retention's turn
    int64_t now_ns = 0;          // the retention's clock
  };

  /// Waits while the writer holds more than twice max_buffered_samples (the disk is slower
  /// than the input, or failing): the graph waits here.
  void WaitForRoom() {
    const auto room = [&](const std::deque<Job>& jobs) {
      size_t queued = 0;
      for (const Job& j : jobs) queued += j.flush ? j.flush->samples : 0;
      return queued <= static_cast<size_t>(2 * o_.max_buffered_samples);
    };
    while (!writer_.WaitUntil(room, std::chrono::minutes(1))) {
    }
  }

  /// Waits until the writer has written every flush of `p` (every partition's: nullopt), at
  /// most `limit`; false when one is still waiting then.
  bool WaitWritten(std::optional<uint32_t> p, std::chrono::seconds limit) {
    return writer_.WaitDone(
        [&](const Job& j) { return j.flush && (!p || j.flush->partition == *p); }, limit);
  }

  void DropJobs(uint32_t p) {
    for (const Job& j :
         writer_.Remove([&](const Job& j) { return j.flush && j.flush->partition == p; })) {
      buffered_total_ -= j.flush->samples;
    }
  }

  void Run(const Job& job) {
    if (job.flush) {
      Write(*job.flush);
    } else {
      Expire(job.now_ns);
    }
  }

  bool Failed(const Job& job, const std::exception& e, int64_t retry_ms) {
    failures_.Inc();
    errors_log_.Log("write", spdlog::level::err,
                    "archive '" + node_ + "': " + e.what() +
                        (job.flush ? " (tried again in " + std::to_string(retry_ms / 1000) + " s)"
                                   : " (the next hourly run tries again)"));
    return job.flush.has_value();
  }

  /// Makes the chunks of a flush: each sorted by vehicle then time, a sample delivered twice
  /// once, as CSV compressed, with its summary.
  std::vector<Made> Make(const Flush& f) const {
    const std::vector<std::string>& names = *f.vehicles;
    std::vector<uint32_t> order(names.size());
    for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](uint32_t a, uint32_t b) { return names[a] < names[b]; });
    std::vector<uint32_t> rank(names.size());
    for (uint32_t i = 0; i < order.size(); ++i) rank[order[i]] = i;

    std::vector<Made> made;
    for (const auto& [series, held] : f.series) {
      // A sample delivered twice is kept once, in the cell its first copy was given.
      std::vector<Held> all = held;
      std::stable_sort(all.begin(), all.end(), [&](const Held& a, const Held& b) {
        return std::tie(rank[a.vehicle], a.point.ts_ns, a.point.seq) <
               std::tie(rank[b.vehicle], b.point.ts_ns, b.point.seq);
      });
      const auto same = [](const Held& a, const Held& b) {
        return a.vehicle == b.vehicle && a.point.ts_ns == b.point.ts_ns &&
               a.point.seq == b.point.seq;
      };
      const auto end = std::unique(all.begin(), all.end(), same);
      const auto duplicates = static_cast<uint64_t>(all.end() - end);
      all.erase(end, all.end());
      std::map<std::string_view, std::vector<Held>> by_cell;
      for (const Held& h : all) by_cell[(*f.cells)[h.cell]].push_back(h);
      for (auto& [cell, samples] : by_cell) {
        made.push_back(
            MakeChunk({series.sensor, series.period_start, std::string(cell)}, samples, f, names));
      }
      if (!by_cell.empty()) made.back().duplicates = duplicates;
    }
    return made;
  }

  /// One chunk of a flush: `samples` sorted and without duplicates.
  Made MakeChunk(ChunkKey key, const std::vector<Held>& samples, const Flush& f,
                 const std::vector<std::string>& names) const {
    Made m;
    m.key = std::move(key);
    const bool positions = std::any_of(samples.begin(), samples.end(),
                                       [](const Held& h) { return h.point.has_position; });
    archive::Summary& s = m.summary;
    s.sensor = m.key.sensor;
    s.positions = positions;
    s.samples = samples.size();
    s.partition = f.partition;
    s.first_sequence = f.first_sequence;
    s.last_sequence = f.last_sequence;
    s.first_ns = samples.front().point.ts_ns;
    s.last_ns = samples.front().point.ts_ns;
    std::string csv(archive::CsvHeader(positions));
    csv.reserve(samples.size() * (positions ? 56 : 48));
    uint32_t last_vehicle = UINT32_MAX;
    for (const Held& h : samples) {
      const wire::Point& p = h.point;
      const std::string& name = names[h.vehicle];
      if (h.vehicle != last_vehicle) {
        s.vehicles.push_back(name);
        last_vehicle = h.vehicle;
      }
      s.first_ns = std::min(s.first_ns, p.ts_ns);
      s.last_ns = std::max(s.last_ns, p.ts_ns);
      csv += name;
      csv += ',';
      archive::AppendTime(csv, p.ts_ns);
      csv += ',';
      if (positions) {
        if (p.has_position) {
          archive::AppendFixed(csv, p.lat, static_cast<int>(o_.position_decimals));
          csv += ',';
          archive::AppendFixed(csv, p.lon, static_cast<int>(o_.position_decimals));
          if (!s.box) s.box = archive::Box{p.lat, p.lat, p.lon, p.lon};
          s.box->min_lat = std::min(s.box->min_lat, p.lat);
          s.box->max_lat = std::max(s.box->max_lat, p.lat);
          s.box->min_lon = std::min(s.box->min_lon, p.lon);
          s.box->max_lon = std::max(s.box->max_lon, p.lon);
        } else {
          csv += ',';
        }
      } else {
        archive::AppendSignificant(csv, p.value, static_cast<int>(o_.value_digits));
      }
      csv += '\n';
    }
    m.data = archive::Compress(csv, static_cast<int>(o_.zstd_level));
    s.bytes = m.data.size();
    return m;
  }

  /// The chunk's file name (without the suffix): the partition and the flush's sequences, or
  /// the clock when the source has none.
  static std::string ChunkName(const Flush& f) {
    const std::string p = "part-" + std::to_string(f.partition) + "-";
    if (f.last_sequence == 0) return p + "t" + std::to_string(f.made_ns);
    return p + std::to_string(f.first_sequence) + "-" + std::to_string(f.last_sequence);
  }

  /// Writes a flush: its chunks and summaries staged and synced, the commit record stored, the
  /// files renamed into place, the checkpoint after them. Throws when a step fails (nothing of
  /// the flush is in the archive unless its record was stored; then the next try or the
  /// partition's next owner finishes the renames).
  void Write(const Flush& f) {
    const std::vector<Made> made = Make(f);
    const std::string name = ChunkName(f);
    archive::CommitRecord record;
    record.marks[kLastSequence] = f.last_sequence;
    for (size_t i = 0; i < made.size(); ++i) {
      const Made& m = made[i];
      const std::string folder = archive::ChunkFolder(archive::SensorFolder(m.key.sensor),
                                                      m.key.period_start, o_.period, m.key.cell);
      const std::string chunk = folder + "/" + name + std::string(archive::kChunkSuffix);
      const std::string staged = commits_.StagedName(f.partition, name + "." + std::to_string(i));
      archive::WriteSynced(root_ / (staged + ".json.tmp"), archive::ToJson(m.summary));
      archive::WriteSynced(root_ / (staged + ".csv.zst.tmp"), m.data);
      // The summary first: a finder that sees a chunk can read its summary.
      record.files.push_back({staged + ".json.tmp", archive::SummaryPathOf(chunk)});
      record.files.push_back({staged + ".csv.zst.tmp", chunk});
    }
    if (!made.empty()) archive::SyncDirectory(root_ / "_tmp");
    if (f.last_sequence != 0 || !made.empty()) commits_.Store(f.partition, record);
    commits_.Apply(record);
    uint64_t samples = 0, bytes = 0, duplicates = 0;
    for (size_t i = 0; i < made.size(); ++i) {
      const Made& m = made[i];
      samples += m.summary.samples;
      bytes += m.summary.bytes;
      duplicates += m.duplicates;
      stats_.Publish(m.summary, m.key.period_start, m.key.cell, record.files[2 * i + 1].to);
    }
    archived_.Inc(samples);
    duplicates_.Inc(duplicates);
    bytes_.Inc(bytes);
    chunks_.Inc(made.size());
    buffered_.Set(static_cast<double>(buffered_total_ -= f.samples));
    if (checkpoints_ && f.last_sequence != 0) checkpoints_->Save(f.partition, {}, f.last_sequence);
  }

  /// Deletes the days wholly older than retention_days (of every sensor).
  void Expire(int64_t now_ns) {
    for (const fs::path& day :
         archive::ExpireDays(root_, "sensor=", now_ns - o_.retention_days * kNsPerDay)) {
      expired_.Inc();
      spdlog::info("archive '{}': retention: deleted {}", node_, day.string());
    }
  }

  const std::string node_;
  const ArchiveOptions o_;
  const Clock& clock_;
  const fs::path root_;
  const archive::Commits commits_;
  const std::set<std::string> wanted_;
  std::shared_ptr<SnapshotStore> checkpoints_;

  // The graph's thread:
  std::map<uint32_t, Partition> partitions_;
  std::set<uint32_t> owned_;
  std::atomic<size_t> buffered_total_{0};  // gathered or queued, not written
  bool any_partition_event_ = false;
  int64_t next_retention_ns_ = 0;

  // The writer's:
  archive::StatsPublisher stats_;
  RateLimitedLog errors_log_;

  Counter& archived_;
  Counter& duplicates_;
  Counter& in_archive_;
  Counter& ignored_;
  Counter& chunks_;
  Counter& bytes_;
  Counter& failures_;
  Counter& expired_;
  Gauge& buffered_;
  // Last: its thread starts once the rest is there, and ends before it goes.
  archive::OrderedWriter<Job> writer_{
      [this](const Job& j) { Run(j); },
      [this](const Job& j, const std::exception& e, int64_t ms) { return Failed(j, e, ms); }};
};

const OptionsSpec<ArchiveOptions>& Spec() {
  using O = ArchiveOptions;
  return StaticSpec<O>([](OptionsSpec<O>& c) {
    c.String("directory",
             "Where the archive is written (created when missing): a local disk, or a volume "
             "every worker mounts (a ReadWriteMany volume, an object-storage mount that renames "
             "atomically). Workers sharing partitions must share it: a partition's next owner "
             "finishes the flush its previous owner began. Layout: docs/archive.md.",
             &O::directory)
        .Required()
        .MinLength(1)
        .Example(R"("/var/lib/fleetflow/archive")");
    c.Enum("period",
           "The time folders: hour (day=<date>/hour=<HH>) or day (day=<date>), by the samples' "
           "event time in UTC.",
           &O::period, {{"hour", archive::Period::kHour}, {"day", archive::Period::kDay}})
        .Default("hour");
    c.Integer("cell_precision",
              "Characters of the geohash of the cell folders (5: about 4.9 km x 4.9 km; 4: 39 km "
              "x 19.5 km; 6: 1.2 km x 0.6 km). Samples without a position go to the cell of their "
              "vehicle's newest position (cell=none before any).",
              &O::cell_precision)
        .Default(int64_t{5})
        .Min(1)
        .Max(8);
    c.StringArray("sensors", "The sensors archived; empty: every sensor.", &O::sensors)
        .UniqueItems()
        .DefaultJson("[]");
    c.Integer("flush_ms",
              "Each partition writes what it gathered every flush_ms (and when it is revoked, and "
              "on a drain): one chunk per sensor, period and cell. Longer: fewer, larger chunks "
              "that compress better; what came after a partition's last flush is what its next "
              "owner reads again from the stream (which must keep that long). Until then they "
              "are in memory, about 56 bytes each (a worker's samples per second x flush_ms).",
              &O::flush_ms)
        .Default(int64_t{600'000})
        .Min(100)
        .Max(86'400'000);
    c.Integer("max_buffered_samples",
              "A partition that gathered this many samples writes them at once; the graph waits "
              "while twice this many wait to be written (a slow or failing disk).",
              &O::max_buffered_samples)
        .Default(int64_t{4'000'000})
        .Min(1);
    c.Integer("zstd_level",
              "zstd's compression level of the chunks (1 fastest; 19 smallest and slowest).",
              &O::zstd_level)
        .Default(int64_t{3})
        .Min(1)
        .Max(19);
    c.Integer("position_decimals",
              "Decimals of latitude and longitude: 5 is about 1.1 m, finer than a vehicle's GPS "
              "fix (2-5 m), and half the bytes of 7 (about 1 cm; docs/BENCHMARKS.md section 13).",
              &O::position_decimals)
        .Default(int64_t{5})
        .Min(1)
        .Max(15);
    c.Integer("value_digits", "Significant digits of the other sensors' values (17: exact).",
              &O::value_digits)
        .Default(int64_t{7})
        .Min(1)
        .Max(17);
    c.Integer("retention_days",
              "Days of samples kept: a day folder wholly older than this (by the engine clock) is "
              "deleted, checked every hour by the worker that owns partition 0. 0: kept for ever "
              "(7 years: 2557).",
              &O::retention_days)
        .Default(int64_t{0})
        .Min(0);
    c.String("stats_subject",
             "Each committed chunk's summary (node, sensor, period, cell, partition, vehicles, "
             "samples, bytes, path) is published here as JSON on core NATS; empty: not published.",
             &O::stats_subject)
        .Default("fleetflow.archive.stats");
    c.Enum("backend",
           "Where each partition's checkpoint is kept for its source: memory (this process only; "
           "a source that re-reads nothing) or jetstream_kv (agg.<node>.<partition>.checkpoint "
           "in bucket, the source's state_bucket, from which a partition's next owner re-reads "
           "what came after the last flush). The commit records in the directory say what is "
           "archived either way.",
           &O::backend,
           {{"memory", O::Backend::kMemory}, {"jetstream_kv", O::Backend::kJetStreamKv}})
        .Default("memory");
    c.String("bucket", "jetstream_kv: the bucket, the one the source names in state_bucket.",
             &O::bucket)
        .Default("telemetry");
    c.Include(&O::bucket_settings, KvBucketSpec());
    c.Include(&O::nats, NatsClientSpec());
  });
}

/// Behind an at-least-once source the checkpoints are in its state bucket: otherwise the source
/// would re-read only after the other nodes' checkpoints, and what the archive had not written
/// would be lost with a worker.
std::vector<UpstreamProblem> CheckUpstream(const Config& self, const std::string& self_id,
                                           const std::vector<UpstreamNode>& upstream) {
  const ArchiveOptions o = Spec().Parse(self);
  const bool stored = o.backend == ArchiveOptions::Backend::kJetStreamKv;
  std::vector<UpstreamProblem> problems;
  for (const UpstreamNode& n : upstream) {
    if (!n.facts.at_least_once) continue;
    const std::string named = n.facts.state_bucket.value_or("");
    if (!stored || named != o.bucket) {
      problems.push_back(
          {n.id, "/state_bucket",
           "archive '" + self_id +
               "' gathers samples for flush_ms before they are in the archive: the source must "
               "re-read what a worker had not written, from the archive's checkpoint; set the "
               "archive's backend to jetstream_kv with \"bucket\": \"" +
               (named.empty() ? o.bucket : named) + "\" and \"state_bucket\" here to the same" +
               (named.empty() ? "" : " (it names \"" + named + "\")")});
    }
  }
  return problems;
}

NodeFacts Facts(const Config& config) {
  NodeFacts f;
  if (Spec().Parse(config).backend == ArchiveOptions::Backend::kJetStreamKv) {
    f.checkpoint_key = [](std::string_view node, uint32_t p) {
      return JetStreamKvSnapshots::KeyOf(node, p, JetStreamKvSnapshots::kCheckpointKey);
    };
  }
  return f;
}

/// `fleetflow validate --connect`: the directory can be written; the bucket of jetstream_kv.
std::vector<ConnectFinding> CheckConnect(const Config& config) {
  const ArchiveOptions o = Spec().Parse(config);
  std::vector<ConnectFinding> out;
  std::error_code ec;
  fs::path dir(o.directory);
  while (!dir.empty() && !fs::exists(dir, ec)) dir = dir.parent_path();
  if (dir.empty()) dir = ".";
  if (::access(dir.c_str(), W_OK) == 0) {
    out.push_back(
        {fs::exists(o.directory, ec) ? ConnectFinding::Level::kOk : ConnectFinding::Level::kNote,
         "archive directory " + o.directory +
             (fs::exists(o.directory, ec)
                  ? " is writable"
                  : " is created at start (in " + dir.string() + ", writable)")});
  } else {
    out.push_back({ConnectFinding::Level::kProblem, "archive directory " + o.directory + ": " +
                                                        dir.string() +
                                                        " is not writable by this user"});
  }
  if (o.backend == ArchiveOptions::Backend::kJetStreamKv) {
    const auto kv = CheckStateBucket(o.nats, o.bucket, o.bucket_settings, "checkpoints");
    out.insert(out.end(), kv.begin(), kv.end());
  }
  return out;
}

}  // namespace

void RegisterArchive(Registry& registry, std::shared_ptr<SnapshotStore> memory_snapshots) {
  OperatorInfo info = TypedOperator<Archive>(
      "archive",
      "Writes every sample into a directory for years at a known cost: zstd-compressed CSV "
      "chunks by sensor, period and geohash cell, each with a summary (docs/archive.md), "
      "exactly once behind a JetStream source.",
      PortKind::kSamples, PortKind::kNone, Spec());
  if (memory_snapshots) {
    info.create = [memory_snapshots](const OperatorContext& ctx) -> std::unique_ptr<Operator> {
      return std::make_unique<Archive>(ctx, Spec().Parse(ctx.config), memory_snapshots);
    };
  }
  info.facts = Facts;
  info.check_upstream = CheckUpstream;
  info.check_connect = CheckConnect;
  registry.Add(std::move(info));
}

}  // namespace fleetflow

#include "commit.hpp"

#include <fcntl.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace fleetflow::archive {

namespace fs = std::filesystem;

void WriteSynced(const fs::path& path, std::string_view data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + path.string() + ": " + strerror(errno));
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = strerror(errno);
      ::close(fd);
      throw std::runtime_error("cannot write " + path.string() + ": " + why);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const std::string why = strerror(errno);
    ::close(fd);
    throw std::runtime_error("cannot sync " + path.string() + ": " + why);
  }
  ::close(fd);
}

void SyncDirectory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open " + dir.string() + ": " + strerror(errno));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw std::runtime_error("cannot sync " + dir.string() + ": " + strerror(errno));
}

namespace {

std::string ToJson(const CommitRecord& r, uint32_t partition) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  w.StartObject();
  w.Key("partition");
  w.Uint(partition);
  for (const auto& [name, value] : r.marks) {
    w.Key(name.c_str(), static_cast<rapidjson::SizeType>(name.size()));
    w.Uint64(value);
  }
  w.Key("files");
  w.StartArray();
  for (const Staged& f : r.files) {
    w.StartObject();
    w.Key("from");
    w.String(f.from.c_str(), static_cast<rapidjson::SizeType>(f.from.size()));
    w.Key("to");
    w.String(f.to.c_str(), static_cast<rapidjson::SizeType>(f.to.size()));
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return std::string(sb.GetString(), sb.GetSize()) + "\n";
}

std::optional<CommitRecord> ParseCommitRecord(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.c_str(), text.size());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("files") || !d["files"].IsArray()) {
    return std::nullopt;
  }
  CommitRecord r;
  for (const auto& m : d.GetObject()) {
    const std::string name(m.name.GetString(), m.name.GetStringLength());
    if (name == "files" || name == "partition") continue;
    if (!m.value.IsUint64()) return std::nullopt;
    r.marks[name] = m.value.GetUint64();
  }
  for (const auto& f : d["files"].GetArray()) {
    if (!f.IsObject() || !f.HasMember("from") || !f["from"].IsString() || !f.HasMember("to") ||
        !f["to"].IsString()) {
      return std::nullopt;
    }
    r.files.push_back({f["from"].GetString(), f["to"].GetString()});
  }
  return r;
}

}  // namespace

Commits::Commits(fs::path root, std::string node)
    : root_(std::move(root)),
      node_(std::move(node)),
      dir_(root_ / "_commits" / node_),
      staging_(root_ / "_tmp") {
  fs::create_directories(dir_);
  fs::create_directories(staging_);
}

std::string Commits::StagedName(uint32_t partition, std::string_view name) const {
  return "_tmp/" + node_ + ".p" + std::to_string(partition) + "." + std::string(name);
}

std::optional<CommitRecord> Commits::Read(uint32_t partition, bool* unreadable) const {
  if (unreadable) *unreadable = false;
  const fs::path path = dir_ / ("p" + std::to_string(partition) + ".json");
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  auto r = ParseCommitRecord(text.str());
  if (!r && unreadable) *unreadable = true;
  return r;
}

void Commits::Store(uint32_t partition, const CommitRecord& record) const {
  const fs::path path = dir_ / ("p" + std::to_string(partition) + ".json");
  const fs::path tmp = path.string() + ".tmp";
  WriteSynced(tmp, ToJson(record, partition));
  fs::rename(tmp, path);
  SyncDirectory(dir_);
}

size_t Commits::Apply(const CommitRecord& record) const {
  size_t moved = 0;
  std::set<fs::path> dirs;
  for (const Staged& f : record.files) {
    const fs::path from = root_ / f.from;
    const fs::path to = root_ / f.to;
    if (!fs::exists(from)) continue;  // moved before
    fs::create_directories(to.parent_path());
    fs::rename(from, to);
    dirs.insert(to.parent_path());
    ++moved;
  }
  for (const fs::path& d : dirs) SyncDirectory(d);
  return moved;
}

void Commits::RemoveUnnamed(uint32_t partition, const std::optional<CommitRecord>& record) const {
  std::set<std::string> named;
  if (record) {
    for (const Staged& f : record->files) named.insert(fs::path(f.from).filename().string());
  }
  const std::string prefix = fs::path(StagedName(partition, "")).filename().string();
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(staging_, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) == 0 && named.count(name) == 0) fs::remove(entry.path(), ec);
  }
}

std::optional<CommitRecord> Commits::Recover(uint32_t partition) const {
  bool unreadable = false;
  std::optional<CommitRecord> r = Read(partition, &unreadable);
  if (unreadable) {
    spdlog::error(
        "archive '{}': the commit record of partition {} in {} is not readable: the partition "
        "starts afresh (what its input delivers again may be archived twice)",
        node_, partition, dir_.string());
  }
  if (r) {
    try {
      const size_t moved = Apply(*r);
      if (moved > 0) {
        spdlog::info("archive '{}': partition {}: finished {} renames of its last flush", node_,
                     partition, moved);
      }
    } catch (const std::exception& e) {
      spdlog::error("archive '{}': partition {}: {}", node_, partition, e.what());
    }
  }
  RemoveUnnamed(partition, r);
  return r;
}

std::vector<fs::path> ExpireDays(const fs::path& root, std::string_view top, int64_t keep_from_ns) {
  constexpr int64_t kNsPerDay = 86'400'000'000'000;
  std::vector<fs::path> deleted;
  std::error_code ec;
  for (const auto& series : fs::directory_iterator(root, ec)) {
    const std::string name = series.path().filename().string();
    const bool all = !top.empty() && top.back() == '=';
    if (!series.is_directory() || (all ? name.rfind(top, 0) != 0 : name != top)) continue;
    for (const auto& day : fs::directory_iterator(series.path(), ec)) {
      const auto start = DayOf(day.path().filename().string());
      if (!start || *start + kNsPerDay > keep_from_ns) continue;
      std::error_code rm;
      fs::remove_all(day.path(), rm);
      if (rm) {
        throw std::runtime_error("retention: cannot delete " + day.path().string() + ": " +
                                 rm.message());
      }
      deleted.push_back(day.path());
    }
  }
  return deleted;
}

StatsPublisher::StatsPublisher(const OperatorContext& ctx, const NatsClientOptions& nats,
                               std::string subject)
    : node_(ctx.node_id),
      subject_(std::move(subject)),
      published_(ctx.metrics.GetCounter(
          "archive_stats_published", "Chunk summaries published on stats_subject.", ctx.labels())),
      failures_(ctx.metrics.GetCounter(
          "archive_stats_failures",
          "Chunk summaries that could not be published (the chunk is committed).", ctx.labels())) {
  if (!subject_.empty()) connect_ = NatsConnectOptions(nats, "fleetflow:" + ctx.node_id);
}

void StatsPublisher::Publish(const Summary& s, int64_t period_start_ns, std::string_view cell,
                             std::string_view path) {
  if (subject_.empty()) return;
  try {
    if (!conn_) conn_ = nats::Connection::Connect(*connect_);
    rapidjson::StringBuffer sb;
    rapidjson::Writer<rapidjson::StringBuffer> w(sb);
    const auto str = [&](std::string_view v) {
      w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
    };
    std::string period;
    AppendTime(period, period_start_ns);
    const bool rows = !s.row_set.empty();
    w.StartObject();
    w.Key("node");
    str(node_);
    w.Key(rows ? "row_set" : "sensor");
    str(rows ? s.row_set : s.sensor);
    w.Key("period");
    str(period);
    w.Key("cell");
    str(cell);
    w.Key("partition");
    w.Uint(s.partition);
    w.Key("vehicles");
    w.Uint64(s.vehicles.size());
    w.Key(rows ? "rows" : "samples");
    w.Uint64(s.samples);
    w.Key("bytes");
    w.Uint64(s.bytes);
    w.Key("path");
    str(path);
    w.EndObject();
    conn_->Publish(subject_, std::string_view(sb.GetString(), sb.GetSize()));
    published_.Inc();
  } catch (const std::exception& e) {
    failures_.Inc();
    log_.Log("stats", spdlog::level::warn,
             "archive '" + node_ + "': a chunk's summary was not published on " + subject_ + ": " +
                 e.what());
  }
}

}  // namespace fleetflow::archive

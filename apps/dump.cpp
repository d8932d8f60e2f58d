#include "dump.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string_view>

#include "record_replay.hpp"
#include "recording.hpp"
#include "tap.hpp"
#include "utc_time.hpp"
#include "wire.hpp"
#include "wire_input.hpp"

namespace fleetflow {

namespace {

constexpr int kExitUnreadable = 2;
constexpr int kExitDamaged = 3;
/// Bytes of an undecodable payload shown in hex: enough to recognise what it is.
constexpr size_t kHeadBytes = 32;

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void Key(Writer& w, std::string_view key) {
  w.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
}

void String(Writer& w, std::string_view key, std::string_view value) {
  Key(w, key);
  w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}

std::vector<std::string_view> Tokens(std::string_view s) {
  std::vector<std::string_view> out;
  for (size_t start = 0;;) {
    const size_t dot = s.find('.', start);
    out.push_back(s.substr(start, dot == std::string_view::npos ? s.npos : dot - start));
    if (dot == std::string_view::npos) return out;
    start = dot + 1;
  }
}

/// Why a message is not what the engine takes, in words; the reasons are those of
/// fleetflow_input_rejected_total (operators/wire_input.hpp).
const char* Explain(std::string_view reason) {
  if (reason == "bad_subject") {
    return "the subject is not vehicle.<id>.<sensor> nor vehicle.<id>.status (tokens of 1 to 64 "
           "of A-Z a-z 0-9 _ -)";
  }
  if (reason == "bad_status") return "a status payload is on or off";
  if (reason == "empty") return "the payload is empty";
  if (reason == "bad_identifier") return "the payload is not a FLT1 FlatBuffers batch";
  if (reason == "malformed") return "the FlatBuffers verifier rejects the payload";
  return "";
}

/// Writes `r`'s fields after the record's own ones: what it decodes to, or why it does not.
void WriteDecoded(Writer& w, const recording::Record& r) {
  // A partition subject <prefix>.<n>.<vehicle>.<sensor> (a partitioned server's mapping, which a
  // recording of it holds) is read as the vehicle's own, as the replay reads it.
  std::string unmapped;
  std::string_view subject = r.subject;
  const auto tokens = Tokens(subject);
  if (tokens.size() == 4 && !tokens[1].empty() &&
      std::all_of(tokens[1].begin(), tokens[1].end(),
                  [](char c) { return c >= '0' && c <= '9'; })) {
    subject = UnmapPartitioned(subject, tokens[0], unmapped);
    Key(w, "partition");
    w.Uint64(std::stoull(std::string(tokens[1].substr(0, 18))));
  }
  const wire::Subject parsed = wire::ParseSubject(subject);
  const auto* data = r.payload.data();
  const size_t size = r.payload.size();
  std::string reason;
  if (parsed.kind != wire::SubjectKind::kInvalid) {
    String(w, "vehicle", parsed.vehicle);
  }
  if (parsed.kind == wire::SubjectKind::kInvalid) {
    reason = "bad_subject";
  } else if (parsed.kind == wire::SubjectKind::kStatus) {
    bool on = false;
    if (wire::ParseStatus({reinterpret_cast<const char*>(data), size}, on)) {
      String(w, "kind", "status");
      String(w, "status", on ? "on" : "off");
      return;
    }
    reason = "bad_status";
  } else {
    String(w, "sensor", parsed.sensor);
    std::vector<wire::Point> points;
    const wire::DecodeError e = wire::DecodeBatch(data, size, points);
    if (e == wire::DecodeError::kNone) {
      String(w, "kind", "samples");
      Key(w, "samples");
      w.StartArray();
      for (const wire::Point& p : points) WriteTapPoint(w, p);
      w.EndArray();
      return;
    }
    reason = std::string(wire::ToString(e));
  }
  String(w, "error", reason);
  String(w, "message", Explain(reason));
  Key(w, "payload_bytes");
  w.Uint64(size);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string head;
  for (size_t i = 0; i < size && i < kHeadBytes; ++i) {
    head += kHex[data[i] >> 4];
    head += kHex[data[i] & 15];
  }
  String(w, "payload_head_hex", head);
}

/// Dumps one file; returns 0, kExitUnreadable or kExitDamaged. `printed` counts over the files.
int DumpFile(const std::string& file, const DumpArgs& args, uint64_t& printed, std::ostream& out,
             std::ostream& err) {
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) {
    err << "dump: " << file << ": cannot read: " << std::strerror(EISDIR) << '\n';
    return kExitUnreadable;
  }
  recording::Reader reader;
  if (!reader.Open(file)) {
    err << "dump: " << reader.error() << '\n';
    return kExitUnreadable;
  }
  recording::Record r;
  for (uint64_t index = 0;; ++index) {
    if (args.limit > 0 && printed >= args.limit) return 0;
    const uint64_t offset = reader.offset();
    const auto status = reader.Next(r);
    rapidjson::StringBuffer sb;
    Writer w(sb);
    w.StartObject();
    String(w, "file", file);
    if (status == recording::Reader::Status::kEnd) return 0;
    if (status != recording::Reader::Status::kRecord) {
      // The damaged tail: what the replay would stop at, said once.
      Key(w, "offset");
      w.Uint64(reader.offset());
      String(w, "damaged",
             status == recording::Reader::Status::kTruncated ? "truncated" : "corrupt");
      String(w, "error", reader.error());
      Key(w, "records_before");
      w.Uint64(index);
      w.EndObject();
      out << sb.GetString() << '\n';
      return kExitDamaged;
    }
    if (!args.subject.empty() && !SubjectMatches(args.subject, r.subject)) continue;
    Key(w, "record");
    w.Uint64(index);
    Key(w, "offset");
    w.Uint64(offset);
    String(w, "subject", r.subject);
    String(w, "received", FormatUtc(r.recv_ns, 9));
    Key(w, "received_ns");
    w.Int64(r.recv_ns);
    WriteDecoded(w, r);
    w.EndObject();
    out << sb.GetString() << '\n';
    ++printed;
  }
}

}  // namespace

bool SubjectMatches(const std::string& pattern, const std::string& subject) {
  const auto p = Tokens(pattern);
  const auto s = Tokens(subject);
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == ">" && i + 1 == p.size()) return s.size() > i;
    if (i >= s.size() || (p[i] != "*" && p[i] != s[i])) return false;
  }
  return p.size() == s.size();
}

int Dump(const DumpArgs& args, std::ostream& out, std::ostream& err) {
  std::vector<std::string> files;
  for (const std::string& f : args.files) {
    if (!args.rotated) {
      files.push_back(f);
      continue;
    }
    for (std::string& r : RotatedSet(f)) files.push_back(std::move(r));
  }
  int rc = 0;
  uint64_t printed = 0;
  for (const std::string& f : files) {
    const int status = DumpFile(f, args, printed, out, err);
    // An unreadable file outweighs a damaged one: it was not read at all.
    if (status == kExitUnreadable) {
      rc = kExitUnreadable;
    } else if (status == kExitDamaged && rc == 0) {
      rc = kExitDamaged;
    }
  }
  out.flush();
  return rc;
}

CLI::App* AddDumpCommand(CLI::App& app, DumpArgs& args) {
  CLI::App* cmd = app.add_subcommand(
      "dump",
      "Print recordings as JSON lines, one per record: subject, receive time, the decoded samples "
      "or status, or why it does not decode (docs/recording.md). Needs no server.");
  cmd->add_option("files", args.files, "Recording files, in order")->required();
  cmd->add_flag("--rotated", args.rotated,
                "Each FILE stands for the set `record --rotate` wrote: FILE, FILE.1, FILE.2, ...");
  cmd->add_option("--subject", args.subject,
                  "Only records whose subject matches this NATS pattern, e.g. "
                  "'vehicle.v00001.*' or 'vehicle.*.status'");
  cmd->add_option("--limit", args.limit, "At most N records (0: all)")->capture_default_str();
  return cmd;
}

}  // namespace fleetflow

#include "json_positions.hpp"

#include <rapidjson/reader.h>

#include "schema_check.hpp"

namespace fleetflow {

TextPosition PositionOf(std::string_view text, size_t offset) {
  offset = std::min(offset, text.size());
  TextPosition p;
  p.line = 1;
  size_t line_start = text.substr(0, 3) == "\xEF\xBB\xBF" ? std::min<size_t>(3, offset) : 0;
  for (size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++p.line;
      line_start = i + 1;
    }
  }
  p.column = 1;
  for (size_t i = line_start; i < offset; ++i) {
    // Continuation bytes (10xxxxxx) belong to the character before them.
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) ++p.column;
  }
  return p;
}

/// A stream over NUL-terminated text. Not RapidJSON's StringStream: the Reader copies that one
/// into locals while it reads a string or number and calls the handler before writing the
/// position back, so its Tell() would lag behind; this one it reads in place.
struct TrackedStream {
  using Ch = char;
  explicit TrackedStream(std::string_view text)
      : begin(text.data()), cur(text.data()), end(text.data() + text.size()) {}
  // '\0' at the end, which is never passed: the Reader ends there (a multi-byte UTF-8 sequence
  // cut short by the end of the text reads the end again, not beyond it).
  Ch Peek() const { return cur == end ? '\0' : *cur; }
  Ch Take() { return cur == end ? '\0' : *cur++; }
  size_t Tell() const { return static_cast<size_t>(cur - begin); }
  // Output functions the Reader's interface declares; only in-situ parsing uses them.
  Ch* PutBegin() { return nullptr; }
  void Put(Ch) {}
  void Flush() {}
  size_t PutEnd(Ch*) { return 0; }

  const char* begin;
  const char* cur;
  const char* end;
};

/// Records where each value starts: the Reader reports a value once it has read it, so its start
/// is found from the end of the token before it, past the white space, ':' and ','.
struct PositionHandler : rapidjson::BaseReaderHandler<rapidjson::UTF8<>, PositionHandler> {
  struct Frame {
    std::string pointer;
    bool array = false;
    size_t index = 0;
    std::string key;
    std::map<std::string, size_t> keys;  // key -> offset of its first occurrence
  };

  PositionHandler(JsonPositions& out, std::string_view text, size_t base,
                  const TrackedStream& stream)
      : out_(out), text_(text), base_(base), stream_(stream), last_end_(base) {}

  size_t Start() const {
    size_t i = last_end_;
    while (i < text_.size() && (text_[i] == ' ' || text_[i] == '\t' || text_[i] == '\r' ||
                                text_[i] == '\n' || text_[i] == ':' || text_[i] == ',')) {
      ++i;
    }
    return i;
  }
  void Ended() { last_end_ = base_ + stream_.Tell(); }

  std::string Next() {
    if (stack_.empty()) return "";
    Frame& f = stack_.back();
    if (f.array) return f.pointer + "/" + std::to_string(f.index++);
    return f.pointer + "/" + JsonPointerToken(f.key);
  }

  bool Value() {
    out_.offsets_.emplace(Next(), Start());
    Ended();
    return true;
  }
  // The iterative Reader calls StartObject/Array and EndObject/Array before it takes the
  // bracket: past it from where it is, not from Tell().
  bool Open(bool array) {
    const std::string pointer = Next();
    const size_t at = Start();
    out_.offsets_.emplace(pointer, at);
    last_end_ = at + 1;
    stack_.push_back({pointer, array, 0, "", {}});
    return true;
  }
  bool Close() {
    if (!stack_.empty()) stack_.pop_back();
    last_end_ = Start() + 1;
    return true;
  }

  bool Default() { return Value(); }
  bool String(const char*, rapidjson::SizeType, bool) { return Value(); }
  bool StartObject() { return Open(false); }
  bool EndObject(rapidjson::SizeType) { return Close(); }
  bool StartArray() { return Open(true); }
  bool EndArray(rapidjson::SizeType) { return Close(); }
  bool Key(const char* s, rapidjson::SizeType n, bool) {
    Frame& f = stack_.back();
    f.key.assign(s, n);
    const size_t at = Start();
    const auto [it, first] = f.keys.emplace(f.key, at);
    if (!first) {
      out_.duplicates_.push_back(
          {f.pointer + "/" + JsonPointerToken(f.key), f.key, at, it->second});
    }
    Ended();
    return true;
  }

  JsonPositions& out_;
  std::string_view text_;
  size_t base_;
  const TrackedStream& stream_;
  size_t last_end_;
  std::vector<Frame> stack_;
};

JsonPositions::JsonPositions(std::string_view text, size_t start) {
  TrackedStream stream(text.substr(std::min(start, text.size())));
  PositionHandler handler(*this, text, start, stream);
  rapidjson::Reader reader;
  reader.Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag>(stream,
                                                                                       handler);
}

size_t JsonPositions::OffsetOf(const std::string& pointer) const {
  for (std::string p = pointer;;) {
    const auto it = offsets_.find(p);
    if (it != offsets_.end()) return it->second;
    if (p.empty()) return 0;
    const size_t slash = p.rfind('/');
    p = slash == std::string::npos ? "" : p.substr(0, slash);
  }
}

}  // namespace fleetflow

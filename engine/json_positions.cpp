#include "json_positions.hpp"

#include <rapidjson/reader.h>

#include <algorithm>

#include "schema_check.hpp"

namespace fleetflow {

TextPositions::TextPositions(std::string_view text) : text_(text), line_starts_{0} {
  size_t characters = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i % kStride == 0) characters_.push_back(characters);
    if (i == text.size()) break;
    if (text[i] == '\n') line_starts_.push_back(i + 1);
    // Continuation bytes (10xxxxxx) belong to the character before them.
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) ++characters;
  }
}

size_t TextPositions::CharactersBefore(size_t offset) const {
  size_t n = characters_[offset / kStride];
  for (size_t i = offset - offset % kStride; i < offset; ++i) {
    if ((static_cast<unsigned char>(text_[i]) & 0xC0) != 0x80) ++n;
  }
  return n;
}

TextPosition TextPositions::Of(size_t offset) const {
  offset = std::min(offset, text_.size());
  TextPosition p;
  // The lines that start at or before the offset (one after each '\n' before it).
  const auto after = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
  p.line = static_cast<size_t>(after - line_starts_.begin());
  size_t line_start = *(after - 1);
  // A byte order mark at the start of the file is no character of its first line.
  if (p.line == 1 && text_.substr(0, 3) == "\xEF\xBB\xBF") line_start = std::min<size_t>(3, offset);
  p.column = 1 + CharactersBefore(offset) - CharactersBefore(line_start);
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
    size_t node;        // of the array or object
    std::string token;  // that leads to it from its parent's node ("" for the root)
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

  /// The node of the value that starts at `at`, and the token that leads to it. A pointer that
  /// names a value twice (the values of a key repeated in one object, and what is below them)
  /// has one node, which keeps the first one's offset (the DOM's FindMember finds the first).
  size_t Next(size_t at, std::string& token) {
    const size_t fresh = out_.nodes_.size();
    size_t node = fresh;
    if (!stack_.empty()) {
      Frame& f = stack_.back();
      token = f.array ? std::to_string(f.index++) : JsonPointerToken(f.key);
      node = out_.nodes_[f.node].children.emplace(token, fresh).first->second;
    }
    if (node == fresh) out_.nodes_.push_back({at, {}});
    return node;
  }

  /// The pointer of the array or object being read.
  std::string Pointer() const {
    std::string pointer;
    for (size_t i = 1; i < stack_.size(); ++i) pointer += "/" + stack_[i].token;
    return pointer;
  }

  bool Value() {
    std::string token;
    Next(Start(), token);
    Ended();
    return true;
  }
  // The iterative Reader calls StartObject/Array and EndObject/Array before it takes the
  // bracket: past it from where it is, not from Tell().
  bool Open(bool array) {
    const size_t at = Start();
    std::string token;
    const size_t node = Next(at, token);
    last_end_ = at + 1;
    stack_.push_back({node, std::move(token), array, 0, "", {}});
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
          {Pointer() + "/" + JsonPointerToken(f.key), f.key, at, it->second});
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
  if (nodes_.empty()) return 0;
  size_t node = 0;
  // Down the pointer's tokens as far as the text has them.
  for (size_t at = 0; at < pointer.size() && pointer[at] == '/';) {
    const size_t end = std::min(pointer.find('/', at + 1), pointer.size());
    const std::string token = pointer.substr(at + 1, end - at - 1);
    const auto it = nodes_[node].children.find(token);
    if (it == nodes_[node].children.end()) break;
    node = it->second;
    at = end;
  }
  return nodes_[node].offset;
}

}  // namespace fleetflow

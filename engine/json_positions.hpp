#pragma once
/// Where the values of a JSON text are, for messages an editor can jump to: RapidJSON's DOM
/// keeps no positions, so a second (SAX) pass over the text records the offset at which each
/// value starts, by JSON pointer, and finds the duplicate keys the DOM silently merges.

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace fleetflow {

/// A 1-based line and column; 0 when unknown. The column counts UTF-8 code points (characters),
/// not bytes, from the start of the line (a byte order mark at the start of the file is not one).
struct TextPosition {
  size_t line = 0;
  size_t column = 0;
};

/// The lines and columns of the bytes of one text. A file with thousands of problems gets a
/// position for each: reading the text from its start for every one took seconds, so where each
/// line starts and how many characters come before every 64th byte are counted once, and a
/// position costs a binary search and at most 63 bytes.
class TextPositions {
 public:
  explicit TextPositions(std::string_view text);

  /// The line and column of byte `offset` (the end of the text for one past it).
  TextPosition Of(size_t offset) const;

 private:
  static constexpr size_t kStride = 64;
  size_t CharactersBefore(size_t offset) const;

  std::string_view text_;
  std::vector<size_t> line_starts_;  // the offset of each line's first byte
  std::vector<size_t> characters_;   // [k]: the characters before byte k * kStride
};

/// A key repeated in one object.
struct DuplicateKey {
  std::string pointer;  ///< of the member, e.g. /nodes/2/config/every_ms
  std::string key;
  size_t offset = 0;        ///< of the repeated key
  size_t first_offset = 0;  ///< of the key's first occurrence
};

class JsonPositions {
 public:
  /// Indexes the JSON value that starts at byte `start` of `text` (which must parse with
  /// RapidJSON's strict default flags; on a parse error the index holds what came before it).
  JsonPositions(std::string_view text, size_t start);

  /// The offset of the value `pointer` names; for one that is not in the text (a member that is
  /// missing, a default), that of its nearest ancestor that is.
  size_t OffsetOf(const std::string& pointer) const;
  const std::vector<DuplicateKey>& duplicates() const { return duplicates_; }

 private:
  friend struct PositionHandler;
  /// A value of the text, below its parent by one pointer token (an item's index, a member's
  /// key). A tree, not a map from every value's whole pointer: those pointers add up to the
  /// square of the text (20000 nested arrays, or thousands of items under a long key, took
  /// seconds and a gigabyte; the fuzzer found the first).
  struct Node {
    size_t offset = 0;
    std::map<std::string, size_t> children;  // token -> node
  };
  std::vector<Node> nodes_;  // [0] the root, once the text has one
  std::vector<DuplicateKey> duplicates_;
};

}  // namespace fleetflow

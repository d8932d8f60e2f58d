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

/// The line and column of byte `offset` of `text`.
TextPosition PositionOf(std::string_view text, size_t offset);

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
  std::map<std::string, size_t> offsets_;
  std::vector<DuplicateKey> duplicates_;
};

}  // namespace fleetflow

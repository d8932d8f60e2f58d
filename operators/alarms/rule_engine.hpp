#pragma once
/// The rules of a `rule` node over the rows of one worker's partitions (docs/alarms.md): which
/// alarms each row raises or clears, and the per-vehicle state that decides it, kept per
/// partition so that it moves with the partition (EncodePartition / DecodePartition).
///
/// Per vehicle, rows come in window order. A row at T is evaluated when T is after the
/// vehicle's last row (a window emitted again, a correction, is not evaluated twice). Each rule:
///  - idle: `when` true -> raised at T (for_ms 0), else pending since T;
///  - pending: `when` false -> idle; still true at T with T - since >= for_ms -> raised at T;
///  - active: the clear condition (`clear`, or `when` false without one) true -> cleared at T.
/// A vehicle's rows end when a window of its partition closes without its row (the join emits
/// every closed window of a partition, WindowBatch::every_ns), or its next row comes more than
/// one window after its last: its active alarms clear at the first window without a row, its
/// pending ones are dropped. An expression that fails (a non-finite result of finite inputs)
/// changes nothing and is counted.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "expression.hpp"
#include "message.hpp"
#include "row_columns.hpp"

namespace fleetflow::alarms {

enum class Severity { kInfo, kWarning, kCritical };
const char* SeverityName(Severity s);

/// One rule as configured.
struct RuleSpec {
  std::string name;
  std::string when;
  std::string clear;  ///< empty: clears when `when` is false
  int64_t for_ms = 0;
  Severity severity = Severity::kWarning;
  std::string value;  ///< empty: the events carry no value
  std::string message;
  std::string on_raise;  ///< "<verb> <args>" sent to the vehicle when raised; empty: none
  std::string on_clear;  ///< likewise when cleared
};

/// A command "<verb> <args>" split; verb empty for "".
struct Command {
  std::string verb;
  std::string args;
};
/// Parses a rule's on_raise / on_clear: sleep, wake, or rate <sensor> <hz> (0 < hz <= 1000).
/// Returns the problem in words, or "".
std::string ParseCommand(const std::string& text, Command& out);

/// The names a rule's expressions may use beside the columns': prev_<column> (its value in the
/// vehicle's row one window before, NULL when there was none) and dt (seconds since that row).
std::vector<std::string> RuleNames(const std::vector<RowColumn>& columns);

/// The problems of `rules` over `columns` (JSON pointers /rules/<i>/<field>): unique names,
/// expressions that compile over RuleNames, commands that parse, columns named like the
/// rules' own names.
void CheckRules(const std::vector<RowColumn>& columns, const std::vector<RuleSpec>& rules,
                std::vector<ConfigProblem>& out);

class RuleEngine {
 public:
  /// Throws ExpressionError / std::invalid_argument for what CheckRules refuses.
  RuleEngine(std::vector<RowColumn> columns, std::vector<RuleSpec> rules);
  ~RuleEngine();

  const std::vector<RuleSpec>& rules() const { return rules_; }
  RowValues& row_values() { return row_values_; }

  /// The rows of one window of `partition`: evaluates them and appends the events to `out`, in
  /// order. `closing`: this window is the partition's newest yet (not a window emitted again).
  void OnWindow(uint32_t partition, int64_t window_ns, int64_t every_ns,
                const std::vector<const std::string*>& vehicles, const RowValues::Values& values,
                std::vector<AlarmEvent>& out);
  void OnWindow(const WindowBatch& batch, std::vector<AlarmEvent>& out);
  void OnWindow(const StatsBatch& batch, std::vector<AlarmEvent>& out);

  /// Partition p's state as snapshot values (key -> value), and back; false when a value is
  /// not one (that part is skipped, the rest restored).
  std::map<std::string, std::string> EncodePartition(uint32_t p) const;
  bool DecodePartition(uint32_t p, const std::map<std::string, std::string>& values);
  /// Forgets partition p (revoked).
  void Drop(uint32_t p);
  bool Changed(uint32_t p) const;
  void ClearChanged(uint32_t p);

  /// Active alarms by rule (index into rules()), over every partition held: kept as they are
  /// raised and cleared, not counted.
  const std::vector<int64_t>& ActiveByRule() const { return active_; }

  /// Called with a rule's index when one of its expressions failed on a row.
  std::function<void(size_t rule)> on_error;
  /// Rows evaluated, and rows skipped (a window the vehicle's state already holds).
  uint64_t rows_evaluated() const { return evaluated_; }
  uint64_t rows_skipped() const { return skipped_; }

 private:
  enum class Phase : uint8_t { kIdle, kPending, kActive };
  struct RuleState {
    Phase phase = Phase::kIdle;
    int64_t since_ns = 0;  // pending since, or raised at
  };
  struct Vehicle {
    int64_t last_ns = 0;
    std::vector<double> prev;  // the last row's values (NaN: NULL)
    std::vector<RuleState> rules;
  };
  struct Partition {
    std::unordered_map<std::string, Vehicle> vehicles;
    std::optional<int64_t> last_window;
    bool changed = false;
  };
  struct Compiled {
    size_t when = 0;
    std::optional<size_t> clear, value;
    Command on_raise, on_clear;
    int64_t for_ns = 0;
  };

  void Row(Partition& p, const std::string& id, int64_t t, int64_t every,
           const std::vector<std::optional<double>>& values, std::vector<AlarmEvent>& out);
  /// The vehicle's rows ended at `at`: its active alarms clear then, pending ones drop.
  void End(const std::string& id, Vehicle& v, int64_t at, std::vector<AlarmEvent>& out);
  AlarmEvent Event(const std::string& id, size_t rule, bool raised, int64_t t, int64_t raised_ns,
                   bool with_value);
  /// Adds (sign +1) or takes away (-1) partition `p`'s active alarms from active_.
  void Tally(const Partition& p, int sign);
  /// The value of expression `i`: true/false, nullopt when it failed (counted for `rule`).
  std::optional<bool> Test(size_t i, size_t rule);

  std::vector<RowColumn> columns_;
  std::vector<RuleSpec> rules_;
  RowValues row_values_;
  Expressions expressions_;  // names: RuleNames(columns_)
  std::vector<Compiled> compiled_;
  std::map<uint32_t, Partition> partitions_;
  std::vector<int64_t> active_;  // by rule
  uint64_t evaluated_ = 0;
  uint64_t skipped_ = 0;
};

}  // namespace fleetflow::alarms

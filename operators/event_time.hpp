#pragma once
/// Event-time progress of the windowed operators (window_join, window_aggregate): when a window
/// of a partition closes. One rule for both, described in docs/semantics.md:
///  - a window with time T (window_join: the window time; window_aggregate: the end of the
///    window) closes once progress passes T + allowed_lateness;
///  - progress is the partition's newest event time while its input flows (never ahead of the
///    clock nor of the input's stream time), so a backlog closes its windows as they were live;
///    after idle_ms without input, the clock less the sources' input delay
///    (Tick::input_delay_ns), unless input is held back;
///  - a gap longer than idle_ms in the stream's stored times closes windows as the clock did live
///    (a backlog read after the worker was down), unless the stream could not be read then;
///  - after the stream could not be read (Tick::cut_off), progress stays where the outage began
///    until idle_ms after it ended.
/// Each partition has its own progress: one read faster than another (a backlog caught up
/// partition by partition) never makes another's samples late.
///
/// An internal helper of those operators, not an operator: it decides up to which window time
/// to close; the operator emits the windows and keeps what they hold.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>

#include "clock.hpp"
#include "message.hpp"

namespace fleetflow {

/// One partition's progress.
struct WindowProgress {
  std::optional<int64_t> next;  // the next window to emit; empty until the first sample
  int64_t first_window = 0;     // the first window of this owner
  int64_t newest_event_ns = std::numeric_limits<int64_t>::min();
  int64_t last_arrival_ns = std::numeric_limits<int64_t>::min();
  // The newest stream time (SampleBatch::stream_ns) of its input: no time of it is ahead.
  std::optional<int64_t> stream_ns;
  // When a Tick last said the stream could not be read (Tick::cut_off): a gap in stored times
  // that began before it is the outage's.
  int64_t cut_off_ns = std::numeric_limits<int64_t>::min();
  // After such an outage, progress stays at `hold_at_ns` until `hold_until_ns`.
  int64_t hold_at_ns = 0;
  int64_t hold_until_ns = std::numeric_limits<int64_t>::min();
  std::optional<int64_t> done;  // windows up to it were emitted by the previous owner
  // Kept input (EventTime::KeptAt) not yet in newest_event_ns: its newest event time, and when
  // the first and the last of it arrived. It moves progress only once the sources had time to
  // gather what follows it (Newest).
  int64_t kept_newest_ns = std::numeric_limits<int64_t>::min();
  int64_t kept_first_at_ns = 0;
  int64_t kept_last_at_ns = 0;
};

class EventTime {
 public:
  EventTime(int64_t every_ns, int64_t lateness_ns, int64_t idle_ns, const Clock& clock)
      : every_(every_ns), lateness_(lateness_ns), idle_(idle_ns), clock_(clock) {}

  int64_t every() const { return every_; }

  /// The smallest window time >= ts.
  int64_t WindowOf(int64_t ts) const {
    const int64_t t = ts / every_ * every_;
    return t >= ts ? t : t + every_;
  }

  /// Input of the partition received now (not restored state), at `received_ns` (0: the clock)
  /// and stored in the stream at `stream_ns` (0: unknown). Returns the window time up to which
  /// windows close before it is taken in: when nothing entered the stream for longer than
  /// idle_ms before it, a worker reading live saw no input for that long and closed the windows
  /// on the clock (OnTick) before this came, and so does one reading it from a backlog, up to
  /// the same time (docs/semantics.md, "Catching up"). Unless the stream could not be read
  /// meanwhile: a gap that began before the stream was last said cut off is the outage's.
  std::optional<int64_t> Arrived(WindowProgress& p, int64_t received_ns, int64_t stream_ns) const;

  /// When input `b` (not restored state) arrived, if it holds a sample stored more than the
  /// allowed lateness after its time, however recent its newest one: a vehicle sending what it
  /// kept, or one that fell behind and catches up, sends a stretch of one sensor, then its other
  /// sensors' messages of the same times. 0 for live input.
  int64_t KeptAt(const SampleBatch& b) const;

  /// A sample at `ts` of the partition (`restored`: from state on taking the partition over;
  /// `kept_at`: KeptAt of its input): the first one starts the windows.
  void Saw(WindowProgress& p, int64_t ts, bool restored, int64_t kept_at = 0) const {
    if (kept_at != 0) {
      if (p.kept_newest_ns != kNever && kept_at - p.kept_first_at_ns >= kKeptMaxWaitNs) {
        p.newest_event_ns = std::max(p.newest_event_ns, p.kept_newest_ns);  // counts: Newest
        p.kept_newest_ns = kNever;
      }
      if (p.kept_newest_ns == kNever) p.kept_first_at_ns = kept_at;
      p.kept_newest_ns = std::max(p.kept_newest_ns, ts);
      p.kept_last_at_ns = kept_at;
    } else if (ts > p.newest_event_ns) {
      p.newest_event_ns = ts;
    }
    if (p.next) return;
    const int64_t arrived = p.stream_ns.value_or(p.last_arrival_ns);
    p.next = WindowOf(restored ? ts : std::min(ts, arrived));
    p.first_window = *p.next;
  }

  /// A partition without a sample (nor restored state) since `since_ns` (it was assigned then),
  /// not held back at `tick` and idle for idle_ms since, starts its windows on the clock, as one
  /// whose input stopped goes on: the windows of a partition without vehicles close too, which a
  /// stage across workers waits for (docs/semantics.md, "Across vehicles"). Nothing when its
  /// windows have started.
  void StartIdle(WindowProgress& p, const Tick& tick, int64_t since_ns) const {
    if (p.next || tick.held_back || tick.now_ns - since_ns < idle_) return;
    // Its progress is the clock's from here, as the newest event time of one that went idle.
    p.newest_event_ns = tick.now_ns - tick.input_delay_ns;
    p.next = WindowOf(p.newest_event_ns - lateness_);
    p.first_window = *p.next;
  }

  /// The stream could not be read at `now_ns` (Tick::cut_off): the gap in stored times it leaves
  /// is no idle time (Arrived). What the vehicles kept meanwhile comes once it stores again,
  /// each vehicle's at once: progress stays where the outage began until idle_ms after it ended,
  /// so that one vehicle's samples do not close the windows of another's still to come.
  void CutOff(WindowProgress& p, int64_t now_ns) const;

  /// The window time up to which the partition's windows close at `tick`; empty before its
  /// first sample. A drain closes every window up to the clock.
  std::optional<int64_t> OnTick(const WindowProgress& p, const Tick& tick) const;

  /// The window time up to which the partition's windows close on `b`, input just taken in (not
  /// restored), `last` the last Tick: what the next Tick would close while input flows, at once
  /// (window emit driven by progress, not by the clock's period), at the time the source
  /// received it. Empty before its first sample, and where the Tick's batching of what arrives
  /// within its period matters: while `last` said input is held back (a burst of what waited
  /// may come, in any order: after a reconnect, a backlog, a hand-over) and for input holding a
  /// sample stored more than the allowed lateness after its time (a vehicle sending what it
  /// kept, or one that fell behind and catches up: its other sensors' messages of the same
  /// times follow it: `kept_at`, KeptAt of `b`, not 0). docs/semantics.md.
  std::optional<int64_t> OnInput(const WindowProgress& p, const SampleBatch& b, int64_t kept_at,
                                 const Tick& last) const;

  /// The window time up to which a partition being revoked closes its windows: those its event
  /// time has closed (a worker stopping while it reads a backlog takes samples in after its last
  /// Tick). Empty before its first sample.
  std::optional<int64_t> OnRevoke(const WindowProgress& p) const;

  /// Whether this worker emits window t of the partition: the previous owner did not.
  static bool Emits(const WindowProgress& p, int64_t t) { return !p.done || t > *p.done; }

  /// The last window of the partition emitted by this worker or, before it, by the previous
  /// owner (the hand-over record).
  std::optional<int64_t> LastEmitted(const WindowProgress& p) const;

 private:
  /// The furthest progress may go: the clock, and no further than the input's stream time, so a
  /// vehicle whose clock runs ahead closes no more windows in a backlog than it did live.
  static int64_t ProgressCap(const WindowProgress& p, int64_t now_ns) {
    return p.stream_ns ? std::min(now_ns, *p.stream_ns) : now_ns;
  }

  /// The newest event time at `now_ns`: kept input's counts once the sources had time to
  /// gather what follows it (their input delay and a Tick's period after the last of it came),
  /// so that a Tick between one sensor's stretch and the others' closes no window without them;
  /// or kKeptMaxWaitNs after the first of it, so that input that is always kept (a vehicle whose
  /// batches span more than the allowed lateness, or whose clock runs behind) still closes them.
  static int64_t Newest(const WindowProgress& p, int64_t now_ns, int64_t input_delay_ns) {
    if (p.kept_newest_ns > p.newest_event_ns &&
        (now_ns - p.kept_last_at_ns >= input_delay_ns + kKeptGatherNs ||
         now_ns - p.kept_first_at_ns >= kKeptMaxWaitNs)) {
      return p.kept_newest_ns;
    }
    return p.newest_event_ns;
  }

  /// Progress while input flows (or is held back) at `now_ns`, the sources still gathering what
  /// was stored in the last `input_delay_ns`: the newest event time, never ahead of the clock
  /// nor of the stream; after an outage, where it began until hold_until_ns.
  static int64_t FlowingProgress(const WindowProgress& p, int64_t now_ns, int64_t input_delay_ns) {
    int64_t progress =
        std::min(ProgressCap(p, now_ns - input_delay_ns), Newest(p, now_ns, input_delay_ns));
    if (now_ns <= p.hold_until_ns) progress = std::min(progress, p.hold_at_ns);
    return progress;
  }

  /// WindowProgress's "never".
  static constexpr int64_t kNever = std::numeric_limits<int64_t>::min();
  /// A Tick's period: kept input waits this long beyond the sources' input delay (Newest).
  static constexpr int64_t kKeptGatherNs = 100'000'000;
  /// Kept input that keeps coming waits at most this long (Newest).
  static constexpr int64_t kKeptMaxWaitNs = 1'000'000'000;

  const int64_t every_;
  const int64_t lateness_;
  const int64_t idle_;
  const Clock& clock_;
};

}  // namespace fleetflow

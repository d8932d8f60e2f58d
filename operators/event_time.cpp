#include "event_time.hpp"

#include <algorithm>

namespace fleetflow {
std::optional<int64_t> EventTime::Arrived(WindowProgress& p, int64_t received_ns,
                                          int64_t stream_ns) const {
  p.last_arrival_ns = received_ns != 0 ? received_ns : clock_.NowNs();
  if (stream_ns == 0) return std::nullopt;
  std::optional<int64_t> close;
  if (p.next && p.stream_ns && stream_ns - *p.stream_ns > idle_ && p.cut_off_ns < *p.stream_ns) {
    close = std::min(stream_ns, clock_.NowNs()) - lateness_;
  }
  p.stream_ns = std::max(p.stream_ns.value_or(stream_ns), stream_ns);
  return close;
}

void EventTime::CutOff(WindowProgress& p, int64_t now_ns) const {
  if (now_ns > p.hold_until_ns) p.hold_at_ns = p.newest_event_ns;  // the outage begins
  p.hold_until_ns = now_ns + idle_;
  p.cut_off_ns = now_ns;
}

std::optional<int64_t> EventTime::OnTick(const WindowProgress& p, const Tick& tick) const {
  if (!p.next) return std::nullopt;  // no sample yet: no window can have a row
  if (tick.drain) return tick.now_ns;
  // What the sources still gather was stored up to input_delay_ns ago: the clock less that.
  int64_t progress = tick.now_ns - tick.input_delay_ns;
  // Nothing arrived yet (only restored state): idle, as after idle_ms without input.
  const bool arrived = p.last_arrival_ns != kNever;
  if (tick.held_back || (arrived && tick.now_ns - p.last_arrival_ns <= idle_)) {
    if (Newest(p, tick.now_ns, tick.input_delay_ns) == kNever) {
      return std::nullopt;  // no event time to go by
    }
    return FlowingProgress(p, tick.now_ns, tick.input_delay_ns) - lateness_;
  }
  if (tick.now_ns <= p.hold_until_ns) progress = std::min(progress, p.hold_at_ns);
  return progress - lateness_;
}

int64_t EventTime::KeptAt(const SampleBatch& b) const {
  if (b.stream_ns == 0 || b.points.empty()) return 0;
  const int64_t oldest_ts =
      std::min_element(b.points.begin(), b.points.end(),
                       [](const wire::Point& x, const wire::Point& y) { return x.ts_ns < y.ts_ns; })
          ->ts_ns;
  if (b.stream_ns - oldest_ts <= lateness_) return 0;
  return b.received_ns != 0 ? b.received_ns : clock_.NowNs();
}

std::optional<int64_t> EventTime::OnInput(const WindowProgress& p, const SampleBatch& b,
                                          int64_t kept_at, const Tick& last) const {
  if (!p.next || last.held_back || b.points.empty() || kept_at != 0) return std::nullopt;
  const int64_t now_ns = b.received_ns != 0 ? b.received_ns : clock_.NowNs();
  if (Newest(p, now_ns, last.input_delay_ns) == kNever) return std::nullopt;
  return FlowingProgress(p, now_ns, last.input_delay_ns) - lateness_;
}

std::optional<int64_t> EventTime::OnRevoke(const WindowProgress& p) const {
  const int64_t now_ns = clock_.NowNs();
  const int64_t newest = Newest(p, now_ns, 0);
  if (!p.next || newest == kNever) return std::nullopt;
  return std::min(newest, ProgressCap(p, now_ns)) - lateness_;
}

std::optional<int64_t> EventTime::LastEmitted(const WindowProgress& p) const {
  std::optional<int64_t> last = p.done;
  if (p.next && *p.next > p.first_window && (!last || *p.next - every_ > *last)) {
    last = *p.next - every_;
  }
  return last;
}

}  // namespace fleetflow

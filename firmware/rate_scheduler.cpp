#include "rate_scheduler.hpp"

#include <algorithm>
#include <limits>

#include "signals.hpp"

namespace fleetflow::firmware {

RateScheduler::RateScheduler(const std::vector<double>& hz, int64_t now) {
  slots_.reserve(hz.size());
  for (double h : hz) slots_.push_back({h, sim::PeriodNs({"", h}), now});
}

int64_t RateScheduler::next_due() const {
  int64_t next = std::numeric_limits<int64_t>::max();
  for (const Slot& s : slots_) next = std::min(next, s.next);
  return next;
}

void RateScheduler::PopDue(int64_t now, std::vector<int>& due) {
  for (int i = 0; i < sensors(); ++i) {
    Slot& s = slots_[i];
    if (s.next > now) continue;
    const int64_t missed = (now - s.next) / s.period;
    skipped_ += static_cast<uint64_t>(missed);
    s.next += (missed + 1) * s.period;
    due.push_back(i);
  }
}

void RateScheduler::SetRate(int sensor, double hz, int64_t now) {
  Slot& s = slots_.at(sensor);
  s.period = sim::PeriodNs({"", hz});
  s.hz = hz;
  s.next = now + s.period;
}

void RateScheduler::Restart(int64_t now) {
  for (Slot& s : slots_) s.next = now;
}

}  // namespace fleetflow::firmware

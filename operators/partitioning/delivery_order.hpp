#pragma once
/// The stream's order for one consumer's messages when deliveries were lost on their way (the
/// connection lost, the consumer changing leader in a cluster): the consumer numbers every
/// delivery, so a gap in that sequence says how many did not come. The consumer sends them again
/// once ack_wait_ms passed; until they come (or that time passed), what it delivered after them
/// waits, so that they are handed on before it. Without this the newer messages, handed on
/// first, would move event time past the lost ones' windows.

#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace fleetflow {

/// `Message` has consumer_sequence() (0: unknown), stream_sequence() and delivered() (1 on the
/// first delivery), as nats::JsMessage.
template <typename Message>
class DeliveryOrder {
 public:
  struct Taken {
    bool now = true;    // hand it on now; else it waits until Due()
    uint64_t lost = 0;  // deliveries this message showed lost (a gap before it)
  };

  /// `m` arrived at `now_ns` (steady).
  Taken Take(const std::shared_ptr<Message>& m, int64_t now_ns) {
    Taken t;
    const uint64_t delivery = m->consumer_sequence();
    if (delivery != 0) {
      if (next_delivery_ != 0 && delivery > next_delivery_) {
        t.lost = delivery - next_delivery_;
        if (waiting_.empty()) {
          lost_before_ = m->stream_sequence();
          lost_since_ns_ = now_ns;
        }
        lost_ += t.lost;
      }
      next_delivery_ = delivery + 1;  // a consumer's new leader may also number again
    }
    if (waiting_.empty() && lost_ == 0) return t;
    // Sent again: one of them (or one whose acknowledgement was lost: no way to tell).
    if (m->delivered() > 1 && lost_ > 0) --lost_;
    if (m->stream_sequence() < lost_before_) return t;  // older than what waits
    waiting_.push_back(m);
    t.now = false;
    return t;
  }

  /// What waited, in the stream's order, once every lost delivery came again or `wait_ns`
  /// passed since the gap was seen (the consumer sends them again within ack_wait_ms of their
  /// first delivery, which was before); empty before. `gave_up` is set to the deliveries that
  /// did not come again.
  std::vector<std::shared_ptr<Message>> Due(int64_t now_ns, int64_t wait_ns, uint64_t& gave_up) {
    gave_up = 0;
    if (waiting_.empty() || (lost_ > 0 && now_ns - lost_since_ns_ < wait_ns)) return {};
    gave_up = lost_;
    lost_ = 0;
    std::stable_sort(waiting_.begin(), waiting_.end(), [](const auto& a, const auto& b) {
      return a->stream_sequence() < b->stream_sequence();
    });
    std::vector<std::shared_ptr<Message>> due = std::move(waiting_);
    waiting_.clear();
    return due;
  }

  /// Everything that waits, whatever is still lost (its partition was given up: handed back).
  std::vector<std::shared_ptr<Message>> TakeAll() {
    lost_ = 0;
    return std::exchange(waiting_, {});
  }

  bool waiting() const { return !waiting_.empty(); }
  size_t waiting_count() const { return waiting_.size(); }

 private:
  uint64_t next_delivery_ = 0;  // the consumer sequence expected next (0: unknown)
  uint64_t lost_ = 0;           // deliveries not received, still to come again
  uint64_t lost_before_ = 0;    // the stream sequence of the first message after them
  int64_t lost_since_ns_ = 0;   // when the gap was seen
  std::vector<std::shared_ptr<Message>> waiting_;
};

}  // namespace fleetflow

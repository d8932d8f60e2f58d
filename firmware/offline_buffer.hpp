#pragma once
/// The firmware's outbox: a fixed-size ring of messages waiting to be published, kept while the
/// link is down and until the server has confirmed them.
///
/// Records go in at the tail; when one does not fit, the oldest records are dropped (and
/// counted) until it does, so Push never blocks and memory never grows past the capacity given
/// at construction. A record is handed out by NextUnsent(), stays in the ring "in flight" until
/// Commit() (the server confirmed it) or Rewind() (delivery failed: hand it out again), so
/// nothing is lost when a connection dies with messages on the wire.
///
/// Not thread-safe: the owner serialises calls (fleet-sensor holds its mutex).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace fleetflow::firmware {

class OfflineBuffer {
 public:
  /// Bytes of bookkeeping stored with each record in the ring.
  static constexpr size_t kRecordOverhead = 12;

  /// What a record carries besides its payload: `tag` (which subject it goes to) and the
  /// number of samples in it (for the counters).
  struct Record {
    uint16_t tag = 0;
    uint32_t samples = 0;
  };
  struct Counters {
    uint64_t dropped_records = 0;  ///< evicted unsent, or larger than the whole ring
    uint64_t dropped_samples = 0;
    uint64_t dropped_bytes = 0;  ///< payload bytes
  };
  /// What Commit() released.
  struct Committed {
    uint64_t records = 0;
    uint64_t samples = 0;
  };

  /// Allocates the whole ring now; `capacity_bytes` bounds payloads plus kRecordOverhead each.
  explicit OfflineBuffer(size_t capacity_bytes);

  /// Appends a record, dropping the oldest (in flight or not) until it fits. A record larger
  /// than the capacity is dropped itself; returns false then.
  bool Push(Record record, std::span<const uint8_t> payload);
  /// Copies the oldest record not yet handed out into `record` / `payload` and marks it in
  /// flight; false when every record is in flight or the ring is empty.
  bool NextUnsent(Record& record, std::vector<uint8_t>& payload);
  /// Releases every record in flight (the server has them).
  Committed Commit();
  /// Makes every record in flight unsent again, to be handed out anew.
  void Rewind();

  bool has_unsent() const { return sent_ != tail_; }
  bool has_in_flight() const { return head_ != sent_; }
  size_t capacity() const { return capacity_; }
  /// Bytes held (payloads and overhead), in flight included.
  size_t bytes() const { return static_cast<size_t>(tail_ - head_); }
  size_t records() const { return records_; }
  const Counters& counters() const { return counters_; }

 private:
  struct Header {
    uint32_t size;
    uint16_t tag;
    uint16_t reserved;
    uint32_t samples;
  };
  static_assert(sizeof(Header) == kRecordOverhead);

  void Write(uint64_t pos, const void* data, size_t size);
  void Read(uint64_t pos, void* data, size_t size) const;
  Header HeaderAt(uint64_t pos) const;
  void DropOldest();

  size_t capacity_;
  std::unique_ptr<uint8_t[]> ring_;
  // Logical byte positions, never wrapping: ring_[pos % capacity_]. head_ <= sent_ <= tail_.
  uint64_t head_ = 0;  // oldest record
  uint64_t sent_ = 0;  // first record not handed out
  uint64_t tail_ = 0;  // end of the newest record
  size_t records_ = 0;
  uint64_t in_flight_records_ = 0, in_flight_samples_ = 0;
  Counters counters_;
};

}  // namespace fleetflow::firmware

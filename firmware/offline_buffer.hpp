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
/// Records may also be confirmed one by one (a JetStream acknowledgement per message): each
/// record has an id, consecutive in push order and never reused by this buffer, so it names the
/// record across hand-outs; Ack(id) marks one record in flight as stored, and the acknowledged
/// records at the front of the ring are released as soon as nothing older waits. Acks may come
/// in any order; an ack for a record not in flight (already released, dropped, or handed back by
/// Rewind) is ignored.
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
    uint64_t id = 0;  ///< set by NextUnsent(); ignored by Push()
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
    bool behind = false;  ///< Ack: the record was in flight, but an older one still waits
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
  /// Marks the record in flight with this id as stored, then releases the acknowledged records
  /// at the front (what it returns). Returns nothing released when `id` is not in flight, or
  /// older records in flight still wait for theirs.
  Committed Ack(uint64_t id);
  /// Makes every record in flight unsent again, to be handed out anew (acknowledged ones too:
  /// sending them again is harmless). Returns how many were in flight.
  uint64_t Rewind();

  bool has_unsent() const { return sent_ != tail_; }
  bool has_in_flight() const { return head_ != sent_; }
  uint64_t in_flight_records() const { return in_flight_records_; }
  size_t capacity() const { return capacity_; }
  /// Bytes held (payloads and overhead), in flight included.
  size_t bytes() const { return static_cast<size_t>(tail_ - head_); }
  size_t records() const { return records_; }
  const Counters& counters() const { return counters_; }

 private:
  struct Header {
    uint32_t size;
    uint16_t tag;
    uint16_t acked;  // 1 once Ack() marked it, while in flight
    uint32_t samples;
  };
  static_assert(sizeof(Header) == kRecordOverhead);

  void Write(uint64_t pos, const void* data, size_t size);
  void Read(uint64_t pos, void* data, size_t size) const;
  Header HeaderAt(uint64_t pos) const;
  void DropOldest();
  void ReleaseFront();
  uint64_t head_id() const { return pushed_ - records_; }

  size_t capacity_;
  std::unique_ptr<uint8_t[]> ring_;
  // Logical byte positions, never wrapping: ring_[pos % capacity_]. head_ <= sent_ <= tail_.
  uint64_t head_ = 0;  // oldest record
  uint64_t sent_ = 0;  // first record not handed out
  uint64_t tail_ = 0;  // end of the newest record
  size_t records_ = 0;
  uint64_t pushed_ = 0;  // records ever stored: the head's id is pushed_ - records_
  uint64_t in_flight_records_ = 0, in_flight_samples_ = 0;
  Counters counters_;
};

}  // namespace fleetflow::firmware

#include "offline_buffer.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace fleetflow::firmware {

OfflineBuffer::OfflineBuffer(size_t capacity_bytes)
    : capacity_(capacity_bytes), ring_(new uint8_t[capacity_bytes]) {
  if (capacity_bytes < 2 * kRecordOverhead) {
    throw std::invalid_argument("offline buffer: capacity must be at least 24 bytes");
  }
}

void OfflineBuffer::Write(uint64_t pos, const void* data, size_t size) {
  if (size == 0) return;  // an empty payload may come as a null pointer: no memcpy from it
  const size_t at = static_cast<size_t>(pos % capacity_);
  const size_t first = std::min(size, capacity_ - at);
  std::memcpy(ring_.get() + at, data, first);
  std::memcpy(ring_.get(), static_cast<const uint8_t*>(data) + first, size - first);
}

void OfflineBuffer::Read(uint64_t pos, void* data, size_t size) const {
  if (size == 0) return;
  const size_t at = static_cast<size_t>(pos % capacity_);
  const size_t first = std::min(size, capacity_ - at);
  std::memcpy(data, ring_.get() + at, first);
  std::memcpy(static_cast<uint8_t*>(data) + first, ring_.get(), size - first);
}

OfflineBuffer::Header OfflineBuffer::HeaderAt(uint64_t pos) const {
  Header h;
  Read(pos, &h, sizeof h);
  return h;
}

void OfflineBuffer::DropOldest() {
  const Header h = HeaderAt(head_);
  const bool in_flight = head_ < sent_;
  head_ += kRecordOverhead + h.size;
  --records_;
  if (in_flight) {
    --in_flight_records_;
    in_flight_samples_ -= h.samples;
  } else {
    sent_ = head_;
  }
  ++counters_.dropped_records;
  counters_.dropped_samples += h.samples;
  counters_.dropped_bytes += h.size;
}

bool OfflineBuffer::Push(Record record, std::span<const uint8_t> payload) {
  const size_t need = kRecordOverhead + payload.size();
  if (need > capacity_) {
    ++counters_.dropped_records;
    counters_.dropped_samples += record.samples;
    counters_.dropped_bytes += payload.size();
    return false;
  }
  while (capacity_ - bytes() < need) DropOldest();
  const Header h{static_cast<uint32_t>(payload.size()), record.tag, 0, record.samples};
  Write(tail_, &h, sizeof h);
  Write(tail_ + kRecordOverhead, payload.data(), payload.size());
  tail_ += need;
  ++records_;
  ++pushed_;
  return true;
}

bool OfflineBuffer::NextUnsent(Record& record, std::vector<uint8_t>& payload) {
  if (sent_ == tail_) return false;
  Header h = HeaderAt(sent_);
  if (h.acked != 0) {  // acknowledged before a Rewind: a new hand-out waits for a new ack
    h.acked = 0;
    Write(sent_, &h, sizeof h);
  }
  payload.resize(h.size);
  Read(sent_ + kRecordOverhead, payload.data(), h.size);
  record = {h.tag, h.samples, head_id() + in_flight_records_};
  sent_ += kRecordOverhead + h.size;
  ++in_flight_records_;
  in_flight_samples_ += h.samples;
  return true;
}

OfflineBuffer::Committed OfflineBuffer::Commit() {
  const Committed done{in_flight_records_, in_flight_samples_};
  records_ -= static_cast<size_t>(in_flight_records_);
  head_ = sent_;
  in_flight_records_ = in_flight_samples_ = 0;
  // Empty again: start over at the front, so that while the link is up only the first pages of
  // the ring are ever touched (resident memory stays small until the link is lost).
  if (head_ == tail_) head_ = sent_ = tail_ = 0;
  return done;
}

OfflineBuffer::Committed OfflineBuffer::Ack(uint64_t id) {
  Committed done;
  if (id < head_id() || id >= head_id() + in_flight_records_) return done;
  uint64_t pos = head_;
  for (uint64_t i = head_id(); i < id; ++i) pos += kRecordOverhead + HeaderAt(pos).size;
  Header h = HeaderAt(pos);
  h.acked = 1;
  Write(pos, &h, sizeof h);
  while (head_ != sent_) {
    const Header front = HeaderAt(head_);
    if (front.acked == 0) break;
    ++done.records;
    done.samples += front.samples;
    ReleaseFront();
  }
  done.behind = done.records == 0;
  return done;
}

void OfflineBuffer::ReleaseFront() {
  const Header h = HeaderAt(head_);
  head_ += kRecordOverhead + h.size;
  --records_;
  --in_flight_records_;
  in_flight_samples_ -= h.samples;
  if (head_ == tail_) head_ = sent_ = tail_ = 0;  // empty: start over at the front (see Commit)
}

uint64_t OfflineBuffer::Rewind() {
  const uint64_t rewound = in_flight_records_;
  sent_ = head_;
  in_flight_records_ = in_flight_samples_ = 0;
  return rewound;
}

}  // namespace fleetflow::firmware

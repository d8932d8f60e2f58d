#include "message.hpp"

#include <utility>

namespace fleetflow {

#if !FF_SANITIZED
namespace {

/// The large block PerMessageAllocator keeps: at most one, the newest freed.
struct KeptBlock {
  std::mutex mu;
  void* block = nullptr;
  size_t bytes = 0;
};

KeptBlock& Kept() {
  static auto* kept = new KeptBlock;  // never destroyed: messages may be freed at exit
  return *kept;
}

}  // namespace

void* TakeKeptBlock(size_t bytes) {
  KeptBlock& k = Kept();
  std::lock_guard lock(k.mu);
  // Not a block more than twice as large: the next window of its size would take new memory.
  if (k.block == nullptr || k.bytes < bytes || k.bytes / 2 > bytes) return nullptr;
  return std::exchange(k.block, nullptr);
}

void KeepBlock(void* block) {
  const size_t bytes = scalable_msize(block);
  KeptBlock& k = Kept();
  void* before = nullptr;
  {
    std::lock_guard lock(k.mu);
    before = std::exchange(k.block, block);
    k.bytes = bytes;
  }
  if (before != nullptr) scalable_free(before);  // oneTBB's cache may keep it in turn
}
#endif

}  // namespace fleetflow

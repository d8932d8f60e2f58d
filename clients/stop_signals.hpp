#pragma once
/// The signals that stop a program (SIGINT, SIGTERM and SIGHUP), taken synchronously by one
/// thread: the engine's commands and the firmware programs share this one helper.

#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <chrono>

namespace fleetflow {

class StopSignals {
 public:
  /// Blocks the stop signals in the calling thread and so in every thread it starts afterwards
  /// (nats.c's and oneTBB's included): only Wait() sees them. Construct it first in main().
  StopSignals() {
    sigemptyset(&set_);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set_, sig);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  }

  /// Waits up to `timeout` (negative: without limit) for a stop signal; returns it, or 0 when
  /// the time passed first.
  int Wait(std::chrono::nanoseconds timeout) const {
    if (timeout < std::chrono::nanoseconds::zero()) {
      int sig = 0;
      return sigwait(&set_, &sig) == 0 ? sig : 0;
    }
    const auto ns = timeout.count();
    const timespec wait{static_cast<time_t>(ns / 1'000'000'000),
                        static_cast<long>(ns % 1'000'000'000)};
    for (;;) {
      const int sig = sigtimedwait(&set_, nullptr, &wait);
      if (sig > 0) return sig;
      if (errno != EINTR) return 0;  // EAGAIN: the time passed
    }
  }

  /// "SIGINT", "SIGTERM", "SIGHUP" (for the log line that says why the program stops).
  static const char* Name(int sig) {
    return sig == SIGINT    ? "SIGINT"
           : sig == SIGTERM ? "SIGTERM"
           : sig == SIGHUP  ? "SIGHUP"
                            : "signal";
  }

 private:
  sigset_t set_;
};

}  // namespace fleetflow

#pragma once
/// Thread names, as top -H, ps -L, /proc/<pid>/task/*/comm and gdb show them: which of a
/// worker's threads spends what (docs/operations.md, "A worker's threads").

#include <pthread.h>

#include <string>
#include <thread>

namespace fleetflow {

/// Names `thread` `name`, cut to the 15 characters Linux keeps. Threads it starts inherit it.
inline void NameThread(std::thread& thread, const std::string& name) {
  pthread_setname_np(thread.native_handle(), name.substr(0, 15).c_str());
}

}  // namespace fleetflow

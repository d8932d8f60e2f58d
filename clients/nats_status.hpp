#pragma once
/// Internal to the NATS wrapper (clients/nats_*.cpp, clients/jetstream.cpp): nats.c status
/// codes become nats::Error here.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nats_client.hpp"

struct __natsMsg;

namespace fleetflow::nats::detail {

/// nats::Error "nats: <operation>: <status text>", the text nats.c keeps for this thread's last
/// failure included: made right after the call that failed, before another call replaces it.
Error Failure(int status, std::string_view operation);
/// Throws Failure(status, operation).
[[noreturn]] void Throw(int status, std::string_view operation);
/// Throws when `status` is not NATS_OK.
void Check(int status, std::string_view operation);
/// A message with headers (nats.c's natsMsg); throws when it cannot be made. The caller
/// destroys it (natsMsg_Destroy).
__natsMsg* NewMessage(const std::string& subject, const char* reply, const void* data, size_t size,
                      const std::vector<std::pair<std::string, std::string>>& headers);

}  // namespace fleetflow::nats::detail

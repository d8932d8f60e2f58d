#pragma once
/// Internal to the NATS wrapper (clients/nats_*.cpp, clients/jetstream.cpp): nats.c status
/// codes become nats::Error here.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct __natsMsg;

namespace fleetflow::nats::detail {

/// Throws nats::Error "nats: <operation>: <status text>".
[[noreturn]] void Throw(int status, std::string_view operation);
/// Throws when `status` is not NATS_OK.
void Check(int status, std::string_view operation);
/// A message with headers (nats.c's natsMsg); throws when it cannot be made. The caller
/// destroys it (natsMsg_Destroy).
__natsMsg* NewMessage(const std::string& subject, const char* reply, const void* data, size_t size,
                      const std::vector<std::pair<std::string, std::string>>& headers);

}  // namespace fleetflow::nats::detail

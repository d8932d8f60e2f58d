#pragma once
/// Internal to the NATS wrapper (clients/nats_*.cpp, clients/jetstream.cpp): nats.c status
/// codes become nats::Error here.

#include <string_view>

namespace fleetflow::nats::detail {

/// Throws nats::Error "nats: <operation>: <status text>".
[[noreturn]] void Throw(int status, std::string_view operation);
/// Throws when `status` is not NATS_OK.
void Check(int status, std::string_view operation);

}  // namespace fleetflow::nats::detail

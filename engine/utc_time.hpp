#pragma once
/// Times as people read and write them: RFC 3339 in UTC (2026-11-25T09:17:03.250Z), and durations
/// (1h02m05s).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace fleetflow {

/// `ns` since the Unix epoch in UTC with milliseconds, e.g. 2026-11-25T09:17:03.250Z.
std::string FormatUtc(int64_t ns);
/// The same with `digits` (0..9) digits of the second's fraction, truncated: 9 for nanoseconds
/// (2026-11-25T09:17:03.250000001Z), 6 for PostgreSQL's microseconds, 0 for none.
std::string FormatUtc(int64_t ns, int digits);

/// An RFC 3339 time (`2026-11-25T09:17:03Z`, fractions of a second and an offset `+01:00`
/// allowed, none meaning UTC; `T` may be a space) as ns since the Unix epoch; nullopt when it is
/// none.
std::optional<int64_t> ParseRfc3339(std::string_view text);

/// A duration in whole seconds, rounded: 42s, 3m07s, 1h02m05s, 2d03h04m (from a day on, without
/// seconds); `?` when it is negative or not finite (an ETA without a rate).
std::string FormatDuration(double seconds);

}  // namespace fleetflow

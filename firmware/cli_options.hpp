#pragma once
/// Command-line pieces shared by fleet-sensor, fleet-sim and fleetctl (CLI11).

#include <CLI/CLI.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "nats_client.hpp"
#include "signals.hpp"

namespace fleetflow::firmware {

/// Exit statuses fleet-sensor, fleet-sim and fleetctl share; each program adds its own from 3 on.
inline constexpr int kExitUsage = 1;  ///< the command line is wrong
inline constexpr int kExitNats = 2;   ///< cannot connect to NATS

/// Parses "gps=10,speed=30" (HZ in (0, 1000], names valid tokens other than 'status' and 'cmd',
/// none twice) into `out`; returns an error message, or "" when the spec is valid.
std::string ParseRates(std::string_view spec, std::vector<sim::SensorRate>& out);

/// A CLI11 check of a SENSOR=HZ,... option with ParseRates.
CLI::Validator RatesValidator();

/// --nats-url, --creds, --nkey-seed, --ca, --cert, --key; each defaults to its NATS_* variable
/// (already read into `options` by ConnectOptions::FromEnv(), and named in --help).
void AddNatsOptions(CLI::App& app, nats::ConnectOptions& options);

/// Names every option's environment variable: PREFIX<OPTION> (FLEET_SENSOR_BATCH_MS), the NATS
/// options their NATS_* ones (docs/firmware.md#environment). Call after the options are added.
void NameEnvironment(CLI::App& app, const std::string& prefix);

/// What a program returns for a parse error: CLI11's message (after the variable the value came
/// from, when it came from the environment); 0 for --help, else kExitUsage.
int ExitForParseError(CLI::App& app, const CLI::ParseError& error, int argc, char** argv);

}  // namespace fleetflow::firmware

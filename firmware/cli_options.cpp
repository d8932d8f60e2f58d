#include "cli_options.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>

#include "cli_env.hpp"
#include "wire.hpp"

namespace fleetflow::firmware {

std::string ParseRates(std::string_view spec, std::vector<sim::SensorRate>& out) {
  out.clear();
  while (true) {
    const size_t comma = spec.find(',');
    const std::string_view item = spec.substr(0, comma);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return "'" + std::string(item) + "' is not SENSOR=HZ (e.g. gps=10,speed=30)";
    }
    const std::string name(item.substr(0, eq));
    const std::string_view hz_text = item.substr(eq + 1);
    if (!wire::IsValidToken(name) || name == wire::kStatusToken || name == "cmd") {
      return "'" + name +
             "' is not a sensor name: use 1-64 of A-Z a-z 0-9 _ - (not 'status' or 'cmd')";
    }
    double hz = 0;
    const auto [end, ec] = std::from_chars(hz_text.data(), hz_text.data() + hz_text.size(), hz);
    if (ec != std::errc() || end != hz_text.data() + hz_text.size() || !(hz > 0 && hz <= 1000)) {
      return "rate of '" + name + "' must be a number of Hz in (0, 1000], got '" +
             std::string(hz_text) + "'";
    }
    if (std::any_of(out.begin(), out.end(), [&](const auto& s) { return s.name == name; })) {
      return "sensor '" + name + "' is given twice";
    }
    out.push_back({name, hz});
    if (comma == std::string_view::npos) return "";
    spec.remove_prefix(comma + 1);
  }
}

CLI::Validator RatesValidator() {
  return CLI::Validator(
      [](std::string& spec) {
        std::vector<sim::SensorRate> unused;
        return ParseRates(spec, unused);
      },
      "SENSOR=HZ,...", "rates");
}

void AddNatsOptions(CLI::App& app, nats::ConnectOptions& options) {
  // The NATS_* variables the engine and nats tooling read too, not FLEET_SENSOR_NATS_URL and
  // the like: named here, NameEnvironmentVariables leaves them.
  app.add_option("--nats-url", options.url, "NATS server URL(s), comma-separated")
      ->capture_default_str()
      ->envname("NATS_URL");
  app.add_option("--creds", options.creds_file, "NATS .creds file: JWT and NKey")
      ->check(CLI::ExistingFile)
      ->envname("NATS_CREDS");
  app.add_option("--nkey-seed", options.nkey_seed_file, "NKey seed file")
      ->check(CLI::ExistingFile)
      ->envname("NATS_NKEY_SEED");
  app.add_option("--ca", options.ca_file, "Trusted CA certificate; enables TLS")
      ->check(CLI::ExistingFile)
      ->envname("NATS_CA");
  app.add_option("--cert", options.cert_file, "TLS client certificate")
      ->check(CLI::ExistingFile)
      ->envname("NATS_CERT");
  app.add_option("--key", options.key_file, "Private key of --cert")
      ->check(CLI::ExistingFile)
      ->envname("NATS_KEY");
}

void NameEnvironment(CLI::App& app, const std::string& prefix) {
  EnvNaming naming;
  naming.prefix = prefix;
  NameEnvironmentVariables(app, naming);
}

int ExitForParseError(CLI::App& app, const CLI::ParseError& error, int argc, char** argv) {
  if (const std::string note = EnvironmentNote(app, error, argc, argv); !note.empty()) {
    std::fprintf(stderr, "%s\n", note.c_str());
  }
  return app.exit(error) == 0 ? 0 : kExitUsage;
}

}  // namespace fleetflow::firmware

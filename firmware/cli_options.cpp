#include "cli_options.hpp"

#include <algorithm>
#include <charconv>

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
  app.add_option("--nats-url", options.url, "NATS server URL(s), comma-separated (env NATS_URL)")
      ->capture_default_str();
  app.add_option("--creds", options.creds_file, "NATS .creds file: JWT and NKey (env NATS_CREDS)")
      ->check(CLI::ExistingFile);
  app.add_option("--nkey-seed", options.nkey_seed_file, "NKey seed file (env NATS_NKEY_SEED)")
      ->check(CLI::ExistingFile);
  app.add_option("--ca", options.ca_file, "Trusted CA certificate; enables TLS (env NATS_CA)")
      ->check(CLI::ExistingFile);
  app.add_option("--cert", options.cert_file, "TLS client certificate (env NATS_CERT)")
      ->check(CLI::ExistingFile);
  app.add_option("--key", options.key_file, "Private key of --cert (env NATS_KEY)")
      ->check(CLI::ExistingFile);
}

}  // namespace fleetflow::firmware

#pragma once
/// Environment variables for command-line options (docs/cli.md#environment): a pass over a
/// CLI11 App after its options are set up gives every option that takes a value, and every flag,
/// an environment variable that CLI11 reads when the command line does not give the option, and
/// names in --help ("(Env:NAME)"). Precedence: command line, then environment, then default.
/// Header-only and CLI11-only, so that the engine's commands and the firmware programs (which
/// link none of the engine's libraries) share it.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace fleetflow {

struct EnvNaming {
  /// Prefix of every derived name, e.g. "FLEETFLOW_".
  std::string prefix;
  /// Subcommands whose options are named without the subcommand: the program's main command,
  /// e.g. `run` (FLEETFLOW_TICK_MS). Other subcommands' options are PREFIX<SUBCOMMAND>_<OPTION>
  /// (FLEETFLOW_TAP_COUNT), so that an option added to one subcommand never renames another's.
  std::set<std::string> unprefixed;
  /// Explicit names, by "SUBCOMMAND --long-name" ("--long-name" on the top-level App; a
  /// positional by its name, "run pipeline"): an option that means what another one means shares
  /// its variable (replay --metrics-port and run's: FLEETFLOW_METRICS_PORT), one with a
  /// convention of its own keeps it (NATS_URL). An empty name: no variable for that option.
  std::map<std::string, std::string> names;
};

namespace cli_env_detail {

/// "tick-ms" -> "TICK_MS".
inline std::string Upper(const std::string& text) {
  std::string out;
  for (const char c : text) {
    out += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return out;
}

inline void Name(CLI::App& app, const std::string& path, const EnvNaming& naming, bool unprefixed) {
  for (CLI::Option* option : app.get_options()) {
    // Help and version flags, and options that name their variable themselves, are left alone.
    if (option == app.get_help_ptr() || option == app.get_help_all_ptr() ||
        option == app.get_version_ptr() || !option->get_envname().empty()) {
      continue;
    }
    const bool positional = option->get_lnames().empty();
    const std::string name =
        positional ? option->get_name() : option->get_lnames().front();  // without dashes
    const std::string key = (path.empty() ? "" : path + " ") + (positional ? "" : "--") + name;
    if (const auto it = naming.names.find(key); it != naming.names.end()) {
      if (!it->second.empty()) option->envname(it->second);
      continue;
    }
    // Positionals (files, a node id) only where named explicitly: a variable that sets the
    // files of every subcommand at once would surprise.
    if (positional) continue;
    option->envname(naming.prefix + (path.empty() || unprefixed ? "" : Upper(path) + "_") +
                    Upper(name));
  }
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    // Option groups are nameless Apps holding options of their parent.
    if (sub->get_name().empty()) {
      Name(*sub, path, naming, unprefixed);
      continue;
    }
    // CLI11 reads the variables of every subcommand, chosen or not, unless a subcommand has a
    // callback run at the end of its own parsing: then only the chosen one's, so that a variable
    // meant for `run` (FLEETFLOW_METRICS_PORT=-1) does not fail the check of `health --port`.
    // (CLI11 cannot tell whether a subcommand has one already: none of ours does.)
    sub->parse_complete_callback([] {});
    const std::string sub_path = (path.empty() ? "" : path + " ") + sub->get_name();
    Name(*sub, sub_path, naming, naming.unprefixed.count(sub_path) > 0);
  }
}

}  // namespace cli_env_detail

/// Names the environment variable of every option of `app` and its subcommands (see EnvNaming).
/// Call once, after every option is added and before parsing.
inline void NameEnvironmentVariables(CLI::App& app, const EnvNaming& naming) {
  cli_env_detail::Name(app, "", naming, true);
}

/// For a parse error about an option whose value came from its environment variable (not from
/// the command line `argv`), "--port was read from FLEETFLOW_METRICS_PORT=-1", else "": CLI11's
/// message names the option only, which the command line does not show.
inline std::string EnvironmentNote(CLI::App& app, const CLI::Error& error, int argc, char** argv) {
  const std::string message = error.what();
  std::vector<CLI::App*> apps = {&app};
  for (size_t i = 0; i < apps.size(); ++i) {
    for (CLI::App* sub : apps[i]->get_subcommands()) apps.push_back(sub);  // the parsed ones
  }
  for (CLI::App* a : apps) {
    for (const CLI::Option* option : a->get_options()) {
      const std::string& env = option->get_envname();
      const char* value = env.empty() ? nullptr : std::getenv(env.c_str());
      if (value == nullptr || option->get_lnames().empty()) continue;
      const std::string name = "--" + option->get_lnames().front();
      if (message.find(name) == std::string::npos) continue;
      bool given = false;
      for (int i = 1; i < argc && !given; ++i) {
        const std::string arg = argv[i];
        given = arg == name || arg.rfind(name + "=", 0) == 0;
      }
      if (!given) return name + " was read from " + env + "=" + value;
    }
  }
  return "";
}

/// Every (option, variable) of `app` and its subcommands, "SUBCOMMAND --option" -> NAME: for
/// tests and docs.
inline std::map<std::string, std::string> EnvironmentVariables(const CLI::App& app,
                                                               const std::string& path = "") {
  std::map<std::string, std::string> out;
  for (const CLI::Option* option : app.get_options()) {
    if (option->get_envname().empty()) continue;
    const bool positional = option->get_lnames().empty();
    out[(path.empty() ? "" : path + " ") +
        (positional ? option->get_name() : "--" + option->get_lnames().front())] =
        option->get_envname();
  }
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    const std::string sub_path =
        sub->get_name().empty() ? path : (path.empty() ? "" : path + " ") + sub->get_name();
    for (auto& entry : EnvironmentVariables(*sub, sub_path)) out.insert(entry);
  }
  return out;
}

}  // namespace fleetflow

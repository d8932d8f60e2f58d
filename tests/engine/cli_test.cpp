// The fleetflow command as a process: exit codes, every error of a bad file, graph and docs.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <rapidjson/document.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "build_paths.hpp"
#include "servers.hpp"

namespace fleetflow::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::string kFleetflow = ::fleetflow::testing::BinaryDir() + "/apps/fleetflow";
const std::string kDefault = ::fleetflow::testing::SourceDir() + "/pipelines/default.json";

void Write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

TEST(CliTest, ValidatePrintsEveryErrorOfABadFileAndExits2) {
  TempDir dir("fleetflow-cli");
  const std::string bad = dir.File("bad.json");
  Write(bad, R"({
    "name": "bad",
    "nodes": [
      {"id": "in", "type": "nats_source", "config": {"subjet": "vehicle.>"}},
      {"id": "kv", "type": "keyed_last_value", "inputs": ["in"]},
      {"id": "join", "type": "window_join", "inputs": ["kv"], "config": {"every_ms": "1s"}},
      {"id": "db", "type": "timescale_sink", "inputs": ["jion"]}
    ]})");
  const CommandResult r = RunCommand({kFleetflow, "validate", kDefault, bad});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.out, HasSubstr("default.json: ok"));
  EXPECT_THAT(r.err, HasSubstr(bad + ":4:64: /nodes/0/config/subjet (node 'in'): unknown field "
                                     "'subjet'; did you mean 'subject'?"));
  EXPECT_THAT(r.err, HasSubstr(bad + ":6:86: /nodes/2/config/every_ms (node 'join'): must be "
                                     "integer, found the string \"1s\""));
  EXPECT_THAT(r.err, HasSubstr(bad + ":7:57: /nodes/3/inputs/0 (node 'db'): input 'jion' is not a "
                                     "node of this pipeline; did you mean 'join'?"));
  EXPECT_THAT(r.err, HasSubstr(bad + ": 3 errors"));
}

TEST(CliTest, ValidateFormatsForTools) {
  TempDir dir("fleetflow-cli");
  const std::string bad = dir.File("bad.json");
  Write(bad, "{\"name\": \"bad\",\n \"nodes\": [{\"id\": \"in\", \"type\": \"nats_sorce\"}]}\n");
  // gcc: what vim's errorformat %f:%l:%c: and GitHub's problem matchers parse, on stdout.
  CommandResult r = RunCommand({kFleetflow, "validate", "--format", "gcc", kDefault, bad});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.out, HasSubstr(bad + ":2:33: error: /nodes/0/type (node 'in'): unknown operator "
                                     "'nats_sorce'; did you mean 'nats_source'?"));
  EXPECT_THAT(r.out, Not(HasSubstr("default.json")));  // a valid file: nothing, as a compiler

  // json: one object per line, for every error and every valid file.
  r = RunCommand({kFleetflow, "validate", "--format", "json", kDefault, bad});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  std::istringstream lines(r.out);
  std::vector<rapidjson::Document> records;
  for (std::string line; std::getline(lines, line);) {
    records.emplace_back().Parse(line.c_str());
    ASSERT_FALSE(records.back().HasParseError()) << line;
  }
  ASSERT_EQ(records.size(), 2u) << r.out;
  EXPECT_EQ(std::string(records[0]["file"].GetString()), kDefault);
  EXPECT_TRUE(records[0]["ok"].GetBool());
  EXPECT_EQ(std::string(records[0]["pipeline"].GetString()), "default");
  const rapidjson::Document& e = records[1];
  EXPECT_EQ(std::string(e["file"].GetString()), bad);
  EXPECT_FALSE(e["ok"].GetBool());
  EXPECT_EQ(e["line"].GetInt(), 2);
  EXPECT_EQ(e["column"].GetInt(), 33);
  EXPECT_EQ(std::string(e["pointer"].GetString()), "/nodes/0/type");
  EXPECT_EQ(std::string(e["node"].GetString()), "in");
  EXPECT_EQ(std::string(e["severity"].GetString()), "error");
  EXPECT_THAT(e["message"].GetString(), HasSubstr("unknown operator 'nats_sorce'"));
  EXPECT_EQ(std::string(e["suggestion"].GetString()), "nats_source");

  EXPECT_EQ(RunCommand({kFleetflow, "validate", "--format", "xml", kDefault}).exit_code, 2);
}

TEST(CliTest, ValidAndMissingFiles) {
  CommandResult r = RunCommand({kFleetflow, "validate", kDefault});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = RunCommand({kFleetflow, "validate", "/nonexistent.json"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err,
              HasSubstr("/nonexistent.json: cannot read the file: No such file or directory"));
}

TEST(CliTest, HelpDocumentsExitCodesAndUsageErrorsExit2) {
  CommandResult r = RunCommand({kFleetflow, "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("Exit codes:"));
  EXPECT_THAT(r.out, HasSubstr("2  invalid pipeline file or command line"));
  EXPECT_THAT(r.out, HasSubstr("3  replay --strict"));
  for (const char* cmd : {"run", "validate", "graph", "docs", "schema"}) {
    EXPECT_THAT(r.out, HasSubstr(std::string("\n  ") + cmd + " ")) << cmd;
  }
  EXPECT_EQ(RunCommand({kFleetflow}).exit_code, 2);
  EXPECT_EQ(RunCommand({kFleetflow, "frobnicate"}).exit_code, 2);
  EXPECT_EQ(RunCommand({kFleetflow, "validate", kDefault, "--log-format", "xml"}).exit_code, 2);
  EXPECT_EQ(RunCommand({kFleetflow, "run"}).exit_code, 2);
}

TEST(CliTest, RecordHelpNamesTheRangeOfAStream) {
  const CommandResult r = RunCommand({kFleetflow, "record", "--help"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* option : {"--stream", "--from", "--to", "--subject", "--max-bytes"}) {
    EXPECT_THAT(r.out, HasSubstr(option)) << r.out;
  }
  EXPECT_THAT(r.out, HasSubstr("-15m"));
  EXPECT_THAT(r.out, HasSubstr("RFC 3339"));
}

TEST(CliTest, GraphPrintsDot) {
  const CommandResult r = RunCommand({kFleetflow, "graph", kDefault});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("digraph \"default\" {"));
  EXPECT_THAT(r.out, HasSubstr("\"windows\" -> \"database\" [label=\"rows\"];"));
  EXPECT_EQ(RunCommand({kFleetflow, "graph", "/nonexistent.json"}).exit_code, 2);
}

TEST(CliTest, DocsWritesTheCommittedPages) {
  TempDir dir("fleetflow-docs");
  const CommandResult r = RunCommand({kFleetflow, "docs", "--out", dir.File("ops")});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* page : {"README.md", "nats_source.md", "timescale_sink.md"}) {
    EXPECT_EQ(ReadFile(dir.File("ops") + "/" + page),
              ReadFile(::fleetflow::testing::SourceDir() + "/docs/operators/" + page))
        << page;
  }
}

TEST(CliTest, DocsNeedsOutAndWritesNothingWithout) {
  TempDir dir("fleetflow-docs");
  const CommandResult r =
      RunCommand({"/bin/sh", "-c", "cd " + dir.path() + " && " + kFleetflow + " docs"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--out is required"));
  EXPECT_FALSE(std::filesystem::exists(dir.File("docs")));
}

// Output lost (a full disk, here /dev/full) is an error, not a success.
TEST(CliTest, OutputThatCannotBeWrittenExits1) {
  for (const std::string& args :
       std::vector<std::string>{"schema", "graph " + kDefault, "test --schema"}) {
    const CommandResult r = RunCommand({"/bin/sh", "-c", kFleetflow + " " + args + " > /dev/full"});
    EXPECT_EQ(r.exit_code, 1) << args << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr("cannot write to the standard output")) << args;
  }
  EXPECT_EQ(RunCommand({kFleetflow, "schema"}).exit_code, 0);
}

TEST(CliTest, AMisspeltCommandGetsASuggestion) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{kFleetflow, "validat", kDefault},
        std::vector<std::string>{kFleetflow, "--log-level", "debug", "validat"}}) {
    const CommandResult r = RunCommand(args);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_THAT(r.err, HasSubstr("unknown command 'validat': did you mean 'validate'?"));
    EXPECT_THAT(r.err, ::testing::Not(HasSubstr("A subcommand is required")));
  }
  const CommandResult r = RunCommand({kFleetflow, "frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown command 'frobnicate'; the commands are run, "));
}

/// The subcommands `fleetflow --help` lists.
std::vector<std::string> Subcommands() {
  const std::string help = RunCommand({kFleetflow, "--help"}).out;
  std::istringstream lines(help.substr(help.find("Subcommands:")));
  std::vector<std::string> out;
  std::string line;
  std::getline(lines, line);
  while (std::getline(lines, line) && line.rfind("  ", 0) == 0) {
    if (line[2] != ' ') out.push_back(line.substr(2, line.find(' ', 2) - 2));
  }
  return out;
}

// Every subcommand's --help ends with an example, and names the environment variable of each of
// its options: FLEETFLOW_<OPTION> (run), FLEETFLOW_<SUBCOMMAND>_<OPTION>, or a shared name that
// docs/cli.md lists.
TEST(CliTest, EveryHelpHasAnExampleAndItsEnvironmentVariables) {
  const std::string docs = ReadFile(::fleetflow::testing::SourceDir() + "/docs/cli.md");
  const std::vector<std::string> subcommands = Subcommands();
  EXPECT_GE(subcommands.size(), 13u);
  const std::string help = RunCommand({kFleetflow, "--help"}).out;
  EXPECT_THAT(help, HasSubstr("Example:\n  fleetflow run "));
  EXPECT_THAT(help, HasSubstr("(Env:FLEETFLOW_LOG_LEVEL)"));
  int total = 0;
  const std::regex env(R"(\n  (--[a-z-]+|[a-z]+)[^\n]*\(Env:([A-Z0-9_]+)\))");
  for (const std::string& sub : subcommands) {
    const std::string help = RunCommand({kFleetflow, sub, "--help"}).out;
    EXPECT_THAT(help, HasSubstr("\nExample")) << sub;
    EXPECT_THAT(help, HasSubstr(":\n  fleetflow " + sub + " ")) << sub;
    int named = 0;
    for (auto it = std::sregex_iterator(help.begin(), help.end(), env);
         it != std::sregex_iterator(); ++it, ++named) {
      std::string option = (*it)[1];
      const std::string name = (*it)[2];
      if (option.rfind("--", 0) == 0) option = option.substr(2);
      std::string derived = option;
      std::transform(derived.begin(), derived.end(), derived.begin(),
                     [](char c) { return c == '-' ? '_' : std::toupper(c); });
      std::string upper_sub = sub;
      std::transform(upper_sub.begin(), upper_sub.end(), upper_sub.begin(), ::toupper);
      const bool global = option == "log-level" || option == "log-format";
      const std::string want =
          "FLEETFLOW_" + (sub == "run" || global ? "" : upper_sub + "_") + derived;
      if (name != want) {
        EXPECT_NE(docs.find("`" + name + "`"), std::string::npos)
            << sub << " --" << option << ": " << name << " is not in docs/cli.md";
      }
    }
    total += named;
  }
  EXPECT_GE(total, 40);
}

TEST(CliTest, EnvironmentVariablesSetOptionsAndTheCommandLineWins) {
  // Port 1: nothing listens there, the answer is at once "no answer".
  CommandResult r = RunCommand({kFleetflow, "health"}, std::chrono::seconds(60),
                               {{"FLEETFLOW_METRICS_PORT", "1"}, {"FLEETFLOW_HEALTH_READY", "1"}});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("http://127.0.0.1:1/readyz: no answer"));
  r = RunCommand({kFleetflow, "health", "--port", "2"}, std::chrono::seconds(60),
                 {{"FLEETFLOW_METRICS_PORT", "1"}});
  EXPECT_THAT(r.out, HasSubstr("http://127.0.0.1:2/healthz: no answer"));
  // The pipeline of a container, for graph too.
  r = RunCommand({kFleetflow, "graph"}, std::chrono::seconds(60),
                 {{"FLEETFLOW_PIPELINE", kDefault}});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("digraph \"default\" {"));
  // Read for the subcommand chosen only: no port for health, but validate does not care.
  r = RunCommand({kFleetflow, "validate", kDefault}, std::chrono::seconds(60),
                 {{"FLEETFLOW_METRICS_PORT", "-1"}});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // A bad value says where it came from.
  r = RunCommand({kFleetflow, "validate", kDefault}, std::chrono::seconds(60),
                 {{"FLEETFLOW_LOG_FORMAT", "xml"}});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--log-format was read from FLEETFLOW_LOG_FORMAT=xml"));
  // --help names the variables.
  r = RunCommand({kFleetflow, "run", "--help"});
  for (const char* name : {"FLEETFLOW_PIPELINE", "FLEETFLOW_METRICS_PORT", "FLEETFLOW_TICK_MS"}) {
    EXPECT_THAT(r.out, HasSubstr(std::string("(Env:") + name + ")")) << r.out;
  }
  EXPECT_THAT(RunCommand({kFleetflow, "record", "--help"}).out, HasSubstr("(Env:NATS_URL)"));
}

TEST(CliTest, JsonLogsAreOneObjectPerLineAndAFatalErrorExits1) {
  // The metrics port is taken: the run fails at once, after logging a few lines.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), len), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const CommandResult r =
      RunCommand({kFleetflow, "--log-format", "json", "run", kDefault, "--metrics-host",
                  "127.0.0.1", "--metrics-port", std::to_string(ntohs(addr.sin_port))},
                 std::chrono::seconds(60), {{"PGHOST", "/nonexistent"}});
  close(fd);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  std::istringstream lines(r.err);
  int n = 0;
  for (std::string line; std::getline(lines, line); ++n) {
    rapidjson::Document d;
    d.Parse(line.c_str());
    ASSERT_TRUE(!d.HasParseError() && d.IsObject()) << line;
    EXPECT_TRUE(d.HasMember("ts") && d.HasMember("level") && d.HasMember("msg")) << line;
  }
  EXPECT_GE(n, 1);
  EXPECT_THAT(r.err, HasSubstr("\"level\":\"critical\""));
  EXPECT_THAT(r.err, HasSubstr("cannot listen"));
}

}  // namespace
}  // namespace fleetflow::testing

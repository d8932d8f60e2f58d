#include "cli_options.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>

#include "cli_env.hpp"

namespace fleetflow::firmware {
namespace {

TEST(CliOptions, ParsesRates) {
  std::vector<sim::SensorRate> rates;
  ASSERT_EQ(ParseRates("gps=10,speed=30.5", rates), "");
  ASSERT_EQ(rates.size(), 2u);
  EXPECT_EQ(rates[0].name, "gps");
  EXPECT_EQ(rates[1].hz, 30.5);
}

TEST(CliOptions, RejectsBadRatesWithAReason) {
  std::vector<sim::SensorRate> rates;
  EXPECT_NE(ParseRates("gps", rates).find("not SENSOR=HZ"), std::string::npos);
  EXPECT_NE(ParseRates("gps=0", rates).find("(0, 1000]"), std::string::npos);
  EXPECT_NE(ParseRates("gps=1,gps=2", rates).find("twice"), std::string::npos);
  EXPECT_NE(ParseRates("status=1", rates).find("not a sensor name"), std::string::npos);
  EXPECT_NE(ParseRates("cmd=1", rates).find("not a sensor name"), std::string::npos);
  EXPECT_NE(ParseRates("a.b=1", rates).find("not a sensor name"), std::string::npos);
}

/// Sets an environment variable for the life of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { setenv(name, value, 1); }
  ~ScopedEnv() { unsetenv(name_); }

 private:
  const char* name_;
};

/// An App as the programs build theirs: a global option, the NATS options, a main subcommand
/// and another with an option of the same name.
struct TestApp {
  CLI::App app{"test", "prog"};
  nats::ConnectOptions nats;
  int batch_ms = 100;
  bool quiet = false;
  int run_port = 9464, health_port = 9464;
  std::string pipeline;
  CLI::App* run = nullptr;
  CLI::App* health = nullptr;

  explicit TestApp(bool with_naming = true) {
    AddNatsOptions(app, nats);
    app.add_option("--batch-ms", batch_ms, "Batch");
    app.add_flag("--quiet", quiet, "Quiet");
    run = app.add_subcommand("run", "Run");
    run->add_option("pipeline", pipeline, "Pipeline")->required();
    run->add_option("--port", run_port, "Port, -1: off")->check(CLI::Range(-1, 65535));
    health = app.add_subcommand("health", "Health");
    health->add_option("--port", health_port, "Port")->check(CLI::Range(1, 65535));
    if (!with_naming) return;
    EnvNaming naming;
    naming.prefix = "PROG_";
    naming.unprefixed = {"run"};
    naming.names = {{"run pipeline", "PROG_PIPELINE"}, {"health --port", "PROG_PORT"}};
    NameEnvironmentVariables(app, naming);
  }
  void Parse(std::vector<std::string> args) {
    std::reverse(args.begin(), args.end());  // CLI11 takes them last first
    app.parse(args);
  }
};

TEST(CliEnvironment, NamesEveryOptionAndFlagButHelpAndPositionals) {
  TestApp t;
  const auto names = EnvironmentVariables(t.app);
  EXPECT_EQ(names.at("--batch-ms"), "PROG_BATCH_MS");
  EXPECT_EQ(names.at("--quiet"), "PROG_QUIET");
  EXPECT_EQ(names.at("--nats-url"), "NATS_URL");  // named by AddNatsOptions, kept
  EXPECT_EQ(names.at("--creds"), "NATS_CREDS");
  EXPECT_EQ(names.at("run --port"), "PROG_PORT");        // run: the main subcommand, no prefix
  EXPECT_EQ(names.at("run pipeline"), "PROG_PIPELINE");  // a positional only when named
  EXPECT_EQ(names.at("health --port"), "PROG_PORT");     // the same meaning: shared
  EXPECT_EQ(names.count("--help"), 0u);
  const std::string help = t.app.help();
  EXPECT_NE(help.find("(Env:PROG_BATCH_MS)"), std::string::npos) << help;
  EXPECT_NE(help.find("(Env:NATS_URL)"), std::string::npos) << help;
}

TEST(CliEnvironment, OtherSubcommandsArePrefixed) {
  TestApp t(false);
  EnvNaming naming;
  naming.prefix = "PROG_";
  NameEnvironmentVariables(t.app, naming);
  const auto names = EnvironmentVariables(t.app);
  EXPECT_EQ(names.at("run --port"), "PROG_RUN_PORT");
  EXPECT_EQ(names.at("health --port"), "PROG_HEALTH_PORT");
  EXPECT_EQ(names.count("run pipeline"), 0u);
}

TEST(CliEnvironment, CommandLineOverEnvironmentOverDefault) {
  {
    TestApp t;
    t.Parse({"run", "p.json"});
    EXPECT_EQ(t.batch_ms, 100);  // the default
  }
  const ScopedEnv batch("PROG_BATCH_MS", "250");
  const ScopedEnv quiet("PROG_QUIET", "true");
  const ScopedEnv pipeline("PROG_PIPELINE", "env.json");
  {
    TestApp t;
    t.Parse({"run"});
    EXPECT_EQ(t.batch_ms, 250);
    EXPECT_TRUE(t.quiet);
    EXPECT_EQ(t.pipeline, "env.json");  // a required positional, given by the environment
  }
  {
    TestApp t;
    t.Parse({"--batch-ms", "5", "run", "cli.json"});
    EXPECT_EQ(t.batch_ms, 5);
    EXPECT_EQ(t.pipeline, "cli.json");
  }
  const ScopedEnv off("PROG_QUIET", "0");
  TestApp t;
  t.Parse({"run"});
  EXPECT_FALSE(t.quiet);
}

// A variable is read for the subcommand chosen only: PROG_PORT=-1 (run: off) is no port for
// health, but must not fail `run`.
TEST(CliEnvironment, OnlyTheChosenSubcommandReadsItsVariables) {
  const ScopedEnv port("PROG_PORT", "-1");
  {
    TestApp t;
    t.Parse({"run", "p.json"});
    EXPECT_EQ(t.run_port, -1);
    EXPECT_EQ(t.health_port, 9464);
  }
  TestApp t;
  try {
    t.Parse({"health"});
    FAIL() << "PROG_PORT=-1 accepted by health";
  } catch (const CLI::ValidationError& e) {
    char arg0[] = "prog";
    char* argv[] = {arg0, nullptr};
    EXPECT_EQ(EnvironmentNote(t.app, e, 1, argv), "--port was read from PROG_PORT=-1");
    char health[] = "health", flag[] = "--port", value[] = "-1";
    char* given[] = {arg0, health, flag, value, nullptr};
    EXPECT_EQ(EnvironmentNote(t.app, e, 4, given), "");  // the command line said it
  }
}

}  // namespace
}  // namespace fleetflow::firmware

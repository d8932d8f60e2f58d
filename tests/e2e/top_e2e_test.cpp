// `fleetflow top` against real workers: two workers of pipelines/jetstream.json share its 16
// partitions on a real nats-server and PostgreSQL while fleet-sim publishes; top runs in a real
// terminal (tmux) and shows both, their nodes, the messages coming in and the partitions adding up;
// when one worker stops the view shows it DOWN and goes on with the other; `q` quits and gives
// the cursor back. Without a terminal, --once and --iterations print plain frames, and an
// endpoint nobody listens on is reported, with exit status 1.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <csignal>
#include <functional>
#include <map>
#include <sstream>

#include "build_paths.hpp"
#include "e2e_fixture.hpp"
#include "fleet_check.hpp"
#include "servers.hpp"

namespace fleetflow::testing {
namespace {

using namespace std::chrono_literals;

const std::string kFleetflow = ::fleetflow::testing::BinaryDir() + "/apps/fleetflow";
const std::string kPipeline = ::fleetflow::testing::SourceDir() + "/pipelines/jetstream.json";
constexpr int kPartitions = 16;

/// The value columns of a node row, in the order `fleetflow top --help` lists them.
enum Col { kMsgs, kSamples, kReject, kAccept, kRows, kWritten, kPending, kBlocked, kP99, kKv };

/// One worker's block of a frame.
struct Block {
  std::string header;
  bool up = false;
  std::map<std::string, std::vector<std::string>> nodes;  // node -> operator, then the columns
  /// A number after `key ` in the header; -1 when absent.
  double Field(const std::string& key) const {
    const size_t at = header.find("  " + key + " ");
    return at == std::string::npos ? -1 : std::stod(header.substr(at + key.size() + 3));
  }
};

/// The blocks of the last frame of `text`, by endpoint, and the fleet line.
struct Frame {
  std::map<std::string, Block> workers;
  std::string fleet;
};

Frame ParseFrame(const std::string& text) {
  Frame f;
  Block* block = nullptr;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("fleetflow top ", 0) == 0) f = Frame{};  // a new frame begins
    if (line.rfind("fleet ", 0) == 0) {
      f.fleet = line;
      block = nullptr;
      continue;
    }
    const size_t sep = line.find("  ");
    if (!line.empty() && line[0] != ' ' && sep != std::string::npos &&
        (line.compare(sep, 6, "  up  ") == 0 || line.compare(sep, 8, "  DOWN  ") == 0)) {
      block = &f.workers[line.substr(0, sep)];
      block->header = line;
      block->up = line.compare(sep, 6, "  up  ") == 0;
      continue;
    }
    if (block == nullptr || line.rfind("  ", 0) != 0) continue;
    std::istringstream words(line);
    std::string node;
    words >> node;
    if (node == "NODE") continue;
    auto& cells = block->nodes[node];
    for (std::string w; words >> w;) cells.push_back(w);
  }
  return f;
}

/// A cell of a node row (after its operator); "" when absent.
std::string Cell(const Block& b, const std::string& node, Col col) {
  const auto it = b.nodes.find(node);
  if (it == b.nodes.end() || it->second.size() != 11) return "";
  return it->second[1 + col];
}

/// Whether a rate cell shows a number above zero (1.23k and the like included).
bool Positive(const std::string& cell) {
  return !cell.empty() && cell != "0" && cell != "-" && cell != "..." &&
         std::isdigit(static_cast<unsigned char>(cell[0])) && std::stod(cell) > 0;
}

/// The partitions the workers' headers say they own, in all.
double Owned(const Frame& f) {
  double owned = 0;
  for (const auto& [endpoint, b] : f.workers) owned += b.up ? b.Field("partitions") : 0;
  return owned;
}

class TopE2E : public PartitionedServersTest {
 protected:
  TopE2E() : PartitionedServersTest("fleetflow-top-e2e", kPartitions) {}
  std::unique_ptr<Engine> Worker(int n) {
    return std::make_unique<Engine>(kPipeline, nats_, pg_,
                                    dir_.File("worker" + std::to_string(n) + ".log"));
  }
};

TEST_F(TopE2E, TwoWorkersInATerminalOneStopsTheViewGoesOn) {
  FF_REQUIRE_TMUX();
  auto a = Worker(0);
  auto b = Worker(1);
  ASSERT_TRUE(a->WaitReady()) << a->process().ReadLog();
  ASSERT_TRUE(b->WaitReady()) << b->process().ReadLog();
  const Fleet fleet = MakeFleet(20, 120);
  Process sim(SimArgs(nats_, fleet, 120), dir_.File("sim.log"));

  const std::string ea = "127.0.0.1:" + std::to_string(a->port());
  const std::string eb = "127.0.0.1:" + std::to_string(b->port());
  // The exit status goes to a file, and the pane lives on after top (cat waits for input):
  // tmux may drop a dead pane's last output, and that is where the cursor is given back.
  const std::string rc = dir_.File("top.rc");
  Tmux tmux(dir_, kFleetflow + " top --interval-ms 500 " + ea + " http://" + eb + " 2>" +
                      dir_.File("top.err") + "; echo $? >" + rc + "; exec cat");
  std::string screen;
  Frame frame;
  const auto shows = [&](const std::function<bool()>& cond) {
    screen = tmux.Screen();
    frame = ParseFrame(screen);
    return cond();
  };

  // Both workers up with their four nodes, messages coming in, the partitions shared out.
  ASSERT_TRUE(WaitFor(
      [&] {
        return shows([&] {
          if (frame.workers.size() != 2 || !frame.workers.contains(ea) ||
              !frame.workers.contains(eb)) {
            return false;
          }
          bool in = false;
          for (const auto& [endpoint, w] : frame.workers) {
            if (!w.up || w.nodes.size() != 4 || w.Field("partitions") < 1) return false;
            in = in || Positive(Cell(w, "telemetry", kMsgs));
          }
          return in && Owned(frame) == kPartitions &&
                 frame.fleet.find("partitions " + std::to_string(kPartitions)) != std::string::npos;
        });
      },
      90s, 200ms))
      << screen << "\n"
      << ReadFile(dir_.File("top.err"));
  for (const auto& [endpoint, w] : frame.workers) {
    EXPECT_EQ(w.nodes.at("telemetry").at(0), "nats_source") << screen;
    EXPECT_EQ(w.nodes.at("last_values").at(0), "keyed_last_value") << screen;
    EXPECT_EQ(w.nodes.at("windows").at(0), "window_join") << screen;
    EXPECT_EQ(w.nodes.at("database").at(0), "timescale_sink") << screen;
    EXPECT_EQ(w.Field("workers"), 2) << w.header;
    EXPECT_NE(w.header.find("  ready  "), std::string::npos) << w.header;
  }
  EXPECT_NE(frame.fleet.find("2 of 2 up"), std::string::npos) << screen;
  EXPECT_EQ(tmux.Format("#{cursor_flag}"), "0") << "the cursor is hidden while top draws";
  EXPECT_EQ(screen.find('\x1b'), std::string::npos);  // the terminal took the escapes

  // Rows are written and timed: a worker's sink shows rows per second and their latency.
  ASSERT_TRUE(WaitFor(
      [&] {
        return shows([&] {
          for (const auto& [endpoint, w] : frame.workers) {
            if (Positive(Cell(w, "database", kWritten)) && Cell(w, "database", kP99) != "-" &&
                Cell(w, "database", kP99) != "...") {
              return true;
            }
          }
          return false;
        });
      },
      60s, 200ms))
      << screen;

  // The second worker stops: shown DOWN, with why; the first takes its partitions over.
  ASSERT_EQ(b->process().Stop(SIGTERM, 30s), 0) << b->process().ReadLog();
  ASSERT_TRUE(WaitFor(
      [&] {
        return shows([&] {
          const auto wa = frame.workers.find(ea), wb = frame.workers.find(eb);
          return wa != frame.workers.end() && wb != frame.workers.end() && !wb->second.up &&
                 wb->second.header.find("no answer") != std::string::npos && wa->second.up &&
                 wa->second.nodes.size() == 4 && wa->second.Field("partitions") == kPartitions &&
                 Positive(Cell(wa->second, "telemetry", kMsgs)) &&
                 frame.fleet.find("1 of 2 up") != std::string::npos;
        });
      },
      60s, 200ms))
      << screen << "\n"
      << ReadFile(dir_.File("top.err"));

  // q quits at once, exit 0, the cursor shown again.
  EXPECT_EQ(ReadFile(rc), "") << "top ended early";
  tmux.Keys("q");
  ASSERT_TRUE(WaitFor([&] { return ReadFile(rc) == "0\n"; }, 10s))
      << ReadFile(rc) << tmux.Screen() << ReadFile(dir_.File("top.err"));
  // tmux reads what top wrote last a moment after top has ended.
  EXPECT_TRUE(WaitFor([&] { return tmux.Format("#{cursor_flag}") == "1"; }, 10s))
      << "the cursor is not given back\n"
      << tmux.Screen();
  EXPECT_EQ(ReadFile(dir_.File("top.err")), "");
}

TEST_F(TopE2E, OnceWithoutATerminalAndAnEndpointNobodyListensOn) {
  auto a = Worker(0);
  ASSERT_TRUE(a->WaitReady()) << a->process().ReadLog();
  const std::string ea = "127.0.0.1:" + std::to_string(a->port());
  const std::string nobody = "127.0.0.1:" + std::to_string(FreePort());

  CommandResult r = RunCommand({kFleetflow, "top", "--once", "--interval-ms", "300", ea}, 30s);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  Frame f = ParseFrame(r.out);
  ASSERT_TRUE(f.workers.contains(ea)) << r.out;
  const Block& w = f.workers.at(ea);
  EXPECT_TRUE(w.up) << r.out;
  EXPECT_EQ(w.nodes.size(), 4u) << r.out;
  EXPECT_EQ(w.Field("partitions"), kPartitions) << r.out;  // the only worker
  EXPECT_EQ(Cell(w, "telemetry", kMsgs), "0") << r.out;    // nothing published: rates, zero
  EXPECT_EQ(Cell(w, "telemetry", kAccept), "-") << r.out;  // not a metric of a source
  EXPECT_EQ(Cell(w, "database", kP99), "-") << r.out;      // no row in the interval
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << "no escapes without a terminal";
  EXPECT_EQ(f.fleet, "") << "one endpoint: no fleet line";

  r = RunCommand(
      {kFleetflow, "top", "--once", "--interval-ms", "300", "--timeout-ms", "500", nobody, ea},
      30s);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  f = ParseFrame(r.out);
  ASSERT_TRUE(f.workers.contains(nobody)) << r.out;
  EXPECT_FALSE(f.workers.at(nobody).up);
  EXPECT_NE(f.workers.at(nobody).header.find("DOWN  no answer"), std::string::npos) << r.out;
  EXPECT_TRUE(f.workers.at(ea).up) << r.out;
  EXPECT_EQ(f.workers.at(ea).nodes.size(), 4u) << r.out;
  EXPECT_NE(f.fleet.find("1 of 2 up  partitions 16"), std::string::npos) << r.out;

  // --iterations: as many frames, a blank line between them, the title opening each.
  r = RunCommand({kFleetflow, "top", "--iterations", "3", "--interval-ms", "200", ea}, 30s);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  size_t titles = 0;
  for (size_t at = 0; (at = r.out.find("fleetflow top ", at)) != std::string::npos; ++at) {
    EXPECT_TRUE(at == 0 || r.out.compare(at - 2, 2, "\n\n") == 0) << r.out;
    ++titles;
  }
  EXPECT_EQ(titles, 3u) << r.out;

  // A bad endpoint is a usage error.
  r = RunCommand({kFleetflow, "top", "--once", "https://" + ea}, 30s);
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("plain http"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace fleetflow::testing

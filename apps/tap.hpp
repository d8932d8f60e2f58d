#pragma once
// `fleetflow tap` (docs/cli.md): the client, and the worker's answer to GET /tap.

#include <string>

#include "http_server.hpp"
#include "runtime.hpp"

namespace fleetflow {

struct TapArgs {
  std::string node;
  std::string host = "127.0.0.1";
  int port = 9464;
  int count = 10;
  int every = 1;
  int timeout_ms = 10000;
  int max_list = 20;  // rows of a window, points of a sample batch
  bool ticks = false;
  bool follow = false;
};

/// Asks a worker's /tap for a sample of the messages leaving `args.node` and prints them as JSON
/// lines; with `follow`, asks again until interrupted. Returns the exit status.
int Tap(const TapArgs& args);

/// A worker's answer to GET /tap?node=…&count=…: 200 with the JSON lines, 400 for a bad
/// parameter, 404 for an unknown node, 409 while another client taps the node, 503 once the
/// pipeline stops.
HttpReply AnswerTap(Runtime& runtime, const QueryParam& param);

}  // namespace fleetflow

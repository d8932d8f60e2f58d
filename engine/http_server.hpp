#pragma once
/// The engine's HTTP endpoints: GET /metrics (Prometheus text format), /healthz (the process is
/// alive), /readyz (200 once every operator is ready, 503 before) and /tap (messages leaving a
/// node, when the worker allows taps); and GET of one of them as a client (`fleetflow health`,
/// `fleetflow tap`).

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace fleetflow {

struct HttpReply {
  int status = 0;
  std::string body;
  std::string content_type = "text/plain";
};

/// A query parameter of the request by name; nullopt when absent.
using QueryParam = std::function<std::optional<std::string>(const std::string&)>;

class HttpServer {
 public:
  /// `tap` answers GET /tap; without one, /tap answers 404 saying taps are off.
  HttpServer(std::function<std::string()> metrics, std::function<bool()> ready,
             std::function<HttpReply(const QueryParam&)> tap = nullptr);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Binds host:port (port 0: any free port) and serves on a background thread.
  /// Throws std::runtime_error when the address cannot be bound.
  void Start(const std::string& host, int port);
  /// The bound port.
  int port() const { return port_; }
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::thread thread_;
};

/// GET http://host:port/path?query (the parameters are encoded here), waiting timeout_ms at most
/// to connect and as long for the answer; nullopt when no answer came (`error` says why).
std::optional<HttpReply> HttpGet(
    const std::string& host, int port, const std::string& path, int timeout_ms, std::string& error,
    const std::vector<std::pair<std::string, std::string>>& query = {});

}  // namespace fleetflow

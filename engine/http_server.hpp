#pragma once
/// The engine's HTTP endpoints: GET /metrics (Prometheus text format), /healthz (the process is
/// alive) and /readyz (200 once every operator is ready, 503 before); and GET of one of them
/// as a client (`fleetflow health`).

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

namespace fleetflow {

class HttpServer {
 public:
  HttpServer(std::function<std::string()> metrics, std::function<bool()> ready);
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

struct HttpReply {
  int status = 0;
  std::string body;
};
/// GET http://host:port/path, waiting timeout_ms at most to connect and as long for the answer;
/// nullopt when no answer came (`error` says why).
std::optional<HttpReply> HttpGet(const std::string& host, int port, const std::string& path,
                                 int timeout_ms, std::string& error);

}  // namespace fleetflow

#include "http_server.hpp"

#include <httplib.h>

#include <stdexcept>

#include "thread_name.hpp"

namespace fleetflow {

struct HttpServer::Impl {
  httplib::Server server;
};

HttpServer::HttpServer(std::function<std::string()> metrics, std::function<bool()> ready,
                       std::function<HttpReply(const QueryParam&)> tap)
    : impl_(std::make_unique<Impl>()) {
  // SO_REUSEADDR (not the library's default SO_REUSEPORT): a restarted engine can bind its port
  // at once, and two engines can never share one.
  impl_->server.set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  impl_->server.Get("/metrics", [metrics](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  impl_->server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  impl_->server.Get("/readyz", [ready](const httplib::Request&, httplib::Response& res) {
    const bool ok = ready();
    res.status = ok ? 200 : 503;
    res.set_content(ok ? "ready\n" : "not ready\n", "text/plain");
  });
  impl_->server.Get("/tap", [tap](const httplib::Request& req, httplib::Response& res) {
    if (!tap) {
      res.status = 404;
      res.set_content("taps are off on this worker: start it with `fleetflow run --tap`\n",
                      "text/plain");
      return;
    }
    const HttpReply reply = tap([&req](const std::string& name) -> std::optional<std::string> {
      if (!req.has_param(name)) return std::nullopt;
      return req.get_param_value(name);
    });
    res.status = reply.status;
    res.set_content(reply.body, reply.content_type);
  });
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Start(const std::string& host, int port) {
  port_ = port == 0 ? impl_->server.bind_to_any_port(host) : port;
  if (port_ < 0 || (port != 0 && !impl_->server.bind_to_port(host, port))) {
    throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) +
                             " (in use? choose another --metrics-port)");
  }
  thread_ = std::thread([this] { impl_->server.listen_after_bind(); });
  NameThread(thread_, "ff-http");
}

void HttpServer::Stop() {
  impl_->server.stop();
  if (thread_.joinable()) thread_.join();
}

std::optional<HttpReply> HttpGet(const std::string& host, int port, const std::string& path,
                                 int timeout_ms, std::string& error,
                                 const std::vector<std::pair<std::string, std::string>>& query) {
  httplib::Client client(host, port);
  const time_t sec = timeout_ms / 1000;
  const time_t usec = static_cast<time_t>(timeout_ms % 1000) * 1000;
  client.set_connection_timeout(sec, usec);
  client.set_read_timeout(sec, usec);
  client.set_write_timeout(sec, usec);
  const httplib::Params params(query.begin(), query.end());
  const auto res = client.Get(path, params, httplib::Headers{});
  if (!res) {
    error = httplib::to_string(res.error()) + " error";
    return std::nullopt;
  }
  return HttpReply{res->status, res->body, res->get_header_value("Content-Type")};
}

}  // namespace fleetflow

#include "tcp_proxy.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace fleetflow::testing {

namespace {

constexpr int kPollMs = 50;

sockaddr_in Loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

struct TcpProxy::Link {
  int client = -1, server = -1;
  std::atomic<bool> stop{false};
  std::thread up, down;

  void Close() {
    stop = true;
    if (up.joinable()) up.join();
    if (down.joinable()) down.join();
    // Linger 0: the close sends a reset, as a broken link would.
    const linger hard{1, 0};
    for (int fd : {client, server}) {
      if (fd < 0) continue;
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
      ::close(fd);
    }
    client = server = -1;
  }
};

TcpProxy::TcpProxy(std::vector<int> target_ports) : target_ports_(std::move(target_ports)) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr = Loopback(0);
  socklen_t len = sizeof addr;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, 64) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(listen_fd_);
    throw std::runtime_error("TcpProxy: cannot listen on 127.0.0.1");
  }
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

TcpProxy::~TcpProxy() {
  stopping_ = true;
  acceptor_.join();
  ::close(listen_fd_);
  ResetAll();
}

void TcpProxy::ResetAll() {
  std::list<std::unique_ptr<Link>> links;
  {
    std::lock_guard lock(mu_);
    links.swap(links_);
  }
  for (auto& link : links) link->Close();
}

void TcpProxy::AcceptLoop() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, kPollMs) <= 0) continue;
    const int client = ::accept(listen_fd_, nullptr, nullptr);
    if (client < 0) continue;
    if (refusing_) {
      const linger hard{1, 0};
      ::setsockopt(client, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
      ::close(client);
      continue;
    }
    int server = -1;
    for (size_t tried = 0; tried < target_ports_.size() && server < 0; ++tried) {
      const size_t i = (next_target_ + tried) % target_ports_.size();
      server = ::socket(AF_INET, SOCK_STREAM, 0);
      const sockaddr_in target = Loopback(target_ports_[i]);
      if (::connect(server, reinterpret_cast<const sockaddr*>(&target), sizeof target) == 0) {
        next_target_ = i;
      } else {
        ::close(server);
        server = -1;
      }
    }
    if (server < 0) {
      ::close(client);
      continue;
    }
    auto link = std::make_unique<Link>();
    link->client = client;
    link->server = server;
    Link& l = *link;
    l.up = std::thread([this, &l] { Pump(l.client, l.server, l.stop); });
    l.down = std::thread([this, &l] { Pump(l.server, l.client, l.stop); });
    ++accepted_;
    std::lock_guard lock(mu_);
    links_.push_back(std::move(link));
  }
}

void TcpProxy::Pump(int from, int to, const std::atomic<bool>& stop) const {
  std::vector<char> buf(64 * 1024);
  while (!stop) {
    if (stalled_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
      continue;
    }
    pollfd p{from, POLLIN, 0};
    if (::poll(&p, 1, kPollMs) <= 0) continue;
    const ssize_t n = ::recv(from, buf.data(), buf.size(), 0);
    if (n <= 0) {
      ::shutdown(to, SHUT_WR);  // pass the end of the stream on
      return;
    }
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(latency_ms_.load());
    while (!stop && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (stop || !WriteAll(to, buf.data(), static_cast<size_t>(n))) return;
  }
}

}  // namespace fleetflow::testing

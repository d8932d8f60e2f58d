#pragma once
/// A TCP proxy for fault tests: listens on a free port of 127.0.0.1 and forwards every connection
/// to 127.0.0.1:<target_port> (or to the first of several that accepts it), with network faults the
/// test switches on and off: added latency, a stall (nothing passes, as during a partition; TCP
/// holds the bytes and delivers them in order afterwards), connection resets, and refusing new
/// connections.

#include <atomic>
#include <chrono>
#include <list>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace fleetflow::testing {

class TcpProxy {
 public:
  explicit TcpProxy(int target_port) : TcpProxy(std::vector<int>{target_port}) {}
  /// Each connection goes to the first of `target_ports` that accepts it, starting from the one
  /// the last connection went to (the servers of a cluster: one of them may be down).
  explicit TcpProxy(std::vector<int> target_ports);
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  int port() const { return port_; }

  /// Each chunk of bytes is forwarded this long after it was read (both directions).
  void SetLatency(std::chrono::milliseconds latency) { latency_ms_ = latency.count(); }
  /// While stalled nothing is forwarded; the connections stay open.
  void SetStalled(bool stalled) { stalled_ = stalled; }
  /// While refusing, new connections are closed as soon as they are accepted.
  void SetRefusing(bool refusing) { refusing_ = refusing; }
  /// Closes every open connection now (both sides see the connection drop).
  void ResetAll();
  /// Connections accepted and forwarded so far.
  int accepted() const { return accepted_; }

 private:
  struct Link;
  void AcceptLoop();
  void Pump(int from, int to, const std::atomic<bool>& stop) const;

  const std::vector<int> target_ports_;
  size_t next_target_ = 0;  // the acceptor's
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<int64_t> latency_ms_{0};
  std::atomic<bool> stalled_{false};
  std::atomic<bool> refusing_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<int> accepted_{0};
  std::mutex mu_;
  std::list<std::unique_ptr<Link>> links_;
  std::thread acceptor_;
};

}  // namespace fleetflow::testing

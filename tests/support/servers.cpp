#include "servers.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <utility>

extern char** environ;

namespace fleetflow::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string ErrnoText(const std::string& what) { return what + ": " + std::strerror(errno); }

/// Closes a file descriptor on scope exit.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { Reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

std::string Trim(const std::string& s) {
  const char* ws = " \t\r\n";
  const auto b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

std::string Tail(const std::string& s, std::size_t max_chars = 4000) {
  return s.size() <= max_chars ? s : "...\n" + s.substr(s.size() - max_chars);
}

std::uintmax_t FileSize(const std::string& path) {
  std::error_code ec;
  const auto n = fs::file_size(path, ec);
  return ec ? 0 : n;
}

std::string ReadFrom(const std::string& path, std::uintmax_t offset) {
  const std::string all = ReadFile(path);
  return offset < all.size() ? all.substr(offset) : "";
}

int DecodeStatus(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return -1;
}

bool IsExecutable(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

/// Looks `name` up in the colon-separated `path_var`; a name with '/' is taken as is.
std::string SearchPath(const std::string& name, const std::string& path_var) {
  if (name.find('/') != std::string::npos) return IsExecutable(name) ? name : "";
  std::stringstream ss(path_var);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) dir = ".";
    const std::string candidate = dir + "/" + name;
    if (IsExecutable(candidate)) return fs::absolute(candidate).string();
  }
  return "";
}

/// /usr/lib/postgresql/<version>/bin directories, newest version first.
std::vector<std::string> PostgresBinDirs() {
  std::vector<std::pair<double, std::string>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const std::string bin = entry.path().string() + "/bin";
    if (!fs::is_directory(bin, ec)) continue;
    found.emplace_back(std::atof(entry.path().filename().c_str()), bin);
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a > b; });
  std::vector<std::string> dirs;
  for (auto& f : found) dirs.push_back(std::move(f.second));
  return dirs;
}

/// Everything a forked child needs, prepared before fork() so that the child only makes
/// async-signal-safe calls (the test process may have other threads holding locks).
struct SpawnSpec {
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;
  std::string run_as_user;
  int stdout_fd = -1;  // -1: /dev/null
  int stderr_fd = -1;  // -1: /dev/null
};

struct ChildError {
  int stage;
  int err;
};

const char* const kStageNames[] = {"open /dev/null", "dup2",  "setgroups", "setgid",
                                   "setuid",         "chdir", "prctl",     "execve"};

pid_t Spawn(const SpawnSpec& spec) {
  if (spec.argv.empty()) throw std::runtime_error("Spawn: empty argv");

  std::map<std::string, std::string> merged;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv(*e);
    const auto eq = kv.find('=');
    if (eq != std::string::npos) merged[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : spec.env) merged[k] = v;

  const std::string exe = SearchPath(spec.argv[0], merged.count("PATH") ? merged["PATH"] : "");
  if (exe.empty()) throw std::runtime_error("executable not found: " + spec.argv[0]);

  std::vector<std::string> env_strings;
  for (const auto& [k, v] : merged) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy = spec.argv;
  std::vector<char*> argv;
  for (auto& s : argv_copy) argv.push_back(s.data());
  argv.push_back(nullptr);

  bool switch_user = false;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  if (!spec.run_as_user.empty() && ::geteuid() == 0) {
    const passwd* pw = ::getpwnam(spec.run_as_user.c_str());
    if (!pw) throw std::runtime_error("no such user: " + spec.run_as_user);
    switch_user = true;
    uid = pw->pw_uid;
    gid = pw->pw_gid;
    int n = 64;
    groups.resize(n);
    if (::getgrouplist(spec.run_as_user.c_str(), gid, groups.data(), &n) < 0) {
      groups.resize(n);
      ::getgrouplist(spec.run_as_user.c_str(), gid, groups.data(), &n);
    }
    groups.resize(n);
  }

  Fd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (devnull.get() < 0) throw std::runtime_error(ErrnoText("open /dev/null"));
  const int out_fd = spec.stdout_fd >= 0 ? spec.stdout_fd : devnull.get();
  const int err_fd = spec.stderr_fd >= 0 ? spec.stderr_fd : devnull.get();

  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) throw std::runtime_error(ErrnoText("pipe2"));
  Fd err_read(err_pipe[0]);
  Fd err_write(err_pipe[1]);
  const pid_t parent = ::getpid();
  const int max_fd = static_cast<int>(std::min(::sysconf(_SC_OPEN_MAX), 65536L));

  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(ErrnoText("fork"));
  if (pid == 0) {
    auto fail = [&](int stage) {
      const ChildError ce{stage, errno};
      [[maybe_unused]] auto n = ::write(err_pipe[1], &ce, sizeof ce);
      ::_exit(127);
    };
    ::setpgid(0, 0);
    sigset_t all;
    sigemptyset(&all);
    ::sigprocmask(SIG_SETMASK, &all, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) {
      if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);
    }
    if (::dup2(devnull.get(), 0) < 0 || ::dup2(out_fd, 1) < 0 || ::dup2(err_fd, 2) < 0) fail(1);
    // Keep only stdio and the error pipe: no socket or file of the test leaks into the child.
    const int keep = err_pipe[1];
    if (::syscall(SYS_close_range, static_cast<unsigned>(keep + 1), ~0u, 0u) != 0) {
      for (int fd = keep + 1; fd < max_fd; ++fd) ::close(fd);  // kernel without close_range
    }
    for (int fd = 3; fd < keep; ++fd) ::close(fd);
    if (switch_user) {
      if (::setgroups(groups.size(), groups.data()) != 0) fail(2);
      if (::setgid(gid) != 0) fail(3);
      if (::setuid(uid) != 0) fail(4);
      if (::chdir("/") != 0) fail(5);
    }
    // After setuid (which clears it): die with the parent.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail(6);
    if (::getppid() != parent) ::_exit(126);
    ::execve(exe.c_str(), argv.data(), envp.data());
    fail(7);
  }

  ::setpgid(pid, pid);  // also from the parent, so the group exists before we ever signal it
  err_write.Reset();
  ChildError ce{};
  ssize_t n;
  do {
    n = ::read(err_read.get(), &ce, sizeof ce);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof ce)) {
    int st;
    ::waitpid(pid, &st, 0);
    const int stage = ce.stage >= 0 && ce.stage < 8 ? ce.stage : 7;
    throw std::runtime_error("cannot start " + exe + ": " + kStageNames[stage] + ": " +
                             std::strerror(ce.err));
  }
  return pid;
}

/// Connects to 127.0.0.1:port and returns true if the first line the server sends starts with
/// "INFO " (the NATS greeting).
bool NatsGreets(int port) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return false;
  timeval tv{0, 500 * 1000};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return false;
  std::string line;
  char buf[1024];
  while (line.find('\n') == std::string::npos && line.size() < 65536) {
    const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n <= 0) break;
    line.append(buf, static_cast<std::size_t>(n));
  }
  return line.rfind("INFO ", 0) == 0;
}

/// Thrown internally when a server could not bind its port, so Start() retries on another one.
struct PortInUse : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A server that did not start: kills it (`proc`) and throws, with the tail of its `log` since
/// this start. `deadline_s` is how long it was given to get ready, 0 when it exited instead.
/// PortInUse when `port_taken` (its words for a port another process holds, "" for none) is in
/// the log, std::runtime_error otherwise.
[[noreturn]] void ThrowNotStarted(std::unique_ptr<Process>& proc, const std::string& server,
                                  int deadline_s, const std::string& log,
                                  const std::string& port_taken) {
  proc->Stop(SIGKILL, std::chrono::seconds(5));
  proc.reset();
  const std::string msg =
      server +
      (deadline_s == 0 ? " exited" : " not ready after " + std::to_string(deadline_s) + " s") +
      "; log:\n" + Tail(log);
  if (!port_taken.empty() && log.find(port_taken) != std::string::npos) throw PortInUse(msg);
  throw std::runtime_error(msg);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Free functions

int FreePort() {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw std::runtime_error(ErrnoText("socket"));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw std::runtime_error(ErrnoText("bind 127.0.0.1:0"));
  }
  socklen_t len = sizeof addr;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error(ErrnoText("getsockname"));
  }
  return ntohs(addr.sin_port);
}

bool WaitFor(const std::function<bool()>& cond, milliseconds deadline, milliseconds poll) {
  const auto end = Clock::now() + deadline;
  while (true) {
    if (cond()) return true;
    const auto now = Clock::now();
    if (now >= end) return false;
    std::this_thread::sleep_for(std::min<Clock::duration>(poll, end - now));
    if (Clock::now() >= end) return cond();
  }
}

bool PortAcceptsConnections(int port, const std::string& host, milliseconds timeout) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) return false;
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) return false;
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return true;
  if (errno != EINPROGRESS) return false;
  pollfd pfd{fd.get(), POLLOUT, 0};
  if (::poll(&pfd, 1, static_cast<int>(timeout.count())) != 1) return false;
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  return err == 0;
}

std::string FindServerBinary(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "";
  dirs += ":/usr/sbin:/usr/local/sbin:/sbin";
  for (const auto& d : PostgresBinDirs()) dirs += ":" + d;
  return SearchPath(name, dirs);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

CommandResult RunCommand(const std::vector<std::string>& argv, milliseconds timeout,
                         const std::map<std::string, std::string>& env) {
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) throw std::runtime_error(ErrnoText("pipe2"));
  Fd out_r(out_pipe[0]), out_w(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) throw std::runtime_error(ErrnoText("pipe2"));
  Fd err_r(err_pipe[0]), err_w(err_pipe[1]);

  SpawnSpec spec;
  spec.argv = argv;
  spec.env = env;
  spec.stdout_fd = out_w.get();
  spec.stderr_fd = err_w.get();
  const pid_t pid = Spawn(spec);
  out_w.Reset();
  err_w.Reset();

  CommandResult result;
  const auto end = Clock::now() + timeout;
  pollfd fds[2] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_count = 2;
  while (open_count > 0) {
    const auto left = std::chrono::duration_cast<milliseconds>(end - Clock::now()).count();
    if (left <= 0) {
      result.timed_out = true;
      break;
    }
    const int r = ::poll(fds, 2, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw std::runtime_error(ErrnoText("poll"));
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[8192];
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        fds[i].fd = -1;
        --open_count;
      }
    }
  }

  int st = 0;
  if (!result.timed_out) {
    // Output closed: the command is exiting; give it what is left of the timeout.
    const bool exited = WaitFor(
        [&] { return ::waitpid(pid, &st, WNOHANG) == pid; },
        std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(end - Clock::now())),
        milliseconds(5));
    if (exited) {
      result.exit_code = DecodeStatus(st);
      return result;
    }
    result.timed_out = true;
  }
  ::kill(-pid, SIGKILL);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &st, 0);
  result.exit_code = -1;
  result.err += "\n[fleetflow-testing] command timed out after " + std::to_string(timeout.count()) +
                " ms: " + argv[0];
  return result;
}

// ---------------------------------------------------------------------------------------------
// TempDir

TempDir::TempDir(const std::string& prefix) {
  std::string templ = "/tmp/" + prefix + "-XXXXXX";
  if (!::mkdtemp(templ.data())) throw std::runtime_error(ErrnoText("mkdtemp " + templ));
  path_ = templ;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  if (std::getenv("FF_KEEP_TEST_DIRS")) {
    std::fprintf(stderr, "[fleetflow-testing] kept test directory %s\n", path_.c_str());
    return;
  }
  std::error_code ec;
  fs::remove_all(path_, ec);
}

TempDir::TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, "")) {}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    TempDir old(std::move(*this));
    path_ = std::exchange(other.path_, "");
  }
  return *this;
}

void TempDir::ChownTo(const std::string& user) const {
  const passwd* pw = ::getpwnam(user.c_str());
  if (!pw) throw std::runtime_error("no such user: " + user);
  if (::chown(path_.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
    throw std::runtime_error(ErrnoText("chown " + path_ + " to " + user));
  }
}

// ---------------------------------------------------------------------------------------------
// Process

Process::Process(const std::vector<std::string>& argv, const std::string& log_path,
                 const std::map<std::string, std::string>& env, const std::string& run_as_user)
    : log_path_(log_path) {
  Fd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (log.get() < 0) throw std::runtime_error(ErrnoText("open log " + log_path));
  SpawnSpec spec;
  spec.argv = argv;
  spec.env = env;
  spec.run_as_user = run_as_user;
  spec.stdout_fd = log.get();
  spec.stderr_fd = log.get();
  pid_ = Spawn(spec);
}

Process::~Process() { KillAndReap(); }

Process::Process(Process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      status_(std::exchange(other.status_, std::nullopt)),
      log_path_(std::move(other.log_path_)) {}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    KillAndReap();
    pid_ = std::exchange(other.pid_, -1);
    status_ = std::exchange(other.status_, std::nullopt);
    log_path_ = std::move(other.log_path_);
  }
  return *this;
}

void Process::Signal(int sig) const {
  if (pid_ > 0 && !status_) ::kill(pid_, sig);
}

void Process::SignalGroup(int sig) const {
  if (pid_ > 0 && !status_) ::kill(-pid_, sig);
}

std::optional<int> Process::Wait(milliseconds timeout) {
  if (status_) return status_;
  if (pid_ <= 0) return -1;
  auto reaped = [this] {
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) status_ = DecodeStatus(st);
    if (r < 0 && errno == ECHILD) status_ = -1;  // reaped elsewhere
    return status_.has_value();
  };
  WaitFor(reaped, timeout, milliseconds(10));
  return status_;
}

bool Process::Running() { return !Wait(milliseconds(0)).has_value(); }

int Process::Stop(int sig, milliseconds timeout) {
  if (Running()) {
    Signal(sig);
    if (!Wait(timeout)) KillAndReap();
  }
  return status_.value_or(-1);
}

std::string Process::ReadLog() const { return ReadFile(log_path_); }

void Process::KillAndReap() noexcept {
  if (pid_ <= 0 || status_) return;
  ::kill(-pid_, SIGKILL);
  ::kill(pid_, SIGKILL);
  int st = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &st, 0);
  } while (r < 0 && errno == EINTR);
  status_ = r == pid_ ? DecodeStatus(st) : -1;
}

// ---------------------------------------------------------------------------------------------
// NatsServer

NatsServer::NatsServer() : NatsServer({}, "") {}

NatsServer::NatsServer(std::vector<std::string> extra_args, std::string config_file)
    : dir_("ff-nats"), extra_args_(std::move(extra_args)), config_file_(std::move(config_file)) {}

NatsServer::~NatsServer() {
  try {
    Stop();
    // The server answers some failures only with a fixed sentence ("error creating store for
    // stream") and writes the cause to its log: its errors go to stderr, which a test runner
    // shows when the test failed.
    std::istringstream log(ReadLog());
    std::vector<std::string> errors;
    for (std::string line; std::getline(log, line);) {
      if (line.find("[ERR]") != std::string::npos) errors.push_back(line);
    }
    const std::size_t shown = std::min<std::size_t>(errors.size(), 20);
    for (std::size_t i = errors.size() - shown; i < errors.size(); ++i) {
      std::fprintf(stderr, "nats-server :%d %s\n", port_, errors[i].c_str());
    }
  } catch (...) {
  }
}

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

std::string DefaultServer() {
  const std::string chosen = Env("FF_NATS_SERVER");
  return chosen.empty() ? FindServerBinary("nats-server") : chosen;
}

}  // namespace

bool NatsServer::Available() { return !DefaultServer().empty(); }

std::string NatsServer::Server210() {
  std::string path = Env("FF_NATS210_SERVER");
  if (path.empty()) path = "/opt/fleetflow/nats-server-2.10/nats-server";
  return ::access(path.c_str(), X_OK) == 0 ? path : "";
}

void NatsServer::UseServer210() {
  binary_ = Server210();
  if (binary_.empty()) {
    throw std::runtime_error(
        "nats-server 2.10 not installed: run scripts/nats210.sh (scripts/deps.sh does)");
  }
}

bool NatsServer::StreamsPartition() { return Env("FF_NATS_PARTITIONING") == "stream"; }

void NatsServer::MapPartitions(int partitions, const std::string& prefix) {
  if (StreamsPartition()) return;
  mapping_ = "mappings = {\n  \"vehicle.*.*\": \"" + prefix + ".{{partition(" +
             std::to_string(partitions) + ",1)}}.{{wildcard(1)}}.{{wildcard(2)}}\"\n}\n";
  WriteConfig();
}

void NatsServer::ListenForLeafNodes(int advertise_port) {
  if (leafnode_port_ == 0) leafnode_port_ = FreePort();
  leaf_advertise_port_ = advertise_port;
  WriteConfig();
}

void NatsServer::LeafOf(int hub_port, const std::string& domain) {
  leaf_hub_port_ = hub_port;
  leaf_domain_ = domain;
  WriteConfig();
}

void NatsServer::WriteConfig() {
  config_file_ = dir_.File("server.conf");
  std::ofstream out(config_file_);
  out << mapping_;
  if (leafnode_port_ != 0) {
    out << "leafnodes {\n  listen: \"127.0.0.1:" << leafnode_port_ << "\"\n";
    if (leaf_advertise_port_ != 0) {
      out << "  advertise: \"127.0.0.1:" << leaf_advertise_port_ << "\"\n";
    }
    out << "}\n";
  }
  if (leaf_hub_port_ != 0) {
    out << "jetstream {\n  domain: " << leaf_domain_ << "\n}\n"
        << "leafnodes {\n  reconnect: \"1s\"\n  remotes: [\n    { url: \"nats://127.0.0.1:"
        << leaf_hub_port_
        << "\", deny_exports: [\"vehicle.*.*\"], deny_imports: [\"vehicle.*.*\"] }\n  ]\n}\n";
  }
}

void NatsServer::Start() {
  if (running()) return;
  if (started_once_) return Launch();
  for (int attempt = 1;; ++attempt) {
    port_ = FreePort();
    try {
      Launch();
      started_once_ = true;
      return;
    } catch (const PortInUse&) {
      if (attempt == 5) throw;
    }
  }
}

void NatsServer::Launch() {
  const std::string exe = binary_.empty() ? DefaultServer() : binary_;
  if (exe.empty()) throw std::runtime_error("nats-server not installed: run scripts/deps.sh");
  std::vector<std::string> argv = {exe,   "-a",  "127.0.0.1", "-p", std::to_string(port_),
                                   "-js", "-sd", store_dir()};
  if (!config_file_.empty()) {
    argv.push_back("-c");
    argv.push_back(config_file_);
  }
  argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());

  const std::string log = dir_.File("nats-server.log");
  const auto offset = FileSize(log);
  proc_ = std::make_unique<Process>(argv, log);
  // Our own log must say ready: a greeting alone could come from another server on this port.
  const bool ready = WaitFor(
      [&] {
        if (!proc_->Running()) return true;
        return ReadFrom(log, offset).find("Server is ready") != std::string::npos &&
               NatsGreets(port_);
      },
      std::chrono::seconds(10), milliseconds(20));
  if (ready && proc_->Running()) return;

  ThrowNotStarted(proc_, "nats-server on port " + std::to_string(port_), ready ? 0 : 10,
                  ReadFrom(log, offset), started_once_ ? "" : "address already in use");
}

void NatsServer::Stop() {
  if (!proc_) return;
  proc_->Stop(SIGTERM, std::chrono::seconds(10));
  proc_.reset();
}

void NatsServer::Kill() {
  if (!proc_) return;
  proc_->Stop(SIGKILL, std::chrono::seconds(10));
  proc_.reset();
}

void NatsServer::Signal(int sig) {
  if (proc_) proc_->Signal(sig);
}

void NatsServer::Restart() {
  Stop();
  Start();
}

bool NatsServer::running() { return proc_ && proc_->Running(); }

std::string NatsServer::url() const { return "nats://127.0.0.1:" + std::to_string(port_); }

std::string NatsServer::ReadLog() const { return ReadFile(dir_.File("nats-server.log")); }

// ---------------------------------------------------------------------------------------------
// PostgresServer

PostgresServer::PostgresServer() : PostgresServer(std::vector<std::string>{}) {}

PostgresServer::PostgresServer(std::vector<std::string> settings, Preload preload)
    : dir_("ff-pg"), settings_(std::move(settings)), preload_(preload) {
  const std::string postgres = FindServerBinary("postgres");
  if (!postgres.empty()) bin_dir_ = fs::path(postgres).parent_path().string();
  if (::geteuid() == 0) {
    run_as_ = "postgres";
    if (::getpwnam(run_as_.c_str())) dir_.ChownTo(run_as_);
  }
}

PostgresServer::~PostgresServer() {
  try {
    Stop();
  } catch (...) {
  }
}

namespace {

/// Whether extension `name` is installed for the server binary found (its control file, and
/// `library` in the package library directory unless empty); `where` gets the control file.
bool ExtensionInstalled(const std::string& name, const std::string& library, std::string* where) {
  // The server finds its files relative to its real binary: <prefix>/lib/postgresql/<major>/bin
  // on Debian, with the extensions in <prefix>/share/postgresql/<major>/extension and the
  // libraries in <prefix>/lib/postgresql/<major>/lib.
  const std::string postgres = FindServerBinary("postgres");
  std::error_code ec;
  const fs::path bin = postgres.empty() ? fs::path() : fs::canonical(postgres, ec).parent_path();
  const fs::path major_dir = bin.parent_path();
  const std::string major = major_dir.filename().string();
  const fs::path prefix = major_dir.parent_path().parent_path().parent_path();
  const fs::path control = prefix / "share/postgresql" / major / "extension" / (name + ".control");
  if (where) *where = control.string();
  return !postgres.empty() && !ec && fs::exists(control, ec) &&
         (library.empty() || fs::exists(major_dir / "lib" / library, ec));
}

}  // namespace

bool PostgresServer::TimescaleDbInstalled(std::string* where) {
  return ExtensionInstalled("timescaledb", "timescaledb.so", where);
}

bool PostgresServer::PostGisInstalled(std::string* where) {
  return ExtensionInstalled("postgis", "postgis-3.so", where);
}

bool PostgresServer::Available() {
  for (const char* tool : {"postgres", "initdb", "pg_isready", "psql"}) {
    if (FindServerBinary(tool).empty()) return false;
  }
  return ::geteuid() != 0 || ::getpwnam("postgres") != nullptr;
}

std::string PostgresServer::Bin(const std::string& name) const {
  if (!bin_dir_.empty() && IsExecutable(bin_dir_ + "/" + name)) return bin_dir_ + "/" + name;
  const std::string found = FindServerBinary(name);
  if (found.empty()) {
    throw std::runtime_error(name + " (PostgreSQL) not installed: run scripts/deps.sh");
  }
  return found;
}

void PostgresServer::Start() {
  if (running()) return;
  std::string control;
  if (Preloads(preload_, Preload::kTimescaleDb) && !TimescaleDbInstalled(&control)) {
    throw std::runtime_error("TimescaleDB is not installed (" + control +
                             " missing), so PostgreSQL cannot preload it: run "
                             "scripts/timescaledb.sh as root (scripts/deps.sh runs it)");
  }
  if (!run_as_.empty() && !::getpwnam(run_as_.c_str())) {
    throw std::runtime_error("running as root but there is no user 'postgres' to run PostgreSQL");
  }
  const std::map<std::string, std::string> locale = {{"LC_ALL", "C"}, {"LANG", "C"}};
  if (!initialised_) {
    const std::string log = dir_.File("initdb.log");
    Process initdb({Bin("initdb"), "-D", data_dir(), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                    "--locale=C", "--no-sync"},
                   log, locale, run_as_);
    const auto status = initdb.Wait(std::chrono::seconds(120));
    if (status != 0) {
      throw std::runtime_error("initdb failed (status " +
                               (status ? std::to_string(*status) : std::string("timeout")) +
                               "); log:\n" + Tail(ReadFile(log)));
    }
    initialised_ = true;
  }
  if (started_once_) return Launch();
  LaunchOnAFreePort();
  Psql("CREATE DATABASE fleetflow", "postgres");
}

void PostgresServer::LaunchOnAFreePort() {
  for (int attempt = 1;; ++attempt) {
    port_ = FreePort();
    try {
      Launch();
      break;
    } catch (const PortInUse&) {
      if (attempt == 5) throw;
    }
  }
  started_once_ = true;
}

void PostgresServer::StartStandbyOf(const PostgresServer& primary) {
  if (initialised_) {
    throw std::runtime_error("StartStandbyOf: this PostgresServer has a data directory already");
  }
  BaseBackupOf(primary);
  LaunchOnAFreePort();
  WaitStreamingFrom(primary);
}

void PostgresServer::RejoinAsStandbyOf(const PostgresServer& primary) {
  if (!started_once_) {
    throw std::runtime_error("RejoinAsStandbyOf: this PostgresServer never ran");
  }
  if (running()) {
    throw std::runtime_error("RejoinAsStandbyOf: PostgreSQL on port " + std::to_string(port_) +
                             " still runs");
  }
  std::error_code ec;
  fs::remove_all(data_dir(), ec);
  if (ec) {
    throw std::runtime_error("RejoinAsStandbyOf: cannot remove " + data_dir() + ": " +
                             ec.message());
  }
  BaseBackupOf(primary);
  Launch();  // its own port again: what the pair's conninfo names
  WaitStreamingFrom(primary);
}

void PostgresServer::BaseBackupOf(const PostgresServer& primary) {
  if (!run_as_.empty() && !::getpwnam(run_as_.c_str())) {
    throw std::runtime_error("running as root but there is no user 'postgres' to run PostgreSQL");
  }
  // -R writes standby.signal and primary_conninfo; -X stream copies the WAL written meanwhile;
  // -c fast does not wait for the primary's next checkpoint.
  const std::string log = dir_.File("pg_basebackup.log");
  Process backup(
      {Bin("pg_basebackup"), "-h", "127.0.0.1", "-p", std::to_string(primary.port()), "-U",
       "postgres", "-D", data_dir(), "-R", "-X", "stream", "-c", "fast", "--no-sync"},
      log, {{"LC_ALL", "C"}, {"LANG", "C"}}, run_as_);
  const auto status = backup.Wait(std::chrono::seconds(120));
  if (status != 0) {
    throw std::runtime_error("pg_basebackup from port " + std::to_string(primary.port()) +
                             " failed (status " +
                             (status ? std::to_string(*status) : std::string("timeout")) +
                             "); log:\n" + Tail(ReadFile(log)));
  }
  initialised_ = true;
}

void PostgresServer::WaitStreamingFrom(const PostgresServer& primary) {
  const bool streaming =
      WaitFor([&] { return TryPsql("SELECT status FROM pg_stat_wal_receiver") == "streaming"; },
              std::chrono::seconds(30), milliseconds(50));
  if (!streaming) {
    throw std::runtime_error("standby on port " + std::to_string(port_) +
                             " does not stream from port " + std::to_string(primary.port()) +
                             " after 30 s; log:\n" + Tail(ReadLog()));
  }
}

void PostgresServer::Promote() {
  Psql("SELECT pg_promote(true, 30)");
  if (!WaitFor([&] { return TryPsql("SELECT pg_is_in_recovery()") == "f"; },
               std::chrono::seconds(30))) {
    throw std::runtime_error("PostgreSQL on port " + std::to_string(port_) +
                             " is still in recovery 30 s after pg_promote(); log:\n" +
                             Tail(ReadLog()));
  }
}

bool PostgresServer::InRecovery() const { return Psql("SELECT pg_is_in_recovery()") == "t"; }

void PostgresServer::Launch() {
  std::string libraries;
  if (Preloads(preload_, Preload::kTimescaleDb)) libraries = "timescaledb";
  if (Preloads(preload_, Preload::kPgStatStatements)) {
    libraries += std::string(libraries.empty() ? "" : ",") + "pg_stat_statements";
  }
  std::vector<std::string> argv = {Bin("postgres"),
                                   "-D",
                                   data_dir(),
                                   "-p",
                                   std::to_string(port_),
                                   "-k",
                                   dir(),
                                   "-c",
                                   "listen_addresses=127.0.0.1",
                                   "-c",
                                   "fsync=off",
                                   "-c",
                                   "full_page_writes=off",
                                   "-c",
                                   "shared_preload_libraries=" + libraries};
  if (Preloads(preload_, Preload::kTimescaleDb)) {
    argv.push_back("-c");
    argv.push_back("timescaledb.telemetry_level=off");
  }
  for (const auto& s : settings_) {
    argv.push_back("-c");
    argv.push_back(s);
  }
  const std::string log = dir_.File("postgres.log");
  const auto offset = FileSize(log);
  proc_ = std::make_unique<Process>(argv, log, std::map<std::string, std::string>{{"LC_ALL", "C"}},
                                    run_as_);
  const std::string isready = Bin("pg_isready");
  const std::string port = std::to_string(port_);
  const bool ready = WaitFor(
      [&] {
        if (!proc_->Running()) return true;
        // "ready to accept connections", or "... read-only connections" (a hot standby).
        if (ReadFrom(log, offset).find("ready to accept") == std::string::npos) {
          return false;
        }
        return RunCommand({isready, "-q", "-h", "127.0.0.1", "-p", port, "-t", "2"},
                          std::chrono::seconds(5))
                   .exit_code == 0;
      },
      std::chrono::seconds(30), milliseconds(50));
  if (ready && proc_->Running()) return;

  ThrowNotStarted(proc_, "postgres on port " + port, ready ? 0 : 30, ReadFrom(log, offset),
                  started_once_ ? "" : "Address already in use");
}

void PostgresServer::Stop() {
  if (!proc_) return;
  proc_->Stop(SIGINT, std::chrono::seconds(30));  // SIGINT = fast shutdown
  proc_->SignalGroup(SIGKILL);                    // no-op after a clean exit
  proc_.reset();
}

namespace {

/// The System V shared memory id a running postmaster recorded in postmaster.pid (its 7th line,
/// "<key> <id>"), or -1.
int SharedMemoryId(const std::string& pid_file) {
  std::istringstream in(ReadFile(pid_file));
  std::string line;
  for (int i = 0; i < 7 && std::getline(in, line); ++i) {
  }
  long key = 0, id = -1;
  std::istringstream(line) >> key >> id;
  return static_cast<int>(id);
}

/// Whether any process is still attached to shared memory segment `id`.
bool SharedMemoryAttached(int id) {
  struct shmid_ds ds {};
  return id >= 0 && ::shmctl(id, IPC_STAT, &ds) == 0 && ds.shm_nattch > 0;
}

}  // namespace

void PostgresServer::Kill() {
  if (!proc_) return;
  const int shm = SharedMemoryId(data_dir() + "/postmaster.pid");
  proc_->SignalGroup(SIGKILL);
  proc_->Wait(std::chrono::seconds(10));
  proc_.reset();
  // The backends (each in a session of its own, so not in the postmaster's group) notice the
  // postmaster's death and exit, but may hold the shared memory a moment longer: a start before
  // they detach fails with "pre-existing shared memory block is still in use". Wait for what
  // postgres itself checks.
  if (!WaitFor([&] { return !SharedMemoryAttached(shm); }, std::chrono::seconds(30))) {
    throw std::runtime_error("PostgreSQL's backends still hold shared memory 30 s after the kill");
  }
}

void PostgresServer::Restart() {
  Stop();
  Start();
}

bool PostgresServer::running() { return proc_ && proc_->Running(); }

std::string PostgresServer::conninfo() const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " user=postgres dbname=fleetflow";
}

std::string PostgresServer::url() const {
  return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/fleetflow";
}

std::map<std::string, std::string> PostgresServer::env() const {
  return {{"PGHOST", "127.0.0.1"},
          {"PGPORT", std::to_string(port_)},
          {"PGUSER", "postgres"},
          {"PGDATABASE", "fleetflow"}};
}

std::string PostgresServer::ReadLog() const { return ReadFile(dir_.File("postgres.log")); }

std::string PostgresServer::Psql(const std::string& sql, const std::string& dbname) const {
  const CommandResult r = RunCommand(
      {Bin("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
       std::to_string(port_), "-U", "postgres", "-d", dbname, "-c", sql},
      std::chrono::seconds(60), {{"PGCONNECT_TIMEOUT", "10"}, {"PGAPPNAME", "fleetflow-tests"}});
  if (r.exit_code != 0) {
    throw std::runtime_error("psql failed (exit " + std::to_string(r.exit_code) + ") for: " + sql +
                             "\n" + Trim(r.err));
  }
  return Trim(r.out);
}

std::optional<std::string> PostgresServer::TryPsql(const std::string& sql,
                                                   const std::string& dbname) const {
  try {
    return Psql(sql, dbname);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// ---------------------------------------------------------------------------------------------
// PostgresPair

namespace {

std::vector<std::string> ReplicationSettings(std::vector<std::string> settings) {
  settings.insert(settings.begin(), {"wal_level=replica", "max_wal_senders=4", "hot_standby=on"});
  return settings;
}

}  // namespace

PostgresPair::PostgresPair(Commit commit, const std::vector<std::string>& settings)
    : commit_(commit),
      primary_(ReplicationSettings(settings)),
      standby_(ReplicationSettings(settings)) {}

void PostgresPair::Start() {
  primary_.Start();
  // initdb lets replication connections from 127.0.0.1 in already (trust); said once more here,
  // so that the pair does not depend on that default.
  std::ofstream(primary_.data_dir() + "/pg_hba.conf", std::ios::app)
      << "host replication postgres 127.0.0.1/32 trust\n";
  primary_.Psql("SELECT pg_reload_conf()");
  standby_.StartStandbyOf(primary_);
  MakeSynchronous();
}

void PostgresPair::MakeSynchronous() {
  if (commit_ == Commit::kAsynchronous) return;
  // After the backup, so that the standby does not inherit it (it would wait for a standby of
  // its own once promoted).
  PostgresServer& p = primary();
  p.Psql("ALTER SYSTEM SET synchronous_standby_names = '*'");
  p.Psql("SELECT pg_reload_conf()");
  if (!WaitFor(
          [&] {
            return p.TryPsql("SELECT string_agg(sync_state, ',') FROM pg_stat_replication") ==
                   "sync";
          },
          std::chrono::seconds(30))) {
    throw std::runtime_error("the standby on port " + std::to_string(standby().port()) +
                             " is not the synchronous standby of port " + std::to_string(p.port()) +
                             " after 30 s; primary's log:\n" + Tail(p.ReadLog()));
  }
}

void PostgresPair::Rejoin() {
  PostgresServer& promoted = standby();
  PostgresServer& dead = primary();
  if (promoted.InRecovery()) {
    throw std::runtime_error("Rejoin: the standby on port " + std::to_string(promoted.port()) +
                             " has not been promoted");
  }
  dead.Kill();  // no-op when killed already
  dead.RejoinAsStandbyOf(promoted);
  swapped_ = !swapped_;
  MakeSynchronous();
}

std::string PostgresPair::conninfo() const {
  return "host=127.0.0.1,127.0.0.1 port=" + std::to_string(primary_.port()) + "," +
         std::to_string(standby_.port()) +
         " user=postgres dbname=fleetflow target_session_attrs=read-write";
}

// ---------------------------------------------------------------------------------------------
// PrometheusServer

PrometheusServer::PrometheusServer(std::string config) : dir_("ff-prometheus") {
  std::ofstream(dir_.File("prometheus.yml")) << config;
}

PrometheusServer::~PrometheusServer() {
  try {
    Stop();
  } catch (...) {
  }
}

bool PrometheusServer::Available() {
  return !FindServerBinary("prometheus").empty() && !FindServerBinary("promtool").empty();
}

void PrometheusServer::Start() {
  if (proc_ && proc_->Running()) return;
  const std::string exe = FindServerBinary("prometheus");
  if (exe.empty()) throw std::runtime_error("prometheus not installed: run scripts/deps.sh");
  const std::string log = dir_.File("prometheus.log");
  for (int attempt = 1;; ++attempt) {
    port_ = FreePort();
    const auto offset = FileSize(log);
    proc_ = std::make_unique<Process>(
        std::vector<std::string>{exe, "--config.file=" + dir_.File("prometheus.yml"),
                                 "--storage.tsdb.path=" + dir_.File("data"),
                                 "--web.listen-address=127.0.0.1:" + std::to_string(port_)},
        log);
    const bool ready = WaitFor(
        [&] {
          if (!proc_->Running()) return true;
          return ReadFrom(log, offset).find("Server is ready to receive web requests") !=
                     std::string::npos &&
                 PortAcceptsConnections(port_);
        },
        std::chrono::seconds(30), milliseconds(20));
    if (ready && proc_->Running()) return;
    const std::string out = ReadFrom(log, offset);
    proc_->Stop(SIGKILL, std::chrono::seconds(5));
    proc_.reset();
    if (attempt < 5 && out.find("address already in use") != std::string::npos) continue;
    throw std::runtime_error("prometheus on port " + std::to_string(port_) +
                             (ready ? " exited" : " not ready after 30 s") + "; log:\n" +
                             Tail(out));
  }
}

void PrometheusServer::Stop() {
  if (!proc_) return;
  proc_->Stop(SIGTERM, std::chrono::seconds(10));
  proc_.reset();
}

std::string PrometheusServer::ReadLog() const { return ReadFile(dir_.File("prometheus.log")); }

}  // namespace fleetflow::testing

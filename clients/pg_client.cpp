#include "pg_client.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <pqxx/pqxx>
#include <tuple>
#include <utility>

namespace fleetflow::pg {
namespace {

int64_t FloorDiv(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

bool IsUri(std::string_view conninfo) {
  return conninfo.starts_with("postgresql://") || conninfo.starts_with("postgres://");
}

/// The options of a connection string as libpq reads them (key=value and URI forms alike), in
/// libpq's order, only those the string sets; nullopt when libpq cannot parse it.
std::optional<std::vector<std::pair<std::string, std::string>>> ParseConninfo(
    std::string_view conninfo) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(std::string(conninfo).c_str(), &err);
  if (err != nullptr) PQfreemem(err);  // may quote part of a password: never shown
  if (opts == nullptr) return std::nullopt;
  std::vector<std::pair<std::string, std::string>> out;
  for (const PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
    if (o->val != nullptr) out.emplace_back(o->keyword, o->val);
  }
  PQconninfoFree(opts);
  return out;
}

/// The password a connection string sets, "" when none (or when libpq cannot parse it).
std::string PasswordOf(std::string_view conninfo) {
  if (const auto opts = ParseConninfo(conninfo)) {
    for (const auto& [key, value] : *opts) {
      if (key == "password") return value;
    }
  }
  return "";
}

/// One line of text from a libpq/libpqxx message, without the password of `conninfo`.
std::string Clean(std::string message, std::string_view conninfo = {}) {
  std::string out;
  bool space = false;
  for (char c : message) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  const std::string password = PasswordOf(conninfo);
  if (!password.empty()) {
    for (size_t p; (p = out.find(password)) != std::string::npos;) {
      out.replace(p, password.size(), "***");
    }
  }
  return out;
}

/// Adds `key=value` to a conninfo string (either form) unless it already sets the key.
/// `conninfo` with `key` = `value`, unless it sets `key` itself (as libpq parses it: a value
/// that merely contains the key's name does not count).
std::string AddParam(const std::string& conninfo, const std::string& key,
                     const std::string& value) {
  if (const auto opts = ParseConninfo(conninfo)) {
    for (const auto& [k, _] : *opts) {
      if (k == key) return conninfo;
    }
  }
  if (IsUri(conninfo)) {
    return conninfo + (conninfo.find('?') == std::string::npos ? "?" : "&") + key + "=" + value;
  }
  return conninfo + (conninfo.empty() ? "" : " ") + key + "=" + value;
}

std::string ArrayLiteral(const std::vector<std::optional<double>>& values) {
  std::string out = "{";
  char buf[32];
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    const auto& v = values[i];
    if (!v || !std::isfinite(*v)) {
      out += "NULL";
      continue;
    }
    const auto res = std::to_chars(buf, buf + sizeof buf, *v);
    out.append(buf, res.ptr);
  }
  out += '}';
  return out;
}

}  // namespace

bool IsValidIdentifier(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  if (!((name[0] >= 'a' && name[0] <= 'z') || name[0] == '_')) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

std::string QuoteIdent(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string QuoteLiteral(std::string_view text) {
  std::string out;
  bool backslash = false;
  for (char c : text) {
    if (c == '\'') out += '\'';
    if (c == '\\') {
      out += '\\';
      backslash = true;
    }
    out += c;
  }
  return (backslash ? "E'" : "'") + out + "'";
}

std::string RedactConninfo(std::string_view conninfo) {
  const auto opts = ParseConninfo(conninfo);
  if (!opts) return "(a connection string libpq cannot parse)";
  std::string out;
  for (const auto& [key, value] : *opts) {
    if (!out.empty()) out += ' ';
    out += key + '=';
    if (key == "password") {
      out += "***";
    } else if (!value.empty() && value.find_first_of(" \\'") == std::string::npos) {
      out += value;
    } else {
      out += '\'';
      for (char c : value) {
        if (c == '\\' || c == '\'') out += '\\';
        out += c;
      }
      out += '\'';
    }
  }
  return out;
}

std::string FormatTimestamp(int64_t ns) {
  const int64_t us = FloorDiv(ns, 1000);
  const int64_t secs = FloorDiv(us, 1'000'000);
  const int64_t days = FloorDiv(secs, 86'400);
  const int64_t sod = secs - days * 86'400;
  const std::chrono::year_month_day ymd{std::chrono::sys_days{std::chrono::days{days}}};
  char buf[128];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u %02lld:%02lld:%02lld.%06lld+00",
                static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                static_cast<unsigned>(ymd.day()), static_cast<long long>(sod / 3600),
                static_cast<long long>(sod / 60 % 60), static_cast<long long>(sod % 60),
                static_cast<long long>(us - secs * 1'000'000));
  return buf;
}

struct Connection::Impl {
  explicit Impl(const std::string& conninfo) : conn(conninfo) {}

  /// Translates the exception in flight into Error; `op` says what was being done.
  /// `committing`: it came from a COMMIT, so a lost session leaves its outcome unknown
  /// (libpqxx says in_doubt_error when it sees the session closed, but a server that ends the
  /// session with an error of its own, e.g. a terminated backend, gives an sql_error).
  [[noreturn]] void Rethrow(const std::string& op, bool committing = false) {
    try {
      throw;
    } catch (const Error&) {
      throw;
    } catch (const pqxx::broken_connection& e) {
      throw Error("PostgreSQL " + op + " failed, connection lost" +
                      (committing ? " during COMMIT, its outcome unknown: " : ": ") +
                      Clean(e.what()),
                  true, "", committing);
    } catch (const pqxx::in_doubt_error& e) {
      throw Error("PostgreSQL " + op + " failed, commit outcome unknown: " + Clean(e.what()), true,
                  "", true);
    } catch (const pqxx::sql_error& e) {
      const std::string& state = e.sqlstate();
      const bool lost = !conn.is_open() || state.starts_with("08") || state.starts_with("57P");
      throw Error("PostgreSQL " + op + " failed" +
                      (lost && committing ? " during COMMIT, its outcome unknown: " : ": ") +
                      Clean(e.what()) + (state.empty() ? "" : " (SQLSTATE " + state + ")"),
                  lost, state, lost && committing);
    } catch (const std::exception& e) {
      const bool lost = !conn.is_open();
      throw Error("PostgreSQL " + op + " failed" +
                      (lost && committing ? " during COMMIT, its outcome unknown: " : ": ") +
                      Clean(e.what()),
                  lost, "", lost && committing);
    }
  }

  /// Reads what the server sent while the session was idle, so a session it closed (shutdown,
  /// idle timeout) fails here as broken_connection rather than inside a statement. libpqxx 6.4
  /// leaks the error result of a statement run on a dead session.
  void Poll() { conn.get_notifs(); }

  pqxx::connection conn;
  std::map<std::string, int> staging_backend;  // staging table -> backend pid that created it
};

Connection::Connection(std::unique_ptr<Impl> impl, std::string server, std::string description)
    : impl_(std::move(impl)), server_(std::move(server)), description_(std::move(description)) {}

Connection::~Connection() = default;

std::unique_ptr<Connection> Connection::Connect(const std::string& conninfo,
                                                std::chrono::seconds connect_timeout) {
  std::string full = conninfo;
  if (std::getenv("PGCONNECT_TIMEOUT") == nullptr) {
    full = AddParam(full, "connect_timeout", std::to_string(connect_timeout.count()));
  }
  full = AddParam(full, "fallback_application_name", "fleetflow");
  if (!conninfo.empty() && !ParseConninfo(conninfo)) {
    // Not a connection problem: no retry fixes it. libpq's message is not shown, as it may
    // quote part of a password.
    throw Error(
        "the PostgreSQL connection string is not valid (libpq cannot parse it): write key=value "
        "pairs separated by spaces, quote values containing spaces with '...', or use a "
        "postgresql:// URI",
        false);
  }
  const std::string where =
      conninfo.empty() ? std::string("PG* environment") : RedactConninfo(conninfo);
  std::unique_ptr<Impl> impl;
  try {
    impl = std::make_unique<Impl>(full);
    impl->conn.set_variable("client_min_messages", "warning");
  } catch (const std::exception& e) {
    throw Error("cannot connect to PostgreSQL (" + where + "): " + Clean(e.what(), conninfo), true);
  }
  // PQhost and PQport name the server libpq kept: with several hosts in the connection string
  // (host=a,b port=p,q), the one it connected to, not the list.
  auto& c = impl->conn;
  const char* host = c.hostname();
  const std::string host_text = host && *host ? host : "(socket)";
  const std::string port = c.port() ? c.port() : "";
  const std::string description = "host=" + host_text + " port=" + port +
                                  " dbname=" + (c.dbname() ? c.dbname() : "") +
                                  " user=" + (c.username() ? c.username() : "");
  return std::unique_ptr<Connection>(
      new Connection(std::move(impl), host_text + ":" + port, description));
}

ServerInfo Connection::Identify() {
  const Rows rows = Exec(
      "SELECT host(inet_server_addr()) || ':' || inet_server_port(), "
      "pg_postmaster_start_time()::text, pg_is_in_recovery(), "
      "current_setting('transaction_read_only') = 'on'");
  ServerInfo info;
  if (rows.size() != 1 || rows[0].size() != 4) return info;
  const Row& r = rows[0];
  info.address = r[0].value_or("");
  info.started = r[1].value_or("");
  info.in_recovery = r[2].value_or("") == "t";
  info.read_only = r[3].value_or("") == "t";
  return info;
}

Rows Connection::Exec(const std::string& sql) {
  try {
    impl_->Poll();
    pqxx::nontransaction tx(impl_->conn);
    const pqxx::result r = tx.exec(sql);
    Rows rows;
    rows.reserve(r.size());
    for (const auto& row : r) {
      Row out;
      out.reserve(row.size());
      for (const auto& f : row) {
        out.push_back(f.is_null() ? std::nullopt : std::optional<std::string>(f.c_str()));
      }
      rows.push_back(std::move(out));
    }
    return rows;
  } catch (...) {
    impl_->Rethrow("query");
  }
}

void Connection::ExecInTransaction(const std::vector<std::string>& statements) {
  try {
    impl_->Poll();
    pqxx::work tx(impl_->conn);
    for (const auto& sql : statements) tx.exec(sql);
    tx.commit();
  } catch (...) {
    impl_->Rethrow("transaction");
  }
}

bool Connection::HasExtension(const std::string& name) {
  return !Exec("SELECT 1 FROM pg_available_extensions WHERE name = " + QuoteLiteral(name)).empty();
}

uint64_t Connection::CopyViaStaging(const std::string& staging, const std::vector<ValuesRow>& rows,
                                    const std::string& then_sql, CopyTimings* timings) {
  if (!IsValidIdentifier(staging)) {
    throw std::invalid_argument("CopyViaStaging: invalid staging table name '" + staging + "'");
  }
  auto& conn = impl_->conn;
  bool committing = false;
  try {
    impl_->Poll();
    const int backend = conn.backendpid();
    auto it = impl_->staging_backend.find(staging);
    if (it == impl_->staging_backend.end() || it->second != backend) {
      pqxx::nontransaction tx(conn);
      tx.exec("CREATE TEMP TABLE IF NOT EXISTS " + QuoteIdent(staging) +
              " (vehicle_id text NOT NULL, \"time\" timestamptz NOT NULL,"
              " v double precision[] NOT NULL) ON COMMIT DELETE ROWS");
      impl_->staging_backend[staging] = backend;
    }
    using Steady = std::chrono::steady_clock;
    const auto since = [](Steady::time_point& t) {
      const auto now = Steady::now();
      const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now - t).count();
      t = now;
      return ns;
    };
    auto t = Steady::now();
    pqxx::work tx(conn);
    {
      pqxx::stream_to copy(tx, staging);
      for (const auto& row : rows) {
        copy << std::make_tuple(row.vehicle_id, FormatTimestamp(row.time_ns),
                                ArrayLiteral(row.values));
      }
      copy.complete();
    }
    CopyTimings took;
    took.copy_ns = since(t);
    const pqxx::result r = tx.exec(then_sql);
    took.upsert_ns = since(t);
    committing = true;
    tx.commit();
    took.commit_ns = since(t);
    if (timings != nullptr) *timings = took;
    return r.affected_rows();
  } catch (...) {
    impl_->Rethrow("bulk write through " + staging, committing);
  }
}

bool Connection::IsOpen() const { return impl_->conn.is_open(); }

}  // namespace fleetflow::pg

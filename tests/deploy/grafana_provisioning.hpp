// Reading the Grafana provisioning in deploy/grafana: the dashboards' JSON and the datasources
// they may use. Shared by the tests of the PostgreSQL dashboards and of the engine dashboard.
#pragma once

#include <rapidjson/document.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

#include "build_paths.hpp"
#include "servers.hpp"

namespace fleetflow::testing {

inline const std::string kGrafanaDir = ::fleetflow::testing::SourceDir() + "/deploy/grafana";

inline rapidjson::Document LoadJson(const std::string& path) {
  rapidjson::Document d;
  d.Parse(ReadFile(path).c_str());
  if (d.HasParseError() || !d.IsObject()) throw std::runtime_error(path + ": not a JSON object");
  return d;
}

/// v[key] when it is a string, else "".
inline std::string Str(const rapidjson::Value& v, const char* key) {
  return v.IsObject() && v.HasMember(key) && v[key].IsString() ? v[key].GetString() : "";
}

/// Calls `f` on every object member named "datasource" in `v`, at any depth.
inline void ForEachDatasourceRef(const rapidjson::Value& v,
                                 const std::function<void(const rapidjson::Value&)>& f) {
  if (v.IsObject()) {
    for (const auto& m : v.GetObject()) {
      if (std::string_view(m.name.GetString()) == "datasource") f(m.value);
      ForEachDatasourceRef(m.value, f);
    }
  } else if (v.IsArray()) {
    for (const auto& e : v.GetArray()) ForEachDatasourceRef(e, f);
  }
}

/// The dashboards in deploy/grafana/dashboards, sorted; with `datasource_type`, only those whose
/// datasource references are all of that type ("postgres", "prometheus").
inline std::vector<std::string> DashboardFiles(const std::string& datasource_type = "") {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(kGrafanaDir + "/dashboards")) {
    if (e.path().extension() != ".json") continue;
    bool all_of_type = true;
    if (!datasource_type.empty()) {
      ForEachDatasourceRef(LoadJson(e.path().string()), [&](const rapidjson::Value& ds) {
        all_of_type &= Str(ds, "type") == datasource_type;
      });
    }
    if (all_of_type) files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

/// uid -> type of every datasource in deploy/grafana/provisioning/datasources/*.yaml (the
/// `uid:` and `type:` of each `- name:` entry).
inline std::map<std::string, std::string> ProvisionedDatasources() {
  std::map<std::string, std::string> found;
  const std::regex entry(R"(^\s*- name:)"), field(R"(^\s*(uid|type):\s*(\S+))");
  for (const auto& e :
       std::filesystem::directory_iterator(kGrafanaDir + "/provisioning/datasources")) {
    if (e.path().extension() != ".yaml") continue;
    std::ifstream in(e.path());
    std::string uid, type;
    const auto flush = [&] {
      if (!uid.empty()) found[uid] = type;
      uid.clear();
      type.clear();
    };
    for (std::string line; std::getline(in, line);) {
      std::smatch m;
      if (std::regex_search(line, entry)) flush();
      if (std::regex_search(line, m, field)) (m[1] == "uid" ? uid : type) = m[2];
    }
    flush();
  }
  return found;
}

}  // namespace fleetflow::testing

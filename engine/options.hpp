#pragma once
/// Typed options: an operator declares each setting once, bound to a member of its options
/// struct. The same declarations make the ConfigSpec (validation, defaults, JSON Schema,
/// reference docs) and the parser that turns a validated Config into the struct, so the struct
/// cannot drift from the spec, and an operator reads its settings once, at construction.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "config.hpp"
#include "registry.hpp"

namespace fleetflow {

/// The pattern of a sensor name (the <sensor> token of vehicle.<id>.<sensor>) and its words, for
/// the options that name a sensor.
inline constexpr char kSensorNamePattern[] = "^[A-Za-z0-9_-]{1,64}$";
inline constexpr char kSensorNameWords[] = "a sensor name: 1 to 64 of A-Z a-z 0-9 _ -";

/// The spec of an options struct `Options` (default-constructible): each field is declared
/// with its name, description and the member it fills; the returned Field takes the fluent
/// settings of config.hpp (Default, Required, Min, Max, Example, ...), as ConfigSpec does.
///
///   struct JoinOptions {
///     int64_t every_ms = 0;
///     std::vector<std::string> sensors;
///   };
///   OptionsSpec<JoinOptions> spec;
///   spec.Integer("every_ms", "Window period.", &JoinOptions::every_ms).Default(int64_t{1000});
///   spec.StringArray("sensors", "Joined sensors.", &JoinOptions::sensors).DefaultJson("[]");
///   spec.Rule("...", [](const JoinOptions& o, std::vector<ConfigProblem>& out) { ... });
///   info.config = spec.config();                          // validation, schema, docs
///   const JoinOptions options = spec.Parse(ctx.config);   // in the factory
///
/// Copies of a spec share its bindings: declare every field before copying it.
template <typename Options>
class OptionsSpec {
 public:
  /// A check across fields on the parsed options; see ConfigSpec::Rule.
  using Check = std::function<void(const Options&, std::vector<ConfigProblem>&)>;

  Field& String(const std::string& name, std::string description, std::string Options::*member) {
    Field& field = spec_.String(name, std::move(description));
    Bind([name, member](const Config& c, Options& o) { o.*member = c.String(name.c_str()); });
    return field;
  }

  /// An integer field into an integer member (the schema's Min/Max keep it in the member's
  /// range), or into a std::chrono::milliseconds member (the field is then in ms).
  template <typename T>
  Field& Integer(const std::string& name, std::string description, T Options::*member) {
    static_assert(std::is_integral_v<T> || std::is_same_v<T, std::chrono::milliseconds>,
                  "an integer field fills an integer or a std::chrono::milliseconds member");
    Field& field = spec_.Integer(name, std::move(description));
    Bind([name, member](const Config& c, Options& o) {
      o.*member = static_cast<T>(c.Integer(name.c_str()));
    });
    return field;
  }

  Field& Number(const std::string& name, std::string description, double Options::*member) {
    Field& field = spec_.Number(name, std::move(description));
    Bind([name, member](const Config& c, Options& o) { o.*member = c.Number(name.c_str()); });
    return field;
  }

  Field& Boolean(const std::string& name, std::string description, bool Options::*member) {
    Field& field = spec_.Boolean(name, std::move(description));
    Bind([name, member](const Config& c, Options& o) { o.*member = c.Boolean(name.c_str()); });
    return field;
  }

  Field& StringArray(const std::string& name, std::string description,
                     std::vector<std::string> Options::*member) {
    Field& field = spec_.StringArray(name, std::move(description));
    Bind([name, member](const Config& c, Options& o) { o.*member = c.StringArray(name.c_str()); });
    return field;
  }

  /// A string field that takes one of `values` (its OneOf, in this order), read as the enum
  /// value paired with it.
  template <typename E>
  Field& Enum(const std::string& name, std::string description, E Options::*member,
              std::vector<std::pair<std::string, E>> values) {
    std::vector<std::string> names;
    for (const auto& v : values) names.push_back(v.first);
    Field& field = spec_.String(name, std::move(description)).OneOf(std::move(names));
    Bind([name, member, values](const Config& c, Options& o) {
      const std::string text = c.String(name.c_str());
      for (const auto& [n, v] : values) {
        if (n == text) {
          o.*member = v;
          return;
        }
      }
      throw std::logic_error("options: field '" + name + "' has the undeclared value " + text);
    });
    return field;
  }

  /// An array of objects, each parsed by `items` into one element of the member. Rules of
  /// `items` are not run (ConfigSpec::ObjectArray keeps the fields only): state them here.
  template <typename Item>
  Field& ObjectArray(const std::string& name, std::string description,
                     std::vector<Item> Options::*member, const OptionsSpec<Item>& items) {
    Field& field = spec_.ObjectArray(name, std::move(description), items.config());
    Bind([name, member, items](const Config& c, Options& o) {
      auto& out = o.*member;
      out.clear();
      for (const Config& item : c.Objects(name.c_str())) out.push_back(items.Parse(item));
    });
    return field;
  }

  /// Adds the fields and rules of a shared group (e.g. the NATS connection settings) here, in
  /// its order, parsed into `member`.
  template <typename Group>
  void Include(Group Options::*member, const OptionsSpec<Group>& group) {
    spec_.Include(group.config());
    Bind([member, group](const Config& c, Options& o) { o.*member = group.Parse(c); });
  }

  /// A cross-field rule, checked on the parsed options (see ConfigSpec::Rule).
  OptionsSpec& Rule(std::string description, Check check) {
    spec_.Rule(std::move(description), [binders = binders_, check = std::move(check)](
                                           const Config& c, std::vector<ConfigProblem>& out) {
      check(Run(*binders, c), out);
    });
    return *this;
  }

  /// The spec of the declared fields and rules.
  const ConfigSpec& config() const { return spec_; }

  /// The options of `config` (validated, defaults applied: see Config). A config that does not
  /// declare the fields throws std::logic_error, as Config's getters do.
  Options Parse(const Config& config) const { return Run(*binders_, config); }

 private:
  using Binder = std::function<void(const Config&, Options&)>;

  void Bind(Binder b) { binders_->push_back(std::move(b)); }

  static Options Run(const std::vector<Binder>& binders, const Config& config) {
    Options o{};
    for (const Binder& b : binders) b(config, o);
    return o;
  }

  ConfigSpec spec_;
  std::shared_ptr<std::vector<Binder>> binders_ = std::make_shared<std::vector<Binder>>();
};

/// The spec that `declare` fills in, built on the first call and kept for the life of the
/// program, as TypedOperator's factory and the groups that Include it need. Every lambda is a
/// type of its own, so each function that calls this keeps its own spec:
///
///   const OptionsSpec<JoinOptions>& JoinSpec() {
///     using O = JoinOptions;
///     return StaticSpec<O>([](OptionsSpec<O>& c) {
///       c.Integer("every_ms", "Window period.", &O::every_ms).Default(int64_t{1000});
///     });
///   }
template <typename Options, typename Declare>
const OptionsSpec<Options>& StaticSpec(Declare declare) {
  static const OptionsSpec<Options> spec = [&declare] {
    OptionsSpec<Options> c;
    declare(c);
    return c;
  }();
  return spec;
}

/// The OperatorInfo of an operator `Op` built as `Op(ctx, options)`, its options parsed once from
/// the node's config by `spec` (from StaticSpec: it outlives the registry). The caller
/// adds what else the operator offers (check_connect, facts, check_upstream).
template <typename Op, typename Options>
OperatorInfo TypedOperator(std::string name, std::string summary, PortKind input, PortKind output,
                           const OptionsSpec<Options>& spec) {
  OperatorInfo info;
  info.name = std::move(name);
  info.summary = std::move(summary);
  info.input = input;
  info.output = output;
  info.config = spec.config();
  info.create = [&spec](const OperatorContext& ctx) -> std::unique_ptr<Operator> {
    return std::make_unique<Op>(ctx, spec.Parse(ctx.config));
  };
  return info;
}

}  // namespace fleetflow

#pragma once
/// The operator reference, generated from the registry's config specs (the same specs that
/// validate pipeline files and generate schemas/pipeline.schema.json), so the docs cannot drift
/// from the code. `fleetflow docs --out docs/operators` writes these pages; a test checks that
/// the committed ones match.

#include <map>
#include <string>

#include "registry.hpp"

namespace fleetflow {

/// File name (`<operator>.md`, and `README.md` for the index) to Markdown text.
std::map<std::string, std::string> OperatorReferencePages(const Registry& registry);

}  // namespace fleetflow

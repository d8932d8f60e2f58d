#include "build_paths.hpp"

namespace fleetflow::testing {

const std::string& SourceDir() {
  static const std::string dir = FF_SOURCE_DIR;
  return dir;
}

const std::string& BinaryDir() {
  static const std::string dir = FF_BINARY_DIR;
  return dir;
}

}  // namespace fleetflow::testing

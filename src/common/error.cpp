#include "instinct/common/error.h"

#include <c10/util/Exception.h>

namespace instinct {

std::string error_text(const std::exception& e) {
  const auto* ce = dynamic_cast<const c10::Error*>(&e);
  const std::string s = ce ? ce->what_without_backtrace() : e.what();
  return s.substr(0, s.find('\n'));
}

}  // namespace instinct

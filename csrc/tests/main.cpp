// Runs the C++ test cases (harness.h). The ops' schemas are defined here from dopamine_fast/ops/specs.py (the
// build writes them into op_schemas.inc), as the package defines them when it loads; the kernels register
// themselves (TORCH_LIBRARY_IMPL) from the linked kernel objects.
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "harness.h"

namespace df_test {
namespace {

struct Case {
  const char* suite;
  const char* name;
  CaseFn fn;
};

std::vector<Case>& cases() {
  static std::vector<Case> all;
  return all;
}

int failures = 0;  // of the case running
constexpr int kMaxReported = 10;  // failed checks printed per case (the rest are counted)

}  // namespace

int add_case(const char* suite, const char* name, CaseFn fn) {
  cases().push_back({suite, name, fn});
  return 0;
}

void fail(const char* file, int line, const std::string& message) {
  if (++failures <= kMaxReported) std::printf("  %s:%d: %s\n", file, line, message.c_str());
}

}  // namespace df_test

TORCH_LIBRARY(dopamine_fast_C, m) {
  for (const char* schema : {
#include "op_schemas.inc"
       }) {
    m.def(schema);
  }
}

int main(int argc, char** argv) {
  const char* only = argc > 1 ? argv[1] : nullptr;
  int run = 0, failed = 0;
  for (const auto& c : df_test::cases()) {
    if (only && std::strcmp(only, c.suite) != 0) continue;
    ++run;
    df_test::failures = 0;
    try {
      c.fn();
    } catch (const std::exception& e) {
      df_test::fail(__FILE__, __LINE__, std::string("exception: ") + e.what());
    }
    if (df_test::failures > 0) ++failed;
    std::printf("[%s] %s.%s%s\n", df_test::failures ? "FAIL" : " OK ", c.suite, c.name,
                df_test::failures > df_test::kMaxReported ? " (more failed checks not shown)" : "");
  }
  std::printf("%d of %d cases passed\n", run - failed, run);
  if (run == 0) std::printf("no test suite named '%s'\n", only ? only : "");
  return (failed || run == 0) ? 1 : 0;
}

// A tiny test harness for the C++ tests (no test framework to download): DF_TEST(suite, name) defines a case,
// DF_CHECK* record failures and go on. `dopamine_fast_tests <suite>` runs one suite (ctest runs each suite of
// csrc/tests/test_<suite>.cpp as its own test), without an argument every case.
#pragma once

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

namespace df_test {

using CaseFn = void (*)();
int add_case(const char* suite, const char* name, CaseFn fn);
void fail(const char* file, int line, const std::string& message);

// |actual - expected| <= atol + rtol * |expected|; NaN never passes.
inline bool close(double actual, double expected, double atol, double rtol) {
  return std::abs(actual - expected) <= atol + rtol * std::abs(expected);
}

#define DF_TEST(suite, name)                                                                     \
  static void df_test_##suite##_##name();                                                        \
  static const int df_test_reg_##suite##_##name =                                                \
      df_test::add_case(#suite, #name, &df_test_##suite##_##name);                               \
  static void df_test_##suite##_##name()

// One check: a failure's message collects what is streamed into the check.
struct Check {
  bool done;
  std::ostringstream message;
};

}  // namespace df_test

// DF_CHECK(cond) << "context"; the context is built only when the check fails.
#define DF_CHECK(cond) DF_CHECK_WITH_TEXT(cond, "CHECK(" #cond ") ")
#define DF_CHECK_CLOSE(actual, expected, atol, rtol)                                                      \
  DF_CHECK_WITH_TEXT(df_test::close((actual), (expected), (atol), (rtol)), #actual " close to " #expected ": ") \
      << "got " << (actual) << ", expected " << (expected) << "; "

#define DF_CHECK_WITH_TEXT(cond, text)                                                                    \
  for (df_test::Check df_check{static_cast<bool>(cond)}; !df_check.done;                                  \
       df_check.done = true, df_test::fail(__FILE__, __LINE__, text + df_check.message.str()))            \
  df_check.message

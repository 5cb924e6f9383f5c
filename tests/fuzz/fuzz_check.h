// FUZZ_CHECK(cond): a property every input must satisfy. A violation prints the condition
// and aborts, which libFuzzer records as a crash with the input that caused it. Unlike
// assert() it stays on in release builds.
#ifndef VITSERVE_TESTS_FUZZ_FUZZ_CHECK_H_
#define VITSERVE_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

#endif  // VITSERVE_TESTS_FUZZ_FUZZ_CHECK_H_

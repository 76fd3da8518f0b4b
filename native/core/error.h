// Typed errors. Every failure the addon reports carries a stable code (E_SHAPE, E_DTYPE, E_ARG,
// E_OOM, E_NO_CUDA, E_CUDA, ...); the N-API layer turns it into a JS error with `.code`, and
// src/native.ts into a MixprecError. Native code never aborts on bad input.
#pragma once
#include <exception>
#include <string>

namespace mp {

struct Error : std::exception {
  std::string code, message;
  Error(std::string c, std::string m) : code(std::move(c)), message(std::move(m)) {}
  const char* what() const noexcept override { return message.c_str(); }
};

[[noreturn]] inline void fail(const char* code, const std::string& message) { throw Error(code, message); }

}  // namespace mp

#define MP_CHECK(cond, code, msg) \
  do { if (!(cond)) ::mp::fail(code, msg); } while (0)

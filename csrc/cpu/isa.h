// Which instruction set the CPU kernels may use: the run-time cap shared by every op.
//
// The extension is compiled for the baseline ABI only (no global -m flags), so one build runs
// on any x86-64 CPU; fast paths carry per-function target attributes and are chosen at run
// time. UBS_CPU_ISA=auto|avx512|avx2|popcnt|portable caps the choice (tests use it to run every
// path on one machine); each kernel then also checks that the CPU has what its path needs.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

namespace ubs_kernels::cpu {

// Ordered: a cap allows its level and every level below it.
enum class Isa { kPortable = 0, kPopcnt = 1, kAvx2 = 2, kAvx512 = 3 };

inline const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kPopcnt:
      return "popcnt";
    default:
      return "portable";
  }
}

// Read on every call (cheap), so a test can change the variable between calls.
inline Isa isa_cap() {
  const char* env = std::getenv("UBS_CPU_ISA");
  const std::string cap = env != nullptr ? env : "auto";
  if (cap == "auto" || cap == "avx512") return Isa::kAvx512;
  if (cap == "avx2") return Isa::kAvx2;
  if (cap == "popcnt") return Isa::kPopcnt;
  TORCH_CHECK_VALUE(cap == "portable",
                    "UBS_CPU_ISA must be auto, avx512, avx2, popcnt or portable, got ", cap);
  return Isa::kPortable;
}

}  // namespace ubs_kernels::cpu

// The instruction-set paths of the CPU kernels and what each needs from the CPU. Torch-free, so
// the kernel headers that include it build outside the extension too (tests/native: the Arm
// kernels are cross-compiled and run under emulation there). isa.h adds the run-time cap.
#pragma once

#include <cstring>

namespace ubs_kernels::cpu {

// x86-64 levels are ordered: a cap allows its level and every level below it. On Arm the
// levels are portable < neon (kNeon is above every x86 level, so the same comparison works
// there, where a cap is only ever portable or neon).
enum class Isa { kPortable = 0, kPopcnt = 1, kAvx2 = 2, kAvx512 = 3, kNeon = 4 };

inline const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kNeon:
      return "neon";
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

#if defined(__x86_64__) || defined(_M_X64)
#define UBS_ISA_X86 1
// The highest level a cap of "auto" means on this architecture.
constexpr Isa kBestIsa = Isa::kAvx512;
#elif defined(__aarch64__)
#define UBS_ISA_NEON 1  // Advanced SIMD is part of the AArch64 base ABI
constexpr Isa kBestIsa = Isa::kNeon;
#else
constexpr Isa kBestIsa = Isa::kPortable;
#endif

// The cap a UBS_CPU_ISA value names on this architecture; false for a name that is not one of
// its levels (an x86 level on Arm, neon on x86).
inline bool parse_isa(const char* name, Isa* out) {
  if (std::strcmp(name, "auto") == 0) {
    *out = kBestIsa;
  } else if (std::strcmp(name, "portable") == 0) {
    *out = Isa::kPortable;
#ifdef UBS_ISA_X86
  } else if (std::strcmp(name, "avx512") == 0) {
    *out = Isa::kAvx512;
  } else if (std::strcmp(name, "avx2") == 0) {
    *out = Isa::kAvx2;
  } else if (std::strcmp(name, "popcnt") == 0) {
    *out = Isa::kPopcnt;
#endif
#ifdef UBS_ISA_NEON
  } else if (std::strcmp(name, "neon") == 0) {
    *out = Isa::kNeon;
#endif
  } else {
    return false;
  }
  return true;
}

// The UBS_CPU_ISA values this build accepts, for messages.
constexpr const char* kIsaNames =
#if defined(UBS_ISA_X86)
    "auto, avx512, avx2, popcnt or portable";
#elif defined(UBS_ISA_NEON)
    "auto, neon or portable";
#else
    "auto or portable";
#endif

}  // namespace ubs_kernels::cpu

// Which instruction set the CPU kernels may use: the run-time cap shared by every op.
//
// The extension is compiled for the baseline ABI only (no global -m flags), so one build runs
// on any x86-64 CPU; fast paths carry per-function target attributes and are chosen at run
// time. UBS_CPU_ISA caps the choice (tests use it to run every path on one machine): auto,
// avx512, avx2, popcnt, portable on x86-64; auto, neon, portable on AArch64. Each kernel then
// also checks that the CPU has what its path needs. With auto, a kernel whose paths give the
// same bits may choose among them by measurement (label_mi); the others take the highest.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

#include "isa_levels.h"

namespace ubs_kernels::cpu {

// Read on every call (cheap), so a test can change the variable between calls.
inline Isa isa_cap() {
  const char* env = std::getenv("UBS_CPU_ISA");
  Isa cap = kBestIsa;
  TORCH_CHECK_VALUE(env == nullptr || parse_isa(env, &cap), "UBS_CPU_ISA must be ", kIsaNames,
                    " on this CPU architecture, got ", env);
  return cap;
}

// True when UBS_CPU_ISA is unset or "auto": no path was asked for.
inline bool isa_auto() {
  const char* env = std::getenv("UBS_CPU_ISA");
  return env == nullptr || std::strcmp(env, "auto") == 0;
}

// The path label_mi's pair counting takes now (UBS_CPU_ISA and the CPU; with auto, the fastest
// measured; label_mi.cpp), and the row kernels' (uncertainty_row.cpp).
Isa label_mi_isa();
Isa row_isa();

}  // namespace ubs_kernels::cpu

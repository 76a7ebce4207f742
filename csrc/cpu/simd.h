// The vector intrinsics of the CPU paths that isa_levels.h names for this architecture: one
// place for the headers and for the warnings GCC raises inside them. Torch-free, like the kernel
// headers that include it.
#pragma once

#include "isa_levels.h"

#ifdef UBS_ISA_X86
// GCC 12 warns inside its own AVX-512 headers (the _mm512_undefined_* operands, GCC PR 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif
#ifdef UBS_ISA_NEON
#include <arm_neon.h>
#endif

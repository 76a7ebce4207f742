// Per-sample uncertainty (SPEC.md Eq. 1, 4, 5 and the bin) from one sample's history ring.
//
// Shared by the per-step observe pass and the whole-matrix pass, so both compute U from the
// probabilities exactly as stored in the ring (float16 or float32), in float32 arithmetic,
// with the same instructions: within one process the two passes give the same bits.
// The vector code is in uncertainty_row_kernels.h (torch-free), compiled once per instruction
// set (AVX-512, AVX2 + F16C + FMA, NEON, portable); uncertainty_row.cpp chooses at run time
// (isa.h).
#pragma once

#include <c10/util/Half.h>

#include <cstdint>

#include "isa.h"
#include "uncertainty_row_kernels.h"

namespace ubs_kernels::cpu {

// H is the history dtype: float or at::Half.
template <typename H>
struct RowKernels {
  // U and bins (q values each) of one sample whose (T, q) ring holds `count` >= 1
  // predictions; the newest is at slot (count - 1) % T. `fresh`, if not null: that newest
  // prediction as q float32 values, which the pass rounds to H and writes to its slot (what
  // `store` does, fused into the same pass); null: the ring is only read. `ahead`: what the
  // next row reads (its ring, and where observe takes its probabilities from).
  void (*row)(H* ring, int64_t T, int64_t q, int64_t count, const RowParams& params,
              const float* fresh, float* u, uint8_t* bins, const Ahead& ahead);
  // q probabilities into a ring slot, rounded to H to nearest even (as torch's .to(H)).
  void (*store)(const float* src, H* dst, int64_t q);
  // The same for q logits: sigmoid(x) = 1 / (1 + exp(-x)) in float32 (exp within ~2 ulp, so a
  // value may differ from torch.sigmoid's in its last bit), then rounded to H. Every value
  // takes the same vector code, whatever its position. No NaN (the caller checks).
  void (*store_sigmoid)(const float* src, H* dst, int64_t q);
};

// The fastest path this CPU runs, capped by UBS_CPU_ISA.
template <typename H>
RowKernels<H> row_kernels();

}  // namespace ubs_kernels::cpu

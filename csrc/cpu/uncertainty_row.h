// Per-sample uncertainty (SPEC.md Eq. 1, 4, 5 and the bin) from one sample's history ring.
//
// Shared by the per-step observe pass and the whole-matrix pass, so both compute U from the
// probabilities exactly as stored in the ring (float16 or float32), in float32 arithmetic,
// with the same instructions: within one process the two passes give the same bits.
// Implemented in uncertainty_row.cpp: vector code compiled once per instruction set (AVX-512,
// AVX2 + F16C + FMA, portable) and chosen at run time (isa.h).
#pragma once

#include <c10/util/Half.h>

#include <cstdint>

namespace ubs_kernels::cpu {

// The scalars of Eq. 5 and the bin, converted once per call as the reference converts them.
struct RowParams {
  float lam;            // λ1
  float one_minus_lam;  // 1 - λ1, rounded from double like torch's (1.0 - lam) * e
  float tau;            // bins per label
  int32_t max_bin;      // tau - 1
  float inv_pairs;      // 1 / (k - 1) of Eq. 4, set per row
};

inline RowParams make_row_params(double lam, int64_t tau) {
  return {static_cast<float>(lam), static_cast<float>(1.0 - lam), static_cast<float>(tau),
          static_cast<int32_t>(tau - 1), 0.f};
}

// H is the history dtype: float or at::Half.
template <typename H>
struct RowKernels {
  // U and bins (q values each) of one sample whose (T, q) ring holds `count` >= 1
  // predictions; the newest is at slot (count - 1) % T. `next`, if not null, is the ring of
  // the row to be computed next: it is prefetched along the way.
  void (*row)(const H* ring, int64_t T, int64_t q, int64_t count, const RowParams& params, float* u,
              uint8_t* bins, const H* next);
  // q probabilities into a ring slot, rounded to H to nearest even (as torch's .to(H)).
  void (*store)(const float* src, H* dst, int64_t q);
  // The same for q logits: sigmoid(x) = 1 / (1 + exp(-x)) in float32 (exp within ~2 ulp, so a
  // value may differ from torch.sigmoid's in its last bit), then rounded to H. Every value
  // takes the same vector code, whatever its position. No NaN (the caller checks).
  void (*store_sigmoid)(const float* src, H* dst, int64_t q);
  // Orders the streaming stores of `row` before what follows: call once per thread, after its
  // last row.
  void (*fence)();
};

// The fastest path this CPU runs, capped by UBS_CPU_ISA.
template <typename H>
RowKernels<H> row_kernels();

}  // namespace ubs_kernels::cpu

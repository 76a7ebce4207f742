// Per-sample uncertainty (SPEC.md Eq. 1, 4, 5 and the bin) from one sample's history ring.
//
// Shared by the per-step observe pass and the whole-matrix pass, so both compute U from the
// probabilities exactly as stored in the ring (float16 or float32), in float32 arithmetic,
// with the same instructions: within one process the two passes give the same bits.
// Implemented in uncertainty_row.cpp: vector code compiled once per instruction set (AVX-512,
// AVX2 + F16C + FMA, portable) and chosen at run time (isa.h).
#pragma once

#include <c10/util/Half.h>

#include "isa.h"

#include <cstdint>

namespace ubs_kernels::cpu {

// The scalars of Eq. 5 and the bin, converted once per call as the reference converts them.
struct RowParams {
  float lam;            // λ1
  float one_minus_lam;  // 1 - λ1, rounded from double like torch's (1.0 - lam) * e
  float tau;            // bins per label
  int32_t max_bin;      // tau - 1
  float lam_inv_pairs;  // λ1 / (k - 1): Eq. 4's mean and Eq. 5's weight in one factor, per row
};

inline RowParams make_row_params(double lam, int64_t tau) {
  return {static_cast<float>(lam), static_cast<float>(1.0 - lam), static_cast<float>(tau),
          static_cast<int32_t>(tau - 1), 0.f};
}

// Memory the next row will read, prefetched while this one is computed: with each vector of
// labels j .. j + lanes, the lines of the same labels in the next row's ring (all T slots) and
// probabilities, so the prefetches are spread over the row and cost an add each. to_l2: into
// L2 only; observe, whose rows also read their probabilities, is faster so, the whole-matrix
// uncertainty pass, which reads only the ring, faster with the lines brought into L1
// (bench/RESULTS.md, observe step 4).
struct Ahead {
  const void* ring = nullptr;   // T slots of q values of the history dtype
  const void* probs = nullptr;  // q values of probs_bytes each
  int64_t probs_bytes = 0;
  bool to_l2 = false;
  Ahead() = default;
  explicit Ahead(const void* next_ring) : ring(next_ring) {}
  Ahead(const void* next_ring, const void* next_probs, int64_t value_bytes, bool l2)
      : ring(next_ring), probs(next_probs), probs_bytes(value_bytes), to_l2(l2) {}
};

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

// The instruction-set path row_kernels() takes now (UBS_CPU_ISA and the CPU): the paths
// agree to float32 rounding, not bit for bit, so a checkpoint records which one made its U.
Isa row_isa();

}  // namespace ubs_kernels::cpu

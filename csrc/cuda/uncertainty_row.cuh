// Per-sample uncertainty (SPEC.md Eq. 1, 4, 5 and the bin) for V consecutive labels of a ring.
//
// Shared by the per-step observe kernel and the whole-matrix uncertainty kernel so both compute
// U from the probabilities exactly as stored in the ring, in float32, in the reference's
// operation order. The _rn intrinsics keep nvcc from contracting a*b+c into an FMA, so both
// kernels round every step the same way. (The CPU kernels, csrc/cpu/uncertainty_row.h, use
// FMAs, their own log2 and one factor for lam / (k - 1): they agree with these to ~1e-7, not
// bit for bit.)
#pragma once

#include "device_utils.cuh"

namespace ubs_kernels::cuda {

// Eq. 1: binary entropy in bits with 0 log 0 = 0.
__device__ __forceinline__ float binary_entropy(float p) {
  const float omp = __fsub_rn(1.f, p);
  const float a = p > 0.f ? __fmul_rn(p, log2f(p)) : 0.f;
  const float b = p < 1.f ? __fmul_rn(omp, log2f(omp)) : 0.f;
  return -__fadd_rn(a, b);
}

// min(floor(u * tau), tau - 1), and 0 for u < 0 (u is in [0, 1] by construction).
__device__ __forceinline__ uint8_t to_bin(float u, int tau) {
  const float scaled = floorf(__fmul_rn(u, static_cast<float>(tau)));
  return static_cast<uint8_t>(fminf(fmaxf(scaled, 0.f), static_cast<float>(tau - 1)));
}

// `ring` points at label j0 of slot 0 of one sample (slot s starts s * q elements later);
// `count` >= 1 is how many predictions the sample holds in total (seen). Eq. 4 uses the
// k = min(count, T) newest predictions, in time order at slots (count - k + h) % T.
// The scalars of Eq. 5 and the bin, rounded once on the host as the reference rounds them:
// 1 - lam is computed in float64, then rounded (csrc/cpu/uncertainty_row.h does the same).
struct RowParams {
  float lam, one_minus_lam;
  int tau;
};

inline RowParams make_row_params(double lam, int tau) {
  return {static_cast<float>(lam), static_cast<float>(1.0 - lam), tau};
}

template <typename H, int V>
__device__ __forceinline__ void uncertainty_vec(const H* ring, int64_t T, int64_t q, int64_t count,
                                                const RowParams& p, float (&u)[V],
                                                uint8_t (&bins)[V]) {
  const int64_t k = count < T ? count : T;
  int64_t slot = (count - k) % T;
  Vec<H, V> prev = load_vec<V>(ring + slot * q);
  float acc[V];
#pragma unroll
  for (int v = 0; v < V; ++v) acc[v] = 0.f;
  // Two slots per trip keep two loads in flight without spilling at V = 4.
#pragma unroll 2
  for (int64_t h = 1; h < k; ++h) {
    slot = slot + 1 == T ? 0 : slot + 1;
    const Vec<H, V> cur = load_vec<V>(ring + slot * q);
#pragma unroll
    for (int v = 0; v < V; ++v) {
      const float d = __fsub_rn(to_float(cur.v[v]), to_float(prev.v[v]));
      acc[v] = __fadd_rn(acc[v], fabsf(d));
    }
    prev = cur;
  }
  // 1 / max(k - 1, 1): with k = 1 the sum is 0, so d = 0 as Eq. 4 wants.
  const float inv = 1.f / static_cast<float>(k > 2 ? k - 1 : 1);
#pragma unroll
  for (int v = 0; v < V; ++v) {  // prev now holds the newest prediction
    const float e = binary_entropy(to_float(prev.v[v]));
    const float d = __fmul_rn(acc[v], inv);
    u[v] = __fadd_rn(__fmul_rn(p.lam, d), __fmul_rn(p.one_minus_lam, e));  // Eq. 5
    bins[v] = to_bin(u[v], p.tau);
  }
}

}  // namespace ubs_kernels::cuda

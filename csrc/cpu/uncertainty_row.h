// Per-sample uncertainty (SPEC.md Eq. 1, 4, 5 and the bin) from one sample's history ring.
//
// Shared by the per-step observe pass and the whole-matrix pass so both compute U from the
// probabilities exactly as stored in the ring (float16 or float32), in float32 arithmetic.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace ubs_kernels::cpu {

// Eq. 1: binary entropy in bits with 0 log 0 = 0.
inline float binary_entropy(float p) {
  const float a = p > 0.f ? p * std::log2(p) : 0.f;
  const float b = p < 1.f ? (1.f - p) * std::log2(1.f - p) : 0.f;
  return -(a + b);
}

inline uint8_t to_bin(float u, int64_t tau) {
  const float scaled = std::floor(u * static_cast<float>(tau));
  const float clamped = std::min(std::max(scaled, 0.f), static_cast<float>(tau - 1));
  return static_cast<uint8_t>(clamped);
}

// One sample: `ring` is its (T, q) block, `count` how many predictions it holds in total
// (seen, >= 1). `acc` is scratch of q floats. Writes q values of U and bins.
template <typename H>
void uncertainty_row(const H* ring, int64_t T, int64_t q, int64_t count, float lam, int64_t tau,
                     float* acc, float* u_out, uint8_t* bin_out) {
  const int64_t k = std::min(count, T);  // Eq. 4 window: the k newest predictions
  const int64_t newest = (count - 1) % T;
  std::fill(acc, acc + q, 0.f);
  // Adjacent pairs in time order: slots (count - k + h) % T for h = 0..k-1.
  for (int64_t h = 1; h < k; ++h) {
    const H* prev = ring + ((count - k + h - 1) % T) * q;
    const H* cur = ring + ((count - k + h) % T) * q;
    for (int64_t j = 0; j < q; ++j) {
      acc[j] += std::fabs(static_cast<float>(cur[j]) - static_cast<float>(prev[j]));
    }
  }
  const float inv = k >= 2 ? 1.f / static_cast<float>(k - 1) : 0.f;
  const H* last = ring + newest * q;
  for (int64_t j = 0; j < q; ++j) {
    const float e = binary_entropy(static_cast<float>(last[j]));
    const float u = lam * (acc[j] * inv) + (1.f - lam) * e;  // Eq. 5
    u_out[j] = u;
    bin_out[j] = to_bin(u, tau);
  }
}

}  // namespace ubs_kernels::cpu

// The two passes of label_mi (label_mi.cpp) over the (n, q) bins before the pair kernels: the
// per-label bin counts, and the bitsets of each label's stored bins. Both touch every byte of
// the bins once; at the demo's size (5000 x 374, 2-4 bins per label) they cost as much as all
// label pairs together, so each has SIMD paths beside the portable one (AVX-512BW for all three,
// AVX2 for the counts and the row scans; torch-free, the caller picks the level).
//
// Bin counts (tau <= 16 on AVX-512BW and AVX2): a block of 64 labels is one 64-byte load per
// sample (two 32-byte ones); one byte counter per (label, bin) in registers, compare-and-add
// per bin, flushed to int64 every 255 samples.
//
// Bitsets (AVX-512BW): for 64 samples (one word) and 64 labels, comparing each sample's row
// with the per-label original bin of stored name k gives a 64-bit mask over labels per sample;
// a 64 x 64 bit transpose turns those into one word over samples per label.
//
// Row scans (sparse bins): for each sample of a rare bin of label a, the sample's whole row
// adds one to table[v * ld + b] for every label b (v = its bin of b): byte counters, since a
// rare bin holds at most 255 samples. SIMD: a compare per bin value and 64 (32) labels.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "simd.h"

namespace ubs_kernels::cpu::label_mi_prep {

// The instruction sets of these passes, best first.
enum class Level { kPortable, kAvx2, kAvx512bw };

// The best level this CPU runs at or below the cap.
inline Level level(Isa cap) {
#ifdef UBS_ISA_X86
  if (cap >= Isa::kAvx512 && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw")) {
    return Level::kAvx512bw;
  }
  if (cap >= Isa::kAvx2 && __builtin_cpu_supports("avx2")) return Level::kAvx2;
#endif
  (void)cap;
  return Level::kPortable;
}

// h[a * (tau + 1) + min(bins[i, a0 + a], tau)] += 1 for every sample i and label a < m
// (slot tau counts out-of-range values; on the AVX-512BW path it is only nonzero, not a count).
inline void bin_counts_portable(const uint8_t* bp, int64_t n, int64_t q, int64_t a0, int64_t m,
                                int64_t tau, int64_t* h) {
  const int64_t slots = tau + 1;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* row = bp + i * q + a0;
    for (int64_t a = 0; a < m; ++a) ++h[a * slots + std::min<int64_t>(row[a], tau)];
  }
}

// The 64 x 64 bit matrix x[i] bit j -> x[j] bit i (Hacker's Delight 7-3, on bit 63 - j and
// rows in reverse, which is the same transpose for bit j and rows in order).
inline void transpose64(uint64_t* x) {
  uint64_t m = 0x00000000FFFFFFFFull;
  for (int j = 32; j != 0; j >>= 1, m ^= m << j) {
    for (int k = 0; k < 64; k = ((k | j) + 1) & ~j) {
      const uint64_t t = (x[k] ^ (x[k | j] >> j)) & m;
      x[k] ^= t;
      x[k | j] ^= t << j;
    }
  }
}

// table[v * ld + b] += 1 where v = row[b], for b < q (portable).
inline void scan_row_portable(const uint8_t* row, int64_t q, int64_t ld, uint8_t* table) {
  for (int64_t b = 0; b < q; ++b) ++table[row[b] * ld + b];
}

#ifdef UBS_ISA_X86
inline __mmask64 lane_mask(int64_t m) { return m >= 64 ? ~__mmask64{0} : (__mmask64{1} << m) - 1; }

constexpr int64_t kMaxSimdTau = 16;

__attribute__((target("avx512f,avx512bw"))) inline void bin_counts_avx512(const uint8_t* bp,
                                                                          int64_t n, int64_t q,
                                                                          int64_t a0, int64_t m,
                                                                          int64_t tau, int64_t* h) {
  const int64_t slots = tau + 1;
  const __mmask64 lanes = lane_mask(m);
  const __m512i one = _mm512_set1_epi8(1), vtau = _mm512_set1_epi8(static_cast<char>(tau));
  __m512i acc[kMaxSimdTau];
  __mmask64 over = 0;
  alignas(64) uint8_t tmp[64];
  for (int64_t i0 = 0; i0 < n; i0 += 255) {  // byte counters: flush before they wrap
    for (int v = 0; v < kMaxSimdTau; ++v) acc[v] = _mm512_setzero_si512();
    for (int64_t i = i0; i < std::min(n, i0 + 255); ++i) {
      const __m512i r = _mm512_maskz_loadu_epi8(lanes, bp + i * q + a0);
      over |= _mm512_cmpge_epu8_mask(r, vtau);  // lanes past m load 0 < tau
      for (int v = 0; v < kMaxSimdTau; ++v) {
        if (v < tau) {
          const __mmask64 hit = _mm512_cmpeq_epi8_mask(r, _mm512_set1_epi8(static_cast<char>(v)));
          acc[v] = _mm512_mask_add_epi8(acc[v], hit, acc[v], one);
        }
      }
    }
    for (int v = 0; v < kMaxSimdTau && v < tau; ++v) {
      _mm512_store_si512(tmp, acc[v]);
      for (int64_t a = 0; a < m; ++a) h[a * slots + v] += tmp[a];
    }
  }
  for (int64_t a = 0; a < m; ++a) h[a * slots + tau] += (over >> a) & 1;
}

// scan_row_portable for tau <= 64 values; ld is a multiple of 64.
__attribute__((target("avx512f,avx512bw"))) inline void scan_row_avx512(const uint8_t* row,
                                                                        int64_t q, int64_t ld,
                                                                        int64_t tau,
                                                                        uint8_t* table) {
  const __m512i one = _mm512_set1_epi8(1);
  for (int64_t b0 = 0; b0 < q; b0 += 64) {
    const __m512i r = _mm512_maskz_loadu_epi8(lane_mask(q - b0), row + b0);
    for (int64_t v = 0; v < tau; ++v) {
      const __mmask64 hit = _mm512_cmpeq_epi8_mask(r, _mm512_set1_epi8(static_cast<char>(v)));
      if (hit == 0) continue;
      uint8_t* t = table + v * ld + b0;
      const __m512i c = _mm512_load_si512(t);
      _mm512_store_si512(t, _mm512_mask_add_epi8(c, hit, c, one));
    }
  }
}

// bin_counts_portable for tau <= kMaxSimdTau: 32 labels at a time (m <= 64).
__attribute__((target("avx2"))) inline void bin_counts_avx2(const uint8_t* bp, int64_t n, int64_t q,
                                                            int64_t a0, int64_t m, int64_t tau,
                                                            int64_t* h) {
  const int64_t slots = tau + 1;
  const __m256i top = _mm256_set1_epi8(static_cast<char>(tau - 1));
  alignas(32) uint8_t tmp[32];
  for (int64_t half = 0; half < m; half += 32) {
    const int64_t width = std::min<int64_t>(32, m - half);
    __m256i acc[kMaxSimdTau];
    uint32_t over = 0;                         // lanes that saw a value >= tau
    for (int64_t i0 = 0; i0 < n; i0 += 255) {  // byte counters: flush before they wrap
      for (int v = 0; v < kMaxSimdTau; ++v) acc[v] = _mm256_setzero_si256();
      for (int64_t i = i0; i < std::min(n, i0 + 255); ++i) {
        const uint8_t* src = bp + i * q + a0 + half;
        __m256i r;
        if (width == 32) {
          r = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
        } else {  // lanes past the labels hold 0 < tau
          std::memset(tmp, 0, sizeof tmp);
          std::memcpy(tmp, src, static_cast<size_t>(width));
          r = _mm256_load_si256(reinterpret_cast<const __m256i*>(tmp));
        }
        over |= ~static_cast<uint32_t>(
            _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_max_epu8(r, top), top)));
        for (int v = 0; v < kMaxSimdTau; ++v) {
          if (v < tau) {  // a hit is -1: subtracting it counts
            acc[v] = _mm256_sub_epi8(acc[v],
                                     _mm256_cmpeq_epi8(r, _mm256_set1_epi8(static_cast<char>(v))));
          }
        }
      }
      for (int v = 0; v < kMaxSimdTau && v < tau; ++v) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), acc[v]);
        for (int64_t a = 0; a < width; ++a) h[(half + a) * slots + v] += tmp[a];
      }
    }
    for (int64_t a = 0; a < width; ++a) h[(half + a) * slots + tau] += (over >> a) & 1;
  }
}

// scan_row_portable for tau <= 64 values, 32 labels at a time; ld is a multiple of 64.
__attribute__((target("avx2"))) inline void scan_row_avx2(const uint8_t* row, int64_t q, int64_t ld,
                                                          int64_t tau, uint8_t* table) {
  alignas(32) uint8_t tmp[32];
  for (int64_t b0 = 0; b0 < q; b0 += 32) {
    __m256i r;
    if (q - b0 >= 32) {
      r = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + b0));
    } else {  // lanes past q hold tau, which matches no value (the table has a column there)
      std::memset(tmp, static_cast<int>(tau), sizeof tmp);
      std::memcpy(tmp, row + b0, static_cast<size_t>(q - b0));
      r = _mm256_load_si256(reinterpret_cast<const __m256i*>(tmp));
    }
    for (int64_t v = 0; v < tau; ++v) {
      const __m256i hit = _mm256_cmpeq_epi8(r, _mm256_set1_epi8(static_cast<char>(v)));
      if (_mm256_movemask_epi8(hit) == 0) continue;
      __m256i* t = reinterpret_cast<__m256i*>(table + v * ld + b0);
      _mm256_store_si256(t, _mm256_sub_epi8(_mm256_load_si256(t), hit));
    }
  }
}

// Words w of the bitsets of labels a0 .. a0 + m: out(a, k)[w] has bit s set when sample
// 64 w + s of label a0 + a is in the bin orig[(a0 + a) * stride + k] (k < ka(a0 + a)).
template <typename Out, typename Ka>
__attribute__((target("avx512f,avx512bw"))) inline void bitset_words_avx512(
    const uint8_t* bp, int64_t n, int64_t q, int64_t w, int64_t a0, int64_t m, int64_t stride,
    const uint8_t* orig, int64_t kmax, Ka&& ka, Out&& out) {
  const __mmask64 lanes = lane_mask(m);
  const int64_t rows = std::clamp<int64_t>(n - w * 64, 0, 64);  // 0 in the padding words
  alignas(64) uint8_t target[64];
  alignas(64) uint64_t x[64];
  for (int64_t k = 0; k < kmax; ++k) {
    // Lanes of labels without a name k (fewer stored bins) are masked out of the compare.
    std::memset(target, 0, sizeof(target));
    __mmask64 valid = 0;
    for (int64_t a = 0; a < m; ++a) {
      if (k < ka(a0 + a)) {
        target[a] = orig[(a0 + a) * stride + k];
        valid |= __mmask64{1} << a;
      }
    }
    const __m512i t = _mm512_load_si512(target);
    for (int64_t s = 0; s < rows; ++s) {
      const __m512i r = _mm512_maskz_loadu_epi8(lanes, bp + (w * 64 + s) * q + a0);
      x[63 - s] = _mm512_mask_cmpeq_epi8_mask(valid, r, t);
    }
    for (int64_t s = rows; s < 64; ++s) x[63 - s] = 0;
    transpose64(x);
    for (int64_t a = 0; a < m; ++a) {
      if (k < ka(a0 + a)) out(a0 + a, k, x[63 - a]);
    }
  }
}
#endif

}  // namespace ubs_kernels::cpu::label_mi_prep

// Per-sample uncertainty (SPEC.md Eq. 1, 4, 5 and the bin) of one history ring: the vector code
// behind uncertainty_row.h, torch-free so that tests/native can build it outside the extension
// (natively, and cross-compiled for AArch64 under emulation).
//
// The maths is written once, on vector types of the GCC/Clang vector extension, and compiled
// once per instruction set inside a function that carries it: AVX-512F (16 lanes), AVX2 + FMA +
// F16C (8), NEON (8; Advanced SIMD is the AArch64 baseline) and a baseline one (4: SSE2 on
// x86-64, whatever the target has elsewhere). `flatten` inlines all of it into each, so the
// generic code takes that function's instruction set without any global -m flag. What differs
// per path: the float16 conversions (F16C, AVX-512 or NEON instructions, or bit manipulation)
// and log2.
//
// The history's float16 is any 2-byte type holding IEEE binary16 bits (at::Half in the
// extension), read and written through its bytes only.
//
// log2 is the Cephes logf polynomial on the mantissa, or on AVX-512 a table-based one with
// fewer instructions; both stay within ~2e-7 of the float64 oracle for U (as torch's float32
// reference does), and the bins agree with the reference except where U * tau sits on a bin
// edge. Each element takes two logs, so the whole-matrix pass is compute-bound without a cheap
// log2. A table of the entropy of every float16 in [0, 1] (one gather per vector instead of
// the two logs) was tried and not kept: slower on AVX-512 (bench/RESULTS.md).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "simd.h"

// Wide vectors only travel between helpers that are inlined: no call ABI is involved.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

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

namespace row {

// N-lane vectors of the GCC/Clang vector extension. Each path uses a width of its own (16 for
// AVX-512, 8 for AVX2 and NEON, 4 for the portable path): vectors wider than the registers
// are split by the compiler, comparisons lane by lane.
template <int N>
struct Vec {
  typedef float f __attribute__((vector_size(4 * N)));
  typedef int32_t i __attribute__((vector_size(4 * N)));
  typedef uint32_t u __attribute__((vector_size(4 * N)));
  typedef uint16_t h __attribute__((vector_size(2 * N)));
  typedef uint8_t b __attribute__((vector_size(N)));
};

// log2 of x >= 0: Cephes logf (x = m 2^e with m in [sqrt(1/2), sqrt(2)), ln m by a degree-8
// polynomial in m - 1, exact at x = 1). log2(0) comes out as -127, finite, so 0 * log2(0) = 0
// needs no mask; float32 subnormals get a wrong but finite log whose product with x is < 1e-36.
template <class F, class I = decltype(F{} < 0.f)>
inline F log2_approx(const F& x) {
  const I bits = (I)x;
  I e = ((bits >> 23) & 0xff) - 126;
  F m = (F)((bits & 0x007fffff) | 0x3f000000);  // in [0.5, 1)
  const I small = m < 0.70710678f;              // -1 where true
  e += small;
  m = small ? m + m : m;
  const F t = m - 1.f, z = t * t;
  F y = F{} + 7.0376836292e-2f;
  y = y * t - 1.1514610310e-1f;
  y = y * t + 1.1676998740e-1f;
  y = y * t - 1.2420140846e-1f;
  y = y * t + 1.4249322787e-1f;
  y = y * t - 1.6668057665e-1f;
  y = y * t + 2.0000714765e-1f;
  y = y * t - 2.4999993993e-1f;
  y = y * t + 3.3333331174e-1f;
  const F ln = t + (y * t * z - 0.5f * z);
  return __builtin_convertvector(e, F) + ln * 1.44269504088896341f;
}

// exp(x), Cephes expf: x = k ln 2 + r with |r| <= ln 2 / 2 (ln 2 in two parts), exp(r) by a
// degree-6 polynomial, times 2^k from the exponent bits. Below x = -87.3 the result is that of
// -87.3 (about 1e-38), above 88.7 it is inf: sigmoid(x) = 1 / (1 + exp(-x)) is then exactly 1
// above x = 87.3 and exactly 0 below x = -88.7, as torch's.
template <class F, class I = decltype(F{} < 0.f)>
inline F exp_approx(const F& in) {
  F x = in;
  const I overflow = x > 88.7f;
  x = x < -87.3f ? F{} - 87.3f : x;
  x = overflow ? F{} + 88.7f : x;
  F t = x * 1.44269504088896341f + 0.5f;
  I k = __builtin_convertvector(t, I);  // truncation: floor for t >= 0, one more below
  k -= (I)(__builtin_convertvector(k, F) > t) & 1;
  const F fk = __builtin_convertvector(k, F);
  x = x - fk * 0.693359375f - fk * -2.12194440e-4f;
  const F z = x * x;
  F y = F{} + 1.9875691500e-4f;
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * z + x + 1.f;
  // 2^k in two halves, so k = 128 (x near 88.7) stays finite: 2^(k/2) 2^(k - k/2).
  const I half = k >> 1;
  const F a = (F)((half + 127) << 23), b = (F)((k - half + 127) << 23);
  const F inf = (F)(I{} + 0x7f800000);
  return overflow ? inf : y * a * b;
}

// Eq. 1 in bits; e(0) = e(1) = 0 exactly (every Ops::log2 is finite at 0 and exact at 1).
template <class Ops, class F>
inline F entropy(const F& p) {
  const F r = 1.f - p;
  return -(p * Ops::log2(p) + r * Ops::log2(r));
}

// IEEE binary16 bits of f, rounded to nearest even: what torch's .to(float16), F16C and NEON
// store. Below 2^-14 the result is a subnormal half, a multiple of 2^-24: adding 0.5 (whose
// float ulp is 2^-24) rounds f to it, and the sum's low mantissa bits are the half's.
inline uint16_t half_from_float(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint32_t sign = (x >> 16) & 0x8000u, mag = x & 0x7fffffffu;
  if (mag >= 0x7f800000u)
    return static_cast<uint16_t>(sign | (mag > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (mag >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520: inf
  if (mag < 0x38800000u) {
    float a;
    std::memcpy(&a, &mag, sizeof a);
    const float r = a + 0.5f;
    uint32_t bits;
    std::memcpy(&bits, &r, sizeof bits);
    return static_cast<uint16_t>(sign | (bits - 0x3f000000u));
  }
  // Normal: the exponent rebiased (127 -> 15), 23 mantissa bits rounded to 10 (ties to even).
  return static_cast<uint16_t>(sign | ((mag - (112u << 23) + 0xfffu + ((mag >> 13) & 1u)) >> 13));
}

template <typename H>
constexpr bool kIsHalf = !std::is_same_v<H, float>;

// Per instruction set: log2, loads of N history values as float32, the ring write (float32
// to the history dtype) and the stores of U and the bins. H is float or a float16 type.
template <int N>
struct Generic {
  static constexpr int kLanes = N;
  using F = typename Vec<N>::f;
  using U = typename Vec<N>::u;
  static F log2(const F& x) { return log2_approx(x); }
  // N values as float32; float16 as c10::detail::fp16_ieee_to_fp32_value does it, on N lanes:
  // exact for every half, no F16C needed.
  template <typename H>
  static F load(const H* p) {
    F v;
    if constexpr (!kIsHalf<H>) {
      std::memcpy(&v, p, sizeof v);
    } else {
      typename Vec<N>::h h;
      std::memcpy(&h, p, sizeof h);
      const U w = __builtin_convertvector(h, U) << 16;
      const U two_w = w + w;
      const F normal = (F)((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
      const F denormal = (F)((two_w >> 17) | (126u << 23)) - 0.5f;
      const U bits = two_w < (1u << 27) ? (U)denormal : (U)normal;
      v = (F)((w & 0x80000000u) | bits);
    }
    return v;
  }
  // q float32 values into H (float16: rounded to nearest even, as torch's .to(H)).
  template <typename H>
  static void store(const float* src, H* dst, int64_t q) {
    if constexpr (!kIsHalf<H>) {
      std::memcpy(dst, src, q * sizeof(float));
    } else {
      int64_t j = 0;
      for (; j + N <= q; j += N) store_vec(load(src + j), dst + j);
      for (; j < q; ++j) {
        const uint16_t bits = half_from_float(src[j]);
        std::memcpy(dst + j, &bits, sizeof bits);
      }
    }
  }
  // half_from_float on N lanes, without branches.
  static typename Vec<N>::h half_bits(const F& v) {
    const U x = (U)v, sign = (x >> 16) & 0x8000u, mag = x & 0x7fffffffu;
    const U normal = (mag - (112u << 23) + 0xfffu + ((mag >> 13) & 1u)) >> 13;
    const U subnormal = (U)((F)mag + 0.5f) - 0x3f000000u;
    U bits = mag < 0x38800000u ? subnormal : normal;
    bits = mag >= 0x477ff000u ? U{} + 0x7c00u : bits;
    bits = mag > 0x7f800000u ? U{} + 0x7e00u : bits;
    return __builtin_convertvector(sign | bits, typename Vec<N>::h);
  }
  // One vector of float32 values into H, in memory order.
  template <typename H>
  static void store_vec(const F& v, H* dst) {
    if constexpr (!kIsHalf<H>) {
      std::memcpy(dst, &v, sizeof v);
    } else {
      const typename Vec<N>::h h = half_bits(v);
      std::memcpy(dst, &h, sizeof h);
    }
  }
  // Full vectors of U and bins.
  static void put(float* u, const F& v, uint8_t* bins, const typename Vec<N>::b& b) {
    std::memcpy(u, &v, sizeof v);
    std::memcpy(bins, &b, sizeof b);
  }
};
using Portable = Generic<4>;

#ifdef UBS_ISA_X86
struct Avx2 : Generic<8> {
  template <typename H>
  __attribute__((target("avx2,fma,f16c"))) static void store_vec(const F& v, H* dst) {
    if constexpr (!kIsHalf<H>) {
      Generic<8>::store_vec(v, dst);
    } else {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst),
                       _mm256_cvtps_ph((__m256)v, _MM_FROUND_TO_NEAREST_INT));
    }
  }
  template <typename H>
  __attribute__((target("avx2,fma,f16c"))) static F load(const H* p) {
    if constexpr (!kIsHalf<H>) {
      return Generic<8>::load(p);
    } else {
      return (F)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
  }
  template <typename H>
  __attribute__((target("avx2,fma,f16c"))) static void store(const float* src, H* dst, int64_t q) {
    if constexpr (!kIsHalf<H>) {
      Generic<8>::store(src, dst, q);
    } else {
      int64_t j = 0;
      for (; j + 8 <= q; j += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j), h);
      }
      Generic<8>::store(src + j, dst + j, q - j);
    }
  }
};

struct Avx512 : Generic<16> {
  template <typename H>
  __attribute__((target("avx512f"))) static void store_vec(const F& v, H* dst) {
    if constexpr (!kIsHalf<H>) {
      Generic<16>::store_vec(v, dst);
    } else {
      _mm256_storeu_si256(
          reinterpret_cast<__m256i*>(dst),
          _mm512_cvtps_ph((__m512)v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
  }
  // log2 of x >= 0 in ~13 instructions where log2_approx takes ~20: x = 2^e m with m in
  // [1, 2) (getexp, getmant); c = 1 + i/32 from the top 5 bits of m, with 1/c and log2 c from
  // 32-entry tables held in two registers each (vpermt2ps); r = m/c - 1 in [0, 1/32) and
  // log2(1 + r) by its Taylor series to r^4 (the next term is < 1e-8). Absolute error < 1e-7;
  // x = 0 is clamped to FLT_MIN (log2 = -126, finite) and x = 1 gives exactly 0.
  __attribute__((target("avx512f"))) static F log2(const F& xf) {
    alignas(64) static constexpr float kInv[32] = {
        1.f,       32 / 33.f, 32 / 34.f, 32 / 35.f, 32 / 36.f, 32 / 37.f, 32 / 38.f, 32 / 39.f,
        32 / 40.f, 32 / 41.f, 32 / 42.f, 32 / 43.f, 32 / 44.f, 32 / 45.f, 32 / 46.f, 32 / 47.f,
        32 / 48.f, 32 / 49.f, 32 / 50.f, 32 / 51.f, 32 / 52.f, 32 / 53.f, 32 / 54.f, 32 / 55.f,
        32 / 56.f, 32 / 57.f, 32 / 58.f, 32 / 59.f, 32 / 60.f, 32 / 61.f, 32 / 62.f, 32 / 63.f};
    alignas(64) static constexpr float kLog2[32] = {
        0.f,          0.0443941194f, 0.0874628413f, 0.129283017f, 0.169925001f, 0.209453366f,
        0.247927513f, 0.285402219f,  0.321928095f,  0.357552005f, 0.392317423f, 0.426264755f,
        0.459431619f, 0.491853096f,  0.523561956f,  0.554588852f, 0.584962501f, 0.614709844f,
        0.64385619f,  0.672425342f,  0.700439718f,  0.727920455f, 0.754887502f, 0.781359714f,
        0.807354922f, 0.832890014f,  0.857980995f,  0.882643049f, 0.906890596f, 0.930737338f,
        0.95419631f,  0.977279923f};
    constexpr float kLog2e = 1.44269504088896341f;
    const __m512 x = _mm512_max_ps((__m512)xf, _mm512_set1_ps(1.17549435e-38f));
    const __m512 m = _mm512_getmant_ps(x, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_zero);
    const __m512i i = _mm512_srli_epi32(_mm512_castps_si512(m), 18);  // vpermt2ps reads bits 0-4
    const __m512 inv = _mm512_permutex2var_ps(_mm512_load_ps(kInv), i, _mm512_load_ps(kInv + 16));
    const __m512 r = _mm512_fmsub_ps(m, inv, _mm512_set1_ps(1.f));
    __m512 y = _mm512_fmadd_ps(_mm512_set1_ps(-kLog2e / 4), r, _mm512_set1_ps(kLog2e / 3));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(-kLog2e / 2));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kLog2e));
    const __m512 lead =
        _mm512_add_ps(_mm512_getexp_ps(x),
                      _mm512_permutex2var_ps(_mm512_load_ps(kLog2), i, _mm512_load_ps(kLog2 + 16)));
    return (F)_mm512_fmadd_ps(y, r, lead);
  }
  template <typename H>
  __attribute__((target("avx512f"))) static F load(const H* p) {
    if constexpr (!kIsHalf<H>) {
      return Generic<16>::load(p);
    } else {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
      return (F)_mm512_cvtph_ps(h);
    }
  }
  template <typename H>
  __attribute__((target("avx512f"))) static void store(const float* src, H* dst, int64_t q) {
    if constexpr (!kIsHalf<H>) {
      Generic<16>::store(src, dst, q);
    } else {
      int64_t j = 0;
      for (; j + 16 <= q; j += 16) {
        const __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(src + j),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j), h);
      }
      Generic<16>::store(src + j, dst + j, q - j);
    }
  }
};
#endif

#ifdef UBS_ISA_NEON
// Advanced SIMD: the generic maths on two q registers per vector (32 registers hold the log2
// polynomials of several vectors in flight), float16 converted by FCVTL/FCVTN (round to nearest
// even: the FPCR default) instead of bit manipulation.
struct Neon : Generic<8> {
  static F join(float32x4_t lo, float32x4_t hi) {
    F v;
    std::memcpy(&v, &lo, sizeof lo);
    std::memcpy(reinterpret_cast<char*>(&v) + sizeof lo, &hi, sizeof hi);
    return v;
  }
  template <typename H>
  static F load(const H* p) {
    if constexpr (!kIsHalf<H>) {
      return Generic<8>::load(p);
    } else {
      const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(reinterpret_cast<const uint16_t*>(p)));
      return join(vcvt_f32_f16(vget_low_f16(h)), vcvt_high_f32_f16(h));
    }
  }
  template <typename H>
  static void store_vec(const F& v, H* dst) {
    if constexpr (!kIsHalf<H>) {
      Generic<8>::store_vec(v, dst);
    } else {
      float32x4_t lo, hi;
      std::memcpy(&lo, &v, sizeof lo);
      std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
      const float16x8_t h = vcvt_high_f16_f32(vcvt_f16_f32(lo), hi);
      vst1q_u16(reinterpret_cast<uint16_t*>(dst), vreinterpretq_u16_f16(h));
    }
  }
  template <typename H>
  static void store(const float* src, H* dst, int64_t q) {
    if constexpr (!kIsHalf<H>) {
      Generic<8>::store(src, dst, q);
    } else {
      int64_t j = 0;
      for (; j + 8 <= q; j += 8) store_vec(Generic<8>::load(src + j), dst + j);
      Generic<8>::store(src + j, dst + j, q - j);
    }
  }
};
#endif

// kLanes values from p, or the first m of them (the rest zero) when kTail.
template <class Ops, bool kTail, typename H>
inline typename Ops::F load_lanes(const H* p, int m) {
  if constexpr (!kTail) {
    return Ops::load(p);
  } else {
    H tmp[Ops::kLanes] = {};
    std::memcpy(tmp, p, m * sizeof(H));
    return Ops::load(tmp);
  }
}

// kLanes (or, when kTail, m) float32 values from src, rounded to H and written to dst; returns
// them as stored (the newest prediction as the ring holds it).
template <class Ops, bool kTail, typename H>
inline typename Ops::F fresh_lanes(const float* src, H* dst, int m) {
  if constexpr (!kTail) {
    Ops::store_vec(Ops::load(src), dst);
    return Ops::load(dst);
  } else {
    float in[Ops::kLanes] = {};
    H out[Ops::kLanes];
    std::memcpy(in, src, m * sizeof(float));
    Ops::store_vec(Ops::load(in), out);
    std::memcpy(dst, out, m * sizeof(H));
    return Ops::load(out);
  }
}

// Labels j .. j + m of one sample from its k newest predictions, slots[0] the oldest. K > 0:
// k == K, known at compile time (the loop over the window unrolled, the slot pointers in
// registers). fresh, if not null: the newest prediction in float32, written to slots[k - 1]
// (rounded to H) on the way.
template <class Ops, bool kTail, int K, bool kFresh, typename H>
inline void row_lanes(H* const* slots, int64_t k, int64_t j, int m, const RowParams& p,
                      const float* fresh, float* u, uint8_t* bins) {
  using F = typename Ops::F;
  using I = typename Vec<Ops::kLanes>::i;
  const int64_t kk = K > 0 ? K : k;
  F prev = kFresh && kk == 1 ? fresh_lanes<Ops, kTail>(fresh + j, slots[0] + j, m)
                             : load_lanes<Ops, kTail>(slots[0] + j, m);
  F sum = {};
  for (int64_t h = 1; h < kk; ++h) {  // Eq. 4: adjacent pairs in time order
    const F cur = kFresh && h == kk - 1 ? fresh_lanes<Ops, kTail>(fresh + j, slots[h] + j, m)
                                        : load_lanes<Ops, kTail>(slots[h] + j, m);
    const F diff = (F)((I)(cur - prev) & 0x7fffffff);  // |diff|
    sum = h == 1 ? diff : sum + diff;                  // 0 + x is x: the first pair needs no add
    prev = cur;
  }
  // prev is now the newest prediction. One multiply by λ1 / (k - 1) where the reference
  // divides by k - 1 and then multiplies by λ1: within an ulp or two of it, and a vector
  // divide would cost more than the rest.
  const F uu = sum * p.lam_inv_pairs + p.one_minus_lam * entropy<Ops>(prev);  // Eq. 5
  // u >= 0 (the sum is, and every log2 here is <= 0 on [0, 1], so the entropy is too), so
  // truncation is floor and needs no clamp below; then clamp to tau - 1.
  I b = __builtin_convertvector(uu * p.tau, I);
  b = b > p.max_bin ? I{} + p.max_bin : b;
  const auto b8 = __builtin_convertvector(b, typename Vec<Ops::kLanes>::b);
  if constexpr (!kTail) {
    Ops::put(u + j, uu, bins + j, b8);
  } else {
    std::memcpy(u + j, &uu, m * sizeof(float));
    std::memcpy(bins + j, &b8, m);
  }
}

inline void prefetch_line(const char* p, bool l2) {
  if (l2) {
    __builtin_prefetch(p, 0, 2);
  } else {
    __builtin_prefetch(p);
  }
}

template <class Ops, int K, bool kFresh, typename H>
inline void row_loop(H* const* slots_in, int64_t k, int64_t T, int64_t q, const RowParams& p,
                     const float* fresh, float* u, uint8_t* bins, const Ahead& ahead) {
  // The slot pointers in locals: read through slots_in they would be reloaded after every
  // store (a store to u or bins may alias them, as far as the compiler knows).
  H* local[K > 0 ? K : 1];
  H* const* slots = slots_in;
  if constexpr (K > 0) {
    for (int h = 0; h < K; ++h) local[h] = slots_in[h];
    slots = local;
  }
  // What the next row reads, the same labels as this vector's, so it is in cache when its
  // turn comes: the hardware prefetchers lose track of T interleaved streams that are only q
  // values long, and issuing a whole row's prefetches at once stalls on the miss buffers.
  constexpr int64_t kRingEvery = std::max<int64_t>(1, 64 / (Ops::kLanes * sizeof(H)));
  const char* ring = static_cast<const char*>(ahead.ring);
  const char* probs = static_cast<const char*>(ahead.probs);
  const int64_t slot_bytes = q * static_cast<int64_t>(sizeof(H));
  const int64_t probs_bytes = ahead.probs_bytes;
  const bool l2 = ahead.to_l2;
  int64_t j = 0;
  for (int64_t v = 0; j + Ops::kLanes <= q; j += Ops::kLanes, ++v) {
    row_lanes<Ops, false, K, kFresh>(slots, k, j, Ops::kLanes, p, fresh, u, bins);
    if (ring != nullptr && v % kRingEvery == 0) {
      const char* line = ring + j * static_cast<int64_t>(sizeof(H));
      for (int64_t s = 0; s < T; ++s, line += slot_bytes) prefetch_line(line, l2);
    }
    if (probs != nullptr) {
      const char* line = probs + j * probs_bytes;
      for (int64_t o = 0; o < Ops::kLanes * probs_bytes; o += 64) prefetch_line(line + o, l2);
    }
  }
  if (j < q)
    row_lanes<Ops, true, K, kFresh>(slots, k, j, static_cast<int>(q - j), p, fresh, u, bins);
}

// Windows up to this size get a loop of their own (unrolled, the slot pointers in registers).
constexpr int64_t kUnrolled = 8;

// row_loop for a window of k: K = k when k <= kUnrolled, else the generic K = 0.
template <class Ops, bool kFresh, int K = 1, typename H>
inline void row_window(H* const* slots, int64_t k, int64_t T, int64_t q, const RowParams& p,
                       const float* fresh, float* u, uint8_t* bins, const Ahead& ahead) {
  if constexpr (K <= kUnrolled) {
    if (k != K) return row_window<Ops, kFresh, K + 1>(slots, k, T, q, p, fresh, u, bins, ahead);
    row_loop<Ops, K, kFresh>(slots, k, T, q, p, fresh, u, bins, ahead);
  } else {
    row_loop<Ops, 0, kFresh>(slots, k, T, q, p, fresh, u, bins, ahead);
  }
}

template <class Ops, typename H>
inline void row_impl(H* ring, int64_t T, int64_t q, int64_t count, RowParams p, const float* fresh,
                     float* u, uint8_t* bins, const Ahead& ahead) {
  const int64_t k = std::min(count, T), first = (count - k) % T;
  p.lam_inv_pairs = p.lam / static_cast<float>(std::max<int64_t>(k - 1, 1));
  H* fixed[kUnrolled];
  std::vector<H*> more(k > kUnrolled ? k : 0);
  H** slots = k > kUnrolled ? more.data() : fixed;
  for (int64_t h = 0, slot = first; h < k; ++h, slot = slot + 1 == T ? 0 : slot + 1) {
    slots[h] = ring + slot * q;
  }
  if (fresh != nullptr) {
    row_window<Ops, true>(slots, k, T, q, p, fresh, u, bins, ahead);
  } else {
    row_window<Ops, false>(slots, k, T, q, p, fresh, u, bins, ahead);
  }
}

// sigmoid of q logits, rounded to H: kLanes at a time, the tail through the same vector code
// on a padded copy.
template <class Ops>
inline typename Ops::F sigmoid(const typename Ops::F& x) {
  return 1.f / (1.f + exp_approx(-x));
}

template <class Ops, typename H>
inline void store_sigmoid_impl(const float* src, H* dst, int64_t q) {
  constexpr int N = Ops::kLanes;
  int64_t j = 0;
  for (; j + N <= q; j += N) Ops::store_vec(sigmoid<Ops>(Ops::load(src + j)), dst + j);
  if (j < q) {
    const int m = static_cast<int>(q - j);
    float in[N] = {};
    H out[N];
    std::memcpy(in, src + j, m * sizeof(float));
    Ops::store_vec(sigmoid<Ops>(Ops::load(in)), out);
    std::memcpy(dst + j, out, m * sizeof(H));
  }
}

// One function per path, each carrying its instruction set (flatten: everything above is
// inlined into it).
template <typename H>
__attribute__((flatten)) void row_portable(H* ring, int64_t T, int64_t q, int64_t count,
                                           const RowParams& p, const float* fresh, float* u,
                                           uint8_t* bins, const Ahead& ahead) {
  row_impl<Portable>(ring, T, q, count, p, fresh, u, bins, ahead);
}

template <typename H>
__attribute__((flatten)) void store_sigmoid_portable(const float* src, H* dst, int64_t q) {
  store_sigmoid_impl<Portable>(src, dst, q);
}

#ifdef UBS_ISA_X86
template <typename H>
__attribute__((target("avx2,fma,f16c"), flatten)) void row_avx2(H* ring, int64_t T, int64_t q,
                                                                int64_t count, const RowParams& p,
                                                                const float* fresh, float* u,
                                                                uint8_t* bins, const Ahead& ahead) {
  row_impl<Avx2>(ring, T, q, count, p, fresh, u, bins, ahead);
}

template <typename H>
__attribute__((target("avx512f,avx2,fma,f16c"), flatten)) void row_avx512(
    H* ring, int64_t T, int64_t q, int64_t count, const RowParams& p, const float* fresh, float* u,
    uint8_t* bins, const Ahead& ahead) {
  row_impl<Avx512>(ring, T, q, count, p, fresh, u, bins, ahead);
}

template <typename H>
__attribute__((target("avx2,fma,f16c"), flatten)) void store_sigmoid_avx2(const float* src, H* dst,
                                                                          int64_t q) {
  store_sigmoid_impl<Avx2>(src, dst, q);
}

template <typename H>
__attribute__((target("avx512f,avx2,fma,f16c"), flatten)) void store_sigmoid_avx512(
    const float* src, H* dst, int64_t q) {
  store_sigmoid_impl<Avx512>(src, dst, q);
}
#endif

#ifdef UBS_ISA_NEON
template <typename H>
__attribute__((flatten)) void row_neon(H* ring, int64_t T, int64_t q, int64_t count,
                                       const RowParams& p, const float* fresh, float* u,
                                       uint8_t* bins, const Ahead& ahead) {
  row_impl<Neon>(ring, T, q, count, p, fresh, u, bins, ahead);
}

template <typename H>
__attribute__((flatten)) void store_sigmoid_neon(const float* src, H* dst, int64_t q) {
  store_sigmoid_impl<Neon>(src, dst, q);
}
#endif

// The ring write of a path, as a plain function pointer.
template <class Ops, typename H>
constexpr void (*store_fn())(const float*, H*, int64_t) {
  return &Ops::template store<H>;
}

}  // namespace row
}  // namespace ubs_kernels::cpu

#pragma GCC diagnostic pop

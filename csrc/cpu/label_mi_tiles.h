// The AND+popcount kernels of label_mi (label_mi.cpp): joint bin counts of label pairs.
//
// For labels a and b with bitsets A_0..A_{Ka-1} and B_0..B_{Kb-1} (one per stored bin, W words
// each), the joint counts are popcount(A_k & B_l). A tile computes up to R x C of them between
// R consecutive bitset rows and C consecutive ones, with its accumulators in registers, so each
// loaded word feeds several counts (AVX-512: 3 x 8 zmm accumulators). label_mi.cpp covers one
// pair with several tiles when it has many bins, or several pairs with one tile when they have
// few (the rows of consecutive labels are consecutive). One path per instruction set, chosen at
// run time (isa.h): AVX-512 VPOPCNTDQ, POPCNT, portable.
//
// On the AVX-512 path the bitset rows start on 64-byte boundaries (loads that split cache lines
// cost a third more per word; bench/RESULTS.md).
#pragma once

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "isa.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define UBS_X86 1
#endif

namespace ubs_kernels::cpu::label_mi_tiles {

constexpr int64_t kLanes = 8;  // words per AVX-512 vector; rows are padded to a multiple

// out[r * ldo + c] = popcount(A_r & B_c) for r < R, c < C; rows of A and B are W words apart.
using TileFn = void (*)(const uint64_t* A, const uint64_t* B, int64_t W, int64_t ldo, int64_t* out);

// Scalar words: R x C accumulators in general registers. Inlined into each wrapper below, so
// each compiles it for its own instruction set.
template <int R, int C>
__attribute__((always_inline)) inline void tile_scalar(const uint64_t* A, const uint64_t* B,
                                                       int64_t W, int64_t ldo, int64_t* out) {
  int64_t acc[R][C] = {};
  for (int64_t w = 0; w < W; ++w) {
    uint64_t a[R];
    for (int r = 0; r < R; ++r) a[r] = A[r * W + w];
    for (int c = 0; c < C; ++c) {
      const uint64_t b = B[c * W + w];
      for (int r = 0; r < R; ++r) acc[r][c] += __builtin_popcountll(a[r] & b);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) out[r * ldo + c] = acc[r][c];
  }
}

// Any CPU: the compiler's generic popcount.
struct Portable {
  static constexpr int kRows = 2, kCols = 4;
  template <int R, int C>
  static void tile(const uint64_t* A, const uint64_t* B, int64_t W, int64_t ldo, int64_t* out) {
    tile_scalar<R, C>(A, B, W, ldo, out);
  }
};

#ifdef UBS_X86
// x86-64 with the POPCNT instruction (nearly all since 2008, but not guaranteed by the ABI).
struct Popcnt {
  static constexpr int kRows = 2, kCols = 4;
  template <int R, int C>
  __attribute__((target("popcnt"))) static void tile(const uint64_t* A, const uint64_t* B,
                                                     int64_t W, int64_t ldo, int64_t* out) {
    tile_scalar<R, C>(A, B, W, ldo, out);
  }
};

// AVX-512 VPOPCNTDQ: R x C zmm accumulators (at most 24 + 3 + 1 of the 32 registers).
struct Avx512 : Popcnt {
  static constexpr int kRows = 3, kCols = 8;
  template <int R, int C>
  __attribute__((target("avx512f,avx512vpopcntdq"))) static void tile(const uint64_t* A,
                                                                      const uint64_t* B, int64_t W,
                                                                      int64_t ldo, int64_t* out) {
    __m512i acc[R][C];
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_si512();
    }
    for (int64_t w = 0; w < W; w += kLanes) {
      __m512i a[R];
      for (int r = 0; r < R; ++r) a[r] = _mm512_loadu_si512(A + r * W + w);
      for (int c = 0; c < C; ++c) {
        const __m512i b = _mm512_loadu_si512(B + c * W + w);
        for (int r = 0; r < R; ++r) {
          acc[r][c] = _mm512_add_epi64(acc[r][c], _mm512_popcnt_epi64(_mm512_and_si512(a[r], b)));
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      _mm512_mask_storeu_epi64(out + r * ldo, static_cast<__mmask8>((1u << C) - 1),
                               sum8<C>(acc[r]));
    }
  }

  // Lane sums of v[0 .. C) in lanes 0 .. C of one vector: a transpose-and-add tree, 21 ops
  // for 8 sums where one _mm512_reduce_add_epi64 each takes ~8.
  template <int C>
  __attribute__((target("avx512f"), always_inline)) static inline __m512i sum8(const __m512i* v) {
    __m512i x[8], y[4];
    for (int j = 0; j < 8; ++j) x[j] = j < C ? v[j] : _mm512_setzero_si512();
    for (int j = 0; j < 4; ++j) {  // 128-bit lane i of y[j]: partials of x[2j], x[2j + 1]
      y[j] = _mm512_add_epi64(_mm512_unpacklo_epi64(x[2 * j], x[2 * j + 1]),
                              _mm512_unpackhi_epi64(x[2 * j], x[2 * j + 1]));
    }
    for (int j = 0; j < 2; ++j) {  // y[j]: lanes 0, 1 for y[2j], lanes 2, 3 for y[2j + 1]
      y[j] = _mm512_add_epi64(_mm512_shuffle_i64x2(y[2 * j], y[2 * j + 1], 0x88),
                              _mm512_shuffle_i64x2(y[2 * j], y[2 * j + 1], 0xDD));
    }
    return _mm512_add_epi64(_mm512_shuffle_i64x2(y[0], y[1], 0x88),
                            _mm512_shuffle_i64x2(y[0], y[1], 0xDD));
  }
};
#endif

// table[R - 1][C - 1] = Kernel::tile<R, C>.
template <class Kernel, int R, int... C>
constexpr std::array<TileFn, sizeof...(C)> tile_row(std::integer_sequence<int, C...>) {
  return {&Kernel::template tile<R, C + 1>...};
}
template <class Kernel, int... R>
constexpr auto tile_table(std::integer_sequence<int, R...>) {
  return std::array<std::array<TileFn, Kernel::kCols>, sizeof...(R)>{
      tile_row<Kernel, R + 1>(std::make_integer_sequence<int, Kernel::kCols>())...};
}

// The kernels of one instruction set: every tile size up to rows x cols.
struct Tiles {
  int64_t rows, cols;  // the largest tile
  const TileFn* grid;  // grid[(r - 1) * cols + (c - 1)]: the r x c tile
  TileFn tile(int64_t r, int64_t c) const { return grid[(r - 1) * cols + (c - 1)]; }
};

template <class Kernel>
inline Tiles make_tiles() {
  static constexpr auto table =
      tile_table<Kernel>(std::make_integer_sequence<int, Kernel::kRows>());
  return {Kernel::kRows, Kernel::kCols, table[0].data()};
}

// The fastest path this CPU runs, capped by UBS_CPU_ISA (tests use it to run every path).
inline Tiles choose_tiles() {
  const Isa cap = isa_cap();
#ifdef UBS_X86
  if (cap >= Isa::kAvx512 && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512vpopcntdq")) {
    return make_tiles<Avx512>();
  }
  if (cap >= Isa::kPopcnt && __builtin_cpu_supports("popcnt")) return make_tiles<Popcnt>();
#endif
  return make_tiles<Portable>();
}

}  // namespace ubs_kernels::cpu::label_mi_tiles

// The AND+popcount kernels of label_mi (label_mi.cpp): joint bin counts of label pairs.
//
// For labels a and b with bitsets A_0..A_{Ka-1} and B_0..B_{Kb-1} (one per stored bin, W words
// each), the joint counts are popcount(A_k & B_l). A tile computes up to R x C of them between
// R consecutive bitset rows and C consecutive ones, with its accumulators in registers, so each
// loaded word feeds several counts. label_mi.cpp covers one pair with several tiles when it has
// many bins, or several pairs with one tile when they have few (the rows of consecutive labels
// are consecutive). Every path gives the same integers; what differs is how a vector of words
// is counted:
//   avx512    VPOPCNTDQ, one instruction per 8 words;
//   avx2      carry-save adders, and the nibble table (VPSHUFB) for the carries;
//   popcnt    the scalar POPCNT instruction;
//   neon      CNT (bytes) and UADALP (pairs of bytes added into 16-bit counters);
//   portable  Harley-Seal carry-save adders and a bit-parallel count, on 128-bit vectors of the
//             compiler's vector extension: whatever SIMD the baseline target has (SSE2 on
//             x86-64, Advanced SIMD on AArch64), no popcount instruction needed.
// Which is fastest is not the same on every CPU (scalar POPCNT runs on a single port of Intel
// cores, on more of some AMD ones; shuffles and vector pipes differ too), so with
// UBS_CPU_ISA=auto label_mi takes the path that measures fastest here (measure_fastest); an
// explicit cap takes the highest path at or below it.
//
// Torch-free (isa_levels.h only): tests/native builds it into a standalone program, natively
// and cross-compiled for AArch64 under emulation. W must be a multiple of kLanes; on the
// AVX-512 path rows start on 64-byte boundaries (loads that split cache lines cost a third
// more per word, bench/RESULTS.md).
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "simd.h"

namespace ubs_kernels::cpu::label_mi_tiles {

constexpr int64_t kLanes = 8;  // words per AVX-512 vector; rows are padded to a multiple

// out[r * ldo + c] = popcount(A_r & B_c) for r < R, c < C; rows of A and B are W words apart.
using TileFn = void (*)(const uint64_t* A, const uint64_t* B, int64_t W, int64_t ldo, int64_t* out);

// Scalar words: R x C accumulators in general registers. Inlined into the POPCNT wrapper, so it
// compiles to the POPCNT instruction there.
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

// Any CPU: the Harley-Seal count on 128-bit vectors of the compiler's vector extension (two
// words each). A carry-save adder takes three vectors of equal weight to one of that weight and
// one of twice it, in five logic operations; a pair's stream of x & y is added into running
// vectors of weight 1, 2, 4 and 8 sixteen vectors at a time, and only the carries of weight 16
// are counted (bit-parallel, to byte counts), about six operations per vector where counting
// each vector bit-parallel takes eleven. One pair at a time: the four running vectors of a pair
// fill the sixteen registers of SSE2.
struct Portable {
  static constexpr int kRows = 1, kCols = 4;
  typedef uint64_t V __attribute__((vector_size(16)));
  static constexpr int64_t kWords = 2;

  static V load(const uint64_t* p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  // h, l = the carry and sum of a + b + c, bit by bit.
  static void csa(V& h, V& l, const V& a, const V& b, const V& c) {
    const V u = a ^ b;
    h = (a & b) | (u & c);
    l = u ^ c;
  }
  // The bit count of each byte of x (at most 8).
  static V byte_counts(V x) {
    x -= (x >> 1) & 0x5555555555555555ull;
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    return (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
  }
  // The sum of the byte counters of x (each < 256): to 16-bit lanes, then across the vector.
  static int64_t sum_bytes(const V& x) {
    V y = (x & 0x00ff00ff00ff00ffull) + ((x >> 8) & 0x00ff00ff00ff00ffull);
    y += y >> 16;
    y += y >> 32;
    return static_cast<int64_t>((y[0] & 0xffff) + (y[1] & 0xffff));
  }
  // K = 2^k vectors of a & b from word 0 added into s[0 .. k): returns their carry of weight K.
  template <int K>
  static V block(const uint64_t* a, const uint64_t* b, V* s) {
    V c;
    if constexpr (K == 1) {
      c = load(a) & load(b);
    } else if constexpr (K == 2) {
      csa(c, s[0], s[0], load(a) & load(b), load(a + kWords) & load(b + kWords));
    } else {
      const V x = block<K / 2>(a, b, s);
      const V y = block<K / 2>(a + K / 2 * kWords, b + K / 2 * kWords, s);
      csa(c, s[__builtin_ctz(K) - 1], s[__builtin_ctz(K) - 1], x, y);
    }
    return c;
  }
  // A block of K < 16 vectors (the end of a row): its carry added into s[k ..] with half adders.
  template <int K>
  static void tail(const uint64_t* a, const uint64_t* b, V* s, V& sixteens) {
    V c = block<K>(a, b, s);
    for (int level = __builtin_ctz(K); level < 4; ++level) {
      const V carry = s[level] & c;
      s[level] ^= c;
      c = carry;
    }
    sixteens += byte_counts(c);
  }
  static int64_t pair(const uint64_t* a, const uint64_t* b, int64_t W) {
    V s[4] = {};      // running vectors of weight 1, 2, 4, 8
    V sixteens = {};  // byte counts of the weight-16 carries: at most 8 a block
    int64_t flushed = 0, w = 0;
    for (int blocks = 1; w + 16 * kWords <= W; w += 16 * kWords, ++blocks) {
      sixteens += byte_counts(block<16>(a + w, b + w, s));
      if (blocks % 15 == 0) {  // before the bytes can pass 255 (120 here, 152 after the tails)
        flushed += sum_bytes(sixteens);
        sixteens = V{};
      }
    }
    if (w + 8 * kWords <= W) tail<8>(a + w, b + w, s, sixteens), w += 8 * kWords;
    if (w + 4 * kWords <= W) tail<4>(a + w, b + w, s, sixteens), w += 4 * kWords;
    if (w + 2 * kWords <= W) tail<2>(a + w, b + w, s, sixteens), w += 2 * kWords;
    if (w + kWords <= W) tail<1>(a + w, b + w, s, sixteens);
    // The running vectors weighted in bytes (at most 8 + 16 + 32 + 64), in 16-bit lanes with
    // the weight-16 counts: 16 * 304 + 2 * 120 per lane, four lanes < 2^16.
    const V rest =
        byte_counts(s[3]) * 8 + byte_counts(s[2]) * 4 + byte_counts(s[1]) * 2 + byte_counts(s[0]);
    const V m8 = V{} + 0x00ff00ff00ff00ffull;
    V sum = ((sixteens & m8) + ((sixteens >> 8) & m8)) * 16 + (rest & m8) + ((rest >> 8) & m8);
    sum += sum >> 16;
    sum += sum >> 32;
    return 16 * flushed + static_cast<int64_t>((sum[0] & 0xffff) + (sum[1] & 0xffff));
  }
  template <int R, int C>
  __attribute__((flatten)) static void tile(const uint64_t* A, const uint64_t* B, int64_t W,
                                            int64_t ldo, int64_t* out) {
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < C; ++c) out[r * ldo + c] = pair(A + r * W, B + c * W, W);
    }
  }
};

#ifdef UBS_ISA_X86
// x86-64 with the POPCNT instruction (nearly all since 2008, but not guaranteed by the ABI).
struct Popcnt {
  static constexpr int kRows = 2, kCols = 4;
  template <int R, int C>
  __attribute__((target("popcnt"))) static void tile(const uint64_t* A, const uint64_t* B,
                                                     int64_t W, int64_t ldo, int64_t* out) {
    tile_scalar<R, C>(A, B, W, ldo, out);
  }
};

// AVX2: four words per vector. Carry-save adders (as in the portable path, two levels) take
// four vectors of x & y into running vectors of weight 1 and 2 and a carry of weight 4, whose
// bytes are counted with the nibble table (VPSHUFB counts 32 nibbles at once); the byte
// counters grow by at most 8 a group, so they are summed into 64-bit lanes (VPSADBW) every 31
// groups. About 6.5 operations per vector, half a shuffle, where counting every vector with the
// table takes 8, two of them shuffles (which Zen runs on two of its four vector pipes).
struct Avx2 {
  static constexpr int kRows = 1, kCols = 3;

  __attribute__((target("avx2"), always_inline)) static inline __m256i load(const uint64_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
  __attribute__((target("avx2"), always_inline)) static inline __m256i and_at(const uint64_t* a,
                                                                              const uint64_t* b) {
    return _mm256_and_si256(load(a), load(b));
  }
  // h, l = the carry and sum of a + b + c, bit by bit.
  __attribute__((target("avx2"), always_inline)) static inline void csa(__m256i& h, __m256i& l,
                                                                        __m256i a, __m256i b,
                                                                        __m256i c) {
    const __m256i u = _mm256_xor_si256(a, b);
    h = _mm256_or_si256(_mm256_and_si256(a, b), _mm256_and_si256(u, c));
    l = _mm256_xor_si256(u, c);
  }
  // The bit count of each byte of x (at most 8).
  __attribute__((target("avx2"), always_inline)) static inline __m256i byte_counts(__m256i x) {
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1,
                                           2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    return _mm256_add_epi8(
        _mm256_shuffle_epi8(table, _mm256_and_si256(x, low)),
        _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(x, 4), low)));
  }
  __attribute__((target("avx2"), always_inline)) static inline int64_t sum_bytes(__m256i x) {
    const __m256i s = _mm256_sad_epu8(x, _mm256_setzero_si256());
    return _mm256_extract_epi64(s, 0) + _mm256_extract_epi64(s, 1) + _mm256_extract_epi64(s, 2) +
           _mm256_extract_epi64(s, 3);
  }

  template <int R, int C>
  __attribute__((target("avx2"))) static void tile(const uint64_t* A, const uint64_t* B, int64_t W,
                                                   int64_t ldo, int64_t* out) {
    int64_t total[R][C] = {};  // carries of weight 4
    __m256i ones[R][C], twos[R][C];
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < C; ++c) ones[r][c] = twos[r][c] = _mm256_setzero_si256();
    }
    for (int64_t w = 0; w < W;) {
      __m256i fours[R][C];
      for (int r = 0; r < R; ++r) {
        for (int c = 0; c < C; ++c) fours[r][c] = _mm256_setzero_si256();
      }
      const int64_t end = std::min(W, w + 16 * 31);
      for (; w + 16 <= end; w += 16) {
        for (int c = 0; c < C; ++c) {
          for (int r = 0; r < R; ++r) {
            const uint64_t* a = A + r * W + w;
            const uint64_t* b = B + c * W + w;
            __m256i x, y, carry;
            csa(x, ones[r][c], ones[r][c], and_at(a, b), and_at(a + 4, b + 4));
            csa(y, ones[r][c], ones[r][c], and_at(a + 8, b + 8), and_at(a + 12, b + 12));
            csa(carry, twos[r][c], twos[r][c], x, y);
            fours[r][c] = _mm256_add_epi8(fours[r][c], byte_counts(carry));
          }
        }
      }
      if (w < end) {  // the last 8 words (W is a multiple of 8): a half adder at weight 2
        for (int c = 0; c < C; ++c) {
          for (int r = 0; r < R; ++r) {
            const uint64_t* a = A + r * W + w;
            const uint64_t* b = B + c * W + w;
            __m256i x;
            csa(x, ones[r][c], ones[r][c], and_at(a, b), and_at(a + 4, b + 4));
            const __m256i carry = _mm256_and_si256(twos[r][c], x);
            twos[r][c] = _mm256_xor_si256(twos[r][c], x);
            fours[r][c] = _mm256_add_epi8(fours[r][c], byte_counts(carry));
          }
        }
        w += 8;
      }
      for (int r = 0; r < R; ++r) {
        for (int c = 0; c < C; ++c) total[r][c] += sum_bytes(fours[r][c]);
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < C; ++c) {
        const __m256i t = byte_counts(twos[r][c]);  // 2 t + o <= 24 per byte
        const int64_t rest =
            sum_bytes(_mm256_add_epi8(_mm256_add_epi8(t, t), byte_counts(ones[r][c])));
        out[r * ldo + c] = 4 * total[r][c] + rest;
      }
    }
  }
};

// AVX-512 VPOPCNTDQ: R x C zmm accumulators (at most 24 + 3 + 1 of the 32 registers).
struct Avx512 {
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

#ifdef UBS_ISA_NEON
// Advanced SIMD: two words per vector; CNT counts each byte, UADALP adds pairs of them into
// 16-bit counters (at most 16 a step), which are summed every 4095 steps, before they can wrap.
// 32 registers: 3 x 8 accumulators.
struct Neon {
  static constexpr int kRows = 3, kCols = 8;
  template <int R, int C>
  static void tile(const uint64_t* A, const uint64_t* B, int64_t W, int64_t ldo, int64_t* out) {
    int64_t total[R][C] = {};
    for (int64_t w = 0; w < W;) {
      uint16x8_t acc[R][C];
      for (int r = 0; r < R; ++r) {
        for (int c = 0; c < C; ++c) acc[r][c] = vdupq_n_u16(0);
      }
      for (const int64_t end = std::min(W, w + 2 * 4095); w < end; w += 2) {
        uint64x2_t a[R];
        for (int r = 0; r < R; ++r) a[r] = vld1q_u64(A + r * W + w);
        for (int c = 0; c < C; ++c) {
          const uint64x2_t b = vld1q_u64(B + c * W + w);
          for (int r = 0; r < R; ++r) {
            const uint8x16_t x = vreinterpretq_u8_u64(vandq_u64(a[r], b));
            acc[r][c] = vpadalq_u8(acc[r][c], vcntq_u8(x));
          }
        }
      }
      for (int r = 0; r < R; ++r) {
        for (int c = 0; c < C; ++c) total[r][c] += vaddlvq_u16(acc[r][c]);
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < C; ++c) out[r * ldo + c] = total[r][c];
    }
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
  Isa isa;
  int64_t rows, cols;  // the largest tile
  const TileFn* grid;  // grid[(r - 1) * cols + (c - 1)]: the r x c tile
  TileFn tile(int64_t r, int64_t c) const { return grid[(r - 1) * cols + (c - 1)]; }
};

template <class Kernel>
inline Tiles make_tiles(Isa isa) {
  static constexpr auto table =
      tile_table<Kernel>(std::make_integer_sequence<int, Kernel::kRows>());
  return {isa, Kernel::kRows, Kernel::kCols, table[0].data()};
}

// Whether this CPU runs the tiles of `isa`.
inline bool cpu_runs(Isa isa) {
  switch (isa) {
    case Isa::kPortable:
      return true;
#ifdef UBS_ISA_X86
    case Isa::kPopcnt:
      return __builtin_cpu_supports("popcnt");
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2");
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
#endif
#ifdef UBS_ISA_NEON
    case Isa::kNeon:
      return true;
#endif
    default:
      return false;
  }
}

// The tiles of `isa` (which this CPU must run).
inline Tiles tiles_of(Isa isa) {
  switch (isa) {
#ifdef UBS_ISA_X86
    case Isa::kPopcnt:
      return make_tiles<Popcnt>(isa);
    case Isa::kAvx2:
      return make_tiles<Avx2>(isa);
    case Isa::kAvx512:
      return make_tiles<Avx512>(isa);
#endif
#ifdef UBS_ISA_NEON
    case Isa::kNeon:
      return make_tiles<Neon>(isa);
#endif
    default:
      return make_tiles<Portable>(Isa::kPortable);
  }
}

// The paths this CPU runs at or below `cap`, highest first.
inline std::vector<Isa> paths_under(Isa cap) {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kNeon, Isa::kAvx512, Isa::kAvx2, Isa::kPopcnt, Isa::kPortable}) {
    if (isa <= cap && cpu_runs(isa)) out.push_back(isa);
  }
  return out;
}

// Seconds per AND+popcount of one word pair with the largest tile of `t`, on rows that stay in
// L1 (as a strip's rows do): the best of `rounds` timed batches of `reps` calls.
inline double seconds_per_word(const Tiles& t, const uint64_t* rows, int64_t W, int reps) {
  std::vector<int64_t> out(static_cast<size_t>(t.rows * t.cols));
  const TileFn fn = t.tile(t.rows, t.cols);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) {
    fn(rows, rows + t.rows * W, W, t.cols, out.data());
    __asm__ __volatile__("" : : "r"(out.data()) : "memory");  // keep every call
  }
  const std::chrono::duration<double> s = std::chrono::steady_clock::now() - start;
  return s.count() / (static_cast<double>(reps) * t.rows * t.cols * W);
}

// The path that counts fastest on this CPU among those at or below `cap`: a few milliseconds of
// measurement, in rounds that time every path once each, so a moment of contention on a shared
// machine slows one round of every path rather than one path.
inline Isa measure_fastest(Isa cap) {
  const std::vector<Isa> paths = paths_under(cap);
  if (paths.size() == 1) return paths[0];
  constexpr int64_t W = 256, kRowsMax = 16;
  std::vector<uint64_t> rows(static_cast<size_t>(kRowsMax * W + kLanes));
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (uint64_t& v : rows) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    v = x;
  }
  // 64-byte aligned start, as the kernel's rows are.
  const uint64_t* base = rows.data();
  while (reinterpret_cast<uintptr_t>(base) % 64 != 0) ++base;
  std::vector<double> best(paths.size(), 1e30);
  for (int round = 0; round < 5; ++round) {
    for (size_t i = 0; i < paths.size(); ++i) {
      const Tiles t = tiles_of(paths[i]);
      const int reps = static_cast<int>(std::max<int64_t>(4, 20000 / (t.rows * t.cols * W / 8)));
      best[i] = std::min(best[i], seconds_per_word(t, base, W, reps));
    }
  }
  return paths[std::min_element(best.begin(), best.end()) - best.begin()];
}

// The tiles label_mi uses: with `measure` (UBS_CPU_ISA=auto), the fastest path measured once
// per process; otherwise the highest path at or below `cap`.
inline Tiles choose_tiles(Isa cap, bool measure) {
  if (measure) {
    static const Isa fastest = measure_fastest(cap);
    return tiles_of(fastest);
  }
  return tiles_of(paths_under(cap).front());
}

}  // namespace ubs_kernels::cpu::label_mi_tiles

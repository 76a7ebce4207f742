// CPU kernel of ubs_kernels::label_mi: SPEC.md Eq. 6 for every pair of label columns.
//
// The one-hot Gram matrix costs 2 n (q tau)^2 flops; here each (label, bin) is a bitset over
// the n samples and a joint count is popcount(A_k & B_l). Only tau-1 bins per label are
// stored: the counts of the last bin follow from the marginals. Per pair the MI is
//   MI = (1/N) sum_kl c_kl ln c_kl + ln N - (1/N) sum_k a_k ln a_k - (1/N) sum_l b_l ln b_l,
// with the per-label sums precomputed. The AND+popcount loop has an AVX-512 VPOPCNTDQ path, a
// POPCNT path and a portable one, chosen at run time.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define UBS_X86 1
#endif

namespace ubs_kernels::cpu {
namespace {

constexpr int64_t kLanes = 8;  // words per AVX-512 vector; rows are padded to a multiple

// counts[k * K + l] = popcount(A_k & B_l) for k, l < K; A and B are K rows of W words.
// Inlined into each wrapper below, so each compiles it for its own instruction set.
__attribute__((always_inline)) inline void pair_counts_scalar(const uint64_t* A, const uint64_t* B,
                                                              int64_t W, int64_t K,
                                                              int64_t* counts) {
  for (int64_t k = 0; k < K; ++k) {
    const uint64_t* a = A + k * W;
    for (int64_t l = 0; l < K; ++l) {
      const uint64_t* b = B + l * W;
      int64_t c = 0;
      for (int64_t w = 0; w < W; ++w) c += __builtin_popcountll(a[w] & b[w]);
      counts[k * K + l] = c;
    }
  }
}

// Any CPU: the compiler's generic popcount.
void pair_counts_portable(const uint64_t* A, const uint64_t* B, int64_t W, int64_t K,
                          int64_t* counts) {
  pair_counts_scalar(A, B, W, K, counts);
}

#ifdef UBS_X86
// x86-64 with the POPCNT instruction (nearly all since 2008, but not guaranteed by the ABI).
__attribute__((target("popcnt"))) void pair_counts_popcnt(const uint64_t* A, const uint64_t* B,
                                                          int64_t W, int64_t K, int64_t* counts) {
  pair_counts_scalar(A, B, W, K, counts);
}
#endif

#ifdef UBS_X86
// NL accumulators, a compile-time count, so they stay in registers.
template <int NL>
__attribute__((target("avx512f,avx512vpopcntdq"), always_inline)) inline void popcount_block(
    const uint64_t* a, const uint64_t* B, int64_t W, int64_t* out) {
  __m512i acc[NL];
  for (int j = 0; j < NL; ++j) acc[j] = _mm512_setzero_si512();
  for (int64_t w = 0; w < W; w += kLanes) {
    const __m512i va = _mm512_loadu_si512(a + w);
    for (int j = 0; j < NL; ++j) {
      const __m512i vb = _mm512_loadu_si512(B + j * W + w);
      acc[j] = _mm512_add_epi64(acc[j], _mm512_popcnt_epi64(_mm512_and_si512(va, vb)));
    }
  }
  for (int j = 0; j < NL; ++j) out[j] = _mm512_reduce_add_epi64(acc[j]);
}

__attribute__((target("avx512f,avx512vpopcntdq"))) void pair_counts_avx512(const uint64_t* A,
                                                                           const uint64_t* B,
                                                                           int64_t W, int64_t K,
                                                                           int64_t* counts) {
  for (int64_t k = 0; k < K; ++k) {
    const uint64_t* a = A + k * W;
    // Split the K columns into near-equal chunks of at most 8 (9 -> 5 + 4, not 8 + 1).
    const int64_t chunks = (K + 7) / 8;
    for (int64_t c = 0, l0 = 0; c < chunks; ++c) {
      const int64_t nl = (K - l0) / (chunks - c) + ((K - l0) % (chunks - c) != 0);
      int64_t* out = counts + k * K + l0;
      const uint64_t* b = B + l0 * W;
      switch (nl) {
        case 1:
          popcount_block<1>(a, b, W, out);
          break;
        case 2:
          popcount_block<2>(a, b, W, out);
          break;
        case 3:
          popcount_block<3>(a, b, W, out);
          break;
        case 4:
          popcount_block<4>(a, b, W, out);
          break;
        case 5:
          popcount_block<5>(a, b, W, out);
          break;
        case 6:
          popcount_block<6>(a, b, W, out);
          break;
        case 7:
          popcount_block<7>(a, b, W, out);
          break;
        default:
          popcount_block<8>(a, b, W, out);
          break;
      }
      l0 += nl;
    }
  }
}
#endif

using PairCounts = void (*)(const uint64_t*, const uint64_t*, int64_t, int64_t, int64_t*);

// The fastest path this CPU runs; UBS_CPU_ISA=avx512|popcnt|portable caps the choice (tests
// use it to run every path on one machine).
PairCounts choose_pair_counts() {
  const char* env = std::getenv("UBS_CPU_ISA");
  const std::string cap = env != nullptr ? env : "auto";
  TORCH_CHECK_VALUE(cap == "auto" || cap == "avx512" || cap == "popcnt" || cap == "portable",
                    "UBS_CPU_ISA must be auto, avx512, popcnt or portable, got ", cap);
#ifdef UBS_X86
  if ((cap == "auto" || cap == "avx512") && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512vpopcntdq")) {
    return pair_counts_avx512;
  }
  if (cap != "portable" && __builtin_cpu_supports("popcnt")) return pair_counts_popcnt;
#endif
  return pair_counts_portable;
}

inline double xlogx(int64_t c) {
  return c > 0 ? static_cast<double>(c) * std::log(static_cast<double>(c)) : 0.0;
}

// c ln c for every count 0..n, when that table is small enough to stay in cache.
class XLogX {
 public:
  explicit XLogX(int64_t n) {
    if (n <= kMaxTable) {
      table_.resize(static_cast<size_t>(n + 1));
      for (int64_t c = 0; c <= n; ++c) table_[c] = xlogx(c);
    }
  }
  double operator()(int64_t c) const { return table_.empty() ? xlogx(c) : table_[c]; }

 private:
  static constexpr int64_t kMaxTable = int64_t{1} << 20;
  std::vector<double> table_;
};

at::Tensor label_mi_cpu(const at::Tensor& bins_in, int64_t tau, bool rowsum) {
  TORCH_CHECK_TYPE(bins_in.scalar_type() == at::kByte, "bins must be uint8, got ",
                   bins_in.scalar_type());
  TORCH_CHECK_VALUE(bins_in.dim() == 2 && bins_in.size(1) >= 1,
                    "bins must have shape (n, q) with q >= 1, got ", bins_in.sizes());
  TORCH_CHECK_VALUE(tau >= 2 && tau <= 256, "tau must be an integer in [2, 256], got ", tau);
  const at::Tensor bins = bins_in.contiguous();
  const int64_t n = bins.size(0), q = bins.size(1), K = tau - 1;
  const int64_t W = (n + 63) / 64, Wp = (W + kLanes - 1) / kLanes * kLanes;
  const uint8_t* bp = bins.data_ptr<uint8_t>();

  // Bitsets bits[(a * K + k) * Wp + w] (bin tau-1 is not stored) and marginals hist[a * tau + k].
  std::vector<uint64_t> bits(static_cast<size_t>(q * K * Wp), 0);
  std::vector<int64_t> hist(static_cast<size_t>(q * tau), 0);
  std::vector<uint8_t> bad(static_cast<size_t>(W), 0);
  at::parallel_for(0, W, 1, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t i1 = std::min(n, (w + 1) * 64);
      for (int64_t i = w * 64; i < i1; ++i) {
        const uint8_t* row = bp + i * q;
        const uint64_t bit = uint64_t{1} << (i - w * 64);
        for (int64_t a = 0; a < q; ++a) {
          const int64_t k = row[a];
          if (k >= tau) {
            bad[w] = 1;
          } else if (k < K) {
            bits[(a * K + k) * Wp + w] |= bit;
          }
        }
      }
    }
  });
  for (int64_t w = 0; w < W; ++w) {
    TORCH_CHECK_VALUE(!bad[w], "bins must be in [0, tau=", tau, ")");
  }
  at::parallel_for(0, q, 1, [&](int64_t a0, int64_t a1) {
    for (int64_t a = a0; a < a1; ++a) {
      int64_t rest = n;
      for (int64_t k = 0; k < K; ++k) {
        int64_t c = 0;
        const uint64_t* row = &bits[(a * K + k) * Wp];
        for (int64_t w = 0; w < Wp; ++w) c += __builtin_popcountll(row[w]);
        hist[a * tau + k] = c;
        rest -= c;
      }
      hist[a * tau + K] = rest;
    }
  });
  std::vector<double> marginal_xlogx(static_cast<size_t>(q), 0.0);
  for (int64_t a = 0; a < q; ++a) {
    for (int64_t k = 0; k < tau; ++k) marginal_xlogx[a] += xlogx(hist[a * tau + k]);
  }

  auto out = rowsum ? at::empty({q}, bins.options().dtype(at::kFloat))
                    : at::empty({q, q}, bins.options().dtype(at::kFloat));
  float* op = out.data_ptr<float>();
  const double N = static_cast<double>(n), lnN = n > 0 ? std::log(N) : 0.0;
  const PairCounts pair_counts = choose_pair_counts();
  const XLogX xlx(n);
  const int64_t pairs = q * (q - 1) / 2;
  // Pairs (a < b) in row-major order, cut into equal chunks so the triangle's rows balance.
  // Row sums: one partial per chunk, added in chunk order, so results do not depend on which
  // thread finishes first.
  // At most one chunk per pair: every chunk is non-empty, and q = 1 (no pairs) runs none.
  const int64_t chunks = std::min<int64_t>(pairs, 4 * at::get_num_threads());
  std::vector<double> partial(rowsum ? chunks * q : 0, 0.0);

  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<int64_t> c(static_cast<size_t>(tau * tau));
    for (int64_t chunk = c0; chunk < c1; ++chunk) {
      const int64_t p0 = pairs * chunk / chunks, p1 = pairs * (chunk + 1) / chunks;
      double* local = rowsum ? &partial[chunk * q] : nullptr;
      int64_t a = 0, first = 0;  // first pair index of row a
      while (first + (q - 1 - a) <= p0) first += q - 1 - a++;
      int64_t b = a + 1 + (p0 - first);
      for (int64_t p = p0; p < p1; ++p) {
        pair_counts(&bits[a * K * Wp], &bits[b * K * Wp], Wp, K, c.data());
        // Expand the K x K block to tau x tau with the marginals (last row and column).
        double joint = 0.0;
        int64_t corner = n;
        for (int64_t k = 0; k < K; ++k) {
          int64_t row_rest = hist[a * tau + k];
          for (int64_t l = 0; l < K; ++l) {
            joint += xlx(c[k * K + l]);
            row_rest -= c[k * K + l];
          }
          joint += xlx(row_rest);
          corner -= hist[a * tau + k];
        }
        for (int64_t l = 0; l < K; ++l) {
          int64_t col_rest = hist[b * tau + l];
          for (int64_t k = 0; k < K; ++k) col_rest -= c[k * K + l];
          joint += xlx(col_rest);
          corner -= col_rest;
        }
        joint += xlx(corner);
        double mi = n > 0 ? (joint - marginal_xlogx[a] - marginal_xlogx[b]) / N + lnN : 0.0;
        mi = mi > 0.0 ? mi : 0.0;  // rounding can leave a true zero slightly negative
        if (rowsum) {
          local[a] += mi;
          local[b] += mi;
        } else {
          op[a * q + b] = op[b * q + a] = static_cast<float>(mi);
        }
        if (++b == q) b = ++a + 1;
      }
    }
  });
  std::vector<double> sums(rowsum ? q : 0, 0.0);
  for (int64_t chunk = 0; rowsum && chunk < chunks; ++chunk) {
    for (int64_t j = 0; j < q; ++j) sums[j] += partial[chunk * q + j];
  }
  for (int64_t a = 0; a < q; ++a) {
    if (rowsum) {
      op[a] = static_cast<float>(sums[a] + 1.0);  // C_aa = 1
    } else {
      op[a * q + a] = 1.f;
    }
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ubs_kernels, CPU, m) { m.impl("label_mi", &label_mi_cpu); }

}  // namespace ubs_kernels::cpu

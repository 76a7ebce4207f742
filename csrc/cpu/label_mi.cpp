// CPU kernel of ubs_kernels::label_mi: SPEC.md Eq. 6 for every pair of label columns.
//
// The one-hot Gram matrix costs 2 n (q tau)^2 flops; here each (label, bin) is a bitset over
// the n samples and a joint count is popcount(A_k & B_l). Only tau-1 bins per label are
// stored: the counts of the last bin follow from the marginals. Per pair the MI is
//   MI = (1/N) sum_kl c_kl ln c_kl + ln N - (1/N) sum_k a_k ln a_k - (1/N) sum_l b_l ln b_l,
// with the per-label sums precomputed. The AND+popcount kernels (AVX-512 VPOPCNTDQ, POPCNT,
// portable; chosen at run time) are in label_mi_tiles.h.
//
// Cache blocking: labels go in blocks whose bitsets fit in L2, and all pairs of two blocks
// are done together, so a block is read from memory once per block pair, not once per pair
// (at q = 1000 the bitsets are 23 MB).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "huge_pages.h"
#include "label_mi_tiles.h"

namespace ubs_kernels::cpu {
namespace {

using label_mi_tiles::kLanes;
using label_mi_tiles::Plan;
using label_mi_tiles::Tile;

constexpr int64_t kBlockBytes = 384 << 10;  // bitsets of one label block: stays in L2
constexpr int64_t kMaxChunks = 64;          // work units, and row-sum partials (fixed order)

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
  const int64_t n = bins.size(0), q = bins.size(1);
  const int64_t W = (n + 63) / 64, Wp = (W + kLanes - 1) / kLanes * kLanes;
  const uint8_t* bp = bins.data_ptr<uint8_t>();

  // Per-label bin counts (and the range check: slot tau counts values >= tau) in one pass,
  // a block of 64 labels per task.
  const int64_t slots = tau + 1;
  std::vector<int64_t> counts(static_cast<size_t>(q * slots), 0);
  at::parallel_for(0, (q + 63) / 64, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t a0 = b0 * 64; a0 < std::min(q, b1 * 64); a0 += 64) {
      const int64_t m = std::min<int64_t>(64, q - a0);
      int64_t* h = &counts[a0 * slots];
      for (int64_t i = 0; i < n; ++i) {
        const uint8_t* row = bp + i * q + a0;
        for (int64_t a = 0; a < m; ++a) ++h[a * slots + std::min<int64_t>(row[a], tau)];
      }
    }
  });
  for (int64_t a = 0; a < q; ++a) {
    TORCH_CHECK_VALUE(counts[a * slots + tau] == 0, "bins must be in [0, tau=", tau, ")");
  }

  // MI does not change when a label's bins are renamed or its empty bins dropped, and U is
  // usually concentrated in a few bins (the demo's Corel5k-size run uses at most 2 of 10 per
  // label). So each label's occupied bins are renamed 0, 1, ..., its most populated bin gets
  // the last name (the derived one, never stored), and the kernel runs with te = the largest
  // occupancy (at least 2) instead of tau: (te-1)^2 bitset ANDs per label pair, not (tau-1)^2.
  int64_t te = 2;
  for (int64_t a = 0; a < q; ++a) {
    te = std::max<int64_t>(te, std::count_if(&counts[a * slots], &counts[a * slots] + tau,
                                             [](int64_t c) { return c > 0; }));
  }
  std::vector<uint8_t> rename(static_cast<size_t>(q * tau), 0);
  for (int64_t a = 0; a < q; ++a) {
    const int64_t* h = &counts[a * slots];
    const int64_t top = std::max_element(h, h + tau) - h;
    int64_t next = 0;
    for (int64_t v = 0; v < tau; ++v) {
      if (h[v] > 0 && v != top) rename[a * tau + v] = static_cast<uint8_t>(next++);
    }
    rename[a * tau + top] = static_cast<uint8_t>(te - 1);
  }
  const int64_t K = te - 1;
  const Plan plan = label_mi_tiles::choose_plan(K);

  // Bitsets bits[(a * K + k) * Wp + w] of the renamed bins (name te-1 is not stored), every word
  // written once (no zeroing pass): per word w and block of labels, the 64 samples' bits are set in
  // a small buffer (te words per label, so no branch on the last bin) that stays in L1. at::empty:
  // 64-byte aligned, and Wp is a multiple of 8 words, so every row is aligned.
  at::Tensor storage = at::empty({q * K * Wp}, bins.options().dtype(at::kLong));
  auto* bits = reinterpret_cast<uint64_t*>(storage.data_ptr<int64_t>());
  advise_huge_pages(bits, storage.nbytes());
  const int64_t label_block = std::max<int64_t>(1, 2048 / te);
  at::parallel_for(0, Wp, 1, [&](int64_t w0, int64_t w1) {
    std::vector<uint64_t> word(static_cast<size_t>(label_block * te));
    for (int64_t w = w0; w < w1; ++w) {
      for (int64_t a0 = 0; a0 < q; a0 += label_block) {
        const int64_t m = std::min(label_block, q - a0);
        std::fill(word.begin(), word.end(), 0);
        for (int64_t i = w * 64; i < std::min(n, (w + 1) * 64); ++i) {
          const uint8_t* row = bp + i * q + a0;
          const uint64_t bit = uint64_t{1} << (i - w * 64);
          const uint8_t* name = rename.data() + a0 * tau;
          for (int64_t a = 0; a < m; ++a) word[a * te + name[a * tau + row[a]]] |= bit;
        }
        for (int64_t a = 0; a < m; ++a) {
          for (int64_t k = 0; k < K; ++k) bits[((a0 + a) * K + k) * Wp + w] = word[a * te + k];
        }
      }
    }
  });
  // Marginals hist[a * te + k].
  std::vector<int64_t> hist(static_cast<size_t>(q * te), 0);
  at::parallel_for(0, q, 16, [&](int64_t a0, int64_t a1) {
    for (int64_t a = a0; a < a1; ++a) {
      int64_t rest = n;
      for (int64_t k = 0; k < K; ++k) {
        hist[a * te + k] = plan.count(&bits[(a * K + k) * Wp], Wp);
        rest -= hist[a * te + k];
      }
      hist[a * te + K] = rest;
    }
  });
  std::vector<double> marginal_xlogx(static_cast<size_t>(q), 0.0);
  for (int64_t a = 0; a < q; ++a) {
    for (int64_t k = 0; k < te; ++k) marginal_xlogx[a] += xlogx(hist[a * te + k]);
  }

  // Label blocks whose bitsets fit kBlockBytes (at least 8 blocks, so there is work to
  // share), and block pairs I <= J in order, with the number of label pairs before each.
  const int64_t lb =
      std::clamp<int64_t>(kBlockBytes / std::max<int64_t>(1, K * Wp * 8), 1, (q + 7) / 8);
  const int64_t nb = (q + lb - 1) / lb;
  std::vector<std::pair<int64_t, int64_t>> block_pairs;
  std::vector<int64_t> before{0};
  for (int64_t I = 0; I < nb; ++I) {
    for (int64_t J = I; J < nb; ++J) {
      const int64_t mi = std::min(q, I * lb + lb) - I * lb, mj = std::min(q, J * lb + lb) - J * lb;
      block_pairs.emplace_back(I, J);
      before.push_back(before.back() + (I == J ? mi * (mi - 1) / 2 : mi * mj));
    }
  }
  // Chunks of block pairs with near-equal label-pair counts: a fixed number, whatever the
  // threads, so the row sums (one partial per chunk, added in chunk order) are reproducible.
  const int64_t pairs = q * (q - 1) / 2;
  const int64_t chunks = std::min<int64_t>(kMaxChunks, static_cast<int64_t>(block_pairs.size()));
  std::vector<int64_t> chunk_begin(chunks + 1, static_cast<int64_t>(block_pairs.size()));
  for (int64_t t = static_cast<int64_t>(block_pairs.size()) - 1; t >= 0; --t) {
    const int64_t c = pairs > 0 ? before[t] * chunks / pairs : 0;
    for (int64_t k = 0; k <= c; ++k) chunk_begin[k] = std::min(chunk_begin[k], t);
  }
  chunk_begin[0] = 0;

  auto out = rowsum ? at::empty({q}, bins.options().dtype(at::kFloat))
                    : at::empty({q, q}, bins.options().dtype(at::kFloat));
  float* op = out.data_ptr<float>();
  const double N = static_cast<double>(n), lnN = n > 0 ? std::log(N) : 0.0;
  const XLogX xlx(n);
  std::vector<double> partial(rowsum ? chunks * q : 0, 0.0);

  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<int64_t> c(static_cast<size_t>(K * K));
    auto pair_mi = [&](int64_t a, int64_t b) {
      const uint64_t *A = bits + a * K * Wp, *B = bits + b * K * Wp;
      for (const Tile& t : plan.tiles)
        t.fn(A + t.row * Wp, B + t.col * Wp, Wp, K, &c[t.row * K + t.col]);
      // Expand the K x K block to te x te with the marginals (last row and column). One
      // partial sum per row, so the adds are short independent chains, not one of te^2.
      double joint = 0.0, last_col = 0.0;
      int64_t corner = n;
      for (int64_t k = 0; k < K; ++k) {
        int64_t row_rest = hist[a * te + k];
        double row = 0.0;
        for (int64_t l = 0; l < K; ++l) {
          row += xlx(c[k * K + l]);
          row_rest -= c[k * K + l];
        }
        joint += row;
        last_col += xlx(row_rest);
        corner -= hist[a * te + k];
      }
      double last_row = 0.0;
      for (int64_t l = 0; l < K; ++l) {
        int64_t col_rest = hist[b * te + l];
        for (int64_t k = 0; k < K; ++k) col_rest -= c[k * K + l];
        last_row += xlx(col_rest);
        corner -= col_rest;
      }
      joint += last_col + last_row + xlx(corner);
      const double mi = n > 0 ? (joint - marginal_xlogx[a] - marginal_xlogx[b]) / N + lnN : 0.0;
      return mi > 0.0 ? mi : 0.0;  // rounding can leave a true zero slightly negative
    };
    for (int64_t chunk = c0; chunk < c1; ++chunk) {
      double* local = rowsum ? &partial[chunk * q] : nullptr;
      for (int64_t t = chunk_begin[chunk]; t < chunk_begin[chunk + 1]; ++t) {
        const auto [I, J] = block_pairs[t];
        for (int64_t a = I * lb; a < std::min(q, I * lb + lb); ++a) {
          for (int64_t b = std::max(J * lb, a + 1); b < std::min(q, J * lb + lb); ++b) {
            const double mi = pair_mi(a, b);
            if (rowsum) {
              local[a] += mi;
              local[b] += mi;
            } else {
              op[a * q + b] = op[b * q + a] = static_cast<float>(mi);
            }
          }
        }
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

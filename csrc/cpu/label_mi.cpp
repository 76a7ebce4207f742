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
#include "label_mi_prep.h"
#include "label_mi_tiles.h"

namespace ubs_kernels::cpu {
namespace {

using label_mi_tiles::kLanes;
using label_mi_tiles::Tiles;

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

  // Per-label bin counts (and the range check: slot tau is nonzero if a value is >= tau) in one
  // pass, a block of 64 labels per task.
  const int64_t slots = tau + 1;
  std::vector<int64_t> counts(static_cast<size_t>(q * slots), 0);
#ifdef UBS_PREP_X86
  const bool simd = label_mi_prep::avx512bw();
#else
  const bool simd = false;
#endif
  at::parallel_for(0, (q + 63) / 64, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t a0 = b0 * 64; a0 < std::min(q, b1 * 64); a0 += 64) {
      const int64_t m = std::min<int64_t>(64, q - a0);
#ifdef UBS_PREP_X86
      if (simd && tau <= label_mi_prep::kMaxSimdTau) {
        label_mi_prep::bin_counts_avx512(bp, n, q, a0, m, tau, &counts[a0 * slots]);
        continue;
      }
#endif
      label_mi_prep::bin_counts_portable(bp, n, q, a0, m, tau, &counts[a0 * slots]);
    }
  });
  for (int64_t a = 0; a < q; ++a) {
    TORCH_CHECK_VALUE(counts[a * slots + tau] == 0, "bins must be in [0, tau=", tau, ")");
  }

  // MI does not change when a label's bins are renamed or its empty bins dropped, and U is
  // usually concentrated in a few bins (the demo MLP at Corel5k size: 5-7 of 10 per label while
  // it trains, 2-4 once its predictions settle).
  // So each label's occupied bins are renamed 0, 1, ..., its most populated bin gets the last
  // name Ka (the derived one, never stored), and label a keeps Ka = occupancy - 1 bitsets (one
  // empty bitset for a constant label): a pair costs Ka * Kb bitset ANDs, not (tau - 1)^2.
  // te = the largest occupancy (at least 2) sizes the per-label scratch.
  std::vector<int64_t> Ka(static_cast<size_t>(q));
  int64_t te = 2;
  std::vector<uint8_t> rename(static_cast<size_t>(q * tau), 0);
  std::vector<uint8_t> orig(static_cast<size_t>(q * tau), 0);  // name -> bin
  for (int64_t a = 0; a < q; ++a) {
    const int64_t* h = &counts[a * slots];
    const int64_t occupied = std::count_if(h, h + tau, [](int64_t c) { return c > 0; });
    Ka[a] = std::max<int64_t>(occupied - 1, 1);
    te = std::max(te, occupied);
    const int64_t top = std::max_element(h, h + tau) - h;
    int64_t next = 0;
    for (int64_t v = 0; v < tau; ++v) {
      if (h[v] > 0 && v != top) {
        orig[a * tau + next] = static_cast<uint8_t>(v);
        rename[a * tau + v] = static_cast<uint8_t>(next++);
      }
    }
    rename[a * tau + top] = static_cast<uint8_t>(Ka[a]);
  }
  // Labels stored in order of decreasing Ka (stable): labels with equal Ka are neighbours, so
  // one register tile can span several pairs. Position p holds label perm[p], whose bitsets
  // are rows off[p] .. off[p] + Ka - 1.
  std::vector<int64_t> perm(static_cast<size_t>(q)), pos(static_cast<size_t>(q));
  std::vector<int64_t> off(static_cast<size_t>(q + 1), 0);
  for (int64_t a = 0; a < q; ++a) perm[a] = a;
  std::stable_sort(perm.begin(), perm.end(), [&](int64_t x, int64_t y) { return Ka[x] > Ka[y]; });
  for (int64_t p = 0; p < q; ++p) {
    pos[perm[p]] = p;
    off[p + 1] = off[p] + Ka[perm[p]];
  }
  const int64_t K = Ka[perm[0]];  // the most bitsets of any label
  const Tiles tiles = label_mi_tiles::choose_tiles();

  // Bitsets bits[(off[pos[a]] + k) * Wp + w] of the renamed bins, every word written once (no
  // zeroing pass). AVX-512BW: compares and a bit transpose (label_mi_prep.h). Portable: per
  // word w and block of labels, the 64 samples' bits are set in a small buffer (te words per
  // label, so no branch on the derived bin) that stays in L1. at::empty: 64-byte aligned, and
  // Wp is a multiple of 8 words, so every row is aligned.
  at::Tensor storage = at::empty({off[q] * Wp}, bins.options().dtype(at::kLong));
  auto* bits = reinterpret_cast<uint64_t*>(storage.data_ptr<int64_t>());
  advise_huge_pages(bits, storage.nbytes());
  if (simd) {
#ifdef UBS_PREP_X86
    at::parallel_for(0, Wp, 1, [&](int64_t w0, int64_t w1) {
      for (int64_t w = w0; w < w1; ++w) {
        for (int64_t a0 = 0; a0 < q; a0 += 64) {
          const int64_t m = std::min<int64_t>(64, q - a0);
          label_mi_prep::bitset_words_avx512(
              bp, n, q, w, a0, m, tau, orig.data(), *std::max_element(&Ka[a0], &Ka[a0] + m),
              [&](int64_t a) { return Ka[a]; },
              [&](int64_t a, int64_t k, uint64_t word) {
                bits[(off[pos[a]] + k) * Wp + w] = word;
              });
        }
      }
    });
#endif
  } else {
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
            uint64_t* dst = bits + off[pos[a0 + a]] * Wp + w;
            for (int64_t k = 0; k < Ka[a0 + a]; ++k) dst[k * Wp] = word[a * te + k];
          }
        }
      }
    });
  }
  // Marginals hist[a * te + k], k <= Ka (the last one derived).
  std::vector<int64_t> hist(static_cast<size_t>(q * te), 0);
  at::parallel_for(0, q, 16, [&](int64_t a0, int64_t a1) {
    for (int64_t a = a0; a < a1; ++a) {
      int64_t rest = n;
      for (int64_t k = 0; k < Ka[a]; ++k) {
        hist[a * te + k] = tiles.count(bits + (off[pos[a]] + k) * Wp, Wp);
        rest -= hist[a * te + k];
      }
      hist[a * te + Ka[a]] = rest;
    }
  });
  std::vector<double> marginal_xlogx(static_cast<size_t>(q), 0.0);
  for (int64_t a = 0; a < q; ++a) {
    for (int64_t k = 0; k <= Ka[a]; ++k) marginal_xlogx[a] += xlogx(hist[a * te + k]);
  }

  // Blocks of positions whose bitsets fit kBlockBytes (sized for the most bitsets per label;
  // at least 8 blocks, so there is work to share), and block pairs I <= J in order, with the
  // number of label pairs before each.
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
  const int64_t R = tiles.rows, C = tiles.cols;

  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<int64_t> c(static_cast<size_t>(std::max(R * C, K * K)));
    // MI of labels a and b from their ka x kb joint counts cab[k * ldo + l]: the table is
    // completed with the marginals (last row and column). One partial sum per row, so the adds
    // are short independent chains.
    auto pair_mi = [&](int64_t a, int64_t b, int64_t ka, int64_t kb, const int64_t* cab,
                       int64_t ldo) {
      double joint = 0.0, last_col = 0.0;
      int64_t corner = n;
      for (int64_t k = 0; k < ka; ++k) {
        int64_t row_rest = hist[a * te + k];
        double row = 0.0;
        for (int64_t l = 0; l < kb; ++l) {
          row += xlx(cab[k * ldo + l]);
          row_rest -= cab[k * ldo + l];
        }
        joint += row;
        last_col += xlx(row_rest);
        corner -= hist[a * te + k];
      }
      double last_row = 0.0;
      for (int64_t l = 0; l < kb; ++l) {
        int64_t col_rest = hist[b * te + l];
        for (int64_t k = 0; k < ka; ++k) col_rest -= cab[k * ldo + l];
        last_row += xlx(col_rest);
        corner -= col_rest;
      }
      joint += last_col + last_row + xlx(corner);
      const double mi = n > 0 ? (joint - marginal_xlogx[a] - marginal_xlogx[b]) / N + lnN : 0.0;
      return mi > 0.0 ? mi : 0.0;  // rounding can leave a true zero slightly negative
    };
    // The end of a group of neighbours with Ka == k from p: at most g of them, before end.
    auto group_end = [&](int64_t p, int64_t end, int64_t g, int64_t k) {
      int64_t e = p + 1;
      while (e < end && e - p < g && Ka[perm[e]] == k) ++e;
      return e;
    };
    for (int64_t chunk = c0; chunk < c1; ++chunk) {
      double* local = rowsum ? &partial[chunk * q] : nullptr;
      for (int64_t t = chunk_begin[chunk]; t < chunk_begin[chunk + 1]; ++t) {
        const auto [I, J] = block_pairs[t];
        const int64_t a_end = std::min(q, I * lb + lb), b_end = std::min(q, J * lb + lb);
        // Groups of ga labels (positions pa0 .. pa1) against groups of gb: one tile when their
        // bitsets fit it, else tiles over one pair. Pairs are visited a, then b, ascending by
        // position whatever the group sizes, so row sums do not depend on the instruction set.
        for (int64_t pa0 = I * lb, pa1; pa0 < a_end; pa0 = pa1) {
          const int64_t ka = Ka[perm[pa0]];
          pa1 = group_end(pa0, a_end, ka <= R ? R / ka : 1, ka);
          const uint64_t* A = bits + off[pa0] * Wp;
          // On the diagonal block b starts after pa0: pairs with b <= a are computed, dropped.
          for (int64_t pb0 = std::max(J * lb, pa0 + 1), pb1; pb0 < b_end; pb0 = pb1) {
            const int64_t kb = Ka[perm[pb0]];
            const bool grouped = ka <= R && kb <= C;
            pb1 = group_end(pb0, b_end, grouped ? C / kb : 1, kb);
            const uint64_t* B = bits + off[pb0] * Wp;
            const int64_t ldo = (pb1 - pb0) * kb;
            if (grouped) {
              tiles.tile((pa1 - pa0) * ka, ldo)(A, B, Wp, ldo, c.data());
            } else {
              label_mi_tiles::split(ka, R, [&](int64_t r, int64_t nr) {
                label_mi_tiles::split(kb, C, [&](int64_t col, int64_t nc) {
                  tiles.tile(nr, nc)(A + r * Wp, B + col * Wp, Wp, ldo, &c[r * ldo + col]);
                });
              });
            }
            for (int64_t pa = pa0; pa < pa1; ++pa) {
              for (int64_t pb = std::max(pb0, pa + 1); pb < pb1; ++pb) {
                const int64_t a = perm[pa], b = perm[pb];
                const double mi =
                    pair_mi(a, b, ka, kb, &c[(pa - pa0) * ka * ldo + (pb - pb0) * kb], ldo);
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

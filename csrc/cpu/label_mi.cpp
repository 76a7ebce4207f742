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
//
// Rare bins: a bin holding few samples (late in training most labels have a few) is cheaper
// to count from its samples' rows than with a bitset ANDed against every other label's; such
// "sparse" bins get byte tables of their samples' bins of every label instead of a bitset (see
// the cost model where Da is set).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "checks.h"
#include "huge_pages.h"
#include "label_mi_prep.h"
#include "label_mi_tiles.h"

namespace ubs_kernels::cpu {
namespace {

using label_mi_tiles::kLanes;
using label_mi_tiles::Tiles;

constexpr int64_t kBlockBytes = 384 << 10;  // bitsets of one label block: stays in L2
constexpr int64_t kMaxChunks = 64;          // work units, and row-sum partials (fixed order)
constexpr int64_t kSparseTableBytes = 32 << 20;
constexpr int64_t kStripRows = 12;  // dense bitsets of one strip of labels (label_mi_cpu)  //
                                    // row-scan tables of the sparse names, at most

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
  checks::label_mi(bins_in, tau);
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
  // So each label's occupied bins are renamed 0, 1, ... by decreasing count, its most populated
  // bin gets the last name Ka (the derived one, never stored), and label a keeps Ka =
  // occupancy - 1 stored names (one phantom name of count 0 for a constant label): a pair costs
  // Ka * Kb joint counts, not (tau - 1)^2. te = the largest occupancy (at least 2) sizes the
  // per-label scratch.
  std::vector<int64_t> Ka(static_cast<size_t>(q));
  int64_t te = 2;
  std::vector<uint8_t> orig(static_cast<size_t>(q * tau), 0);  // name -> bin
  std::vector<int64_t> hist(static_cast<size_t>(q * tau), 0);  // hist[a * te + name], below
  std::vector<int64_t> order(static_cast<size_t>(tau));
  for (int64_t a = 0; a < q; ++a) {
    const int64_t* h = &counts[a * slots];
    const int64_t occupied = std::count_if(h, h + tau, [](int64_t c) { return c > 0; });
    Ka[a] = std::max<int64_t>(occupied - 1, 1);
    te = std::max(te, occupied);
    for (int64_t v = 0; v < tau; ++v) order[v] = v;
    std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return h[x] > h[y]; });
    // order[0] is the top bin; names 0 .. Ka-1 are order[1 ..] (an empty bin for the phantom).
    for (int64_t k = 0; k < Ka[a]; ++k) orig[a * tau + k] = static_cast<uint8_t>(order[k + 1]);
  }
  for (int64_t a = 0; a < q; ++a) {
    int64_t rest = n;
    for (int64_t k = 0; k < Ka[a]; ++k) {
      hist[a * te + k] = counts[a * slots + orig[a * tau + k]];
      rest -= hist[a * te + k];
    }
    hist[a * te + Ka[a]] = rest;
  }
  std::vector<double> marginal_xlogx(static_cast<size_t>(q), 0.0);
  for (int64_t a = 0; a < q; ++a) {
    for (int64_t k = 0; k <= Ka[a]; ++k) marginal_xlogx[a] += xlogx(hist[a * te + k]);
  }

  // Dense and sparse names. A stored name costs one bitset AND per stored name of every other
  // label, Wp / 8 vector steps each (D_total * Wp / 8 in all); counted instead from its samples'
  // rows (a row scan: tau compares per 64 labels per sample, label_mi_prep.h) it costs about
  // 4 count * tau * ceil(q / 64) steps (the 4 measured on the training-run bins of
  // bench_selector.py) plus a table lookup per joint count. So names holding at most S samples
  // are sparse, S the count (at most 255: byte counters) of least estimated total cost, and
  // fewer if the tables would take more than kSparseTableBytes (tau * qp bytes per name). Names are
  // in decreasing count, so label a's dense names are 0 .. Da - 1. With U spread over all bins
  // (every count near n / tau) no name is sparse and this is the all-bitset kernel. On the demo
  // MLP's bins at 5000 x 374 this took label_mi from 9.8 to 8.0 ms early in training (1336 of 2126
  // names dense) and from 6.3 to 4.8 ms a few epochs later (2 threads).
  const int64_t qp = (q + 63) / 64 * 64;
  std::vector<int64_t> Da(Ka);
  {
    // S = the count threshold of least estimated cost, over the distinct counts <= 255.
    std::vector<int64_t> small;
    int64_t dense = 0;
    for (int64_t a = 0; a < q; ++a) {
      dense += Ka[a];
      for (int64_t k = 0; k < Ka[a]; ++k) {
        if (hist[a * te + k] <= 255) small.push_back(hist[a * te + k]);
      }
    }
    std::sort(small.begin(), small.end());
    const double per_word = static_cast<double>(Wp / kLanes);
    const double per_sample = static_cast<double>(tau) * (qp / 64) * 4.0;
    auto cost = [&](double d, double samples, double names) {
      return 0.5 * d * d * per_word + samples * per_sample + names * d;
    };
    double samples = 0.0, names = 0.0, best = cost(static_cast<double>(dense), 0.0, 0.0);
    int64_t S = -1;
    for (size_t i = 0; i < small.size();) {
      size_t j = i;
      while (j < small.size() && small[j] == small[i]) ++j;
      dense -= static_cast<int64_t>(j - i);
      samples += static_cast<double>(small[i]) * static_cast<double>(j - i);
      names += static_cast<double>(j - i);
      const double c = cost(static_cast<double>(dense), samples, names);
      if (c < best) {
        best = c;
        S = small[i];
      }
      i = j;
    }
    for (int64_t a = 0; a < q; ++a) {
      while (Da[a] > 0 && hist[a * te + Da[a] - 1] <= S) --Da[a];
    }
    int64_t sparse_names = 0;
    for (int64_t a = 0; a < q; ++a) sparse_names += Ka[a] - Da[a];
    const int64_t budget = kSparseTableBytes / std::max<int64_t>(1, tau * qp);
    if (sparse_names > budget) {  // keep the smallest names sparse (a suffix of each label)
      std::vector<int64_t> c;
      for (int64_t a = 0; a < q; ++a) {
        for (int64_t k = Da[a]; k < Ka[a]; ++k) c.push_back(hist[a * te + k]);
      }
      std::nth_element(c.begin(), c.begin() + budget, c.end());
      const int64_t cut = c[budget] - 1;  // counts <= cut stay sparse: at most budget names
      for (int64_t a = 0; a < q; ++a) {
        while (Da[a] < Ka[a] && hist[a * te + Da[a]] > cut) ++Da[a];
      }
    }
  }
  // Sparse name k >= Da of label a has table tables[(soff[a] + k - Da) * tau * qp ..].
  std::vector<int64_t> soff(static_cast<size_t>(q + 1), 0);
  for (int64_t a = 0; a < q; ++a) soff[a + 1] = soff[a] + Ka[a] - Da[a];

  // A label with one occupied bin (constant over the samples) has MI 0 with every other label:
  // its pairs are skipped. Late in training most labels of the demo MLP at Corel5k size are
  // constant (1.4 occupied bins per label on average), and their pairs' epilogues were the
  // largest part of label_mi's time (41% of its samples in a profile; 1.01 -> 0.47 ms). The
  // qa labels with two or more occupied bins come first.
  std::vector<uint8_t> active(static_cast<size_t>(q));
  int64_t qa = 0;
  for (int64_t a = 0; a < q; ++a) {
    const int64_t* h = &counts[a * slots];
    active[a] = std::count_if(h, h + tau, [](int64_t c) { return c > 0; }) >= 2;
    qa += active[a];
  }
  // Labels stored active first, then in order of decreasing Da (stable): labels with equal Da
  // are neighbours, so one register tile can span several pairs. Position p holds label
  // perm[p], whose dense bitsets are rows off[p] .. off[p] + Da - 1.
  std::vector<int64_t> perm(static_cast<size_t>(q)), pos(static_cast<size_t>(q));
  std::vector<int64_t> off(static_cast<size_t>(q + 1), 0);
  for (int64_t a = 0; a < q; ++a) perm[a] = a;
  std::stable_sort(perm.begin(), perm.end(), [&](int64_t x, int64_t y) {
    return active[x] != active[y] ? active[x] > active[y] : Da[x] > Da[y];
  });
  for (int64_t p = 0; p < q; ++p) {
    pos[perm[p]] = p;
    off[p + 1] = off[p] + Da[perm[p]];
  }
  const int64_t K = std::max<int64_t>(1, Da[perm[0]]);  // the most dense bitsets of any label
  const Tiles tiles = label_mi_tiles::choose_tiles();

  // Bitsets of the renamed bins, every word written once (no zeroing pass): dense names at
  // bits[(off[pos[a]] + k) * Wp + w], sparse ones at sbits[(soff[a] + k - Da) * Wp + w] (only
  // read to list their samples). AVX-512BW: compares and a bit transpose (label_mi_prep.h).
  // Portable: per word w and block of labels, the 64 samples' bits are set in a small buffer
  // (te words per label, so no branch on the derived bin) that stays in L1. at::empty: 64-byte
  // aligned, and Wp is a multiple of 8 words, so every row is aligned.
  at::Tensor storage = at::empty({(off[q] + soff[q]) * Wp}, bins.options().dtype(at::kLong));
  auto* bits = reinterpret_cast<uint64_t*>(storage.data_ptr<int64_t>());
  uint64_t* sbits = bits + off[q] * Wp;
  advise_huge_pages(bits, storage.nbytes());
  auto put = [&](int64_t a, int64_t k, int64_t w, uint64_t word) {
    if (k < Da[a]) {
      bits[(off[pos[a]] + k) * Wp + w] = word;
    } else {
      sbits[(soff[a] + k - Da[a]) * Wp + w] = word;
    }
  };
  if (simd) {
#ifdef UBS_PREP_X86
    at::parallel_for(0, Wp, 1, [&](int64_t w0, int64_t w1) {
      for (int64_t w = w0; w < w1; ++w) {
        for (int64_t a0 = 0; a0 < q; a0 += 64) {
          const int64_t m = std::min<int64_t>(64, q - a0);
          label_mi_prep::bitset_words_avx512(
              bp, n, q, w, a0, m, tau, orig.data(), *std::max_element(&Ka[a0], &Ka[a0] + m),
              [&](int64_t a) { return Ka[a]; },
              [&](int64_t a, int64_t k, uint64_t word) { put(a, k, w, word); });
        }
      }
    });
#endif
  } else {
    std::vector<uint8_t> rename(static_cast<size_t>(q * tau), 0);  // bin -> name (top: Ka)
    for (int64_t a = 0; a < q; ++a) {
      for (int64_t v = 0; v < tau; ++v) rename[a * tau + v] = static_cast<uint8_t>(Ka[a]);
      for (int64_t k = Ka[a] - 1; k >= 0; --k) {
        if (hist[a * te + k] > 0) rename[a * tau + orig[a * tau + k]] = static_cast<uint8_t>(k);
      }
    }
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
            for (int64_t k = 0; k < Ka[a0 + a]; ++k) put(a0 + a, k, w, word[a * te + k]);
          }
        }
      }
    });
  }

  // Row scans of the sparse names: tables[(soff[a] + k - Da) * tau * qp + v * qp + b] = the
  // samples of label a's name k whose bin of label b is v (byte counts: at most 255 samples).
  const int64_t table = tau * qp;
  at::Tensor table_storage = at::zeros({soff[q] * table}, bins.options());
  uint8_t* tables = table_storage.data_ptr<uint8_t>();
#ifdef UBS_PREP_X86
  const bool simd_scan = simd && tau <= 64;
#endif
  at::parallel_for(0, q, 1, [&](int64_t a0, int64_t a1) {
    for (int64_t a = a0; a < a1; ++a) {
      for (int64_t k = Da[a]; k < Ka[a]; ++k) {
        const uint64_t* row = sbits + (soff[a] + k - Da[a]) * Wp;
        uint8_t* t = tables + (soff[a] + k - Da[a]) * table;
        for (int64_t w = 0; w < W; ++w) {
          for (uint64_t word = row[w]; word != 0; word &= word - 1) {
            const uint8_t* sample = bp + (w * 64 + __builtin_ctzll(word)) * q;
#ifdef UBS_PREP_X86
            if (simd_scan) {
              label_mi_prep::scan_row_avx512(sample, q, qp, tau, t);
              continue;
            }
#endif
            label_mi_prep::scan_row_portable(sample, q, qp, t);
          }
        }
      }
    }
  });

  // Blocks of the qa active positions whose bitsets fit kBlockBytes (sized for the most bitsets
  // per label; at least 8 blocks, so there is work to share), and block pairs I <= J in order,
  // with the number of label pairs before each.
  const int64_t lb = std::clamp<int64_t>(kBlockBytes / std::max<int64_t>(1, K * Wp * 8), 1,
                                         std::max<int64_t>(1, (qa + 7) / 8));
  const int64_t nb = (qa + lb - 1) / lb;
  std::vector<std::pair<int64_t, int64_t>> block_pairs;
  std::vector<int64_t> before{0};
  for (int64_t I = 0; I < nb; ++I) {
    for (int64_t J = I; J < nb; ++J) {
      const int64_t mi = std::min(qa, I * lb + lb) - I * lb;
      const int64_t mj = std::min(qa, J * lb + lb) - J * lb;
      block_pairs.emplace_back(I, J);
      before.push_back(before.back() + (I == J ? mi * (mi - 1) / 2 : mi * mj));
    }
  }
  // Chunks of block pairs with near-equal label-pair counts: a fixed number, whatever the
  // threads, so the row sums (one partial per chunk, added in chunk order) are reproducible.
  const int64_t pairs = qa * (qa - 1) / 2;
  const int64_t chunks = std::min<int64_t>(kMaxChunks, static_cast<int64_t>(block_pairs.size()));
  std::vector<int64_t> chunk_begin(chunks + 1, static_cast<int64_t>(block_pairs.size()));
  for (int64_t t = static_cast<int64_t>(block_pairs.size()) - 1; t >= 0; --t) {
    const int64_t c = pairs > 0 ? before[t] * chunks / pairs : 0;
    for (int64_t k = 0; k <= c; ++k) chunk_begin[k] = std::min(chunk_begin[k], t);
  }
  chunk_begin[0] = 0;

  // The matrix is zero where a constant label's pairs are skipped.
  auto out = rowsum ? at::empty({q}, bins.options().dtype(at::kFloat))
                    : (qa < q ? at::zeros({q, q}, bins.options().dtype(at::kFloat))
                              : at::empty({q, q}, bins.options().dtype(at::kFloat)));
  float* op = out.data_ptr<float>();
  const double N = static_cast<double>(n), lnN = n > 0 ? std::log(N) : 0.0;
  const XLogX xlx(n);
  std::vector<double> partial(rowsum ? chunks * q : 0, 0.0);
  const int64_t R = tiles.rows, C = tiles.cols;

  const int64_t Kmax = *std::max_element(Ka.begin(), Ka.end());
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    // Joint counts of one strip against one block: at most max(kStripRows, K) x lb * K.
    std::vector<int64_t> c(static_cast<size_t>(std::max(kStripRows, K) * lb * K));
    std::vector<int64_t> full(static_cast<size_t>(Kmax * Kmax));
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
    // The Ka x Kb table of a pair with sparse names: dense x dense counts from the tile
    // (cab, ldo), the rest from the row-scan tables of the sparse name's label.
    auto full_table = [&](int64_t a, int64_t b, const int64_t* cab, int64_t ldo) {
      const int64_t ka = Ka[a], kb = Ka[b], da = Da[a], db = Da[b];
      for (int64_t k = 0; k < ka; ++k) {
        int64_t* dst = &full[k * kb];
        if (k < da) {
          for (int64_t l = 0; l < db; ++l) dst[l] = cab[k * ldo + l];
          for (int64_t l = db; l < kb; ++l) {  // b's sparse name l: its samples' bins of a
            dst[l] = tables[(soff[b] + l - db) * table + orig[a * tau + k] * qp + a];
          }
        } else {  // a's sparse name k: its samples' bins of b
          const uint8_t* t = tables + (soff[a] + k - da) * table + b;
          for (int64_t l = 0; l < kb; ++l) dst[l] = t[orig[b * tau + l] * qp];
        }
      }
      return full.data();
    };
    for (int64_t chunk = c0; chunk < c1; ++chunk) {
      double* local = rowsum ? &partial[chunk * q] : nullptr;
      for (int64_t t = chunk_begin[chunk]; t < chunk_begin[chunk + 1]; ++t) {
        const auto [I, J] = block_pairs[t];
        const int64_t a_end = std::min(qa, I * lb + lb), b_end = std::min(qa, J * lb + lb);
        // Strips of consecutive labels of block I (at most kStripRows dense bitsets, or one
        // label) against the labels of block J after them. The dense bitsets of consecutive
        // positions are consecutive rows, so the strip's rows times J's rows is one matrix of
        // joint counts, computed in full-size register tiles whatever each label's Da; then
        // the pairs are visited a, then b, ascending by position. Strips depend on Da only, so
        // the row sums do not depend on the instruction set.
        for (int64_t pa0 = I * lb, pa1; pa0 < a_end; pa0 = pa1) {
          pa1 = pa0 + 1;
          while (pa1 < a_end && off[pa1 + 1] - off[pa0] <= kStripRows) ++pa1;
          const int64_t pb0 = std::max(J * lb, pa0 + 1);
          if (pb0 >= b_end) continue;
          const int64_t rows = off[pa1] - off[pa0], cols = off[b_end] - off[pb0];
          const uint64_t* A = bits + off[pa0] * Wp;
          const uint64_t* B = bits + off[pb0] * Wp;
          for (int64_t r = 0; r < rows; r += R) {
            for (int64_t col = 0; col < cols; col += C) {
              tiles.tile(std::min(R, rows - r), std::min(C, cols - col))(
                  A + r * Wp, B + col * Wp, Wp, cols, &c[r * cols + col]);
            }
          }
          for (int64_t pa = pa0; pa < pa1; ++pa) {
            const int64_t a = perm[pa];
            for (int64_t pb = std::max(pb0, pa + 1); pb < b_end; ++pb) {
              const int64_t b = perm[pb];
              const int64_t* cab = &c[(off[pa] - off[pa0]) * cols + (off[pb] - off[pb0])];
              const double mi =
                  Ka[a] == Da[a] && Ka[b] == Da[b]
                      ? pair_mi(a, b, Ka[a], Ka[b], cab, cols)
                      : pair_mi(a, b, Ka[a], Ka[b], full_table(a, b, cab, cols), Ka[b]);
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

// CPU kernel of ubs_kernels::label_mi: SPEC.md Eq. 6 for every pair of label columns.
//
// The one-hot Gram matrix costs 2 n (q tau)^2 flops; here each (label, bin) is a bitset over
// the n samples and a joint count is popcount(A_k & B_l). Only tau-1 bins per label are
// stored: the counts of the last bin follow from the marginals. Per pair the MI is
//   MI = (1/N) sum_kl c_kl ln c_kl + ln N - (1/N) sum_k a_k ln a_k - (1/N) sum_l b_l ln b_l,
// with the per-label sums precomputed. The AND+popcount kernels (one per instruction set,
// chosen at run time) are in label_mi_tiles.h, the passes over the bins in label_mi_prep.h.
//
// Cache blocking: labels go in blocks whose bitsets fit in L2, and all pairs of two blocks
// are done together, so a block is read from memory once per block pair, not once per pair
// (at q = 1000 the bitsets are 23 MB).
//
// Rare bins: a bin holding few samples (late in training most labels have a few) is cheaper
// to count from its samples' rows than with a bitset ANDed against every other label's; such
// "sparse" bins get byte tables of their samples' bins of every label instead of a bitset (see
// choose_sparse_names).
//
// One call runs the phases below in order; each fills its part of a Plan.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "checks.h"
#include "huge_pages.h"
#include "isa.h"
#include "label_mi_prep.h"
#include "label_mi_tiles.h"

namespace ubs_kernels::cpu {
namespace {

using label_mi_prep::Level;
using label_mi_tiles::kLanes;
using label_mi_tiles::Tiles;

constexpr int64_t kBlockBytes = 384 << 10;       // bitsets of one label block: stays in L2
constexpr int64_t kMaxChunks = 64;               // work units, and row-sum partials (fixed order)
constexpr int64_t kSparseTableBytes = 32 << 20;  // row-scan tables of the sparse names, at most
constexpr int64_t kStripRows = 12;               // dense bitsets of one strip of labels

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

// What one call works out before counting, phase by phase.
struct Plan {
  // The input: n samples of q labels, bins in [0, tau), row-major at bp.
  int64_t n = 0, q = 0, tau = 0;
  const uint8_t* bp = nullptr;
  int64_t W = 0, Wp = 0;  // 64-sample words per bitset, padded to whole vectors
  int64_t qp = 0;         // q padded to 64: the row length of a row-scan table
  label_mi_prep::Level prep = label_mi_prep::Level::kPortable;  // of the passes over the bins

  // bin_counts: counts[a * (tau + 1) + v], samples of label a in bin v (slot tau: out of range).
  std::vector<int64_t> counts;

  // rename_bins: label a's occupied bins renamed 0 .. Ka[a] by decreasing count; the last name
  // Ka[a] is its most populated bin, derived from the marginals, never stored.
  std::vector<int64_t> Ka;
  int64_t te = 2;                // the largest occupancy (at least 2): hist's row length
  std::vector<uint8_t> orig;     // orig[a * tau + k]: the bin of name k
  std::vector<int64_t> hist;     // hist[a * te + k]: the samples of name k (k <= Ka[a])
  std::vector<double> marginal;  // sum over names of c ln c, per label

  // choose_sparse_names: names 0 .. Da[a] - 1 are dense (a bitset each), Da[a] .. Ka[a] - 1
  // sparse; sparse name k of label a has table soff[a] + k - Da[a].
  std::vector<int64_t> Da, soff;

  // order_labels: position p holds label perm[p] (pos is the inverse); its dense bitsets are
  // rows off[p] .. off[p + 1] - 1. The qa labels with two or more occupied bins come first.
  int64_t qa = 0;
  std::vector<int64_t> perm, pos, off;
  int64_t K = 1;  // the most dense bitsets of any label

  // plan_work: label blocks of lb positions, the block pairs I <= J, and chunks of them.
  int64_t lb = 1;
  std::vector<std::pair<int64_t, int64_t>> block_pairs;
  std::vector<int64_t> chunk_begin;  // chunk c does block pairs chunk_begin[c] .. [c + 1] - 1
  int64_t chunks() const { return static_cast<int64_t>(chunk_begin.size()) - 1; }
};

// The renamed bins' bitsets and the sparse names' row-scan tables.
struct Stored {
  at::Tensor storage, table_storage;  // own the memory below
  uint64_t* bits = nullptr;           // dense name k of label a: row off[pos[a]] + k, Wp words
  uint64_t* sbits = nullptr;          // sparse name k of label a: row soff[a] + k - Da[a]
  uint8_t* tables = nullptr;          // sparse name's table: tau x qp byte counts
  int64_t table = 0;                  // tau * qp
};

// Phase 1: per-label bin counts and the range check, in one pass, a block of 64 labels per task.
void bin_counts(Plan& p) {
  const int64_t slots = p.tau + 1, q = p.q;
  p.counts.assign(static_cast<size_t>(q * slots), 0);
  at::parallel_for(0, (q + 63) / 64, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t a0 = b0 * 64; a0 < std::min(q, b1 * 64); a0 += 64) {
      const int64_t m = std::min<int64_t>(64, q - a0);
      int64_t* h = &p.counts[a0 * slots];
#ifdef UBS_ISA_X86
      if (p.prep != Level::kPortable && p.tau <= label_mi_prep::kMaxSimdTau) {
        if (p.prep == Level::kAvx512bw) {
          label_mi_prep::bin_counts_avx512(p.bp, p.n, q, a0, m, p.tau, h);
        } else {
          label_mi_prep::bin_counts_avx2(p.bp, p.n, q, a0, m, p.tau, h);
        }
        continue;
      }
#endif
      label_mi_prep::bin_counts_portable(p.bp, p.n, q, a0, m, p.tau, h);
    }
  });
  for (int64_t a = 0; a < q; ++a) {
    TORCH_CHECK_VALUE(p.counts[a * slots + p.tau] == 0, "bins must be in [0, tau=", p.tau, ")");
  }
}

// Phase 2: MI does not change when a label's bins are renamed or its empty bins dropped, and U
// is usually concentrated in a few bins (the demo MLP at Corel5k size: 5-7 of 10 per label
// while it trains, 2-4 once its predictions settle). So each label's occupied bins are renamed
// 0, 1, ... by decreasing count, its most populated bin gets the last name Ka (the derived
// one), and label a keeps Ka = occupancy - 1 stored names (one phantom name of count 0 for a
// constant label): a pair costs Ka * Kb joint counts, not (tau - 1)^2.
void rename_bins(Plan& p) {
  const int64_t q = p.q, tau = p.tau, slots = tau + 1;
  p.Ka.assign(static_cast<size_t>(q), 0);
  p.orig.assign(static_cast<size_t>(q * tau), 0);
  p.hist.assign(static_cast<size_t>(q * tau), 0);
  std::vector<int64_t> order(static_cast<size_t>(tau));
  for (int64_t a = 0; a < q; ++a) {
    const int64_t* h = &p.counts[a * slots];
    const int64_t occupied = std::count_if(h, h + tau, [](int64_t c) { return c > 0; });
    p.Ka[a] = std::max<int64_t>(occupied - 1, 1);
    p.te = std::max(p.te, occupied);
    for (int64_t v = 0; v < tau; ++v) order[v] = v;
    std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return h[x] > h[y]; });
    // order[0] is the top bin; names 0 .. Ka-1 are order[1 ..] (an empty bin for the phantom).
    for (int64_t k = 0; k < p.Ka[a]; ++k) p.orig[a * tau + k] = static_cast<uint8_t>(order[k + 1]);
  }
  const int64_t te = p.te;
  for (int64_t a = 0; a < q; ++a) {
    int64_t rest = p.n;
    for (int64_t k = 0; k < p.Ka[a]; ++k) {
      p.hist[a * te + k] = p.counts[a * slots + p.orig[a * tau + k]];
      rest -= p.hist[a * te + k];
    }
    p.hist[a * te + p.Ka[a]] = rest;
  }
  p.marginal.assign(static_cast<size_t>(q), 0.0);
  for (int64_t a = 0; a < q; ++a) {
    for (int64_t k = 0; k <= p.Ka[a]; ++k) p.marginal[a] += xlogx(p.hist[a * te + k]);
  }
}

// The count threshold S of least estimated cost: names holding at most S samples are sparse.
// A stored name costs one bitset AND per stored name of every other label, Wp / 8 vector steps
// each; counted from its samples' rows (a row scan: tau compares per 64 labels per sample,
// label_mi_prep.h) it costs about 4 count * tau * ceil(q / 64) steps (the 4 measured on the
// training-run bins of bench_selector.py) plus a table lookup per joint count. S is at most
// 255 (byte counters); -1: no name is sparse.
int64_t sparse_threshold(const Plan& p) {
  std::vector<int64_t> small;
  int64_t dense = 0;
  for (int64_t a = 0; a < p.q; ++a) {
    dense += p.Ka[a];
    for (int64_t k = 0; k < p.Ka[a]; ++k) {
      if (p.hist[a * p.te + k] <= 255) small.push_back(p.hist[a * p.te + k]);
    }
  }
  std::sort(small.begin(), small.end());
  const double per_word = static_cast<double>(p.Wp / kLanes);
  const double per_sample = static_cast<double>(p.tau) * (p.qp / 64) * 4.0;
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
  return S;
}

// Phase 3: dense and sparse names. Names at or below sparse_threshold are sparse, fewer if the
// tables would take more than kSparseTableBytes (tau * qp bytes per name): then the smallest
// stay sparse. Names are in decreasing count, so label a's dense names are 0 .. Da - 1. With U
// spread over all bins (every count near n / tau) no name is sparse and this is the all-bitset
// kernel.
void choose_sparse_names(Plan& p) {
  const int64_t q = p.q, te = p.te, S = sparse_threshold(p);
  p.Da = p.Ka;
  for (int64_t a = 0; a < q; ++a) {
    while (p.Da[a] > 0 && p.hist[a * te + p.Da[a] - 1] <= S) --p.Da[a];
  }
  int64_t sparse_names = 0;
  for (int64_t a = 0; a < q; ++a) sparse_names += p.Ka[a] - p.Da[a];
  const int64_t budget = kSparseTableBytes / std::max<int64_t>(1, p.tau * p.qp);
  if (sparse_names > budget) {  // keep the smallest names sparse (a suffix of each label)
    std::vector<int64_t> c;
    for (int64_t a = 0; a < q; ++a) {
      for (int64_t k = p.Da[a]; k < p.Ka[a]; ++k) c.push_back(p.hist[a * te + k]);
    }
    std::nth_element(c.begin(), c.begin() + budget, c.end());
    const int64_t cut = c[budget] - 1;  // counts <= cut stay sparse: at most budget names
    for (int64_t a = 0; a < q; ++a) {
      while (p.Da[a] < p.Ka[a] && p.hist[a * te + p.Da[a]] > cut) ++p.Da[a];
    }
  }
  p.soff.assign(static_cast<size_t>(q + 1), 0);
  for (int64_t a = 0; a < q; ++a) p.soff[a + 1] = p.soff[a] + p.Ka[a] - p.Da[a];
}

// Phase 4: label order. A label with one occupied bin (constant over the samples) has MI 0
// with every other label: its pairs are skipped (late in training most labels of the demo MLP
// at Corel5k size are constant, and their pairs' epilogues were the largest part of the time).
// The active labels come first, then labels by decreasing Da (stable): labels with equal Da
// are neighbours, so one register tile can span several pairs.
void order_labels(Plan& p) {
  const int64_t q = p.q, slots = p.tau + 1;
  std::vector<uint8_t> active(static_cast<size_t>(q));
  p.qa = 0;
  for (int64_t a = 0; a < q; ++a) {
    const int64_t* h = &p.counts[a * slots];
    active[a] = std::count_if(h, h + p.tau, [](int64_t c) { return c > 0; }) >= 2;
    p.qa += active[a];
  }
  p.perm.resize(static_cast<size_t>(q));
  p.pos.resize(static_cast<size_t>(q));
  p.off.assign(static_cast<size_t>(q + 1), 0);
  for (int64_t a = 0; a < q; ++a) p.perm[a] = a;
  std::stable_sort(p.perm.begin(), p.perm.end(), [&](int64_t x, int64_t y) {
    return active[x] != active[y] ? active[x] > active[y] : p.Da[x] > p.Da[y];
  });
  for (int64_t i = 0; i < q; ++i) {
    p.pos[p.perm[i]] = i;
    p.off[i + 1] = p.off[i] + p.Da[p.perm[i]];
  }
  p.K = std::max<int64_t>(1, p.Da[p.perm[0]]);
}

// Phase 5, portable: per word w and block of labels, the 64 samples' bits are set in a small
// buffer (te words per label, so no branch on the derived bin) that stays in L1.
template <typename Put>
void bitsets_portable(const Plan& p, Put&& put) {
  const int64_t q = p.q, tau = p.tau, te = p.te;
  std::vector<uint8_t> rename(static_cast<size_t>(q * tau), 0);  // bin -> name (top: Ka)
  for (int64_t a = 0; a < q; ++a) {
    for (int64_t v = 0; v < tau; ++v) rename[a * tau + v] = static_cast<uint8_t>(p.Ka[a]);
    for (int64_t k = p.Ka[a] - 1; k >= 0; --k) {
      if (p.hist[a * te + k] > 0) rename[a * tau + p.orig[a * tau + k]] = static_cast<uint8_t>(k);
    }
  }
  const int64_t label_block = std::max<int64_t>(1, 2048 / te);
  at::parallel_for(0, p.Wp, 1, [&](int64_t w0, int64_t w1) {
    std::vector<uint64_t> word(static_cast<size_t>(label_block * te));
    for (int64_t w = w0; w < w1; ++w) {
      for (int64_t a0 = 0; a0 < q; a0 += label_block) {
        const int64_t m = std::min(label_block, q - a0);
        std::fill(word.begin(), word.end(), 0);
        for (int64_t i = w * 64; i < std::min(p.n, (w + 1) * 64); ++i) {
          const uint8_t* row = p.bp + i * q + a0;
          const uint64_t bit = uint64_t{1} << (i - w * 64);
          const uint8_t* name = rename.data() + a0 * tau;
          for (int64_t a = 0; a < m; ++a) word[a * te + name[a * tau + row[a]]] |= bit;
        }
        for (int64_t a = 0; a < m; ++a) {
          for (int64_t k = 0; k < p.Ka[a0 + a]; ++k) put(a0 + a, k, w, word[a * te + k]);
        }
      }
    }
  });
}

// Phase 5: bitsets of the renamed bins, every word written once (no zeroing pass). Sparse
// names get one too, only read to list their samples. AVX-512BW: compares and a bit transpose
// (label_mi_prep.h). at::empty: 64-byte aligned, and Wp is a multiple of 8 words, so every row
// is aligned.
Stored make_bitsets(const Plan& p, const at::TensorOptions& options) {
  Stored s;
  const int64_t Wp = p.Wp;
  s.storage = at::empty({(p.off[p.q] + p.soff[p.q]) * Wp}, options.dtype(at::kLong));
  s.bits = reinterpret_cast<uint64_t*>(s.storage.data_ptr<int64_t>());
  s.sbits = s.bits + p.off[p.q] * Wp;
  advise_huge_pages(s.bits, s.storage.nbytes());
  uint64_t* bits = s.bits;
  uint64_t* sbits = s.sbits;
  auto put = [&](int64_t a, int64_t k, int64_t w, uint64_t word) {
    if (k < p.Da[a]) {
      bits[(p.off[p.pos[a]] + k) * Wp + w] = word;
    } else {
      sbits[(p.soff[a] + k - p.Da[a]) * Wp + w] = word;
    }
  };
  // The AVX-512BW words come from a 64 x 64 bit transpose per block of 64 labels: with fewer
  // labels it transposes mostly empty lanes, and the portable loop is faster.
  if (p.prep != Level::kAvx512bw || p.q < 64) {
    bitsets_portable(p, put);
    return s;
  }
#ifdef UBS_ISA_X86
  at::parallel_for(0, Wp, 1, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      for (int64_t a0 = 0; a0 < p.q; a0 += 64) {
        const int64_t m = std::min<int64_t>(64, p.q - a0);
        label_mi_prep::bitset_words_avx512(
            p.bp, p.n, p.q, w, a0, m, p.tau, p.orig.data(),
            *std::max_element(&p.Ka[a0], &p.Ka[a0] + m), [&](int64_t a) { return p.Ka[a]; },
            [&](int64_t a, int64_t k, uint64_t word) { put(a, k, w, word); });
      }
    }
  });
#endif
  return s;
}

// Phase 6: row scans of the sparse names: tables[(soff[a] + k - Da) * tau * qp + v * qp + b] =
// the samples of label a's name k whose bin of label b is v (byte counts: at most 255 samples).
void scan_sparse_rows(const Plan& p, Stored& s, const at::TensorOptions& options) {
  s.table = p.tau * p.qp;
  s.table_storage = at::zeros({p.soff[p.q] * s.table}, options);
  s.tables = s.table_storage.data_ptr<uint8_t>();
#ifdef UBS_ISA_X86
  const Level scan = p.tau <= 64 ? p.prep : Level::kPortable;
#endif
  at::parallel_for(0, p.q, 1, [&](int64_t a0, int64_t a1) {
    for (int64_t a = a0; a < a1; ++a) {
      for (int64_t k = p.Da[a]; k < p.Ka[a]; ++k) {
        const uint64_t* row = s.sbits + (p.soff[a] + k - p.Da[a]) * p.Wp;
        uint8_t* t = s.tables + (p.soff[a] + k - p.Da[a]) * s.table;
        for (int64_t w = 0; w < p.W; ++w) {
          for (uint64_t word = row[w]; word != 0; word &= word - 1) {
            const uint8_t* sample = p.bp + (w * 64 + __builtin_ctzll(word)) * p.q;
#ifdef UBS_ISA_X86
            if (scan == Level::kAvx512bw) {
              label_mi_prep::scan_row_avx512(sample, p.q, p.qp, p.tau, t);
              continue;
            }
            if (scan == Level::kAvx2) {
              label_mi_prep::scan_row_avx2(sample, p.q, p.qp, p.tau, t);
              continue;
            }
#endif
            label_mi_prep::scan_row_portable(sample, p.q, p.qp, t);
          }
        }
      }
    }
  });
}

// Phase 7: blocks of the qa active positions whose bitsets fit kBlockBytes (sized for the most
// bitsets per label; at least 8 blocks, so there is work to share), the block pairs I <= J in
// order, and chunks of block pairs with near-equal label-pair counts: a fixed number, whatever
// the threads, so the row sums (one partial per chunk, added in chunk order) are reproducible.
void plan_work(Plan& p) {
  const int64_t qa = p.qa;
  p.lb = std::clamp<int64_t>(kBlockBytes / std::max<int64_t>(1, p.K * p.Wp * 8), 1,
                             std::max<int64_t>(1, (qa + 7) / 8));
  const int64_t lb = p.lb, nb = (qa + lb - 1) / lb;
  std::vector<int64_t> before{0};  // label pairs before each block pair
  for (int64_t I = 0; I < nb; ++I) {
    for (int64_t J = I; J < nb; ++J) {
      const int64_t mi = std::min(qa, I * lb + lb) - I * lb;
      const int64_t mj = std::min(qa, J * lb + lb) - J * lb;
      p.block_pairs.emplace_back(I, J);
      before.push_back(before.back() + (I == J ? mi * (mi - 1) / 2 : mi * mj));
    }
  }
  const int64_t pairs = qa * (qa - 1) / 2;
  const int64_t count = static_cast<int64_t>(p.block_pairs.size());
  const int64_t chunks = std::min<int64_t>(kMaxChunks, count);
  p.chunk_begin.assign(static_cast<size_t>(chunks + 1), count);
  for (int64_t t = count - 1; t >= 0; --t) {
    const int64_t c = pairs > 0 ? before[t] * chunks / pairs : 0;
    for (int64_t k = 0; k <= c; ++k) p.chunk_begin[k] = std::min(p.chunk_begin[k], t);
  }
  p.chunk_begin[0] = 0;
}

// Phase 8: the joint counts of every active pair and their MI, one worker per thread. A
// worker owns its scratch; `local` is its chunk's row-sum partial (row-sum mode) or null, and
// then the pair's MI goes to the (q, q) matrix `op`.
class PairWorker {
 public:
  PairWorker(const Plan& p, const Stored& s, const Tiles& tiles, const XLogX& xlx, float* op)
      : p_(p),
        s_(s),
        tiles_(tiles),
        xlx_(xlx),
        op_(op),
        c_(static_cast<size_t>(std::max(kStripRows, p.K) * p.lb * p.K)),
        full_(static_cast<size_t>(square(*std::max_element(p.Ka.begin(), p.Ka.end())))),
        n_(static_cast<double>(p.n)),
        ln_n_(p.n > 0 ? std::log(n_) : 0.0) {}

  // Every label pair of the chunk's block pairs.
  void chunk(int64_t chunk, double* local) {
    for (int64_t t = p_.chunk_begin[chunk]; t < p_.chunk_begin[chunk + 1]; ++t) {
      const auto [I, J] = p_.block_pairs[t];
      block_pair(I, J, local);
    }
  }

 private:
  static int64_t square(int64_t x) { return x * x; }

  // Strips of consecutive labels of block I (at most kStripRows dense bitsets, or one label)
  // against the labels of block J after them. The dense bitsets of consecutive positions are
  // consecutive rows, so the strip's rows times J's rows is one matrix of joint counts,
  // computed in full-size register tiles whatever each label's Da; then the pairs are visited
  // a, then b, ascending by position. Strips depend on Da only, so the row sums do not depend
  // on the instruction set.
  void block_pair(int64_t I, int64_t J, double* local) {
    const int64_t lb = p_.lb, Wp = p_.Wp;
    const int64_t* off = p_.off.data();
    const int64_t a_end = std::min(p_.qa, I * lb + lb), b_end = std::min(p_.qa, J * lb + lb);
    for (int64_t pa0 = I * lb, pa1; pa0 < a_end; pa0 = pa1) {
      pa1 = pa0 + 1;
      while (pa1 < a_end && off[pa1 + 1] - off[pa0] <= kStripRows) ++pa1;
      const int64_t pb0 = std::max(J * lb, pa0 + 1);
      if (pb0 >= b_end) continue;
      const int64_t rows = off[pa1] - off[pa0], cols = off[b_end] - off[pb0];
      const uint64_t* A = s_.bits + off[pa0] * Wp;
      const uint64_t* B = s_.bits + off[pb0] * Wp;
      const int64_t R = tiles_.rows, C = tiles_.cols;
      for (int64_t r = 0; r < rows; r += R) {
        for (int64_t col = 0; col < cols; col += C) {
          tiles_.tile(std::min(R, rows - r), std::min(C, cols - col))(A + r * Wp, B + col * Wp, Wp,
                                                                      cols, &c_[r * cols + col]);
        }
      }
      for (int64_t pa = pa0; pa < pa1; ++pa) {
        for (int64_t pb = std::max(pb0, pa + 1); pb < b_end; ++pb) {
          const int64_t* cab = &c_[(off[pa] - off[pa0]) * cols + (off[pb] - off[pb0])];
          put(p_.perm[pa], p_.perm[pb], cab, cols, local);
        }
      }
    }
  }

  // The MI of labels a and b from their dense x dense counts cab (row stride ldo).
  void put(int64_t a, int64_t b, const int64_t* cab, int64_t ldo, double* local) {
    const int64_t ka = p_.Ka[a], kb = p_.Ka[b];
    const double mi = ka == p_.Da[a] && kb == p_.Da[b]
                          ? pair_mi(a, b, ka, kb, cab, ldo)
                          : pair_mi(a, b, ka, kb, full_table(a, b, cab, ldo), kb);
    if (local != nullptr) {
      local[a] += mi;
      local[b] += mi;
    } else {
      op_[a * p_.q + b] = op_[b * p_.q + a] = static_cast<float>(mi);
    }
  }

  // MI of labels a and b from their ka x kb joint counts cab[k * ldo + l]: the table is
  // completed with the marginals (last row and column). One partial sum per row, so the adds
  // are short independent chains.
  double pair_mi(int64_t a, int64_t b, int64_t ka, int64_t kb, const int64_t* cab, int64_t ldo) {
    const int64_t* ha = &p_.hist[a * p_.te];
    const int64_t* hb = &p_.hist[b * p_.te];
    double joint = 0.0, last_col = 0.0;
    int64_t corner = p_.n;
    for (int64_t k = 0; k < ka; ++k) {
      int64_t row_rest = ha[k];
      double row = 0.0;
      for (int64_t l = 0; l < kb; ++l) {
        row += xlx_(cab[k * ldo + l]);
        row_rest -= cab[k * ldo + l];
      }
      joint += row;
      last_col += xlx_(row_rest);
      corner -= ha[k];
    }
    double last_row = 0.0;
    for (int64_t l = 0; l < kb; ++l) {
      int64_t col_rest = hb[l];
      for (int64_t k = 0; k < ka; ++k) col_rest -= cab[k * ldo + l];
      last_row += xlx_(col_rest);
      corner -= col_rest;
    }
    joint += last_col + last_row + xlx_(corner);
    const double mi = p_.n > 0 ? (joint - p_.marginal[a] - p_.marginal[b]) / n_ + ln_n_ : 0.0;
    return mi > 0.0 ? mi : 0.0;  // rounding can leave a true zero slightly negative
  }

  // The Ka x Kb table of a pair with sparse names: dense x dense counts from the tile
  // (cab, ldo), the rest from the row-scan tables of the sparse name's label.
  const int64_t* full_table(int64_t a, int64_t b, const int64_t* cab, int64_t ldo) {
    const int64_t ka = p_.Ka[a], kb = p_.Ka[b], da = p_.Da[a], db = p_.Da[b];
    const int64_t tau = p_.tau, qp = p_.qp, table = s_.table;
    for (int64_t k = 0; k < ka; ++k) {
      int64_t* dst = &full_[k * kb];
      if (k < da) {
        for (int64_t l = 0; l < db; ++l) dst[l] = cab[k * ldo + l];
        for (int64_t l = db; l < kb; ++l) {  // b's sparse name l: its samples' bins of a
          dst[l] = s_.tables[(p_.soff[b] + l - db) * table + p_.orig[a * tau + k] * qp + a];
        }
      } else {  // a's sparse name k: its samples' bins of b
        const uint8_t* t = s_.tables + (p_.soff[a] + k - da) * table + b;
        for (int64_t l = 0; l < kb; ++l) dst[l] = t[p_.orig[b * tau + l] * qp];
      }
    }
    return full_.data();
  }

  const Plan& p_;
  const Stored& s_;
  const Tiles& tiles_;
  const XLogX& xlx_;
  float* op_;
  std::vector<int64_t> c_;     // joint counts of one strip against one block
  std::vector<int64_t> full_;  // one pair's Ka x Kb table when it has sparse names
  double n_, ln_n_;
};

// Phase 9: the chunks' row-sum partials added in chunk order (whatever the threads), and the
// diagonal C_aa = 1.
void finish(const Plan& p, const std::vector<double>& partial, bool rowsum, float* op) {
  const int64_t q = p.q;
  std::vector<double> sums(rowsum ? q : 0, 0.0);
  for (int64_t chunk = 0; rowsum && chunk < p.chunks(); ++chunk) {
    for (int64_t j = 0; j < q; ++j) sums[j] += partial[chunk * q + j];
  }
  for (int64_t a = 0; a < q; ++a) {
    if (rowsum) {
      op[a] = static_cast<float>(sums[a] + 1.0);
    } else {
      op[a * q + a] = 1.f;
    }
  }
}

at::Tensor label_mi_cpu(const at::Tensor& bins_in, int64_t tau, bool rowsum) {
  checks::label_mi(bins_in, tau);
  const at::Tensor bins = bins_in.contiguous();
  Plan p;
  p.n = bins.size(0);
  p.q = bins.size(1);
  p.tau = tau;
  p.bp = bins.data_ptr<uint8_t>();
  p.W = (p.n + 63) / 64;
  p.Wp = (p.W + kLanes - 1) / kLanes * kLanes;
  p.qp = (p.q + 63) / 64 * 64;
  const Isa cap = isa_cap();
  p.prep = label_mi_prep::level(cap);
  bin_counts(p);
  rename_bins(p);
  choose_sparse_names(p);
  order_labels(p);
  Stored s = make_bitsets(p, bins.options());
  scan_sparse_rows(p, s, bins.options());
  plan_work(p);
  const Tiles tiles = label_mi_tiles::choose_tiles(cap, isa_auto());

  // The matrix is zero where a constant label's pairs are skipped.
  const auto f32 = bins.options().dtype(at::kFloat);
  auto out = rowsum ? at::empty({p.q}, f32)
                    : (p.qa < p.q ? at::zeros({p.q, p.q}, f32) : at::empty({p.q, p.q}, f32));
  float* op = out.data_ptr<float>();
  const XLogX xlx(p.n);
  std::vector<double> partial(rowsum ? p.chunks() * p.q : 0, 0.0);
  at::parallel_for(0, p.chunks(), 1, [&](int64_t c0, int64_t c1) {
    PairWorker worker(p, s, tiles, xlx, op);
    for (int64_t chunk = c0; chunk < c1; ++chunk) {
      worker.chunk(chunk, rowsum ? &partial[chunk * p.q] : nullptr);
    }
  });
  finish(p, partial, rowsum, op);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ubs_kernels, CPU, m) { m.impl("label_mi", &label_mi_cpu); }

Isa label_mi_isa() { return label_mi_tiles::choose_tiles(isa_cap(), isa_auto()).isa; }

}  // namespace ubs_kernels::cpu

// Shared by label_mi.cu (the tensor-core kernel) and label_mi_prep.cu (the passes around it):
// the tile geometry, the block -> tile pair map and the workspace layout of
// ubs_kernels::label_mi on CUDA.
//
// The joint counts of Eq. 6 are the Gram matrix of the one-hot matrix X (n samples x q*kb
// columns (label, bin)). A tile side holds 128 one-hot rows: G whole labels of kb bins each.
// Bins: the last bin of each label is left out (kb = tau - 1) and its counts are recovered
// from the marginals, as in csrc/cpu/label_mi.cpp; that needs a label's kb x kb block in one
// tile, so it is used while kb <= 128 (tau <= 129). Larger tau keeps every bin (kb = tau), one
// label per tile, and walks S x S sub-tiles of 128 bins, summing c ln c over all of them.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace ubs_kernels::cuda {

constexpr int kMiTile = 128;   // one-hot rows per tile side
constexpr int kMiChunk = 128;  // samples per pipeline stage; bins are padded to a multiple

struct MiGeometry {
  int64_t n, n_pad;  // samples, padded to kMiChunk with bin 0xFF (never counted)
  int64_t q;         // labels; binsT has one more row, all 0xFF, read for labels past q
  int tau;
  bool full;      // every bin kept (tau > 129) instead of the last one recovered
  int kt;         // one-hot rows per label in a tile: tau - 1, or 128 when full
  int G;          // labels per tile
  int S;          // sub-tiles per side (1, or ceil(tau / 128) when full)
  int log2_tpp;   // log2 of the lanes that share one label pair in the epilogue
  int64_t NG;     // label tiles
  int64_t tiles;  // tile pairs (i <= j): thread blocks of the tensor-core kernel
};

inline MiGeometry mi_geometry(int64_t n, int64_t q, int tau) {
  MiGeometry g{};
  g.n = n;
  g.n_pad = (n + kMiChunk - 1) / kMiChunk * kMiChunk;
  g.q = q;
  g.tau = tau;
  g.full = tau - 1 > kMiTile;
  g.kt = g.full ? kMiTile : tau - 1;
  g.G = g.full ? 1 : kMiTile / g.kt;
  g.S = g.full ? (tau + kMiTile - 1) / kMiTile : 1;
  int tpp = 1;
  while (tpp < 32 && tpp < g.kt) tpp <<= 1;
  g.log2_tpp = 0;
  while ((1 << g.log2_tpp) < tpp) ++g.log2_tpp;
  g.NG = (q + g.G - 1) / g.G;
  g.tiles = g.NG * (g.NG + 1) / 2;
  return g;
}

// Workspace: row-sum accumulators (fixed point, q x u64), marginal sums of c ln c (q x f64),
// marginal counts (q x tau x i32), then the transposed bins ((q + 1) x n_pad bytes), 256-aligned.
struct MiWorkspace {
  unsigned long long* row_acc;
  double* marginal_xlogx;
  int32_t* hist;
  uint8_t* binsT;
  size_t zeroed_bytes;  // row_acc .. hist, cleared before every call
};

// Byte offsets of the workspace parts; total() is what the caller allocates.
struct MiLayout {
  size_t acc_bytes, hist_bytes, binsT_offset, binsT_bytes;
  explicit MiLayout(const MiGeometry& g)
      : acc_bytes(static_cast<size_t>(g.q) * 8),
        hist_bytes(static_cast<size_t>(g.q) * g.tau * 4),
        binsT_offset((2 * acc_bytes + hist_bytes + 255) / 256 * 256),
        binsT_bytes(static_cast<size_t>(g.q + 1) * static_cast<size_t>(g.n_pad)) {}
  size_t total() const { return binsT_offset + binsT_bytes; }
};

inline MiWorkspace mi_workspace(const MiGeometry& g, void* base) {
  const MiLayout l(g);
  auto* p = static_cast<uint8_t*>(base);
  MiWorkspace w{};
  w.row_acc = reinterpret_cast<unsigned long long*>(p);
  w.marginal_xlogx = reinterpret_cast<double*>(p + l.acc_bytes);
  w.hist = reinterpret_cast<int32_t*>(p + 2 * l.acc_bytes);
  w.binsT = p + l.binsT_offset;
  w.zeroed_bytes = 2 * l.acc_bytes + l.hist_bytes;
  return w;
}

// Block t -> tile pair (i, j), i <= j, in row-major order of the upper triangle, so blocks
// running together share their A tile in L2.
__device__ inline void tile_pair(int64_t t, int64_t ng, int64_t& i, int64_t& j) {
  const double d = 2.0 * static_cast<double>(ng) + 1.0;
  int64_t r = static_cast<int64_t>((d - sqrt(d * d - 8.0 * static_cast<double>(t))) * 0.5);
  r = r < 0 ? 0 : (r > ng - 1 ? ng - 1 : r);
  auto start = [ng](int64_t x) { return x * ng - x * (x - 1) / 2; };
  while (r > 0 && start(r) > t) --r;
  while (r + 1 < ng && start(r + 1) <= t) ++r;
  i = r;
  j = r + (t - start(r));
}

// label_mi_prep.cu: bins (n, q) -> binsT (q + 1, n_pad) and hist, *bad set for a bin >= tau.
cudaError_t launch_mi_transpose(const uint8_t* bins, const MiGeometry& g, const MiWorkspace& w,
                                int32_t* bad, cudaStream_t stream);
// sum_k c ln c of each label's marginal counts.
cudaError_t launch_mi_marginals(const MiGeometry& g, const MiWorkspace& w, cudaStream_t stream);
// The diagonal (C_aa = 1) or, with rowsum, c = fixed-point sums + 1.
cudaError_t launch_mi_finalize(const MiGeometry& g, const MiWorkspace& w, bool rowsum, float* out,
                               cudaStream_t stream);

}  // namespace ubs_kernels::cuda

// CUDA kernel of ubs_kernels::label_mi: docs/spec.md Eq. 6 for every label pair on int8 tensor
// cores.
//
// One block per pair of label tiles (i <= j; geometry in label_mi.cuh). Every 128 samples the
// block copies the transposed bins of its labels (cp.async, 3 stages), expands them in shared
// memory into one-hot u8 tiles (2 stages) and multiplies them with mma.sync m16n8k32: 8 warps
// of 64 x 32 counts, exact in int32. The expansion is the costly part (tensor cores count
// 4096 products per mma): for tau <= 16 each one-hot word is one prmt indexed by the bin
// nibbles, otherwise a SWAR byte compare. The MI epilogue is fused: the counts go to shared
// memory, a group of lanes per label pair sums c ln c in float64 over the tau x tau table
// (the dropped last bin from the marginals) and writes C[a][b] = C[b][a], or adds the pair to
// both labels' row sums as fixed-point integers, so c = C 1 is deterministic and needs O(q)
// memory.
#include <algorithm>

#include "device_utils.cuh"
#include "kernels.cuh"
#include "label_mi.cuh"
#include "mma_int8.cuh"
#include "onehot.cuh"

namespace ubs_kernels::cuda {
namespace {

constexpr int kThreads = 256;  // 8 warps: 2 (rows) x 4 (columns), 64 x 32 counts each
constexpr int kOhSide = kMiTile * kOhStride;
constexpr int kOhBytes = 2 * 2 * kOhSide;  // 2 stages x (A, B)
constexpr int kCsStride = kMiTile + 8;     // int32 per row of the count tile in the epilogue
constexpr int kRawStages = 3;
constexpr int kUnitsBytes = 2 * kMiTile * 16;  // at most 256 expansion units (int4)
constexpr int kAccBytes = 2 * kMiTile * 8;     // fixed-point row sums of the A and B labels
constexpr int kRawOffset = kOhBytes + kUnitsBytes + kAccBytes + 8 * sizeof(double);
static_assert(kMiTile * kCsStride * 4 <= kOhBytes, "the count tile reuses the one-hot stages");
static_assert(kRawOffset % 16 == 0, "cp.async needs 16-byte aligned destinations");

size_t smem_bytes(const MiGeometry& g) {
  return kRawOffset + static_cast<size_t>(kRawStages) * 2 * g.G * kMiChunk;
}

struct MiArgs {
  const uint8_t* binsT;
  const int32_t* hist;
  const double* marginal_xlogx;
  unsigned long long* row_acc;
  float* out;
  MiGeometry g;
  bool rowsum;
};

// Eq. 6 from sum c ln c over the joint table: MI = (joint - H_a - H_b) / N + ln N.
__device__ __forceinline__ void emit_pair(const MiArgs& args, double joint, int64_t a, int64_t b,
                                          int la, int lb, unsigned long long* lab_acc) {
  const double n = static_cast<double>(args.g.n);
  double mi = (joint - args.marginal_xlogx[a] - args.marginal_xlogx[b]) / n + log(n);
  mi = mi > 0.0 ? mi : 0.0;  // rounding can leave a true zero slightly negative
  if (args.rowsum) {
    const unsigned long long fx = __double2ull_rn(mi * 0x1p32);
    atomicAdd(&lab_acc[la], fx);
    atomicAdd(&lab_acc[kMiTile + lb], fx);
  } else {
    args.out[a * args.g.q + b] = args.out[b * args.g.q + a] = static_cast<float>(mi);
  }
}

// What one block works on: its pair of label tiles, its shared memory and its place in the block.
struct MiBlock {
  int64_t a0, b0;  // first labels of the A (rows) and B (columns) tiles
  bool diag;
  uint8_t* oh;  // one-hot stages, then the count tile
  int4* units;
  unsigned long long* lab_acc;
  double* red;
  uint8_t* raw;
  int tid, lane, warp, wm, wn;
  int raw_side, label_units, side_units;
  int64_t nch;
};

__device__ __forceinline__ MiBlock mi_block(const MiGeometry& g, int64_t ti, int64_t tj,
                                            uint8_t* smem) {
  MiBlock k;
  k.a0 = ti * g.G;
  k.b0 = tj * g.G;
  k.diag = ti == tj;
  k.oh = smem;
  k.units = reinterpret_cast<int4*>(smem + kOhBytes);
  k.lab_acc = reinterpret_cast<unsigned long long*>(smem + kOhBytes + kUnitsBytes);
  k.red = reinterpret_cast<double*>(smem + kOhBytes + kUnitsBytes + kAccBytes);
  k.raw = smem + kRawOffset;
  k.tid = threadIdx.x;
  k.lane = k.tid & 31;
  k.warp = k.tid >> 5;
  k.wm = k.warp >> 2;
  k.wn = k.warp & 3;
  k.raw_side = g.G * kMiChunk;
  k.label_units = (g.kt + 15) >> 4;  // a unit expands at most 16 bins
  k.side_units = g.G * k.label_units;
  k.nch = g.n_pad / kMiChunk;
  return k;
}

// Chunk c of the transposed bins of both tiles into raw stage c % kRawStages (cp.async).
__device__ __forceinline__ void load_raw(const MiArgs& args, const MiBlock& k, int64_t c) {
  const MiGeometry& g = args.g;
  if (c < k.nch) {
    uint8_t* dst = k.raw + static_cast<int>(c % kRawStages) * 2 * k.raw_side;
    for (int p = k.tid; p < 16 * g.G; p += kThreads) {  // 2 sides x G labels x 8 pieces
      const int side = p >= 8 * g.G ? 1 : 0;
      const int l = (p - side * 8 * g.G) >> 3, piece = p & 7;
      const int64_t label = min((side ? k.b0 : k.a0) + l, g.q);  // row q: padding
      cp_async16(dst + side * k.raw_side + l * kMiChunk + piece * 16,
                 args.binsT + label * g.n_pad + c * kMiChunk + piece * 16);
    }
  }
  cp_async_commit();  // an empty group past the end keeps the wait counts uniform
}

// Raw chunk c into one-hot stage c & 1, one expansion unit per warp.
template <bool kNibble>
__device__ __forceinline__ void expand(const MiBlock& k, int64_t c) {
  const uint8_t* src = k.raw + static_cast<int>(c % kRawStages) * 2 * k.raw_side;
  uint8_t* dst = k.oh + static_cast<int>(c & 1) * 2 * kOhSide;
  for (int u = k.warp; u < 2 * k.side_units; u += kThreads / 32) {
    const int4 info = k.units[u];  // raw offset, one-hot offset, first bin, bins
    const uint32_t w = *reinterpret_cast<const uint32_t*>(src + info.x + 4 * k.lane);
    expand_unit<kNibble>(w, info.z, info.w, dst + info.y + 4 * k.lane);
  }
}

// The expansion units of sub-tile (sr, sc): which bins of which label go where.
__device__ __forceinline__ void place_units(const MiGeometry& g, const MiBlock& k, int sr, int sc) {
  for (int u = k.tid; u < 2 * k.side_units; u += kThreads) {
    const int side = u >= k.side_units ? 1 : 0;
    const int v = u - side * k.side_units;
    const int l = v / k.label_units, c = v - l * k.label_units;
    k.units[u] = make_int4(side * k.raw_side + l * kMiChunk,
                           side * kOhSide + (l * g.kt + 16 * c) * kOhStride,
                           (side ? sc : sr) * kMiTile + 16 * c, min(16, g.kt - 16 * c));
  }
}

// The 128 x 128 counts of one sub-tile over all samples, in this thread's mma fragments: the
// raw chunks stream through 3 stages, their expansions through 2, one chunk ahead of the mma.
template <bool kNibble>
__device__ __forceinline__ void count_sub_tile(const MiArgs& args, const MiBlock& k,
                                               int (&acc)[4][4][4]) {
#pragma unroll
  for (int mi = 0; mi < 4; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0;

  load_raw(args, k, 0);
  load_raw(args, k, 1);
  cp_async_wait<1>();
  __syncthreads();
  expand<kNibble>(k, 0);
  __syncthreads();
  for (int64_t c = 0; c < k.nch; ++c) {
    load_raw(args, k, c + 2);
    cp_async_wait<1>();  // chunk c + 1 has landed (this thread's copies) ...
    __syncthreads();     // ... and everyone's
    if (c + 1 < k.nch) expand<kNibble>(k, c + 1);
    // Counts of chunk c. Fragment addresses: see mma_int8.cuh.
    const uint8_t* A = k.oh + static_cast<int>(c & 1) * 2 * kOhSide;
    const uint32_t a_addr =
        smem_u32(A + (k.wm * 64 + (k.lane & 15)) * kOhStride + (k.lane >> 4) * 16);
    const uint32_t b_addr =
        smem_u32(A + kOhSide + (k.wn * 32 + (k.lane & 7) + ((k.lane >> 4) << 3)) * kOhStride +
                 ((k.lane >> 3) & 1) * 16);
#pragma unroll
    for (int ks = 0; ks < kMiChunk / 32; ++ks) {
      uint32_t a[4][4], b[4][2];
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) ldmatrix_x4(a[mi], a_addr + mi * 16 * kOhStride + ks * 32);
#pragma unroll
      for (int nj = 0; nj < 2; ++nj) {
        uint32_t r[4];
        ldmatrix_x4(r, b_addr + nj * 16 * kOhStride + ks * 32);
        b[2 * nj][0] = r[0];
        b[2 * nj][1] = r[1];
        b[2 * nj + 1][0] = r[2];
        b[2 * nj + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) mma_u8(acc[mi][ni], a[mi], b[ni]);
    }
    __syncthreads();
  }
}

// The fragments to the count tile in shared memory (over the one-hot stages, which are done).
__device__ __forceinline__ int* store_counts(const MiBlock& k, const int (&acc)[4][4][4]) {
  int* cs = reinterpret_cast<int*>(k.oh);
#pragma unroll
  for (int mi = 0; mi < 4; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
      const int row = k.wm * 64 + mi * 16 + (k.lane >> 2);
      const int col = k.wn * 32 + ni * 8 + 2 * (k.lane & 3);
      *reinterpret_cast<int2*>(cs + row * kCsStride + col) =
          make_int2(acc[mi][ni][0], acc[mi][ni][1]);
      *reinterpret_cast<int2*>(cs + (row + 8) * kCsStride + col) =
          make_int2(acc[mi][ni][2], acc[mi][ni][3]);
    }
  __syncthreads();
  return cs;
}

// Full mode (one label pair a tile, every bin kept): this thread's share of sum c ln c over
// sub-tile (sr, sc), bins sr * 128 .. of a (rows) and sc * 128 .. of b (columns), added to
// `joint` term by term (the order of the additions is the result's).
__device__ __forceinline__ void add_full_sub_tile_xlogx(const MiGeometry& g, const MiBlock& k,
                                                        const int* cs, int sr, int sc,
                                                        double& joint) {
  for (int e = k.tid; e < kMiTile * kMiTile; e += kThreads) {
    const int r = e / kMiTile, col = e % kMiTile;
    const int kr = sr * kMiTile + r, kc = sc * kMiTile + col;
    if (kr < g.tau && kc < g.tau) {
      long long c = cs[r * kCsStride + col];
      // tau = 256: padding samples (0xFF) land in bin (255, 255) of every pair.
      if (kr == 255 && kc == 255) c -= g.n_pad - g.n;
      joint += xlogx(c);
    }
  }
}

// Drop mode (G labels a tile, the last bin of each dropped): a group of tpp lanes per label
// pair completes its K x K counts with the marginals and emits the pair's MI.
__device__ __forceinline__ void drop_mode_pairs(const MiArgs& args, const MiBlock& k,
                                                const int* cs) {
  const MiGeometry& g = args.g;
  const int K = g.kt, tpp = 1 << g.log2_tpp;
  const int grp = k.tid >> g.log2_tpp, sl = k.tid & (tpp - 1);
  const int npairs = g.G * g.G;
  for (int p0 = 0; p0 < npairs; p0 += kThreads >> g.log2_tpp) {  // uniform trip count
    const int p = p0 + grp;
    const int la = p / g.G, lb = p - la * g.G;
    const int64_t a = k.a0 + la, b = k.b0 + lb;
    const bool ok = p < npairs && a < g.q && b < g.q && (!k.diag || a < b);
    double joint = 0.0;
    long long col_rest = 0;
    if (ok) {
      const int* blk = cs + la * K * kCsStride + lb * K;
      const int32_t* ha = args.hist + a * g.tau;
      const int32_t* hb = args.hist + b * g.tau;
      for (int kk = sl; kk < K; kk += tpp) {  // rows kk < K, and (kk, last bin of b)
        long long rest = ha[kk];
        for (int l = 0; l < K; ++l) {
          const int c = blk[kk * kCsStride + l];
          joint += xlogx(c);
          rest -= c;
        }
        joint += xlogx(rest);
      }
      for (int l = sl; l < K; l += tpp) {  // (last bin of a, l)
        long long rest = hb[l];
        for (int kk = 0; kk < K; ++kk) rest -= blk[kk * kCsStride + l];
        joint += xlogx(rest);
        col_rest += rest;
      }
    }
    joint = warp_sum(joint, tpp);
    col_rest = warp_sum(col_rest, tpp);
    if (ok && sl == 0) {
      joint += xlogx(args.hist[a * g.tau + K] - col_rest);  // (last, last)
      emit_pair(args, joint, a, b, la, lb, k.lab_acc);
    }
  }
}

// Row sums: the block's fixed-point sums of its labels into the global ones. Integer sums: the
// order of the atomics cannot change the result.
__device__ __forceinline__ void flush_row_sums(const MiArgs& args, const MiBlock& k) {
  __syncthreads();
  for (int t = k.tid; t < 2 * kMiTile; t += kThreads) {
    const int side = t >= kMiTile ? 1 : 0, l = t - side * kMiTile;
    const int64_t label = (side ? k.b0 : k.a0) + l;
    if (l < args.g.G && label < args.g.q && k.lab_acc[t] != 0) {
      atomicAdd(&args.row_acc[label], k.lab_acc[t]);
    }
  }
}

template <bool kNibble>
__global__ void __launch_bounds__(kThreads, 2) label_mi_kernel(const MiArgs args) {
  extern __shared__ __align__(128) uint8_t smem[];
  const MiGeometry& g = args.g;
  int64_t ti, tj;
  tile_pair(blockIdx.x, g.NG, ti, tj);
  const MiBlock k = mi_block(g, ti, tj, smem);
  if (k.diag && (g.G == 1 || k.a0 + 1 >= g.q)) return;  // no pair a < b in this tile

  // One-hot rows past G * kt are never written: zero them once.
  for (int e = k.tid; e < kOhBytes / 16; e += kThreads) {
    reinterpret_cast<uint4*>(k.oh)[e] = make_uint4(0u, 0u, 0u, 0u);
  }
  for (int e = k.tid; e < 2 * kMiTile; e += kThreads) k.lab_acc[e] = 0;

  double joint_full = 0.0;  // full mode: this thread's share of sum c ln c
  for (int sub = 0; sub < g.S * g.S; ++sub) {
    const int sr = sub / g.S, sc = sub - sr * g.S;
    place_units(g, k, sr, sc);
    __syncthreads();  // units and the zeroed tiles are in place
    int acc[4][4][4];
    count_sub_tile<kNibble>(args, k, acc);
    const int* cs = store_counts(k, acc);
    if (g.full) {
      add_full_sub_tile_xlogx(g, k, cs, sr, sc, joint_full);
      continue;  // the next sub-tile rewrites every one-hot row after the next barrier
    }
    drop_mode_pairs(args, k, cs);
  }

  if (g.full) {
    joint_full = warp_sum(joint_full);
    if (k.lane == 0) k.red[k.warp] = joint_full;
    __syncthreads();
    if (k.tid == 0) {
      double joint = 0.0;
      for (int w = 0; w < kThreads / 32; ++w) joint += k.red[w];
      emit_pair(args, joint, k.a0, k.b0, 0, 0, k.lab_acc);
    }
  }
  if (args.rowsum) flush_row_sums(args, k);
}

template <bool kNibble>
cudaError_t launch_kernel(const MiArgs& args, cudaStream_t stream) {
  const size_t smem = smem_bytes(args.g);
  const cudaError_t err =
      cudaFuncSetAttribute(label_mi_kernel<kNibble>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  label_mi_kernel<kNibble><<<static_cast<unsigned>(args.g.tiles), kThreads, smem, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace

size_t label_mi_workspace_bytes(int64_t n, int64_t q, int tau) {
  return MiLayout(mi_geometry(n, q, tau)).total();
}

int64_t label_mi_blocks(int64_t q, int tau) { return mi_geometry(0, q, tau).tiles; }

cudaError_t launch_label_mi(const uint8_t* bins, int64_t n, int64_t q, int tau, bool rowsum,
                            float* out, void* workspace, int32_t* bad, cudaStream_t stream) {
  const MiGeometry g = mi_geometry(n, q, tau);
  const MiWorkspace w = mi_workspace(g, workspace);
  cudaError_t err = cudaMemsetAsync(workspace, 0, w.zeroed_bytes, stream);
  if (err == cudaSuccess) err = cudaMemsetAsync(bad, 0, sizeof(int32_t), stream);
  if (err == cudaSuccess && (n == 0 || q == 1) && !rowsum) {  // no pair is computed: MI = 0
    err = cudaMemsetAsync(out, 0, static_cast<size_t>(q * q) * sizeof(float), stream);
  }
  if (err == cudaSuccess && n > 0) err = launch_mi_transpose(bins, g, w, bad, stream);
  if (err == cudaSuccess) err = launch_mi_marginals(g, w, stream);
  if (err == cudaSuccess && n > 0 && q > 1) {
    const MiArgs args{w.binsT, w.hist, w.marginal_xlogx, w.row_acc, out, g, rowsum};
    err = !g.full && tau <= 16 ? launch_kernel<true>(args, stream)
                               : launch_kernel<false>(args, stream);
  }
  if (err == cudaSuccess) err = launch_mi_finalize(g, w, rowsum, out, stream);
  return err;
}

}  // namespace ubs_kernels::cuda

// The passes around the tensor-core kernel of ubs_kernels::label_mi (see label_mi.cuh).
//
// Before it: bins (n, q) row-major -> binsT (q + 1, n_pad), so the kernel reads 128 samples of a
// label as eight 16-byte pieces; padding samples and labels hold 0xFF, which matches no bin the
// kernel expands, so it needs no bounds checks. The same pass counts each label's marginal
// histogram and flags bins >= tau. After it: C_aa = 1, or the row sums out of fixed point.
#include "device_utils.cuh"
#include "label_mi.cuh"

namespace ubs_kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kLabels = 32;        // labels per block: one per lane when loading
constexpr int kTilesPerBlock = 8;  // 128-sample tiles per block, so the histogram flush is rare

__global__ void __launch_bounds__(kThreads)
    transpose_hist_kernel(const uint8_t* bins, int64_t n, int64_t q, int tau, int64_t n_pad,
                          uint8_t* binsT, int32_t* hist, int32_t* bad) {
  extern __shared__ int32_t shist[];                    // kLabels x tau
  __shared__ uint32_t tile[kLabels][kMiChunk / 4 + 1];  // +1 word: conflict-free columns
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t a0 = static_cast<int64_t>(blockIdx.y) * kLabels;
  for (int e = tid; e < kLabels * tau; e += kThreads) shist[e] = 0;
  __syncthreads();
  bool bad_here = false;
  const int64_t a = a0 + lane;
  for (int t = 0; t < kTilesPerBlock; ++t) {
    const int64_t i0 = (static_cast<int64_t>(blockIdx.x) * kTilesPerBlock + t) * kMiChunk;
    if (i0 >= n_pad) break;  // uniform across the block
    // Lane = label, so a warp reads 32 consecutive bytes of a sample row; each warp packs 16
    // samples into 4 words of its label's row in the tile.
#pragma unroll
    for (int wd = 0; wd < 4; ++wd) {
      uint32_t word = 0;
#pragma unroll
      for (int by = 0; by < 4; ++by) {
        const int64_t i = i0 + warp * 16 + wd * 4 + by;
        uint32_t v = 0xFFu;
        if (a < q && i < n) {
          v = bins[i * q + a];
          if (v >= static_cast<uint32_t>(tau)) {
            bad_here = true;
          } else {
            atomicAdd(&shist[lane * tau + v], 1);
          }
        }
        word |= v << (8 * by);
      }
      tile[lane][warp * 4 + wd] = word;
    }
    __syncthreads();
    const int l = tid >> 3, piece = tid & 7;  // 32 labels x 8 pieces of 16 samples
    if (a0 + l < q) {
      const uint32_t* src = &tile[l][piece * 4];
      *reinterpret_cast<uint4*>(binsT + (a0 + l) * n_pad + i0 + piece * 16) =
          make_uint4(src[0], src[1], src[2], src[3]);
    }
    __syncthreads();
  }
  for (int e = tid; e < kLabels * tau; e += kThreads) {
    if (a0 + e / tau < q && shist[e] != 0) atomicAdd(&hist[a0 * tau + e], shist[e]);
  }
  if (__syncthreads_or(bad_here) && tid == 0) atomicOr(bad, 1);
}

__global__ void marginals_kernel(const int32_t* hist, int64_t q, int tau, double* out) {
  const int64_t a = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (a >= q) return;
  double s = 0.0;
  for (int k = 0; k < tau; ++k) s += xlogx(hist[a * tau + k]);
  out[a] = s;
}

// Row sums were accumulated as integers in units of 2^-32 (so their order cannot change the
// result); C_aa = 1 is added here.
__global__ void finalize_kernel(int64_t q, bool rowsum, const unsigned long long* row_acc,
                                float* out) {
  const int64_t a = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (a >= q) return;
  if (rowsum) {
    out[a] = static_cast<float>(static_cast<double>(row_acc[a]) * 0x1p-32 + 1.0);
  } else {
    out[a * q + a] = 1.f;
  }
}

unsigned blocks_for(int64_t items) {
  return static_cast<unsigned>((items + kThreads - 1) / kThreads);
}

}  // namespace

cudaError_t launch_mi_transpose(const uint8_t* bins, const MiGeometry& g, const MiWorkspace& w,
                                int32_t* bad, cudaStream_t stream) {
  // Row q stands in for every label past q in a partly filled tile: all padding.
  const cudaError_t err =
      cudaMemsetAsync(w.binsT + g.q * g.n_pad, 0xFF, static_cast<size_t>(g.n_pad), stream);
  if (err != cudaSuccess) return err;
  const int64_t samples_per_block = static_cast<int64_t>(kTilesPerBlock) * kMiChunk;
  const dim3 grid(static_cast<unsigned>((g.n_pad + samples_per_block - 1) / samples_per_block),
                  static_cast<unsigned>((g.q + kLabels - 1) / kLabels));
  const size_t smem = static_cast<size_t>(kLabels) * g.tau * sizeof(int32_t);
  transpose_hist_kernel<<<grid, kThreads, smem, stream>>>(bins, g.n, g.q, g.tau, g.n_pad, w.binsT,
                                                          w.hist, bad);
  return cudaGetLastError();
}

cudaError_t launch_mi_marginals(const MiGeometry& g, const MiWorkspace& w, cudaStream_t stream) {
  marginals_kernel<<<blocks_for(g.q), kThreads, 0, stream>>>(w.hist, g.q, g.tau, w.marginal_xlogx);
  return cudaGetLastError();
}

cudaError_t launch_mi_finalize(const MiGeometry& g, const MiWorkspace& w, bool rowsum, float* out,
                               cudaStream_t stream) {
  finalize_kernel<<<blocks_for(g.q), kThreads, 0, stream>>>(g.q, rowsum, w.row_acc, out);
  return cudaGetLastError();
}

}  // namespace ubs_kernels::cuda

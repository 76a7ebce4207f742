// CUDA kernels of ubs_kernels::selection_log_probs: docs/spec.md Eq. 7-10 fused.
//
// Three passes over n, deterministic (a fixed grid and fixed reduction orders, no float
// atomics): (1) w = U c (Eq. 7-8), a memory-bound GEMV accumulated in float64, with per-block
// min/max of w over observed samples; (2) z, Q = floor((1 - z) n) and the logits
// -ln(s) Q / n (Eq. 9-10), with per-block (max, sum exp) partials; (3) every block merges the
// partials in the same order into logsumexp and writes log P = logit - logsumexp.
// As in csrc/cpu/selection_log_probs.cpp (and the reference), w and z are float32 (w rounded
// once from its float64 sum) and Q is computed in float64 from the float32 z, so Q agrees with
// the other backends. Unlike the CPU kernel, non-finite U or c are not reported (that needs a
// host round trip); the Python wrapper checks c.
#include <algorithm>
#include <cmath>

#include "device_utils.cuh"
#include "kernels.cuh"

namespace ubs_kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;

// (max, sum exp(x - max)) pairs: the online logsumexp.
struct Lse {
  double m, s;
};

__device__ __forceinline__ Lse lse_merge(Lse x, Lse y) {
  const double m = fmax(x.m, y.m);
  if (m == -INFINITY) return {m, 0.0};
  return {m, x.s * exp(x.m - m) + y.s * exp(y.m - m)};
}

// Block-wide min and max, the same on every thread; `scratch` holds 2 * 32 floats.
__device__ void block_min_max(float& lo, float& hi, float* scratch) {
  for (int off = 16; off > 0; off >>= 1) {
    lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, off));
    hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, off));
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) {
    scratch[warp] = lo;
    scratch[32 + warp] = hi;
  }
  __syncthreads();
  lo = INFINITY;
  hi = -INFINITY;
  for (int w = 0; w < warps; ++w) {
    lo = fminf(lo, scratch[w]);
    hi = fmaxf(hi, scratch[32 + w]);
  }
}

// Block-wide merge in a fixed order, the same on every thread; `scratch` holds 2 * 32 doubles.
__device__ Lse block_lse(Lse x, double* scratch) {
  for (int off = 16; off > 0; off >>= 1) {
    x = lse_merge(x,
                  {__shfl_xor_sync(0xffffffffu, x.m, off), __shfl_xor_sync(0xffffffffu, x.s, off)});
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) {
    scratch[warp] = x.m;
    scratch[32 + warp] = x.s;
  }
  __syncthreads();
  Lse r{-INFINITY, 0.0};
  for (int w = 0; w < warps; ++w) r = lse_merge(r, {scratch[w], scratch[32 + w]});
  return r;
}

// Eq. 8-10 for one sample, as the reference: z in float32 (never observed: 1; all observed w
// equal: 0), Q = floor((1 - z) n) in float64, logit = slope Q with slope = -ln(s) / n.
__device__ __forceinline__ double logit(float w, bool observed, float lo, float hi, int64_t n,
                                        double slope) {
  const float span = hi - lo;
  const float z = observed ? (span > 0.f ? (w - lo) / span : 0.f) : 1.f;
  const double nd = static_cast<double>(n);
  const double Q = fmin(fmax(floor((1.0 - static_cast<double>(z)) * nd), 0.0), nd);  // Eq. 9
  return slope * Q;  // Eq. 10, before normalisation
}

// Pass 1: groups of `lanes` threads per row, V floats per load, the sum in float64.
template <int V>
__global__ void __launch_bounds__(kThreads)
    weights_kernel(const float* u, const float* c, const int64_t* seen, int64_t n, int64_t q,
                   int log2_lanes, float* w, float* blk_lo, float* blk_hi) {
  __shared__ float scratch[64];
  const int lane = threadIdx.x & 31, lanes = 1 << log2_lanes, sub = lane & (lanes - 1);
  const int64_t rows_per_warp = 32 >> log2_lanes;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  float lo = INFINITY, hi = -INFINITY;
  for (int64_t base = warp * rows_per_warp; base < n; base += warps * rows_per_warp) {
    const int64_t i = base + (lane >> log2_lanes);  // the loop bound is uniform per warp
    double acc = 0.0;
    if (i < n) {
      for (int64_t j = static_cast<int64_t>(sub) * V; j < q; j += static_cast<int64_t>(lanes) * V) {
        const Vec<float, V> x = load_vec<V>(u + i * q + j);
        const Vec<float, V> y = load_vec<V>(c + j);
#pragma unroll
        for (int v = 0; v < V; ++v) {
          acc = fma(static_cast<double>(x.v[v]), static_cast<double>(y.v[v]), acc);
        }
      }
    }
    acc = warp_sum(acc, lanes);
    if (i < n && sub == 0) {
      const float wi = static_cast<float>(acc);  // rounded once, like the CPU kernel
      w[i] = wi;
      if (seen[i] > 0) {
        lo = fminf(lo, wi);
        hi = fmaxf(hi, wi);
      }
    }
  }
  block_min_max(lo, hi, scratch);
  if (threadIdx.x == 0) {
    blk_lo[blockIdx.x] = lo;
    blk_hi[blockIdx.x] = hi;
  }
}

// min and max of w over the observed samples from pass 1's partials (exact in any order).
__device__ void global_min_max(const float* blk_lo, const float* blk_hi, int nb, float& lo,
                               float& hi, float* scratch) {
  lo = INFINITY;
  hi = -INFINITY;
  for (int b = threadIdx.x; b < nb; b += blockDim.x) {
    lo = fminf(lo, blk_lo[b]);
    hi = fmaxf(hi, blk_hi[b]);
  }
  block_min_max(lo, hi, scratch);
}

// Pass 2: per-block logsumexp partials of the logits.
__global__ void __launch_bounds__(kThreads)
    logits_kernel(const float* w, const int64_t* seen, int64_t n, double slope, const float* blk_lo,
                  const float* blk_hi, int nb1, double* blk_m, double* blk_s) {
  __shared__ float scratch[64];
  __shared__ double dscratch[64];
  float lo, hi;
  global_min_max(blk_lo, blk_hi, nb1, lo, hi, scratch);
  Lse acc{-INFINITY, 0.0};
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    acc = lse_merge(acc, {logit(w[i], seen[i] > 0, lo, hi, n, slope), 1.0});
  }
  acc = block_lse(acc, dscratch);
  if (threadIdx.x == 0) {
    blk_m[blockIdx.x] = acc.m;
    blk_s[blockIdx.x] = acc.s;
  }
}

// Pass 3: log P = logit - logsumexp, every block merging the partials in the same order.
__global__ void __launch_bounds__(kThreads)
    normalise_kernel(const float* w, const int64_t* seen, int64_t n, double slope,
                     const float* blk_lo, const float* blk_hi, int nb1, const double* blk_m,
                     const double* blk_s, int nb2, float* out) {
  __shared__ float scratch[64];
  __shared__ double dscratch[64];
  float lo, hi;
  global_min_max(blk_lo, blk_hi, nb1, lo, hi, scratch);
  Lse part{-INFINITY, 0.0};
  for (int b = threadIdx.x; b < nb2; b += blockDim.x) part = lse_merge(part, {blk_m[b], blk_s[b]});
  const Lse total = block_lse(part, dscratch);
  const double lse = total.m + log(total.s);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    out[i] = static_cast<float>(logit(w[i], seen[i] > 0, lo, hi, n, slope) - lse);
  }
}

int grid_for(int64_t items, int64_t per_block) {
  return static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(kMaxBlocks, (items + per_block - 1) / per_block)));
}

}  // namespace

size_t selection_workspace_bytes(int64_t n) {
  // w and the pass-1 min/max partials in float32, the logsumexp partials in float64.
  return sizeof(double) * 2 * kMaxBlocks +
         sizeof(float) * (static_cast<size_t>(n) + 2 * kMaxBlocks);
}

cudaError_t launch_selection_log_probs(const float* uncertainty, const float* c,
                                       const int64_t* seen, int64_t n, int64_t q, double pressure,
                                       float* out, void* workspace, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  auto* blk_m = static_cast<double*>(workspace);
  double* blk_s = blk_m + kMaxBlocks;
  auto* blk_lo = reinterpret_cast<float*>(blk_s + kMaxBlocks);
  float* blk_hi = blk_lo + kMaxBlocks;
  float* w = blk_hi + kMaxBlocks;
  const bool vec4 = q % 4 == 0 && is_aligned(uncertainty, 16) && is_aligned(c, 16);
  const int V = vec4 ? 4 : 1;
  const int lanes = lanes_for((q + V - 1) / V);
  const int nb1 = grid_for(n, (kThreads / 32) * (32 / lanes));
  if (vec4) {
    weights_kernel<4><<<nb1, kThreads, 0, stream>>>(uncertainty, c, seen, n, q, log2_int(lanes), w,
                                                    blk_lo, blk_hi);
  } else {
    weights_kernel<1><<<nb1, kThreads, 0, stream>>>(uncertainty, c, seen, n, q, log2_int(lanes), w,
                                                    blk_lo, blk_hi);
  }
  const double slope = -std::log(pressure) / static_cast<double>(n);
  const int nb2 = grid_for(n, kThreads);
  logits_kernel<<<nb2, kThreads, 0, stream>>>(w, seen, n, slope, blk_lo, blk_hi, nb1, blk_m, blk_s);
  normalise_kernel<<<nb2, kThreads, 0, stream>>>(w, seen, n, slope, blk_lo, blk_hi, nb1, blk_m,
                                                 blk_s, nb2, out);
  return cudaGetLastError();
}

}  // namespace ubs_kernels::cuda

// CUDA kernel of ubs_kernels::uncertainty: docs/spec.md Eq. 1, 4, 5 and the bin for all n rows.
//
// A memory-bound pass: each sample's k = min(seen, T) newest ring rows are read once and U
// (float32) and the bins (uint8) written once. A group of `lanes` threads (a power of two <= 32)
// walks one row with V labels per thread, so a wide row is read with 16-byte loads and a warp
// still holds 32 / lanes short rows; the grid strides over the rows.
#include <algorithm>

#include "kernels.cuh"
#include "uncertainty_row.cuh"

namespace ubs_kernels::cuda {
namespace {

constexpr int kThreads = 256;

template <typename H, int V>
__global__ void __launch_bounds__(kThreads)
    uncertainty_kernel(const H* history, const int64_t* seen, int64_t n, int64_t T, int64_t q,
                       RowParams params, int log2_lanes, float* uncertainty, uint8_t* bins) {
  const int lane = threadIdx.x & 31;
  const int lanes = 1 << log2_lanes;
  const int64_t rows_per_warp = 32 >> log2_lanes;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  const int64_t qv = q / V;
  for (int64_t i = warp * rows_per_warp + (lane >> log2_lanes); i < n; i += warps * rows_per_warp) {
    const int64_t count = seen[i];
    const H* ring = history + i * T * q;
    for (int64_t jv = lane & (lanes - 1); jv < qv; jv += lanes) {
      const int64_t j = jv * V;
      Vec<float, V> u;
      Vec<uint8_t, V> b;
      if (count > 0) {
        uncertainty_vec<H, V>(ring + j, T, q, count, params, u.v, b.v);
      } else {  // never observed: no U row yet (docs/spec.md)
#pragma unroll
        for (int v = 0; v < V; ++v) {
          u.v[v] = 0.f;
          b.v[v] = 0;
        }
      }
      store_vec(uncertainty + i * q + j, u);
      store_vec(bins + i * q + j, b);
    }
  }
}

template <typename H, int V>
cudaError_t launch_v(const H* history, const int64_t* seen, int64_t n, int64_t T, int64_t q,
                     RowParams params, float* u, uint8_t* bins, cudaStream_t stream) {
  const int lanes = lanes_for(q / V);
  const int64_t rows_per_block = (kThreads / 32) * (32 / lanes);
  int device = 0, sms = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess)
    err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return err;
  // Eight 256-thread blocks fill an SM; more blocks than that only add tail.
  const int64_t blocks =
      std::min<int64_t>((n + rows_per_block - 1) / rows_per_block, static_cast<int64_t>(sms) * 8);
  uncertainty_kernel<H, V><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      history, seen, n, T, q, params, log2_int(lanes), u, bins);
  return cudaGetLastError();
}

// The widest vector (16 bytes of history per load at V = 8 for float16) that q and every
// pointer allow; rows start at multiples of q elements, so q % V == 0 keeps them aligned.
template <typename H>
cudaError_t launch_typed(const H* history, const int64_t* seen, int64_t n, int64_t T, int64_t q,
                         RowParams params, float* u, uint8_t* bins, cudaStream_t stream) {
  auto fits = [&](int V) {
    return q % V == 0 && is_aligned(history, V * sizeof(H)) && is_aligned(u, V * sizeof(float)) &&
           is_aligned(bins, V);
  };
  if (fits(8)) return launch_v<H, 8>(history, seen, n, T, q, params, u, bins, stream);
  if (fits(4)) return launch_v<H, 4>(history, seen, n, T, q, params, u, bins, stream);
  if (fits(2)) return launch_v<H, 2>(history, seen, n, T, q, params, u, bins, stream);
  return launch_v<H, 1>(history, seen, n, T, q, params, u, bins, stream);
}

}  // namespace

cudaError_t launch_uncertainty(const void* history, Dtype history_dtype, const int64_t* seen,
                               int64_t n, int64_t T, int64_t q, double lam, int tau, float* u,
                               uint8_t* bins, cudaStream_t stream) {
  if (n == 0 || q == 0) return cudaSuccess;
  const RowParams params = make_row_params(lam, tau);
  switch (history_dtype) {
    case Dtype::kFloat16:
      return launch_typed(static_cast<const __half*>(history), seen, n, T, q, params, u, bins,
                          stream);
    case Dtype::kFloat32:
      return launch_typed(static_cast<const float*>(history), seen, n, T, q, params, u, bins,
                          stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace ubs_kernels::cuda

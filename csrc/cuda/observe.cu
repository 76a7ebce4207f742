// CUDA kernels of ubs_kernels::observe (one training step: docs/spec.md Eq. 1, 4, 5 and the bin)
// and ubs_kernels::record (its ring write and count only, for a whole-matrix pass later).
//
// The op can be called through torch.ops directly, so it checks its data on the device: a
// validation pass over indices and probs, a duplicate pass, and the update itself, which runs
// only when the first two found nothing. A bad call therefore never writes the state, even when
// the host cannot wait for the verdict (CUDA graph capture). Indices are distinct, so each
// block owns one sample's row: no two blocks write the same ring, U or bins row.
#include <algorithm>
#include <climits>

#include "kernels.cuh"
#include "uncertainty_row.cuh"

namespace ubs_kernels::cuda {
namespace {

constexpr int kValidateThreads = 256;
constexpr int kValidateMaxBlocks = 1024;

// Probabilities finite and in [0, 1] (NaN fails both comparisons; the comparison is in float64
// so a float64 1 + 1e-12 is caught); indices in [0, n) with 0 <= seen < 2^63 - 1 (a negative
// count would address a slot outside the ring; the largest cannot grow). owner[i] = the last
// row that named i.
template <typename P>
__global__ void observe_validate_kernel(const int64_t* indices, const P* probs, const int64_t* seen,
                                        int64_t b, int64_t q, int64_t n, int32_t* owner,
                                        unsigned long long* status) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t start = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  unsigned long long first_bad = ULLONG_MAX, flags = 0;
  for (int64_t e = start; e < b * q; e += stride) {
    const double v = to_double(probs[e]);
    if (!(v >= 0.0 && v <= 1.0)) {
      first_bad = min(first_bad, static_cast<unsigned long long>(e));
      flags |= kObserveBadProb;
    }
  }
  for (int64_t r = start; r < b; r += stride) {
    const int64_t i = indices[r];
    if (i < 0 || i >= n) {
      flags |= kObserveBadIndex;
    } else {
      owner[i] = static_cast<int32_t>(r);
      if (seen[i] < 0 || seen[i] == LLONG_MAX) flags |= kObserveBadSeen;
    }
  }
  if (flags != 0) atomicOr(&status[0], flags);
  if (first_bad != ULLONG_MAX) atomicMin(&status[1], first_bad);
}

// After the validation pass every in-range index i has owner[i] = one of the rows naming it;
// a row that finds another row there shares its index.
__global__ void observe_duplicates_kernel(const int64_t* indices, int64_t b, int64_t n,
                                          const int32_t* owner, unsigned long long* status) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < b;
       r += stride) {
    const int64_t i = indices[r];
    if (i >= 0 && i < n && owner[i] != static_cast<int32_t>(r)) {
      atomicOr(&status[0], static_cast<unsigned long long>(kObserveDuplicate));
    }
  }
}

// One block per batch row r: write probs[r] into ring slot seen % T of sample indices[r], then
// (Refresh) recompute that sample's U and bins from the ring (V labels per thread and step).
template <typename H, typename P, int V, bool Refresh>
__global__ void observe_kernel(H* history, int64_t* seen, float* uncertainty, uint8_t* bins,
                               const int64_t* indices, const P* probs, int64_t T, int64_t q,
                               RowParams params, const unsigned long long* status) {
  if (status[0] != 0) return;  // a check failed: leave the state as it was
  const int64_t r = blockIdx.x;
  const int64_t i = indices[r];
  const int64_t count = seen[i] + 1;
  H* ring = history + i * T * q;
  H* slot = ring + ((count - 1) % T) * q;
  const P* src = probs + r * q;
  for (int64_t j = static_cast<int64_t>(threadIdx.x) * V; j < q;
       j += static_cast<int64_t>(blockDim.x) * V) {
    const Vec<P, V> p = load_vec<V>(src + j);
    Vec<H, V> h;
#pragma unroll
    for (int v = 0; v < V; ++v) h.v[v] = ToHistory<H>::convert(p.v[v]);
    store_vec(slot + j, h);  // read back below by this same thread, as stored (rounded)
    if constexpr (Refresh) {
      Vec<float, V> u;
      Vec<uint8_t, V> bb;
      uncertainty_vec<H, V>(ring + j, T, q, count, params, u.v, bb.v);
      store_vec(uncertainty + i * q + j, u);
      store_vec(bins + i * q + j, bb);
    }
  }
  __syncthreads();  // every thread has read seen[i] before it changes
  if (threadIdx.x == 0) seen[i] = count;
}

template <typename H, typename P>
cudaError_t observe_typed(const ObserveArgs& a, cudaStream_t stream) {
  auto* status = reinterpret_cast<unsigned long long*>(a.status);
  cudaError_t err = cudaMemsetAsync(status, 0, sizeof(unsigned long long), stream);
  if (err == cudaSuccess) {
    err = cudaMemsetAsync(status + 1, 0xFF, sizeof(unsigned long long), stream);
  }
  if (err != cudaSuccess) return err;
  const auto* probs = static_cast<const P*>(a.probs);
  const int64_t work = a.b * a.q > a.b ? a.b * a.q : a.b;
  const int blocks = static_cast<int>(
      std::min<int64_t>(kValidateMaxBlocks, (work + kValidateThreads - 1) / kValidateThreads));
  observe_validate_kernel<P><<<blocks, kValidateThreads, 0, stream>>>(a.indices, probs, a.seen, a.b,
                                                                      a.q, a.n, a.owner, status);
  const int dup_blocks = static_cast<int>(
      std::min<int64_t>(kValidateMaxBlocks, (a.b + kValidateThreads - 1) / kValidateThreads));
  observe_duplicates_kernel<<<dup_blocks, kValidateThreads, 0, stream>>>(a.indices, a.b, a.n,
                                                                         a.owner, status);

  auto* history = static_cast<H*>(a.history);
  const RowParams params = make_row_params(a.lam, a.tau);
  const bool refresh = a.uncertainty != nullptr;
  const bool vec4 = a.q % 4 == 0 && is_aligned(history, 4 * sizeof(H)) &&
                    is_aligned(probs, 4 * sizeof(P)) &&
                    (!refresh || (is_aligned(a.uncertainty, 16) && is_aligned(a.bins, 4)));
  const int V = vec4 ? 4 : 1;
  const int64_t per_row = (a.q + V - 1) / V;
  const int threads =
      static_cast<int>(std::min<int64_t>(256, std::max<int64_t>(32, (per_row + 31) / 32 * 32)));
  const dim3 grid(static_cast<unsigned>(a.b));
  if (vec4 && refresh) {
    observe_kernel<H, P, 4, true><<<grid, threads, 0, stream>>>(
        history, a.seen, a.uncertainty, a.bins, a.indices, probs, a.T, a.q, params, status);
  } else if (refresh) {
    observe_kernel<H, P, 1, true><<<grid, threads, 0, stream>>>(
        history, a.seen, a.uncertainty, a.bins, a.indices, probs, a.T, a.q, params, status);
  } else if (vec4) {
    observe_kernel<H, P, 4, false><<<grid, threads, 0, stream>>>(
        history, a.seen, nullptr, nullptr, a.indices, probs, a.T, a.q, params, status);
  } else {
    observe_kernel<H, P, 1, false><<<grid, threads, 0, stream>>>(
        history, a.seen, nullptr, nullptr, a.indices, probs, a.T, a.q, params, status);
  }
  return cudaGetLastError();
}

template <typename H>
cudaError_t observe_history(const ObserveArgs& a, cudaStream_t stream) {
  switch (a.probs_dtype) {
    case Dtype::kFloat16:
      return observe_typed<H, __half>(a, stream);
    case Dtype::kBFloat16:
      return observe_typed<H, __nv_bfloat16>(a, stream);
    case Dtype::kFloat32:
      return observe_typed<H, float>(a, stream);
    case Dtype::kFloat64:
      return observe_typed<H, double>(a, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_observe(const ObserveArgs& args, cudaStream_t stream) {
  if (args.b == 0) return cudaSuccess;
  switch (args.history_dtype) {
    case Dtype::kFloat16:
      return observe_history<__half>(args, stream);
    case Dtype::kFloat32:
      return observe_history<float>(args, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace ubs_kernels::cuda

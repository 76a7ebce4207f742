// Small device helpers shared by the CUDA kernels: vector loads, dtype conversions, reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace ubs_kernels::cuda {

// V consecutive elements loaded or stored as one aligned access (LDG.64/128 and friends). The
// launchers pick V only where q % V == 0 and the base pointers are aligned to the vector.
template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

template <int V, typename T>
__device__ __forceinline__ Vec<T, V> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T, V>*>(p);
}

template <int V, typename T>
__device__ __forceinline__ void store_vec(T* p, const Vec<T, V>& x) {
  *reinterpret_cast<Vec<T, V>*>(p) = x;
}

inline bool is_aligned(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(double x) { return static_cast<float>(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

__device__ __forceinline__ double to_double(float x) { return x; }
__device__ __forceinline__ double to_double(double x) { return x; }
__device__ __forceinline__ double to_double(__half x) { return __half2float(x); }
__device__ __forceinline__ double to_double(__nv_bfloat16 x) { return __bfloat162float(x); }

// A probability as the history stores it: through float32, then rounded to nearest even, as
// torch's .to(history.dtype) does (c10::Half converts from float) and the CPU kernel does.
template <typename H>
struct ToHistory;

template <>
struct ToHistory<float> {
  template <typename P>
  __device__ static float convert(P p) {
    return to_float(p);
  }
};

template <>
struct ToHistory<__half> {
  template <typename P>
  __device__ static __half convert(P p) {
    return __float2half_rn(to_float(p));
  }
};

// c ln c with 0 ln 0 = 0, in float64: the MI epilogue subtracts sums of these, so they must be
// far more precise than the float32 result.
__device__ __forceinline__ double xlogx(long long c) {
  return c > 0 ? static_cast<double>(c) * log(static_cast<double>(c)) : 0.0;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T x, int width = 32) {
  for (int off = width >> 1; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// Smallest power of two >= x, at most 32: lanes that share one row in the row-wise kernels.
inline int lanes_for(int64_t x) {
  int lanes = 1;
  while (lanes < 32 && lanes < x) lanes <<= 1;
  return lanes;
}

inline int log2_int(int x) {
  int l = 0;
  while ((1 << (l + 1)) <= x) ++l;
  return l;
}

}  // namespace ubs_kernels::cuda

// PTX wrappers for the label_mi tensor-core kernel: cp.async, ldmatrix, int8 mma.sync.
//
// mma.sync.m16n8k32 (u8 x u8 -> s32) fragments, lane = 4 * g + t:
//   A (16 x 32, row-major): a0 = A[g][4t..4t+3], a1 = A[g+8][4t..], a2 = A[g][16+4t..],
//                           a3 = A[g+8][16+4t..]
//   B (32 x 8, stored as 8 rows of 32 k): b0 = B[4t..4t+3][g], b1 = B[16+4t..][g]
//   C (16 x 8): c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1]
// ldmatrix.x4 hands lane L register m = 4 bytes (L % 4) * 4 of row L / 4 of matrix m, where
// matrix m's 8 row addresses come from lanes 8m .. 8m+7: exactly these fragments when the
// matrices are the right 8 x 16-byte quarters of a one-hot tile (see label_mi.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace ubs_kernels::cuda {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(smem)),
               "l"(__cvta_generic_to_global(gmem))
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// d += a * b over 32 samples; one-hot bytes are 0/1, so d counts exactly (int32).
__device__ __forceinline__ void mma_u8(int (&d)[4], const uint32_t (&a)[4],
                                       const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.u8.u8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

}  // namespace ubs_kernels::cuda

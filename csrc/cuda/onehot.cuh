// One-hot expansion of label_mi's tiles: bins of 4 samples (one 32-bit word of the transposed
// bins) -> 4 one-hot bytes per bin, one word per one-hot row.
//
// The kernel spends more instructions here than on the mma itself (a tensor-core mma counts
// 4096 products; a thread expands 4 of them per word), so both forms are branch-free and a few
// instructions per word. Padding (0xFF) must never match: it does not for any bin k < 255.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "label_mi.cuh"

namespace ubs_kernels::cuda {

constexpr int kOhStride = kMiChunk + 16;  // bytes per one-hot row: ldmatrix rows hit all banks

// Byte i of the result: byte (c >> 4i) & 7 of {b, a}, or its sign replicated when bit 3 of
// that nibble is set (the generic prmt mode; __byte_perm ignores bit 3).
__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

// The raw word w -> one-hot words of bins k0 .. k0 + nk - 1, rows kOhStride bytes apart.
// kNibble (tau <= 16, so k <= 14): one prmt per word. Otherwise a SWAR byte compare.
template <bool kNibble>
__device__ __forceinline__ void expand_unit(uint32_t w, int k0, int nk, uint8_t* out) {
  if (kNibble) {
    // The low nibbles of the 4 bytes become 4 prmt selectors. Selector nibble s ^ k is 0 (pick
    // byte 0 of {0, 1}: 1) iff the bin is k; 1..7 pick a zero byte; 8..15 replicate a zero
    // sign. Padding 0xFF has nibble 15, which never equals k <= 14.
    uint32_t s = w & 0x0F0F0F0Fu;
    s = (s | (s >> 4)) & 0x00FF00FFu;
    s = s | (s >> 8);
    uint32_t kx = static_cast<uint32_t>(k0) * 0x1111u;
    for (int t = 0; t < nk; ++t, kx += 0x1111u) {
      *reinterpret_cast<uint32_t*>(out + t * kOhStride) = prmt(1u, 0u, s ^ kx);
    }
  } else {
    // Byte-wise equality without carries between bytes: y has bit 7 set in each nonzero byte.
    uint32_t kp = static_cast<uint32_t>(k0) * 0x01010101u;
    for (int t = 0; t < nk; ++t, kp += 0x01010101u) {
      const uint32_t x = w ^ kp;
      const uint32_t y = ((x & 0x7F7F7F7Fu) + 0x7F7F7F7Fu) | x;
      *reinterpret_cast<uint32_t*>(out + t * kOhStride) = (~y >> 7) & 0x01010101u;
    }
  }
}

}  // namespace ubs_kernels::cuda

// Transparent huge pages for large buffers that a kernel fills for the first time.
//
// First touch of fresh memory costs a page fault per 4 KiB page; on the VMs of bench/ that
// fault, not the kernel, was the cost of filling a fresh buffer, several times less in 2 MiB
// pages (bench/RESULTS.md). PyTorch asks for huge pages on every allocation under
// THP_MEM_ALLOC_ENABLE=1; this asks only for the buffers a kernel is about to fill. Advice
// only: without THP, or off Linux, nothing changes.
#pragma once

#include <cstddef>
#include <cstdint>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace ubs_kernels::cpu {

inline void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#endif
}

}  // namespace ubs_kernels::cpu

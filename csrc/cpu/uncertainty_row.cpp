// Run-time choice of the per-row uncertainty kernels (uncertainty_row_kernels.h) for the CPU ops.
#include "uncertainty_row.h"

#include "isa.h"

namespace ubs_kernels::cpu {

Isa row_isa() {
  [[maybe_unused]] const Isa cap = isa_cap();
#ifdef UBS_ISA_X86
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  if (cap >= Isa::kAvx512 && avx2 && __builtin_cpu_supports("avx512f")) return Isa::kAvx512;
  if (cap >= Isa::kAvx2 && avx2) return Isa::kAvx2;
#endif
#ifdef UBS_ISA_NEON
  if (cap >= Isa::kNeon) return Isa::kNeon;
#endif
  return Isa::kPortable;
}

template <typename H>
RowKernels<H> row_kernels() {
  switch (row_isa()) {
#ifdef UBS_ISA_X86
    case Isa::kAvx512:
      return {&row::row_avx512<H>, row::store_fn<row::Avx512, H>(), &row::store_sigmoid_avx512<H>};
    case Isa::kAvx2:
      return {&row::row_avx2<H>, row::store_fn<row::Avx2, H>(), &row::store_sigmoid_avx2<H>};
#endif
#ifdef UBS_ISA_NEON
    case Isa::kNeon:
      return {&row::row_neon<H>, row::store_fn<row::Neon, H>(), &row::store_sigmoid_neon<H>};
#endif
    default:
      return {&row::row_portable<H>, row::store_fn<row::Portable, H>(),
              &row::store_sigmoid_portable<H>};
  }
}

template RowKernels<float> row_kernels<float>();
template RowKernels<at::Half> row_kernels<at::Half>();

}  // namespace ubs_kernels::cpu

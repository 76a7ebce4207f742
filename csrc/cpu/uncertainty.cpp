// CPU kernel of ubs_kernels::uncertainty: the whole-matrix pass (docs/spec.md Eq. 1, 4, 5 and the
// bin for all n rows from the history alone).
//
// Memory-bound: it reads the (n, T, q) ring once and writes U and the bins once. Rows are
// independent, so they are split across threads; each row runs the same vectorised code as
// observe (uncertainty_row.h), so the two passes give the same bits.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <tuple>

#include "checks.h"
#include "huge_pages.h"
#include "uncertainty_row.h"

namespace ubs_kernels::cpu {
namespace {

template <typename H>
void uncertainty_impl(const at::Tensor& history, const int64_t* seen, double lam, int64_t tau,
                      float* u, uint8_t* bins) {
  const int64_t n = history.size(0), T = history.size(1), q = history.size(2);
  H* hist = history.data_ptr<H>();
  const RowKernels<H> kernels = row_kernels<H>();
  const RowParams params = make_row_params(lam, tau);
  // Grain: rows enough for ~32K history values per task, so scheduling costs nothing.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / (T * q));
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (seen[i] > 0) {
        const H* next = i + 1 < end ? hist + (i + 1) * T * q : nullptr;
        kernels.row(hist + i * T * q, T, q, seen[i], params, nullptr, u + i * q, bins + i * q,
                    Ahead(next));
      } else {  // never observed: no U row (docs/spec.md), 0 in both outputs
        std::memset(u + i * q, 0, q * sizeof(float));
        std::memset(bins + i * q, 0, q);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> uncertainty_cpu(const at::Tensor& history_in,
                                                   const at::Tensor& seen_in, double lam,
                                                   int64_t tau) {
  checks::history_seen(history_in, seen_in, true);
  checks::lam(lam);
  checks::tau(tau);
  const at::Tensor history = history_in.contiguous();
  const at::Tensor seen = seen_in.contiguous();
  const int64_t n = history.size(0), q = history.size(2);
  const int64_t* s = seen.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK_VALUE(s[i] >= 0, "seen must be >= 0 (observation counts), got seen[", i,
                      "] = ", s[i]);
  }
  at::Tensor u = at::empty({n, q}, history.options().dtype(at::kFloat));
  at::Tensor bins = at::empty({n, q}, history.options().dtype(at::kByte));
  // Fresh outputs, first touched here: in 4 KiB pages the faults cost more than the maths.
  advise_huge_pages(u.data_ptr(), u.nbytes());
  advise_huge_pages(bins.data_ptr(), bins.nbytes());
  if (history.scalar_type() == at::kHalf) {
    uncertainty_impl<at::Half>(history, s, lam, tau, u.data_ptr<float>(), bins.data_ptr<uint8_t>());
  } else {
    uncertainty_impl<float>(history, s, lam, tau, u.data_ptr<float>(), bins.data_ptr<uint8_t>());
  }
  return {u, bins};
}

}  // namespace

TORCH_LIBRARY_IMPL(ubs_kernels, CPU, m) { m.impl("uncertainty", &uncertainty_cpu); }

}  // namespace ubs_kernels::cpu

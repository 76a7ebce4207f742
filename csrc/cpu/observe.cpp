// CPU kernels of ubs_kernels::observe (one training step: docs/spec.md Eq. 1, 4, 5 and the bin) and
// ubs_kernels::record (the same step's ring write and count only; U and the bins are left to
// the whole-matrix pass, which computes them with the same row kernel, so the bits agree).
//
// All arguments are checked before anything is written, so a bad call leaves the state as it
// was. Rows of the batch are independent (indices are distinct) and processed in parallel;
// each row's ring write and U are vectorised (uncertainty_row.h, shared with the whole-matrix
// pass).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <vector>

#include "observe_checks.h"
#include "uncertainty_row.h"

namespace ubs_kernels::cpu {
namespace {

// u and bins are null for record (which has neither, nor lam and tau). Returns the batch
// positions in index order (check_batch).
std::vector<int64_t> check_args(const at::Tensor& history, const at::Tensor& seen,
                                const at::Tensor* u, const at::Tensor* bins,
                                const at::Tensor& indices, const at::Tensor& probs, double lam,
                                int64_t tau) {
  checks::state(history, seen, u, bins);
  if (u != nullptr) {
    checks::lam(lam);
    checks::tau(tau);
  }
  const int64_t n = history.size(0), q = history.size(2);
  std::vector<int64_t> order =
      observe_checks::check_batch(indices, probs, n, q, history, "history");
  const at::Tensor idx_t = indices.contiguous();
  const int64_t* idx = idx_t.data_ptr<int64_t>();
  std::vector<int64_t> sorted(order.size());
  for (size_t k = 0; k < order.size(); ++k) sorted[k] = idx[order[k]];
  observe_checks::check_seen_at(seen.data_ptr<int64_t>(), sorted);
  // Up to 2^18 values on the calling thread (see record's grain below).
  observe_checks::check_probs_values(probs, "probs", int64_t{1} << 18);
  return order;
}

// Refresh: observe (ring write, count, U and bins); without: record (ring write and count).
template <bool Refresh, typename H, typename P>
void observe_impl(at::Tensor& history, at::Tensor& seen, float* uu, uint8_t* bb,
                  const at::Tensor& indices, const std::vector<int64_t>& order,
                  const at::Tensor& probs, double lam, int64_t tau) {
  const int64_t T = history.size(1), q = history.size(2), b = indices.size(0);
  H* hist = history.data_ptr<H>();
  int64_t* cnt = seen.data_ptr<int64_t>();
  const int64_t* idx = indices.data_ptr<int64_t>();
  const P* pp = probs.data_ptr<P>();
  const RowKernels<H> kernels = row_kernels<H>();
  const RowParams params = make_row_params(lam, tau);
  // Grain: observe, a few thousand values per task (a row touches q T). record, 2^17 values:
  // one step's batch runs on the calling thread, because in a training loop the other threads
  // are asleep between steps and waking them costs more than the work (bench/RESULTS.md); a
  // whole-matrix call still uses every thread.
  const int64_t grain = Refresh ? std::max<int64_t>(1, 4096 / std::max<int64_t>(1, q * T))
                                : std::max<int64_t>(1, (1 << 17) / std::max<int64_t>(1, q));
  // Rows in index order (check_batch): each thread walks its share of the rings, U and bins
  // forwards in memory, and only the probs rows (a fifth of the bytes with a float16 history)
  // are read out of order; the row kernel prefetches the next row's ring and probs into L2
  // and writes the new prediction to the ring in the same pass as U (what each of these gained
  // in the whole-matrix pass is in bench/RESULTS.md).
  at::parallel_for(0, b, grain, [&](int64_t begin, int64_t end) {
    // Probabilities that are not float32 go through float32 first (as the reference's
    // probs.to(history.dtype) does for float64 -> float16 too: c10::Half rounds from float).
    std::vector<float> converted(std::is_same_v<P, float> ? 0 : q);
    for (int64_t k = begin; k < end; ++k) {
      const int64_t r = order[k], i = idx[r];
      H* ring = hist + i * T * q;
      const float* src;
      if constexpr (std::is_same_v<P, float>) {
        src = pp + r * q;
      } else {
        for (int64_t j = 0; j < q; ++j) converted[j] = static_cast<float>(pp[r * q + j]);
        src = converted.data();
      }
      const int64_t count = ++cnt[i];
      if constexpr (!Refresh) {
        kernels.store(src, ring + ((count - 1) % T) * q, q);
      } else {
        Ahead ahead;
        if (k + 1 < end) {  // the next row's ring and probabilities
          const int64_t r1 = order[k + 1];
          ahead = Ahead(hist + idx[r1] * T * q, pp + r1 * q, sizeof(P), /*l2=*/true);
        }
        kernels.row(ring, T, q, count, params, src, uu + i * q, bb + i * q, ahead);
      }
    }
  });
}

template <bool Refresh>
void dispatch(at::Tensor& history, at::Tensor& seen, float* u, uint8_t* bins,
              const at::Tensor& indices, const std::vector<int64_t>& order, const at::Tensor& probs,
              double lam, int64_t tau) {
  if (indices.numel() == 0) return;
  const at::Tensor idx = indices.contiguous();
  const at::Tensor p = probs.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "observe_cpu", [&] {
    using P = scalar_t;
    if (history.scalar_type() == at::kHalf) {
      observe_impl<Refresh, at::Half, P>(history, seen, u, bins, idx, order, p, lam, tau);
    } else {
      observe_impl<Refresh, float, P>(history, seen, u, bins, idx, order, p, lam, tau);
    }
  });
}

void observe_cpu(at::Tensor history, at::Tensor seen, at::Tensor uncertainty, at::Tensor bins,
                 const at::Tensor& indices, const at::Tensor& probs, double lam, int64_t tau) {
  const std::vector<int64_t> order =
      check_args(history, seen, &uncertainty, &bins, indices, probs, lam, tau);
  dispatch<true>(history, seen, uncertainty.data_ptr<float>(), bins.data_ptr<uint8_t>(), indices,
                 order, probs, lam, tau);
}

void record_cpu(at::Tensor history, at::Tensor seen, const at::Tensor& indices,
                const at::Tensor& probs) {
  const std::vector<int64_t> order =
      check_args(history, seen, nullptr, nullptr, indices, probs, 0.5, 10);
  dispatch<false>(history, seen, nullptr, nullptr, indices, order, probs, 0.5, 10);
}

}  // namespace

TORCH_LIBRARY_IMPL(ubs_kernels, CPU, m) {
  m.impl("observe", &observe_cpu);
  m.impl("record", &record_cpu);
}

}  // namespace ubs_kernels::cpu

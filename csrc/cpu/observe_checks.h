// Value checks shared by the CPU kernels that take one training step's observation (observe,
// record, stage: observe.cpp, staged.cpp); the metadata checks are csrc/checks.h. Every check
// runs before anything is written, so a bad call leaves the state as it was.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <vector>

#include "checks.h"

namespace ubs_kernels::cpu::observe_checks {

// indices (b,) int64, distinct, in [0, n); probs (b, q) floating; both on `device`. Returns
// the batch positions in the order of their indices (idx[order[0]] < idx[order[1]] < ...):
// the kernels visit rows in that order, so the state (history rings, U, bins) is walked
// forwards in memory whatever order the caller's indices come in. A batch of at least n / 16
// rows is ordered by a scan of an n-entry position table (O(n + b); it finds the duplicates
// too), a smaller one by sorting.
inline std::vector<int64_t> check_batch(const at::Tensor& indices, const at::Tensor& probs,
                                        int64_t n, int64_t q, const at::Tensor& ref,
                                        const char* ref_name, const char* name = "probs") {
  checks::step(indices, probs, q, ref, ref_name, name);
  const int64_t b = indices.size(0);
  if (b == 0) return {};
  const at::Tensor idx_t = indices.contiguous();
  const int64_t* idx = idx_t.data_ptr<int64_t>();
  const auto [lo, hi] = std::minmax_element(idx, idx + b);
  TORCH_CHECK_INDEX(*lo >= 0 && *hi < n, "indices must be in [0, ", n, "), got values in [", *lo,
                    ", ", *hi, "]");
  std::vector<int64_t> order;
  order.reserve(b);
  bool distinct = true;
  if (b >= n / 16 && b < (int64_t{1} << 31)) {
    std::vector<int32_t> pos(n, -1);
    for (int64_t r = 0; r < b; ++r) {
      distinct &= pos[idx[r]] < 0;
      pos[idx[r]] = static_cast<int32_t>(r);
    }
    if (distinct) {
      for (int64_t i = 0; i < n; ++i) {
        if (pos[i] >= 0) order.push_back(pos[i]);
      }
    }
  } else {
    order.resize(b);
    for (int64_t r = 0; r < b; ++r) order[r] = r;
    std::sort(order.begin(), order.end(), [idx](int64_t a, int64_t c) { return idx[a] < idx[c]; });
    for (int64_t k = 1; k < b; ++k) distinct &= idx[order[k - 1]] != idx[order[k]];
  }
  TORCH_CHECK_VALUE(distinct, "indices must not contain duplicates within one call");
  return order;
}

// seen >= 0 at every index in `rows` (a negative count would address a slot outside the
// sample's ring), with room for `adds(k)` more observations of rows[k] (int64 must not wrap).
template <typename Rows, typename Adds>
inline void check_seen_at(const int64_t* seen, const Rows& rows, Adds adds) {
  int64_t k = 0;
  for (int64_t i : rows) {
    TORCH_CHECK_VALUE(seen[i] >= 0,
                      "seen must be >= 0 (observation counts) at every index observed, got seen[",
                      i, "] = ", seen[i]);
    TORCH_CHECK_VALUE(seen[i] <= checks::kMaxSeen - adds(k++), "seen[", i, "] = ", seen[i],
                      " has no room for another observation (counts stop at 2^63 - 1)");
  }
}

template <typename Rows>
inline void check_seen_at(const int64_t* seen, const Rows& rows) {
  check_seen_at(seen, rows, [](int64_t) { return int64_t{1}; });
}

// Every value of the (rows, q) tensor finite and in [0, 1] (NaN fails both comparisons). A
// branch-free pass the compiler vectorises; the offending value is looked up only on failure.
// Up to `serial` values run on the calling thread: in a training loop the other threads are
// asleep between steps, and waking them costs more than a batch's check.
inline void check_probs_values(const at::Tensor& probs, const char* name, int64_t serial) {
  const int64_t rows = probs.size(0), q = probs.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, probs.scalar_type(), "probs_check", [&] {
        using V = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
        const at::Tensor p = probs.contiguous();
        const scalar_t* ptr = p.data_ptr<scalar_t>();
        std::atomic<bool> bad{false};
        at::parallel_for(0, rows, std::max<int64_t>(1, serial / std::max<int64_t>(1, q)),
                         [&](int64_t r0, int64_t r1) {
                           int out = 0;
                           for (int64_t i = r0 * q; i < r1 * q; ++i) {
                             const V v = static_cast<V>(ptr[i]);
                             out |= static_cast<int>(!(v >= V(0))) | static_cast<int>(!(v <= V(1)));
                           }
                           if (out) bad = true;
                         });
        for (int64_t i = 0; bad && i < rows * q; ++i) {
          const double v = static_cast<double>(ptr[i]);
          TORCH_CHECK_VALUE(v >= 0.0 && v <= 1.0, name,
                            " must be finite and in [0, 1] (after sigmoid); ", name, "[", i / q,
                            ", ", i % q, "] = ", checks::value(v));
        }
      });
}

}  // namespace ubs_kernels::cpu::observe_checks

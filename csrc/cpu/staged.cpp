// CPU kernels of ubs_kernels::stage and ubs_kernels::observe_staged: the training steps of an
// epoch gathered in a contiguous buffer, then applied to the rings in one pass.
//
// Writing each step's rows into the rings as the step happens (record) visits b random rings
// with caches the model has just evicted: mostly cache and TLB misses, several times the cost
// of checking and storing the same values contiguously (bench/RESULTS.md). So a step only
// checks its observation and appends it to the buffer (stage), and the epoch boundary applies
// the buffer (observe_staged): samples in ascending order, each sample's staged rows in the
// order they were staged, then its U and bins from the ring, with the row kernel of observe.
// The result is, bit for bit, that of calling observe for every staged step in order.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

#include "observe_checks.h"
#include "uncertainty_row.h"

namespace ubs_kernels::cpu {
namespace {

template <typename H, typename P>
void stage_rows(H* dst, const P* src, int64_t b, int64_t q, bool logits) {
  const RowKernels<H> kernels = row_kernels<H>();
  const auto store = logits ? kernels.store_sigmoid : kernels.store;
  // Values that are not float32 go through float32 first, as observe's ring write.
  // The sigmoid is compute-bound: it takes both threads from 2^14 values; a plain copy stays on
  // the calling thread (see record).
  const int64_t grain = logits ? std::max<int64_t>(1, (1 << 14) / q) : b;
  at::parallel_for(0, b, grain, [&](int64_t r0, int64_t r1) {
    std::vector<float> converted(std::is_same_v<P, float> ? 0 : q);
    for (int64_t r = r0; r < r1; ++r) {
      const float* row;
      if constexpr (std::is_same_v<P, float>) {
        row = src + r * q;
      } else {
        for (int64_t j = 0; j < q; ++j) converted[j] = static_cast<float>(src[r * q + j]);
        row = converted.data();
      }
      store(row, dst + r * q, q);
    }
  });
}

// Logits: anything but NaN (a branch-free pass; the offending value looked up on failure).
void check_logits_values(const at::Tensor& x) {
  const int64_t size = x.numel(), q = x.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "logits_check", [&] {
    using V = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const at::Tensor c = x.contiguous();
    const scalar_t* ptr = c.data_ptr<scalar_t>();
    std::atomic<bool> bad{false};
    at::parallel_for(0, size, int64_t{1} << 14, [&](int64_t begin, int64_t end) {  // as the sigmoid
      int out = 0;
      for (int64_t i = begin; i < end; ++i) {
        const V v = static_cast<V>(ptr[i]);
        out |= static_cast<int>(v != v);
      }
      if (out) bad = true;
    });
    for (int64_t i = 0; bad && i < size; ++i) {
      const double v = static_cast<double>(ptr[i]);
      TORCH_CHECK_VALUE(v == v, "logits must not be NaN; logits[", i / q, ", ", i % q,
                        "] = ", checks::value(v));
    }
  });
}

void stage_cpu(at::Tensor staged_indices, at::Tensor staged_probs, int64_t offset,
               const at::Tensor& indices, const at::Tensor& probs, int64_t num_samples,
               bool logits) {
  TORCH_CHECK_TYPE(staged_indices.scalar_type() == at::kLong, "staged_indices must be int64, got ",
                   staged_indices.scalar_type());
  TORCH_CHECK_TYPE(
      staged_probs.scalar_type() == at::kHalf || staged_probs.scalar_type() == at::kFloat,
      "staged_probs must be float16 or float32 (the history dtype), got ",
      staged_probs.scalar_type());
  TORCH_CHECK_VALUE(staged_probs.dim() == 2 && staged_probs.size(1) >= 1,
                    "staged_probs must have shape (capacity, q) with q >= 1, got ",
                    staged_probs.sizes());
  const int64_t capacity = staged_probs.size(0), q = staged_probs.size(1);
  TORCH_CHECK_VALUE(staged_indices.dim() == 1 && staged_indices.size(0) == capacity,
                    "staged_indices must have shape (", capacity, ",) to match staged_probs, got ",
                    staged_indices.sizes());
  TORCH_CHECK_VALUE(staged_indices.is_contiguous() && staged_probs.is_contiguous(),
                    "staged_indices and staged_probs must be contiguous (written in place)");
  checks::same_device(staged_probs, "staged_probs", {&staged_indices});
  TORCH_CHECK_VALUE(num_samples >= 1, "num_samples must be >= 1, got ", num_samples);
  observe_checks::check_batch(indices, probs, num_samples, q, staged_probs, "staged_probs",
                              logits ? "logits" : "probs");
  const int64_t b = indices.size(0);
  TORCH_CHECK_VALUE(offset >= 0 && offset <= capacity - b, "offset must be in [0, ", capacity - b,
                    "] (capacity ", capacity, " minus the ", b, " rows of this call), got ",
                    offset);
  if (logits) {
    check_logits_values(probs);
  } else {
    observe_checks::check_probs_values(probs, "probs", int64_t{1} << 18);
  }
  if (b == 0) return;
  std::memcpy(staged_indices.data_ptr<int64_t>() + offset, indices.contiguous().data_ptr<int64_t>(),
              b * sizeof(int64_t));
  const at::Tensor p = probs.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "stage_cpu", [&] {
    if (staged_probs.scalar_type() == at::kHalf) {
      stage_rows(staged_probs.data_ptr<at::Half>() + offset * q, p.data_ptr<scalar_t>(), b, q,
                 logits);
    } else {
      stage_rows(staged_probs.data_ptr<float>() + offset * q, p.data_ptr<scalar_t>(), b, q, logits);
    }
  });
}

// The staged rows of each touched sample, samples ascending, rows in staging order:
// rows[first[s] .. first[s + 1]) belong to sample touched[s].
struct Groups {
  std::vector<int64_t> touched, first, rows;
};

Groups group_rows(const int64_t* idx, int64_t m, int64_t n) {
  Groups g;
  g.rows.resize(static_cast<size_t>(m));
  if (n <= 16 * m) {  // counting sort: O(n + m)
    std::vector<int64_t> start(static_cast<size_t>(n + 1), 0);
    for (int64_t r = 0; r < m; ++r) ++start[idx[r] + 1];
    for (int64_t i = 0; i < n; ++i) {
      if (start[i + 1] > 0) g.touched.push_back(i);
      start[i + 1] += start[i];
    }
    for (int64_t r = 0; r < m; ++r) g.rows[start[idx[r]]++] = r;  // stable
  } else {  // few rows in a large n: sort the rows, O(m log m)
    std::iota(g.rows.begin(), g.rows.end(), int64_t{0});
    std::stable_sort(g.rows.begin(), g.rows.end(),
                     [&](int64_t x, int64_t y) { return idx[x] < idx[y]; });
    for (int64_t k = 0; k < m; ++k) {
      if (k == 0 || idx[g.rows[k]] != idx[g.rows[k - 1]]) g.touched.push_back(idx[g.rows[k]]);
    }
  }
  g.first.reserve(g.touched.size() + 1);
  for (int64_t k = 0; k < m; ++k) {
    if (k == 0 || idx[g.rows[k]] != idx[g.rows[k - 1]]) g.first.push_back(k);
  }
  g.first.push_back(m);
  return g;
}

// Whether every staged value is finite and in [0, 1]. float16 is checked on its bits (0 ..
// 0x3C00 is +0 .. 1, 0x8000 is -0), which vectorises where a conversion per value does not.
bool staged_values_ok(const at::Tensor& p) {
  std::atomic<bool> bad{false};
  const int64_t size = p.numel();
  at::parallel_for(0, size, int64_t{1} << 16, [&](int64_t begin, int64_t end) {
    int out = 0;
    if (p.scalar_type() == at::kHalf) {
      const uint16_t* bits = reinterpret_cast<const uint16_t*>(p.data_ptr<at::Half>());
      for (int64_t i = begin; i < end; ++i) {
        out |= static_cast<int>(bits[i] > 0x3C00) & static_cast<int>(bits[i] != 0x8000);
      }
    } else {
      const float* v = p.data_ptr<float>();
      for (int64_t i = begin; i < end; ++i) {
        out |= static_cast<int>(!(v[i] >= 0.f)) | static_cast<int>(!(v[i] <= 1.f));
      }
    }
    if (out) bad = true;
  });
  return !bad;
}

template <typename H>
void apply_staged(at::Tensor& history, int64_t* cnt, float* u, uint8_t* bins, const Groups& g,
                  const H* staged, double lam, int64_t tau) {
  const int64_t T = history.size(1), q = history.size(2);
  H* hist = history.data_ptr<H>();
  const RowKernels<H> kernels = row_kernels<H>();
  const RowParams params = make_row_params(lam, tau);
  const int64_t samples = static_cast<int64_t>(g.touched.size());
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / (T * q));
  at::parallel_for(0, samples, grain, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      const int64_t i = g.touched[s];
      H* ring = hist + i * T * q;
      const int64_t r0 = g.first[s], r1 = g.first[s + 1];
      // Only the last T of a sample's rows stay in its ring; the older ones are only counted.
      const int64_t skip = std::max<int64_t>(0, r1 - r0 - T);
      for (int64_t k = r0 + skip; k < r1; ++k) {
        std::memcpy(ring + ((cnt[i] + k - r0) % T) * q, staged + g.rows[k] * q, q * sizeof(H));
      }
      cnt[i] += r1 - r0;
      const H* next = s + 1 < end ? hist + g.touched[s + 1] * T * q : nullptr;
      kernels.row(ring, T, q, cnt[i], params, nullptr, u + i * q, bins + i * q, Ahead(next));
    }
  });
}

void observe_staged_cpu(at::Tensor history, at::Tensor seen, at::Tensor uncertainty,
                        at::Tensor bins, const at::Tensor& staged_indices,
                        const at::Tensor& staged_probs, double lam, int64_t tau) {
  checks::state(history, seen, &uncertainty, &bins);
  const int64_t n = history.size(0), q = history.size(2);
  TORCH_CHECK_TYPE(staged_indices.scalar_type() == at::kLong, "staged_indices must be int64, got ",
                   staged_indices.scalar_type());
  TORCH_CHECK_VALUE(staged_indices.dim() == 1, "staged_indices must be 1-D, got shape ",
                    staged_indices.sizes());
  const int64_t m = staged_indices.size(0);
  TORCH_CHECK_TYPE(staged_probs.scalar_type() == history.scalar_type(),
                   "staged_probs must have the dtype of history (", history.scalar_type(),
                   "), got ", staged_probs.scalar_type());
  TORCH_CHECK_VALUE(
      staged_probs.dim() == 2 && staged_probs.size(0) == m && staged_probs.size(1) == q,
      "staged_probs must have shape (", m, ", ", q, ") (len(staged_indices), num_labels), got ",
      staged_probs.sizes());
  checks::same_device(history, "history", {&staged_indices, &staged_probs});
  checks::lam(lam);
  checks::tau(tau);
  if (m == 0) return;
  const at::Tensor sidx = staged_indices.contiguous();
  const int64_t* idx = sidx.data_ptr<int64_t>();
  const auto [lo, hi] = std::minmax_element(idx, idx + m);
  TORCH_CHECK_INDEX(*lo >= 0 && *hi < n, "staged_indices must be in [0, ", n, "), got values in [",
                    *lo, ", ", *hi, "]");
  const Groups g = group_rows(idx, m, n);
  int64_t* cnt = seen.data_ptr<int64_t>();
  observe_checks::check_seen_at(cnt, g.touched,
                                [&](int64_t k) { return g.first[k + 1] - g.first[k]; });
  const at::Tensor sp = staged_probs.contiguous();
  if (!staged_values_ok(sp)) observe_checks::check_probs_values(sp, "staged_probs", 0);
  if (history.scalar_type() == at::kHalf) {
    apply_staged<at::Half>(history, cnt, uncertainty.data_ptr<float>(), bins.data_ptr<uint8_t>(), g,
                           sp.data_ptr<at::Half>(), lam, tau);
  } else {
    apply_staged<float>(history, cnt, uncertainty.data_ptr<float>(), bins.data_ptr<uint8_t>(), g,
                        sp.data_ptr<float>(), lam, tau);
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(ubs_kernels, CPU, m) {
  m.impl("stage", &stage_cpu);
  m.impl("observe_staged", &observe_staged_cpu);
}

}  // namespace ubs_kernels::cpu

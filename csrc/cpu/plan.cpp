// CPU kernel of ubs_kernels::plan_weighted: one selection epoch's batches, each b distinct
// samples drawn by successive sampling from P = softmax(log_p) (ubs_kernels/sampling.py).
//
// The Python version (the torch backend and the oracle) spends most of its time in ~30 small
// torch calls, half of them the per-row first-occurrence mask (a stable sort, a scatter and
// cumulative sums). Here the random numbers come from the same ATen calls on the same
// generator, in the same order, so the draws are the same bits; the per-row selection of the
// first b distinct values is one pass with a stamp per sample. The result equals the Python
// version's exactly (tests/test_sampling.py).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "checks.h"

namespace ubs_kernels::cpu {
namespace {

// Inverse-CDF lookups of uniforms already scaled to cdf's total, clamped to the last sample.
at::Tensor lookup(const at::Tensor& cdf, const at::Tensor& uniforms) {
  return at::searchsorted(cdf, uniforms, /*out_int32=*/true).clamp_max_(cdf.numel() - 1);
}

at::Tensor plan_weighted_cpu(const at::Tensor& log_p_in, int64_t batch_size, int64_t batches,
                             std::optional<at::Generator> generator) {
  TORCH_CHECK_VALUE(log_p_in.dim() == 1 && log_p_in.numel() >= 1,
                    "log_p must have shape (n,) with n >= 1, got ", log_p_in.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(log_p_in.scalar_type()),
                   "log_p must be a floating tensor, got ", log_p_in.scalar_type());
  TORCH_CHECK_VALUE(batch_size >= 1, "batch_size must be >= 1, got ", batch_size);
  TORCH_CHECK_VALUE(batches >= 0, "batches must be >= 0, got ", batches);
  const at::Tensor log_p = log_p_in.detach();
  const auto f64 = log_p.options().dtype(at::kDouble);
  // A NaN or +inf would plan empty batches, all -inf nothing: refused, naming the first.
  const at::Tensor bad = at::isnan(log_p).logical_or_(at::isposinf(log_p));
  if (bad.any().item<bool>()) {
    const int64_t i = bad.nonzero()[0][0].item<int64_t>();
    TORCH_CHECK_VALUE(false, "log_p must not be NaN or +inf, got log_p[", i,
                      "] = ", checks::value(log_p[i].item<double>()));
  }
  // weights = exp(log_p - max), support, b, the CDF and the collision term, as sampling.py.
  const double top = log_p.max().item<double>();
  TORCH_CHECK_VALUE(top > -std::numeric_limits<double>::infinity(),
                    "log_p must give some sample a probability > 0, got -inf everywhere");
  const at::Tensor weights = at::exp(log_p.to(at::kDouble) - top);
  const int64_t support = (weights > 0).sum().item<int64_t>();
  const int64_t b = std::min(batch_size, support);
  if (batches == 0 || b == 0) return at::empty({batches, b}, log_p.options().dtype(at::kLong));
  const at::Tensor cdf = at::cumsum(weights, 0);
  const at::Tensor total = cdf[-1];
  const at::Tensor p = weights / total;
  const double collision = (p * p).sum().item<double>();
  const int64_t extra = 4 + static_cast<int64_t>(std::ceil(3.0 * b * b * collision));
  const int64_t width = b + std::min(extra, 8 * b + 64);
  const int64_t count = batches * width;

  // Sorted uniforms from normalised cumulative exponential spacings, looked up, then a random
  // permutation of the draws: an i.i.d. stream from P (sampling._sorted_uniform_draws).
  const at::Tensor spacings = at::rand({count + 1}, generator, f64).neg_().log1p_().neg_();
  const at::Tensor points = at::cumsum(spacings, 0);
  const at::Tensor uniforms = points.slice(0, 0, count) * (total / points[-1]);
  const at::Tensor sorted = lookup(cdf, uniforms);
  const at::Tensor perm = at::randperm(count, generator, log_p.options().dtype(at::kLong));
  const int32_t* draw = sorted.data_ptr<int32_t>();
  const int64_t* order = perm.data_ptr<int64_t>();

  // Row r is the stream order[r * width ..]: it keeps its first b distinct values. stamp[v] is
  // the last row that took v.
  at::Tensor out = at::empty({batches, b}, log_p.options().dtype(at::kLong));
  int64_t* dst = out.data_ptr<int64_t>();
  std::vector<int64_t> stamp(static_cast<size_t>(log_p.numel()), -1);
  std::vector<int64_t> short_rows, short_taken;
  for (int64_t r = 0; r < batches; ++r) {
    int64_t taken = 0;
    for (int64_t k = r * width; k < (r + 1) * width && taken < b; ++k) {
      const int32_t v = draw[order[k]];
      if (stamp[v] != r) {
        stamp[v] = r;
        dst[r * b + taken++] = v;
      }
    }
    if (taken < b) {
      short_rows.push_back(r);
      short_taken.push_back(taken);
    }
  }
  // The rare row whose stream ran out of distinct values before b: continue it with plain
  // inverse-CDF draws in chunks that double, rows in order (sampling._stream_draws).
  for (size_t s = 0; s < short_rows.size(); ++s) {
    const int64_t r = short_rows[s], id = batches + static_cast<int64_t>(s);
    int64_t taken = short_taken[s];
    for (int64_t k = 0; k < taken; ++k) stamp[dst[r * b + k]] = id;
    for (int64_t chunk = width; taken < b; chunk *= 2) {
      const at::Tensor more = lookup(cdf, at::rand({chunk}, generator, f64) * total);
      const int32_t* m = more.data_ptr<int32_t>();
      for (int64_t k = 0; k < chunk && taken < b; ++k) {
        if (stamp[m[k]] != id) {
          stamp[m[k]] = id;
          dst[r * b + taken++] = m[k];
        }
      }
    }
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ubs_kernels, CPU, m) { m.impl("plan_weighted", &plan_weighted_cpu); }

}  // namespace ubs_kernels::cpu

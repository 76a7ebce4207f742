// Argument checks on tensor metadata (dtype, shape, device, scalars), shared by the CPU kernels
// and the CUDA binding, so both raise the same error, naming the argument, for the same bad
// call. Checks of the values themselves (indices in range, probabilities in [0, 1], bins below
// tau) stay beside each kernel: the CPU reads them on the host, CUDA on the device.
#pragma once

#include <ATen/ATen.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace ubs_kernels::checks {

// The largest observation count: one more would wrap the int64 counter.
constexpr int64_t kMaxSeen = INT64_MAX;

// The shortest text that reads back as `v` (1.0000001 stays 1.0000001, where an ostream's six
// digits print 1), for messages that quote an offending value.
inline std::string value(double v) {
  char buf[32];
  const auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

inline void lam(double lam) {
  TORCH_CHECK_VALUE(lam >= 0.0 && lam <= 1.0, "lam must be in [0, 1], got ", value(lam));
}

inline void tau(int64_t tau) {
  TORCH_CHECK_VALUE(tau >= 2 && tau <= 256, "tau must be an integer in [2, 256], got ", tau);
}

// Every tensor in `others` on the device of `ref`.
inline void same_device(const at::Tensor& ref, const char* ref_name,
                        std::initializer_list<const at::Tensor*> others) {
  for (const at::Tensor* t : others) {
    TORCH_CHECK_VALUE(t == nullptr || t->device() == ref.device(),
                      "all tensors must be on the device of ", ref_name, " (", ref.device(),
                      "), got ", t->device());
  }
}

// history (n, T, q) f16|f32 and seen (n,) i64 on one device; n = 0 only with `allow_empty`
// (the whole-matrix pass; observe indexes a sample).
inline void history_seen(const at::Tensor& history, const at::Tensor& seen, bool allow_empty) {
  if (allow_empty) {
    TORCH_CHECK_VALUE(history.dim() == 3 && history.size(1) >= 1 && history.size(2) >= 1,
                      "history must have shape (n, T, q) with T, q >= 1, got ", history.sizes());
  } else {
    TORCH_CHECK_VALUE(history.dim() == 3 && history.numel() > 0,
                      "history must have shape (n, T, q) with every size >= 1, got ",
                      history.sizes());
  }
  TORCH_CHECK_TYPE(history.scalar_type() == at::kHalf || history.scalar_type() == at::kFloat,
                   "history must be float16 or float32, got ", history.scalar_type());
  const int64_t n = history.size(0);
  TORCH_CHECK_TYPE(seen.scalar_type() == at::kLong, "seen must be int64, got ", seen.scalar_type());
  TORCH_CHECK_VALUE(seen.dim() == 1 && seen.size(0) == n, "seen must have shape (", n,
                    ",) to match history, got ", seen.sizes());
  same_device(history, "history", {&seen});
}

// The state an observation writes: history and seen, with uncertainty (n, q) f32 and bins
// (n, q) u8 unless null (record has neither), all contiguous and on history's device.
inline void state(const at::Tensor& history, const at::Tensor& seen, const at::Tensor* u,
                  const at::Tensor* bins) {
  history_seen(history, seen, false);
  const int64_t n = history.size(0), q = history.size(2);
  if (u != nullptr) {
    TORCH_CHECK_TYPE(u->scalar_type() == at::kFloat, "uncertainty must be float32, got ",
                     u->scalar_type());
    TORCH_CHECK_VALUE(u->dim() == 2 && u->size(0) == n && u->size(1) == q,
                      "uncertainty must have shape (", n, ", ", q, ") to match history, got ",
                      u->sizes());
    TORCH_CHECK_TYPE(bins->scalar_type() == at::kByte, "bins must be uint8, got ",
                     bins->scalar_type());
    TORCH_CHECK_VALUE(bins->dim() == 2 && bins->size(0) == n && bins->size(1) == q,
                      "bins must have shape (", n, ", ", q, ") to match history, got ",
                      bins->sizes());
    TORCH_CHECK_VALUE(history.is_contiguous() && seen.is_contiguous() && u->is_contiguous() &&
                          bins->is_contiguous(),
                      "history, seen, uncertainty and bins must be contiguous (written in place)");
  } else {
    TORCH_CHECK_VALUE(history.is_contiguous() && seen.is_contiguous(),
                      "history and seen must be contiguous (written in place)");
  }
  same_device(history, "history", {u, bins});
}

// One step's indices (b,) i64, 1-D, and its values (b, q) float32, float16, bfloat16 or float64
// (`name`: "probs", or "logits" where the op takes those), on the device of `ref`.
inline void step(const at::Tensor& indices, const at::Tensor& probs, int64_t q,
                 const at::Tensor& ref, const char* ref_name, const char* name = "probs") {
  TORCH_CHECK_TYPE(indices.scalar_type() == at::kLong, "indices must be int64, got ",
                   indices.scalar_type());
  TORCH_CHECK_VALUE(indices.dim() == 1, "indices must be 1-D, got shape ", indices.sizes());
  const int64_t b = indices.size(0);
  const at::ScalarType t = probs.scalar_type();
  TORCH_CHECK_TYPE(t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble,
                   name, " must be float32, float16, bfloat16 or float64, got ", t);
  TORCH_CHECK_VALUE(probs.dim() == 2 && probs.size(0) == b && probs.size(1) == q, name,
                    " must have shape (", b, ", ", q, ") (len(indices), num_labels), got ",
                    probs.sizes());
  same_device(ref, ref_name, {&indices, &probs});
}

// label_mi's bins (n, q) u8 with q >= 1, and tau.
inline void label_mi(const at::Tensor& bins, int64_t t) {
  TORCH_CHECK_TYPE(bins.scalar_type() == at::kByte, "bins must be uint8, got ", bins.scalar_type());
  TORCH_CHECK_VALUE(bins.dim() == 2 && bins.size(1) >= 1,
                    "bins must have shape (n, q) with q >= 1, got ", bins.sizes());
  tau(t);
}

// selection_log_probs: uncertainty (n, q) f32, c (q,) f32, seen (n,) i64 on one device, and a
// finite pressure >= 1.
inline void selection(const at::Tensor& u, const at::Tensor& c, const at::Tensor& seen,
                      double pressure) {
  TORCH_CHECK_TYPE(u.scalar_type() == at::kFloat, "uncertainty must be float32, got ",
                   u.scalar_type());
  TORCH_CHECK_VALUE(u.dim() == 2 && u.size(0) >= 1 && u.size(1) >= 1,
                    "uncertainty must have shape (n, q) with n, q >= 1, got ", u.sizes());
  const int64_t n = u.size(0), q = u.size(1);
  TORCH_CHECK_TYPE(c.scalar_type() == at::kFloat, "c must be float32, got ", c.scalar_type());
  TORCH_CHECK_VALUE(c.dim() == 1 && c.size(0) == q, "c must have shape (", q,
                    ",) to match uncertainty, got ", c.sizes());
  TORCH_CHECK_TYPE(seen.scalar_type() == at::kLong, "seen must be int64, got ", seen.scalar_type());
  TORCH_CHECK_VALUE(seen.dim() == 1 && seen.size(0) == n, "seen must have shape (", n,
                    ",) to match uncertainty, got ", seen.sizes());
  same_device(u, "uncertainty", {&c, &seen});
  TORCH_CHECK_VALUE(std::isfinite(pressure) && pressure >= 1.0,
                    "pressure must be a finite number >= 1, got ", value(pressure));
}

}  // namespace ubs_kernels::checks

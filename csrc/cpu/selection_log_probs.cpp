// CPU kernel of ubs_kernels::selection_log_probs: docs/spec.md Eq. 7-10 fused.
//
//   w = U c (Eq. 7-8, c = C 1), z = (w - min w) / (max w - min w) over the observed samples
//   (z = 1 for samples never observed, z = 0 for all when every observed w is equal),
//   Q = floor((1 - z) n) in [0, n] (Eq. 9), log P = -ln(s) Q / n - logsumexp (Eq. 10).
//
// Steps mirror reference.selection_log_probs so that Q is the torch backend's: w and z are
// float32 (w accumulated in double and rounded once, so it is the correctly rounded U c up to
// double rounding, where torch's float32 GEMV may be an ulp off), Q is computed in double
// from the float32 z exactly as reference.quantise does. log P is computed in double and
// rounded once. Every sum has a fixed order, so the result does not depend on the threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "checks.h"
#include "isa.h"

namespace ubs_kernels::cpu {
namespace {

constexpr int kAcc = 16;          // interleaved partial sums per row of the GEMV
constexpr int64_t kChunk = 4096;  // samples per partial sum of the logsumexp

// w_i = sum_j u_ij c_j for rows [r0, r1): kAcc partial sums in double (lane j % kAcc), then
// added in lane order. Inlined into one wrapper per instruction set, which vectorises it.
__attribute__((always_inline)) inline void weights_rows(const float* u, const double* c, int64_t q,
                                                        int64_t r0, int64_t r1, float* w) {
  for (int64_t i = r0; i < r1; ++i) {
    const float* row = u + i * q;
    double acc[kAcc] = {};
    int64_t j = 0;
    for (; j + kAcc <= q; j += kAcc) {
      for (int l = 0; l < kAcc; ++l) acc[l] += static_cast<double>(row[j + l]) * c[j + l];
    }
    for (int l = 0; j + l < q; ++l) acc[l] += static_cast<double>(row[j + l]) * c[j + l];
    double sum = 0.0;
    for (int l = 0; l < kAcc; ++l) sum += acc[l];
    w[i] = static_cast<float>(sum);
  }
}

using WeightsFn = void (*)(const float*, const double*, int64_t, int64_t, int64_t, float*);

void weights_portable(const float* u, const double* c, int64_t q, int64_t r0, int64_t r1,
                      float* w) {
  weights_rows(u, c, q, r0, r1, w);
}

#if defined(__x86_64__) || defined(_M_X64)
#define UBS_X86 1
__attribute__((target("avx2,fma"))) void weights_avx2(const float* u, const double* c, int64_t q,
                                                      int64_t r0, int64_t r1, float* w) {
  weights_rows(u, c, q, r0, r1, w);
}

__attribute__((target("avx512f,avx2,fma"))) void weights_avx512(const float* u, const double* c,
                                                                int64_t q, int64_t r0, int64_t r1,
                                                                float* w) {
  weights_rows(u, c, q, r0, r1, w);
}
#endif

WeightsFn choose_weights() {
  [[maybe_unused]] const Isa cap = isa_cap();
#ifdef UBS_X86
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (cap >= Isa::kAvx512 && avx2 && __builtin_cpu_supports("avx512f")) return weights_avx512;
  if (cap >= Isa::kAvx2 && avx2) return weights_avx2;
#endif
  return weights_portable;
}

at::Tensor selection_log_probs_cpu(const at::Tensor& u_in, const at::Tensor& c_in,
                                   const at::Tensor& seen_in, double pressure) {
  checks::selection(u_in, c_in, seen_in, pressure);
  const at::Tensor u = u_in.contiguous(), cf = c_in.contiguous(), seen_t = seen_in.contiguous();
  const int64_t n = u.size(0), q = u.size(1);
  const float* cp = cf.data_ptr<float>();
  std::vector<double> c(cp, cp + q);
  for (int64_t j = 0; j < q; ++j) {
    TORCH_CHECK_VALUE(std::isfinite(c[j]), "c must be finite, got c[", j,
                      "] = ", checks::value(c[j]));
  }
  const int64_t* seen = seen_t.data_ptr<int64_t>();

  // Eq. 7-8.
  std::vector<float> w(n);
  const WeightsFn weights = choose_weights();
  at::parallel_for(0, n, std::max<int64_t>(1, 16384 / q), [&](int64_t r0, int64_t r1) {
    weights(u.data_ptr<float>(), c.data(), q, r0, r1, w.data());
  });
  // min / max over the observed samples (exact, so any order gives the same result).
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  for (int64_t i = 0; i < n; ++i) {
    if (seen[i] <= 0) continue;
    TORCH_CHECK_VALUE(std::isfinite(w[i]), "uncertainty must be finite: row ", i,
                      " gives w = U c = ", checks::value(w[i]));
    lo = std::min(lo, w[i]);
    hi = std::max(hi, w[i]);
  }
  const float span = hi - lo;  // -inf when nothing was observed: every z is 1 then

  // Eq. 9-10: logits in double, z and the quantiser exactly as the reference.
  const double N = static_cast<double>(n), slope = -std::log(pressure) / N;
  std::vector<double> logit(n);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> chunk_max(chunks), chunk_sum(chunks);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t ch = c0; ch < c1; ++ch) {
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t i = ch * kChunk; i < std::min(n, (ch + 1) * kChunk); ++i) {
        const float z = seen[i] <= 0 ? 1.f : (span > 0.f ? (w[i] - lo) / span : 0.f);
        const double Q = std::min(std::max(std::floor((1.0 - static_cast<double>(z)) * N), 0.0), N);
        logit[i] = slope * Q;
        m = std::max(m, logit[i]);
      }
      chunk_max[ch] = m;
    }
  });
  const double top = *std::max_element(chunk_max.begin(), chunk_max.end());
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t ch = c0; ch < c1; ++ch) {
      double s = 0.0;
      for (int64_t i = ch * kChunk; i < std::min(n, (ch + 1) * kChunk); ++i) {
        s += std::exp(logit[i] - top);
      }
      chunk_sum[ch] = s;
    }
  });
  double total = 0.0;
  for (int64_t ch = 0; ch < chunks; ++ch) total += chunk_sum[ch];
  const double lse = top + std::log(total);

  at::Tensor out = at::empty({n}, u.options());
  float* op = out.data_ptr<float>();
  at::parallel_for(0, n, 4096, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) op[i] = static_cast<float>(logit[i] - lse);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ubs_kernels, CPU, m) { m.impl("selection_log_probs", &selection_log_probs_cpu); }

}  // namespace ubs_kernels::cpu

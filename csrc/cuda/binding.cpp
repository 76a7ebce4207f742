// Torch binding of the CUDA kernels: TORCH_LIBRARY_IMPL(ubs_kernels, CUDA).
//
// Checks every tensor (csrc/checks.h: the same checks and messages as the CPU kernels),
// allocates outputs and scratch through torch's caching allocator, and calls the torch-free
// launchers of kernels.cuh on the current stream (c10::cuda::getCurrentCUDAStream, which
// at::cuda re-exports; the c10 header avoids pulling in cuBLAS/cuSPARSE) under a device guard.
// Data-dependent checks (indices, probabilities, bin values) run on the device; the host reads
// their verdict after the launch, which waits for the stream, except during CUDA graph capture,
// where it cannot wait: the state is still left untouched then, but the error is not raised.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <climits>
#include <tuple>

#include "checks.h"
#include "kernels.cuh"

namespace ubs_kernels::cuda {
namespace {

Dtype to_dtype(at::ScalarType t) {
  TORCH_CHECK_TYPE(t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble,
                   "unsupported dtype ", t);
  return t == at::kHalf       ? Dtype::kFloat16
         : t == at::kBFloat16 ? Dtype::kBFloat16
         : t == at::kFloat    ? Dtype::kFloat32
                              : Dtype::kFloat64;
}

bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

void check_on_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.is_cuda(), name, " must be a CUDA tensor, got ", t.device());
}

// observe (u and bins given) or record (u and bins null: ring write and count only).
void observe_or_record(at::Tensor& history, at::Tensor& seen, at::Tensor* uncertainty,
                       at::Tensor* bins, const at::Tensor& indices, const at::Tensor& probs,
                       double lam, int64_t tau) {
  checks::state(history, seen, uncertainty, bins);
  const int64_t n = history.size(0), T = history.size(1), q = history.size(2);
  if (uncertainty != nullptr) {
    checks::lam(lam);
    checks::tau(tau);
  }
  checks::step(indices, probs, q, history, "history");
  check_on_cuda(history, "history");
  const int64_t b = indices.size(0);
  TORCH_CHECK_VALUE(b <= INT32_MAX, "indices must have fewer than 2^31 entries, got ", b);
  if (b == 0) return;

  const c10::cuda::CUDAGuard guard(history.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor idx = indices.contiguous();
  const at::Tensor p = probs.contiguous();
  const at::Tensor status = at::empty({2}, seen.options());
  const at::Tensor owner = at::empty({n}, seen.options().dtype(at::kInt));
  ObserveArgs args{history.data_ptr(),
                   to_dtype(history.scalar_type()),
                   seen.data_ptr<int64_t>(),
                   uncertainty != nullptr ? uncertainty->data_ptr<float>() : nullptr,
                   bins != nullptr ? bins->data_ptr<uint8_t>() : nullptr,
                   idx.data_ptr<int64_t>(),
                   p.data_ptr(),
                   to_dtype(p.scalar_type()),
                   n,
                   T,
                   q,
                   b,
                   lam,
                   static_cast<int>(tau),
                   owner.data_ptr<int32_t>(),
                   status.data_ptr<int64_t>()};
  C10_CUDA_CHECK(launch_observe(args, stream));
  if (capturing(stream)) return;

  const at::Tensor verdict = status.cpu();  // waits for the checks (and the update)
  const int64_t flags = verdict[0].item<int64_t>();
  if (flags & kObserveBadIndex) {
    TORCH_CHECK_INDEX(false, "indices must be in [0, ", n, "), got values in [",
                      idx.min().item<int64_t>(), ", ", idx.max().item<int64_t>(), "]");
  }
  TORCH_CHECK_VALUE(!(flags & kObserveDuplicate),
                    "indices must not contain duplicates within one call");
  if (flags & kObserveBadSeen) {  // name the first sample, as the CPU kernels do
    const at::Tensor counts = seen.index_select(0, idx).cpu();
    const at::Tensor ids = idx.cpu();
    int64_t r = 0;
    auto bad = [&](int64_t k) {
      const int64_t c = counts[k].item<int64_t>();
      return c < 0 || c == checks::kMaxSeen;
    };
    while (r + 1 < b && !bad(r)) ++r;
    const int64_t i = ids[r].item<int64_t>(), c = counts[r].item<int64_t>();
    TORCH_CHECK_VALUE(c >= 0, "seen must be >= 0 (observation counts) at every index observed, ",
                      "got seen[", i, "] = ", c);
    TORCH_CHECK_VALUE(false, "seen[", i, "] = ", c,
                      " has no room for another observation (counts stop at 2^63 - 1)");
  }
  if (flags & kObserveBadProb) {
    const int64_t e = verdict[1].item<int64_t>();
    TORCH_CHECK_VALUE(false, "probs must be finite and in [0, 1] (after sigmoid); probs[", e / q,
                      ", ", e % q, "] = ", checks::value(p.view(-1)[e].item<double>()));
  }
}

void observe_cuda(at::Tensor history, at::Tensor seen, at::Tensor uncertainty, at::Tensor bins,
                  const at::Tensor& indices, const at::Tensor& probs, double lam, int64_t tau) {
  observe_or_record(history, seen, &uncertainty, &bins, indices, probs, lam, tau);
}

void record_cuda(at::Tensor history, at::Tensor seen, const at::Tensor& indices,
                 const at::Tensor& probs) {
  observe_or_record(history, seen, nullptr, nullptr, indices, probs, 0.5, 10);
}

std::tuple<at::Tensor, at::Tensor> uncertainty_cuda(const at::Tensor& history,
                                                    const at::Tensor& seen, double lam,
                                                    int64_t tau) {
  checks::history_seen(history, seen, true);
  check_on_cuda(history, "history");
  checks::lam(lam);
  checks::tau(tau);
  const c10::cuda::CUDAGuard guard(history.device());
  const at::Tensor h = history.contiguous(), s = seen.contiguous();
  const int64_t n = h.size(0), T = h.size(1), q = h.size(2);
  at::Tensor u = at::empty({n, q}, h.options().dtype(at::kFloat));
  at::Tensor b = at::empty({n, q}, h.options().dtype(at::kByte));
  C10_CUDA_CHECK(launch_uncertainty(h.data_ptr(), to_dtype(h.scalar_type()), s.data_ptr<int64_t>(),
                                    n, T, q, lam, static_cast<int>(tau), u.data_ptr<float>(),
                                    b.data_ptr<uint8_t>(), c10::cuda::getCurrentCUDAStream()));
  return {u, b};
}

at::Tensor label_mi_cuda(const at::Tensor& bins_in, int64_t tau, bool rowsum) {
  checks::label_mi(bins_in, tau);
  check_on_cuda(bins_in, "bins");
  const int64_t n = bins_in.size(0), q = bins_in.size(1);
  TORCH_CHECK_VALUE(n <= INT32_MAX, "bins: the CUDA kernel counts in int32, so n must be < 2^31, ",
                    "got n = ", n, " (split the rows and add the counts, or use backend='cpu')");
  TORCH_CHECK_VALUE(q <= kLabelMiMaxLabels, "bins: at most ", kLabelMiMaxLabels,
                    " labels on CUDA, got ", q);
  TORCH_CHECK_VALUE(label_mi_blocks(q, static_cast<int>(tau)) <= INT32_MAX,
                    "bins: too many label pairs for one CUDA launch (q = ", q, ", tau = ", tau,
                    ")");
  const c10::cuda::CUDAGuard guard(bins_in.device());
  const at::Tensor bins = bins_in.contiguous();
  at::Tensor out = rowsum ? at::empty({q}, bins.options().dtype(at::kFloat))
                          : at::empty({q, q}, bins.options().dtype(at::kFloat));
  const size_t bytes = label_mi_workspace_bytes(n, q, static_cast<int>(tau));
  const at::Tensor workspace = at::empty({static_cast<int64_t>(bytes)}, bins.options());
  const at::Tensor bad = at::empty({1}, bins.options().dtype(at::kInt));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  C10_CUDA_CHECK(launch_label_mi(bins.data_ptr<uint8_t>(), n, q, static_cast<int>(tau), rowsum,
                                 out.data_ptr<float>(), workspace.data_ptr(),
                                 bad.data_ptr<int32_t>(), stream));
  if (!capturing(stream)) {
    TORCH_CHECK_VALUE(bad.item<int32_t>() == 0, "bins must be in [0, tau=", tau, ")");
  }
  return out;
}

at::Tensor selection_log_probs_cuda(const at::Tensor& uncertainty, const at::Tensor& c,
                                    const at::Tensor& seen, double pressure) {
  checks::selection(uncertainty, c, seen, pressure);
  check_on_cuda(uncertainty, "uncertainty");
  const int64_t n = uncertainty.size(0), q = uncertainty.size(1);
  const c10::cuda::CUDAGuard guard(uncertainty.device());
  const at::Tensor u = uncertainty.contiguous(), cc = c.contiguous(), s = seen.contiguous();
  at::Tensor out = at::empty({n}, u.options());
  const at::Tensor workspace =
      at::empty({static_cast<int64_t>(selection_workspace_bytes(n))}, u.options().dtype(at::kByte));
  C10_CUDA_CHECK(launch_selection_log_probs(
      u.data_ptr<float>(), cc.data_ptr<float>(), s.data_ptr<int64_t>(), n, q, pressure,
      out.data_ptr<float>(), workspace.data_ptr(), c10::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ubs_kernels, CUDA, m) {
  m.impl("observe", &observe_cuda);
  m.impl("record", &record_cuda);
  m.impl("uncertainty", &uncertainty_cuda);
  m.impl("label_mi", &label_mi_cuda);
  m.impl("selection_log_probs", &selection_log_probs_cuda);
}

}  // namespace ubs_kernels::cuda

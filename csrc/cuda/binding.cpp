// Torch binding of the CUDA kernels: TORCH_LIBRARY_IMPL(ubs_kernels, CUDA).
//
// Checks every tensor (TORCH_CHECK naming the argument, the same messages as csrc/cpu/),
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
#include <cmath>
#include <tuple>

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

void check_same_device(const at::Tensor& ref, std::initializer_list<const at::Tensor*> others,
                       const char* ref_name) {
  TORCH_CHECK_VALUE(ref.is_cuda(), ref_name, " must be a CUDA tensor, got ", ref.device());
  for (const at::Tensor* t : others) {
    TORCH_CHECK_VALUE(t->device() == ref.device(), "all tensors must be on the device of ",
                      ref_name, " (", ref.device(), "), got ", t->device());
  }
}

void check_lam_tau(double lam, int64_t tau) {
  TORCH_CHECK_VALUE(lam >= 0.0 && lam <= 1.0, "lam must be in [0, 1], got ", lam);
  TORCH_CHECK_VALUE(tau >= 2 && tau <= 256, "tau must be an integer in [2, 256], got ", tau);
}

// observe needs n >= 1 (it indexes a sample); the whole-matrix pass accepts n = 0.
void check_history_seen(const at::Tensor& history, const at::Tensor& seen, bool allow_empty) {
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
  TORCH_CHECK_TYPE(seen.scalar_type() == at::kLong, "seen must be int64, got ", seen.scalar_type());
  TORCH_CHECK_VALUE(seen.dim() == 1 && seen.size(0) == history.size(0), "seen must have shape (",
                    history.size(0), ",) to match history, got ", seen.sizes());
}

// observe (u and bins given) or record (u and bins null: ring write and count only).
void observe_or_record(at::Tensor& history, at::Tensor& seen, at::Tensor* uncertainty,
                       at::Tensor* bins, const at::Tensor& indices, const at::Tensor& probs,
                       double lam, int64_t tau) {
  check_history_seen(history, seen, false);
  const int64_t n = history.size(0), T = history.size(1), q = history.size(2);
  if (uncertainty != nullptr) {
    TORCH_CHECK_TYPE(uncertainty->scalar_type() == at::kFloat, "uncertainty must be float32, got ",
                     uncertainty->scalar_type());
    TORCH_CHECK_VALUE(
        uncertainty->dim() == 2 && uncertainty->size(0) == n && uncertainty->size(1) == q,
        "uncertainty must have shape (", n, ", ", q, ") to match history, got ",
        uncertainty->sizes());
    TORCH_CHECK_TYPE(bins->scalar_type() == at::kByte, "bins must be uint8, got ",
                     bins->scalar_type());
    TORCH_CHECK_VALUE(bins->dim() == 2 && bins->size(0) == n && bins->size(1) == q,
                      "bins must have shape (", n, ", ", q, ") to match history, got ",
                      bins->sizes());
    TORCH_CHECK_VALUE(history.is_contiguous() && seen.is_contiguous() &&
                          uncertainty->is_contiguous() && bins->is_contiguous(),
                      "history, seen, uncertainty and bins must be contiguous (written in place)");
  } else {
    TORCH_CHECK_VALUE(history.is_contiguous() && seen.is_contiguous(),
                      "history and seen must be contiguous (written in place)");
  }
  TORCH_CHECK_TYPE(indices.scalar_type() == at::kLong, "indices must be int64, got ",
                   indices.scalar_type());
  TORCH_CHECK_VALUE(indices.dim() == 1, "indices must be 1-D, got shape ", indices.sizes());
  const int64_t b = indices.size(0);
  TORCH_CHECK_TYPE(at::isFloatingType(probs.scalar_type()), "probs must be a floating tensor, got ",
                   probs.scalar_type());
  TORCH_CHECK_VALUE(probs.dim() == 2 && probs.size(0) == b && probs.size(1) == q,
                    "probs must have shape (", b, ", ", q, ") (len(indices), num_labels), got ",
                    probs.sizes());
  if (uncertainty != nullptr) {
    check_same_device(history, {&seen, uncertainty, bins, &indices, &probs}, "history");
    check_lam_tau(lam, tau);
  } else {
    check_same_device(history, {&seen, &indices, &probs}, "history");
  }
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
  TORCH_CHECK_VALUE(!(flags & kObserveBadSeen),
                    "seen must be >= 0 (observation counts) at every index observed");
  if (flags & kObserveBadProb) {
    const int64_t e = verdict[1].item<int64_t>();
    TORCH_CHECK_VALUE(false, "probs must be finite and in [0, 1] (after sigmoid); probs[", e / q,
                      ", ", e % q, "] = ", p.view(-1)[e].item<double>());
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
  check_history_seen(history, seen, true);
  check_same_device(history, {&seen}, "history");
  check_lam_tau(lam, tau);
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
  TORCH_CHECK_TYPE(bins_in.scalar_type() == at::kByte, "bins must be uint8, got ",
                   bins_in.scalar_type());
  TORCH_CHECK_VALUE(bins_in.dim() == 2 && bins_in.size(1) >= 1,
                    "bins must have shape (n, q) with q >= 1, got ", bins_in.sizes());
  TORCH_CHECK_VALUE(tau >= 2 && tau <= 256, "tau must be an integer in [2, 256], got ", tau);
  check_same_device(bins_in, {}, "bins");
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
  TORCH_CHECK_TYPE(uncertainty.scalar_type() == at::kFloat, "uncertainty must be float32, got ",
                   uncertainty.scalar_type());
  TORCH_CHECK_VALUE(uncertainty.dim() == 2 && uncertainty.size(0) >= 1 && uncertainty.size(1) >= 1,
                    "uncertainty must have shape (n, q) with n, q >= 1, got ", uncertainty.sizes());
  const int64_t n = uncertainty.size(0), q = uncertainty.size(1);
  TORCH_CHECK_TYPE(c.scalar_type() == at::kFloat, "c must be float32, got ", c.scalar_type());
  TORCH_CHECK_VALUE(c.dim() == 1 && c.size(0) == q, "c must have shape (", q,
                    ",) to match uncertainty, got ", c.sizes());
  TORCH_CHECK_TYPE(seen.scalar_type() == at::kLong, "seen must be int64, got ", seen.scalar_type());
  TORCH_CHECK_VALUE(seen.dim() == 1 && seen.size(0) == n, "seen must have shape (", n,
                    ",) to match uncertainty, got ", seen.sizes());
  TORCH_CHECK_VALUE(pressure >= 1.0 && std::isfinite(pressure),
                    "pressure must be a finite number >= 1, got ", pressure);
  check_same_device(uncertainty, {&c, &seen}, "uncertainty");
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

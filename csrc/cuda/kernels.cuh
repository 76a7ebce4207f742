// Launch functions of the CUDA kernels in csrc/cuda/*.cu: plain C++, no torch.
//
// The kernels take raw pointers, sizes and a cudaStream_t and return the launch error, so they
// compile with nvcc alone (CI has no CUDA build of torch). csrc/cuda/binding.cpp checks the
// tensors, allocates outputs and scratch with torch, and calls these on the current stream.
// Every pointer is a device pointer; every tensor is contiguous.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace ubs_kernels::cuda {

enum class Dtype : int { kFloat16, kBFloat16, kFloat32, kFloat64 };

// ---- observe (docs/spec.md Eq. 1, 4, 5 and the bin, one training step, in place) ----------------

// Bits of status[0] set by the on-device checks; any of them means nothing was written.
constexpr int64_t kObserveBadIndex = 1;   // an index outside [0, n)
constexpr int64_t kObserveDuplicate = 2;  // an index twice in one call
constexpr int64_t kObserveBadProb = 4;    // a probability NaN, Inf or outside [0, 1]
constexpr int64_t kObserveBadSeen = 8;    // seen < 0 or at 2^63 - 1 for an observed sample

struct ObserveArgs {
  void* history;  // (n, T, q) float16 or float32
  Dtype history_dtype;
  int64_t* seen;           // (n,)
  float* uncertainty;      // (n, q); null for record (no U or bins written)
  uint8_t* bins;           // (n, q); null for record
  const int64_t* indices;  // (b,)
  const void* probs;       // (b, q)
  Dtype probs_dtype;
  int64_t n, T, q, b;
  double lam;
  int tau;
  int32_t* owner;   // (n,) scratch, no initialisation needed: duplicate detection
  int64_t* status;  // (2,) scratch: [flag bits, linear index of the first bad probability]
};

// Checks indices and probs on the device, then (only if they passed) writes the ring slot
// seen % T of each row, increments seen and refreshes those rows of U and bins (record: with
// uncertainty and bins null, the ring slot and seen only). The host reads `status` afterwards
// to raise the error; the state is untouched when any check failed.
cudaError_t launch_observe(const ObserveArgs& args, cudaStream_t stream);

// ---- uncertainty (the whole-matrix pass: Eq. 1, 4, 5 and the bin for all n rows) ----------

// Rows with seen <= 0 get U = 0 and bin 0 (a negative count is not reported: no host scan).
cudaError_t launch_uncertainty(const void* history, Dtype history_dtype, const int64_t* seen,
                               int64_t n, int64_t T, int64_t q, double lam, int tau, float* u,
                               uint8_t* bins, cudaStream_t stream);

// ---- label_mi (Eq. 6 for every label pair) --------------------------------------------------

// Scratch bytes launch_label_mi needs for (n, q, tau): a transposed, padded copy of the bins
// (about n * q bytes) plus O(q * tau) counts.
size_t label_mi_workspace_bytes(int64_t n, int64_t q, int tau);
// Thread blocks of the tensor-core kernel (one per pair of label tiles); must fit a 1-D grid.
int64_t label_mi_blocks(int64_t q, int tau);
// Largest q the transpose kernel's grid can take.
constexpr int64_t kLabelMiMaxLabels = int64_t{65535} * 32;

// bins (n, q) uint8, 0 <= n < 2^31 (counts are int32). Writes out: (q, q) with C_aa = 1, or
// with rowsum the (q,) row sums of that matrix (MI = 0 for every pair when n = 0). *bad (device
// int32) becomes nonzero when a bin is >= tau; the outputs are meaningless then.
cudaError_t launch_label_mi(const uint8_t* bins, int64_t n, int64_t q, int tau, bool rowsum,
                            float* out, void* workspace, int32_t* bad, cudaStream_t stream);

// ---- selection_log_probs (Eq. 7-10) ---------------------------------------------------------

size_t selection_workspace_bytes(int64_t n);
// uncertainty (n, q) f32, c (q,) f32, seen (n,) i64, pressure >= 1 -> out (n,) f32 log P.
cudaError_t launch_selection_log_probs(const float* uncertainty, const float* c,
                                       const int64_t* seen, int64_t n, int64_t q, double pressure,
                                       float* out, void* workspace, cudaStream_t stream);

}  // namespace ubs_kernels::cuda

// Every schema of the ubs_kernels:: namespace, in one place.
//
// Kernels register per device in csrc/cpu/*.cpp (and csrc/cuda/ once built); the fake (meta)
// kernels live beside the Python wrappers in ubs_kernels/ops.py. Mutated arguments are
// declared with (a!) so functionalisation and torch.compile see every in-place write.
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "cpu/isa.h"

TORCH_LIBRARY(ubs_kernels, m) {
  // One training step (docs/spec.md Eq. 1, 4, 5 and the bin): write probs into the history ring
  // of each sample in `indices` at slot seen % T, increment seen, recompute those rows of
  // uncertainty (float32) and bins (uint8, min(floor(u * tau), tau - 1)).
  //   history (n, T, q) f16|f32, seen (n,) i64, uncertainty (n, q) f32, bins (n, q) u8,
  //   indices (b,) i64 distinct in [0, n), probs (b, q) f32|f16|bf16|f64 in [0, 1].
  m.def(
      "observe(Tensor(a!) history, Tensor(b!) seen, Tensor(c!) uncertainty, Tensor(d!) bins, "
      "Tensor indices, Tensor probs, float lam, int tau) -> ()");

  // The ring write and count of observe without U and bins: a selector that needs U only at
  // the epoch boundary records each step and runs the whole-matrix pass (uncertainty) then,
  // which gives the bits observe would have written. Same checks as observe.
  //   history (n, T, q) f16|f32, seen (n,) i64, indices (b,) i64 distinct in [0, n),
  //   probs (b, q) f32|f16|bf16|f64 in [0, 1].
  m.def("record(Tensor(a!) history, Tensor(b!) seen, Tensor indices, Tensor probs) -> ()");

  // One training step's observation, checked as observe checks it (indices distinct in
  // [0, num_samples), probs finite in [0, 1]) and appended to a staging buffer at row `offset`:
  // indices to staged_indices, probs rounded to the buffer's dtype (the history dtype) as the
  // ring write rounds them. Nothing else is written. With logits, `probs` holds logits
  // (anything but NaN) and the buffer gets their sigmoid (in float32).
  //   staged_indices (capacity,) i64, staged_probs (capacity, q) f16|f32, indices (b,) i64,
  //   probs (b, q) f32|f16|bf16|f64, 0 <= offset <= capacity - b.
  m.def(
      "stage(Tensor(a!) staged_indices, Tensor(b!) staged_probs, int offset, Tensor indices, "
      "Tensor probs, int num_samples, bool logits=False) -> ()");

  // The staged steps applied in order: the same history, seen, uncertainty and bins as calling
  // observe for each staged step in turn (a sample may appear in several steps). U and bins are
  // refreshed for the staged samples only.
  //   history (n, T, q) f16|f32, seen (n,) i64, uncertainty (n, q) f32, bins (n, q) u8,
  //   staged_indices (m,) i64 in [0, n), staged_probs (m, q) of history's dtype in [0, 1].
  m.def(
      "observe_staged(Tensor(a!) history, Tensor(b!) seen, Tensor(c!) uncertainty, "
      "Tensor(d!) bins, Tensor staged_indices, Tensor staged_probs, float lam, int tau) -> ()");

  // One selection epoch (ubs_kernels/sampling.py): `batches` rows of min(batch_size, support)
  // distinct samples, each drawn by successive sampling from P = softmax(log_p), rows
  // independent; random numbers from `generator` (CPU). log_p (n,) floating -> (batches, b) i64.
  m.def("plan_weighted(Tensor log_p, int batch_size, int batches, Generator? generator) -> Tensor");

  // Mutual information (docs/spec.md Eq. 6, natural log) between every pair of label columns of
  // the binned U, diagonal 1. bins (n, q) u8 in [0, tau) -> (q, q) f32, or with rowsum the
  // row sums (q,) f32 without materialising q x q.
  m.def("label_mi(Tensor bins, int tau, bool rowsum=False) -> Tensor");

  // The whole-matrix pass (docs/spec.md Eq. 1, 4, 5 and the bin for all n rows from the history):
  // history (n, T, q) f16|f32, seen (n,) i64 -> (uncertainty (n, q) f32, bins (n, q) u8).
  // Rows of samples never observed (seen == 0) are 0 in both outputs.
  m.def("uncertainty(Tensor history, Tensor seen, float lam, int tau) -> (Tensor, Tensor)");

  // docs/spec.md Eq. 7-10 fused: w = U c, z = min-max of w over observed samples (never-observed
  // samples get z = 1; all-equal gives z = 0), Q = floor((1 - z) n), and
  // log P = -ln(pressure) Q / n - logsumexp. uncertainty (n, q) f32, c (q,) f32, seen (n,)
  // i64, pressure >= 1 -> (n,) f32.
  m.def("selection_log_probs(Tensor uncertainty, Tensor c, Tensor seen, float pressure) -> Tensor");
}

// The CPU instruction-set paths in use now (UBS_CPU_ISA and the CPU; csrc/cpu/isa.h): "avx512",
// "avx2", "popcnt", "neon" or "portable". cpu_isa: the uncertainty row kernels', whose paths
// agree to float32 rounding, not bit for bit (a checkpoint records it). label_mi_isa: label_mi's
// pair counting, whose paths give the same bits (the benchmarks record it).
TORCH_LIBRARY_FRAGMENT(ubs_kernels, m) {
  m.def("cpu_isa() -> str",
        [] { return std::string(ubs_kernels::cpu::isa_name(ubs_kernels::cpu::row_isa())); });
  m.def("label_mi_isa() -> str",
        [] { return std::string(ubs_kernels::cpu::isa_name(ubs_kernels::cpu::label_mi_isa())); });
}

// The extension is imported as a Python module only to run the static registrations above;
// it exposes no Python functions of its own (everything goes through torch.ops).
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

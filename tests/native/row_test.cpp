// Standalone test of the uncertainty row kernels (csrc/cpu/uncertainty_row_kernels.h), torch-free:
// every path this CPU runs (portable, AVX2, AVX-512 on x86-64; portable, NEON on AArch64), on
// float32 and float16 rings, against a float64 oracle of SPEC.md Eq. 1, 4, 5 and the bin; the
// ring write of the fresh prediction and the logits' sigmoid against their exact values; the
// float16 rounding against the hardware's (F16C, NEON) and its own exact definition.
// Built and run by tests/test_native_kernels.py, natively and under qemu-aarch64.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "uncertainty_row_kernels.h"

// The kernels' wide vectors only travel between inlined helpers (as in the extension).
#pragma GCC diagnostic ignored "-Wpsabi"

namespace cpu = ubs_kernels::cpu;
namespace row = ubs_kernels::cpu::row;

namespace {

struct Half {  // binary16 bits, as at::Half holds them
  uint16_t bits;
};

double half_value(uint16_t h) {  // exact
  const int e = (h >> 10) & 31, m = h & 1023;
  const double v = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
  return (h & 0x8000) ? -v : v;
}

// The nearest binary16 to x (ties to even), by search: the oracle of half_from_float.
uint16_t half_oracle(float x) {
  if (std::isnan(x)) return 0x7e00 | (std::signbit(x) ? 0x8000 : 0);
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(x));
  if (a >= 65520.0) return sign | 0x7c00;
  uint16_t lo = 0, hi = 0x7bff;  // largest finite
  while (lo < hi) {              // the first half >= a
    const uint16_t mid = static_cast<uint16_t>((lo + hi) / 2);
    if (half_value(mid) < a) {
      lo = static_cast<uint16_t>(mid + 1);
    } else {
      hi = mid;
    }
  }
  uint16_t best = lo;
  if (lo > 0) {
    const double up = half_value(lo) - a, down = a - half_value(lo - 1);
    if (down < up || (down == up && ((lo - 1) & 1) == 0)) best = static_cast<uint16_t>(lo - 1);
  }
  return sign | best;
}

uint64_t state = 0x243F6A8885A308D3ull;
double uniform() {
  state ^= state << 13, state ^= state >> 7, state ^= state << 17;
  return static_cast<double>(state >> 11) * 0x1.0p-53;
}

int failures = 0;
void fail(const char* what, const char* path, double got, double want, int64_t where) {
  if (++failures <= 10) {
    std::printf("FAIL %s [%s] at %ld: got %.9g want %.9g\n", what, path, static_cast<long>(where),
                got, want);
  }
}

float to_float(float v) { return v; }
float to_float(Half h) { return static_cast<float>(half_value(h.bits)); }

template <typename H>
H from_float(float v) {
  if constexpr (std::is_same_v<H, float>) {
    return v;
  } else {
    return Half{half_oracle(v)};
  }
}

// U of one sample in float64 from its k newest values (oldest first), SPEC.md Eq. 1, 4, 5.
double oracle_u(const std::vector<double>& p, double lam) {
  const size_t k = p.size();
  double d = 0.0;
  for (size_t h = 1; h < k; ++h) d += std::fabs(p[h] - p[h - 1]);
  d = k > 1 ? d / static_cast<double>(k - 1) : 0.0;
  const double x = p[k - 1];
  const double e = (x > 0 ? -x * std::log2(x) : 0.0) - (x < 1 ? (1 - x) * std::log2(1 - x) : 0.0);
  return lam * d + (1 - lam) * e;
}

template <typename H>
using RowFn = void (*)(H*, int64_t, int64_t, int64_t, const cpu::RowParams&, const float*, float*,
                       uint8_t*, const cpu::Ahead&);
template <typename H>
using StoreFn = void (*)(const float*, H*, int64_t);

template <typename H>
struct Path {
  const char* name;
  RowFn<H> row;
  StoreFn<H> store, store_sigmoid;
};

template <typename H>
std::vector<Path<H>> paths() {
  std::vector<Path<H>> out{{"portable", &row::row_portable<H>, row::store_fn<row::Portable, H>(),
                            &row::store_sigmoid_portable<H>}};
#ifdef UBS_ISA_X86
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    out.push_back(
        {"avx2", &row::row_avx2<H>, row::store_fn<row::Avx2, H>(), &row::store_sigmoid_avx2<H>});
    if (__builtin_cpu_supports("avx512f")) {
      out.push_back({"avx512", &row::row_avx512<H>, row::store_fn<row::Avx512, H>(),
                     &row::store_sigmoid_avx512<H>});
    }
  }
#endif
#ifdef UBS_ISA_NEON
  out.push_back(
      {"neon", &row::row_neon<H>, row::store_fn<row::Neon, H>(), &row::store_sigmoid_neon<H>});
#endif
  return out;
}

// One ring per (T, count, q); with and without the fresh prediction written on the way.
template <typename H>
void check_rows(const Path<H>& path) {
  const double lam = 0.5;
  const int64_t tau = 10;
  const cpu::RowParams params = cpu::make_row_params(lam, tau);
  for (int64_t T : {1, 2, 5, 9, 12}) {
    for (int64_t count : {int64_t{1}, T - 1, T, 3 * T + 2}) {
      if (count < 1) continue;
      for (int64_t q : {1, 3, 8, 17, 100}) {
        for (int fresh_on = 0; fresh_on < 2; ++fresh_on) {
          std::vector<H> ring(static_cast<size_t>(T * q));
          for (auto& v : ring) {
            const double r = uniform();  // edges too: exactly 0, 1 and tiny values
            v = from_float<H>(r < 0.05 ? 0.f : r > 0.95 ? 1.f : r < 0.1 ? 1e-6f : float(r));
          }
          std::vector<float> fresh(static_cast<size_t>(q));
          for (auto& f : fresh) f = static_cast<float>(uniform());
          const int64_t k = std::min(count, T), newest = (count - 1) % T;
          std::vector<float> u(static_cast<size_t>(q), -1.f);
          std::vector<uint8_t> bins(static_cast<size_t>(q), 255);
          std::vector<H> before = ring;
          path.row(ring.data(), T, q, count, params, fresh_on ? fresh.data() : nullptr, u.data(),
                   bins.data(), cpu::Ahead());
          for (int64_t j = 0; j < q; ++j) {
            if (fresh_on) {  // the newest slot now holds fresh[j] rounded to H
              const H want = from_float<H>(fresh[j]);
              if (std::memcmp(&ring[newest * q + j], &want, sizeof(H)) != 0) {
                fail("ring write", path.name, to_float(ring[newest * q + j]), fresh[j], j);
              }
            }
            std::vector<double> p;
            for (int64_t h = 0; h < k; ++h) {
              const int64_t slot = (count - k + h) % T;
              p.push_back(to_float(ring[slot * q + j]));
            }
            const double want = oracle_u(p, lam);
            if (std::fabs(u[j] - want) > 2e-6) fail("U", path.name, u[j], want, j);
            const double scaled = want * tau;
            const int64_t b = std::min<int64_t>(static_cast<int64_t>(std::floor(scaled)), tau - 1);
            const bool edge = std::fabs(scaled - std::round(scaled)) < 1e-4;
            if (!edge && bins[j] != b) fail("bin", path.name, bins[j], static_cast<double>(b), j);
          }
        }
      }
    }
  }
}

// The ring write and the logits' sigmoid, q values at a time (vector body and tail).
template <typename H>
void check_stores(const Path<H>& path) {
  for (int64_t q : {1, 7, 8, 16, 33, 1000}) {
    std::vector<float> src(static_cast<size_t>(q)), logits(static_cast<size_t>(q));
    for (int64_t j = 0; j < q; ++j) {
      src[j] = static_cast<float>(uniform());
      logits[j] = static_cast<float>((uniform() - 0.5) * 60);
    }
    std::vector<H> dst(static_cast<size_t>(q));
    path.store(src.data(), dst.data(), q);
    for (int64_t j = 0; j < q; ++j) {
      const H want = from_float<H>(src[j]);
      if (std::memcmp(&dst[j], &want, sizeof(H)) != 0) {
        fail("store", path.name, to_float(dst[j]), src[j], j);
      }
    }
    path.store_sigmoid(logits.data(), dst.data(), q);
    for (int64_t j = 0; j < q; ++j) {
      const double want = 1.0 / (1.0 + std::exp(-static_cast<double>(logits[j])));
      // float32 within ~2 ulp, then rounded to H: within half an ulp of H more
      const double tol = std::is_same_v<H, float> ? 3e-7 * want + 1e-38 : 1e-3 * want + 3e-8;
      if (std::fabs(to_float(dst[j]) - want) > tol) {
        fail("sigmoid", path.name, to_float(dst[j]), want, j);
      }
    }
  }
}

#ifdef UBS_ISA_X86
__attribute__((target("f16c"))) void check_half_f16c() {
  for (uint32_t bits = 0; bits <= 0x3f800000u; bits += 7) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    const uint16_t hw = static_cast<uint16_t>(
        _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0));
    if (row::half_from_float(f) != hw) fail("half rounding vs F16C", "scalar", f, hw, bits);
  }
}
#endif

// half_from_float against the oracle on every float in a sample of the whole range (every
// exponent, mantissas near the rounding ties) and, natively, against F16C on every float in
// [0, 1] with a stride.
void check_half_rounding() {
  for (uint32_t e = 0; e < 256; ++e) {
    for (uint32_t m : {0u, 1u, 0xfffu, 0x1000u, 0x1001u, 0x2fffu, 0x3000u, 0x7fffffu, 0x400000u}) {
      for (uint32_t s : {0u, 0x80000000u}) {
        const uint32_t bits = s | (e << 23) | m;
        float f;
        std::memcpy(&f, &bits, sizeof f);
        if (std::isnan(f)) continue;
        const uint16_t got = row::half_from_float(f), want = half_oracle(f);
        if (got != want) fail("half rounding", "scalar", got, want, bits);
      }
    }
  }
  for (int i = 0; i < 200000; ++i) {
    const float f = static_cast<float>(std::ldexp(uniform(), -static_cast<int>(uniform() * 30)));
    if (row::half_from_float(f) != half_oracle(f)) fail("half rounding", "scalar", f, f, i);
  }
#ifdef UBS_ISA_X86
  if (__builtin_cpu_supports("f16c")) check_half_f16c();
#endif
}

}  // namespace

int main() {
  check_half_rounding();
  std::printf("half rounding %s\n", failures == 0 ? "ok" : "FAILED");
  for (const auto& path : paths<float>()) {
    const int before = failures;
    check_rows(path);
    check_stores(path);
    std::printf("rows float32 %-9s %s\n", path.name, failures == before ? "ok" : "FAILED");
  }
  for (const auto& path : paths<Half>()) {
    const int before = failures;
    check_rows(path);
    check_stores(path);
    std::printf("rows float16 %-9s %s\n", path.name, failures == before ? "ok" : "FAILED");
  }
  return failures == 0 ? 0 : 1;
}

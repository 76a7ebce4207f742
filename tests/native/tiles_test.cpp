// Standalone test of label_mi's AND+popcount tiles (csrc/cpu/label_mi_tiles.h), torch-free: every
// path this CPU runs, every tile size, against a scalar oracle, on bitsets from all-zero to
// all-one (the counters' widest case) and lengths that cross each path's counter flushes.
// Built and run by tests/test_native_kernels.py, natively and cross-compiled for AArch64 under
// qemu. `--bench` prints each path's nanoseconds per word pair instead (in L1, one thread).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "label_mi_tiles.h"

namespace tiles = ubs_kernels::cpu::label_mi_tiles;
using ubs_kernels::cpu::Isa;
using ubs_kernels::cpu::isa_name;

namespace {

uint64_t next(uint64_t& s) {
  s ^= s << 13, s ^= s >> 7, s ^= s << 17;
  return s;
}

// Words with about `density` of their bits set (0: none, 64: all).
void fill(std::vector<uint64_t>& v, int density, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (uint64_t& w : v) {
    if (density >= 64) {
      w = ~uint64_t{0};
    } else if (density <= 0) {
      w = 0;
    } else {
      w = 0;
      for (int k = 0; k < 4; ++k)
        w |= next(s) & next(s) & (density > 16 ? next(s) | next(s) : next(s));
      if (density > 40) w |= next(s);
    }
  }
}

int check_path(Isa isa) {
  const tiles::Tiles t = tiles::tiles_of(isa);
  int failures = 0;
  // 8 words; under one flush; across the portable (60), AVX2 (124) and NEON (8190) flushes.
  for (int64_t W : {8, 24, 56, 64, 128, 136, 1000, 8192 + 8}) {
    for (int density : {0, 5, 32, 50, 64}) {
      const int64_t rows = t.rows + t.cols;
      std::vector<uint64_t> bits(static_cast<size_t>(rows * W + 8));
      fill(bits, density, static_cast<uint64_t>(W * 131 + density));
      uint64_t* A = bits.data();
      while (reinterpret_cast<uintptr_t>(A) % 64 != 0) ++A;  // aligned rows, as label_mi's
      std::vector<uint64_t> copy(A, A + rows * W);
      A = copy.data();  // std::vector of uint64_t is 16-aligned; AVX-512 loads are unaligned-safe
      const uint64_t* B = A + t.rows * W;
      for (int64_t r = 1; r <= t.rows; ++r) {
        for (int64_t c = 1; c <= t.cols; ++c) {
          const int64_t ldo = c + 3;
          std::vector<int64_t> out(static_cast<size_t>(r * ldo), -1);
          t.tile(r, c)(A, B, W, ldo, out.data());
          for (int64_t i = 0; i < r; ++i) {
            for (int64_t j = 0; j < c; ++j) {
              int64_t want = 0;
              for (int64_t w = 0; w < W; ++w)
                want += __builtin_popcountll(A[i * W + w] & B[j * W + w]);
              if (out[i * ldo + j] != want) {
                if (++failures <= 5) {
                  std::printf("FAIL %s tile %ldx%ld W=%ld density=%d [%ld,%ld]: %ld != %ld\n",
                              isa_name(isa), long(r), long(c), long(W), density, long(i), long(j),
                              long(out[i * ldo + j]), long(want));
                }
              }
            }
            for (int64_t j = c; j < ldo; ++j) {
              if (out[i * ldo + j] != -1) ++failures;  // wrote outside its tile
            }
          }
        }
      }
    }
  }
  return failures;
}

void bench_path(Isa isa) {
  const tiles::Tiles t = tiles::tiles_of(isa);
  constexpr int64_t W = 80;  // 5000 samples
  std::vector<uint64_t> bits(static_cast<size_t>((t.rows + t.cols) * W + 8));
  fill(bits, 32, 7);
  const uint64_t* A = bits.data();
  while (reinterpret_cast<uintptr_t>(A) % 64 != 0) ++A;
  double best = 1e30;
  for (int round = 0; round < 20; ++round) {
    best = std::min(best, tiles::seconds_per_word(t, A, W, 2000));
  }
  std::printf("%-9s tile %ldx%ld: %.4f ns per word pair\n", isa_name(isa), long(t.rows),
              long(t.cols), best * 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  const bool bench = argc > 1 && std::strcmp(argv[1], "--bench") == 0;
  int failures = 0;
  for (Isa isa : tiles::paths_under(ubs_kernels::cpu::kBestIsa)) {
    if (bench) {
      bench_path(isa);
      continue;
    }
    const int f = check_path(isa);
    std::printf("tiles %-9s %s\n", isa_name(isa), f == 0 ? "ok" : "FAILED");
    failures += f;
  }
  if (bench) {
    std::printf("measured fastest: %s\n",
                isa_name(tiles::measure_fastest(ubs_kernels::cpu::kBestIsa)));
  }
  return failures == 0 ? 0 : 1;
}

// Kernel gradient of a stride-1 NHWC convolution, as an XLA FFI handler for
// the CPU: see ihc_jax/models/native/__init__.py for why and how it is built.
//
//   dK[i, j, c, o] = sum over (b, y, x) of
//       X[b, y + i - pad_top, x + j - pad_left, c] * dY[b, y, x, o]
//
// with X read where it lies (taps falling on the zero padding are skipped,
// nothing is padded or copied). The sum runs over chunks of the output: a
// block of rows by a segment of at most kSegment columns, as many rows as
// keep the chunk's dY within kChunkBytes. For each chunk, every (tap, block
// of kRows input channels, block of kMaxVecs output vectors) accumulates a
// register tile over the chunk's pixels, starting from zero, then adds it
// to dK (a two-level sum). The chunk's dY and the rows of X it meets stay
// in cache across all tiles. The tiles are split into contiguous ranges,
// one per thread of XLA's intra-op pool; the calling thread takes ranges
// too, so the call never waits on a task that has not started. Each range
// reads all of X and dY: on hosts with many more threads than the 2 it was
// measured on, splitting the rows as well would read less.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// One vector register of floats, and a register tile of kRows x kMaxVecs
// of them that fits the register file with the row of dY it multiplies
// (AVX-512: 32 registers of 16; AVX: 16 of 8; otherwise 4-float registers).
#if defined(__AVX512F__)
constexpr int64_t kVecWidth = 16;
constexpr int64_t kMaxVecs = 4;
#elif defined(__AVX__)
constexpr int64_t kVecWidth = 8;
constexpr int64_t kMaxVecs = 2;
#else
constexpr int64_t kVecWidth = 4;
constexpr int64_t kMaxVecs = 2;
#endif
typedef float Vec __attribute__((vector_size(kVecWidth * sizeof(float))));

constexpr int64_t kRows = 6;       // input channels per register tile
constexpr int64_t kSegment = 128;  // output columns per chunk at most
constexpr int64_t kChunkBytes = 128 * 1024;  // dY per chunk at most

struct Shape {
  int64_t batch, height, width, in_channels;
  int64_t out_height, out_width, out_channels;
  int64_t kh, kw, pad_top, pad_left;
  int64_t row_blocks() const { return (in_channels + kRows - 1) / kRows; }
  int64_t vec_blocks() const {
    return (out_channels / kVecWidth + kMaxVecs - 1) / kMaxVecs;
  }
  int64_t tiles() const { return kh * kw * row_blocks() * vec_blocks(); }
};

// acc[r, :] += sum over x in [x0, x1) of xs[x + shift, r] * dy[x, :], for R
// input channels and V output vectors starting at the given pointers.
template <int R, int V>
inline void Tile(const float* __restrict xs, const float* __restrict dy,
                 int64_t rows, int64_t x0, int64_t x1, int64_t shift,
                 int64_t in_row, int64_t out_row, int64_t in_stride,
                 int64_t out_stride, float* __restrict acc) {
  // Written so that GCC and Clang keep `sum` in registers: element-wise
  // initialisation and per-vector copies (an `= {}` or a whole-array
  // memcpy put it on the stack).
  Vec sum[R][V];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V; ++v) sum[r][v] = Vec{};
  }
  for (int64_t row = 0; row < rows; ++row) {
    const float* dy_row = dy + row * out_row;
    const float* in_row_start = xs + row * in_row + shift * in_stride;
    for (int64_t x = x0; x < x1; ++x) {
      Vec d[V];
      for (int v = 0; v < V; ++v) {
        std::memcpy(&d[v], dy_row + x * out_stride + v * kVecWidth, sizeof(Vec));
      }
      const float* in = in_row_start + x * in_stride;
      for (int r = 0; r < R; ++r) {
        const Vec b = in[r] + -Vec{};  // a broadcast: x + (-0) is x exactly
        for (int v = 0; v < V; ++v) sum[r][v] += b * d[v];
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V; ++v) {
      Vec a;
      std::memcpy(&a, acc + r * out_stride + v * kVecWidth, sizeof(a));
      a += sum[r][v];
      std::memcpy(acc + r * out_stride + v * kVecWidth, &a, sizeof(a));
    }
  }
}

using TileFn = void (*)(const float*, const float*, int64_t, int64_t, int64_t,
                        int64_t, int64_t, int64_t, int64_t, int64_t, float*);

// The tile for `rows` <= R input channels and `vecs` <= V output vectors.
template <int R = kRows, int V = kMaxVecs>
TileFn TileFor(int64_t rows, int64_t vecs) {
  if constexpr (R > 1) {
    if (rows < R) return TileFor<R - 1, V>(rows, vecs);
  }
  if constexpr (V > 1) {
    if (vecs < V) return TileFor<R, V - 1>(rows, vecs);
  }
  return Tile<R, V>;
}

// Accumulates tiles [first, last) of every chunk into dk (zeroed before).
// A chunk is a block of output rows by a segment of at most kSegment
// columns, as many rows as keep its part of dY within kChunkBytes.
void RunTiles(const Shape& s, const float* x, const float* dy, float* dk,
              int64_t first, int64_t last) {
  const int64_t row_blocks = s.row_blocks(), vec_blocks = s.vec_blocks();
  const int64_t out_vecs = s.out_channels / kVecWidth;
  const int64_t segment = std::min(kSegment, s.out_width);
  const int64_t chunk_rows = std::clamp<int64_t>(
      kChunkBytes / (segment * s.out_channels * int64_t{sizeof(float)}), 1, s.out_height);
  const int64_t in_row = s.width * s.in_channels, out_row = s.out_width * s.out_channels;
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t y0 = 0; y0 < s.out_height; y0 += chunk_rows) {
      const int64_t y1 = std::min(s.out_height, y0 + chunk_rows);
      for (int64_t seg = 0; seg < s.out_width; seg += segment) {
        const int64_t seg_end = std::min(s.out_width, seg + segment);
        for (int64_t t = first; t < last; ++t) {
          const int64_t vb = t % vec_blocks;
          const int64_t rb = (t / vec_blocks) % row_blocks;
          const int64_t tap = t / (vec_blocks * row_blocks);
          const int64_t i = tap / s.kw, j = tap % s.kw;
          // Output rows whose input row y + i - pad_top lies in the image.
          const int64_t ya = std::max(y0, s.pad_top - i);
          const int64_t yb = std::min(y1, s.height + s.pad_top - i);
          const int64_t x0 = std::max(seg, s.pad_left - j);
          const int64_t x1 = std::min(seg_end, s.width + s.pad_left - j);
          if (ya >= yb || x0 >= x1) continue;
          const int64_t c0 = rb * kRows, rows = std::min(kRows, s.in_channels - c0);
          const int64_t v0 = vb * kMaxVecs, vecs = std::min(kMaxVecs, out_vecs - v0);
          const float* xs = x + (b * s.height + ya + i - s.pad_top) * in_row + c0;
          const float* dys = dy + (b * s.out_height + ya) * out_row + v0 * kVecWidth;
          float* acc = dk + (tap * s.in_channels + c0) * s.out_channels + v0 * kVecWidth;
          TileFor(rows, vecs)(xs, dys, yb - ya, x0, x1, j - s.pad_left, in_row, out_row,
                              s.in_channels, s.out_channels, acc);
        }
      }
    }
  }
}

// Ranges of tiles claimed in turn by the calling thread and the pool's
// tasks; shared so that a task starting after the call returned finds
// nothing left and touches nothing else.
struct Work {
  Shape shape;
  const float *x, *dy;
  float* dk;
  int64_t parts;
  std::atomic<int64_t> next{0};
  std::mutex mu;
  std::condition_variable cv;
  int64_t done = 0;

  // Runs parts until none is left, and counts those this caller ran as done.
  void RunParts() {
    const int64_t tiles = shape.tiles();
    int64_t ran = 0;
    for (int64_t p; (p = next.fetch_add(1)) < parts; ++ran) {
      RunTiles(shape, x, dy, dk, tiles * p / parts, tiles * (p + 1) / parts);
    }
    if (ran > 0) {
      std::lock_guard<std::mutex> lock(mu);
      done += ran;
      cv.notify_all();
    }
  }
};

ffi::Error KernelGrad(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                      ffi::ResultBuffer<ffi::F32> dk, int64_t pad_top,
                      int64_t pad_left, ffi::ThreadPool pool) {
  const auto xd = x.dimensions(), dyd = dy.dimensions(), dkd = dk->dimensions();
  if (xd.size() != 4 || dyd.size() != 4 || dkd.size() != 4) {
    return ffi::Error::InvalidArgument("conv_kernel_grad: x, dy and dk must be rank 4");
  }
  Shape s{xd[0], xd[1], xd[2], xd[3], dyd[1], dyd[2], dyd[3],
          dkd[0], dkd[1], pad_top, pad_left};
  if (dyd[0] != s.batch || dkd[2] != s.in_channels || dkd[3] != s.out_channels) {
    return ffi::Error::InvalidArgument(
        "conv_kernel_grad: batch or channels of x [B,H,W,Ci], dy [B,H',W',Co] "
        "and dk [kh,kw,Ci,Co] disagree");
  }
  if (s.out_channels % 16 != 0) {
    return ffi::Error::InvalidArgument(
        "conv_kernel_grad: output channels must be a multiple of 16");
  }
  float* out = dk->typed_data();
  std::fill(out, out + dk->element_count(), 0.0f);
  if (dk->element_count() == 0 || dy.element_count() == 0) {
    return ffi::Error::Success();  // an empty sum
  }
  auto work = std::make_shared<Work>();
  work->shape = s;
  work->x = x.typed_data();
  work->dy = dy.typed_data();
  work->dk = out;
  work->parts = std::max<int64_t>(1, std::min(pool.num_threads(), s.tiles()));
  for (int64_t p = 1; p < work->parts; ++p) {
    pool.Schedule([work] { work->RunParts(); });
  }
  work->RunParts();
  std::unique_lock<std::mutex> lock(work->mu);
  work->cv.wait(lock, [&] { return work->done == work->parts; });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(IhcConvKernelGrad, KernelGrad,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left")
                                  .Ctx<ffi::ThreadPool>());

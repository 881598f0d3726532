// The C++ kernels of the recurrent layers on CPU: variant (a)'s element-wise work of one recurrent
// step, forward and backward, in one pass each, and the depthwise K x K convolution (forward, input
// gradient, weight gradient) that variant (a)'s fused layer and the cells' depthwise-separable
// convolutions run through (bench/models/native/functions.py).
//
// What stays outside: the per-step GEMMs (the 1 x 1 convolutions, the gates' fully connected
// layers) are MKL's. The step kernels replace the ~10 ATen element-wise passes of a step, each a
// full read and write of an (N, H*W, C) tensor, plus the GAP reductions. Plain C ABI, no PyTorch
// headers: it builds in about a second with the system compiler and is loaded with ctypes
// (bench/models/native/loader.py).
//
// Layout: NHWC, a step's tensors are (N, HW, C) contiguous; the gates z are (N, 3C) in the order
// i, f, o, already through the sigmoid. float32 uses a rational tanh (the minimax 13/6
// approximation Eigen, XLA and MLAS use, clamped where tanhf rounds to +-1); float64 uses
// std::tanh, so the tests can hold this file to the autograd step loop at float64 precision.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

inline float tanh_approx(float x) {
  const float clamp = 7.90531110763549805f;
  x = std::min(std::max(x, -clamp), clamp);
  const float x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 - 8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return x * p / q;
}

inline float tanh_of(float x) { return tanh_approx(x); }
inline double tanh_of(double x) { return std::tanh(x); }

// The pixels [lo, hi) of n * hw that thread `tid` of `nt` takes: contiguous, static.
inline void split(int64_t total, int tid, int nt, int64_t& lo, int64_t& hi) {
  const int64_t chunk = total / nt, rest = total % nt;
  lo = tid * chunk + std::min<int64_t>(tid, rest);
  hi = lo + chunk + (tid < rest ? 1 : 0);
}

// Threads only where the work pays for the fork (a step at the paper's shapes is 200k values).
constexpr int64_t kParallelMin = 1 << 15;

inline int threads_for(int64_t work) {
#ifdef _OPENMP
  return work >= kParallelMin ? omp_get_max_threads() : 1;
#else
  (void)work;
  return 1;
#endif
}

inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Per-thread partial sums of `len` values, added in thread order afterwards (deterministic for a
// given thread count).
template <typename T>
void reduce_partials(const std::vector<T>& part, int nt, int64_t len, T* out, bool add = false) {
  if (!add) std::fill(out, out + len, T(0));
  for (int t = 0; t < nt; ++t)
    for (int64_t k = 0; k < len; ++k) out[k] += part[t * len + k];
}

// g <- tanh(g); C_t = g o i + f o C_{t-1}; tanh(C_t); H_t = o o tanh(C_t); s = GAP(H_t).
// (The loops over pixels are functions of their own, called inside the parallel regions: GCC
// does not vectorize loops over pointers captured by an OpenMP region.)
template <typename T, bool kPrev, bool kGap>
void fwd_pixels(int64_t lo, int64_t hi, int64_t hw, int64_t c, T* __restrict g,
                const T* __restrict z, const T* __restrict c_prev, T* __restrict ct,
                T* __restrict h, T* __restrict part) {
    for (int64_t px = lo; px < hi; ++px) {
      const int64_t b = px / hw, off = px * c;
      const T* __restrict gi = z + b * 3 * c;
      const T* __restrict gf = gi + c;
      const T* __restrict go = gf + c;
      T* __restrict sb = kGap ? part + b * c : nullptr;
      for (int64_t k = 0; k < c; ++k) {
        const T gv = tanh_of(g[off + k]);
        g[off + k] = gv;
        T cv = gv * gi[k];
        if (kPrev) cv += gf[k] * c_prev[off + k];
        ct[off + k] = cv;
        const T tv = tanh_of(cv);
        const T hv = go[k] * tv;
        h[off + k] = hv;
        if (kGap) sb[k] += hv;
      }
    }
}

template <typename T, bool kPrev, bool kGap>
void fwd_step(int64_t n, int64_t hw, int64_t c, T* g, const T* z, const T* c_prev, T* ct, T* h,
              T* s) {
  const int nt = threads_for(n * hw * c);
  std::vector<T> part(kGap ? nt * n * c : 0, T(0));
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int tid = thread_id();
    int64_t lo, hi;
    split(n * hw, tid, nt, lo, hi);
    fwd_pixels<T, kPrev, kGap>(lo, hi, hw, c, g, z, c_prev, ct, h,
                               kGap ? part.data() + tid * n * c : nullptr);
  }
  if (kGap) {
    reduce_partials(part, nt, n * c, s);
    const T scale = T(1) / T(hw);
    for (int64_t k = 0; k < n * c; ++k) s[k] *= scale;
  }
}

// dH_t = dH_t(out) + dH_t(rec) + r (r: GAP's broadcast gradient, (N, C));
// dC_t = dH_t o o o (1 - tanh^2 C_t) + dC_{t+1}-term;  dG_pre = dC_t o i o (1 - G_t^2);
// dz = sigma'(z) o (sum_hw dC_t o G_t, sum_hw dC_t o C_{t-1}, sum_hw dH_t o tanh C_t);
// dc <- dC_t o f (the term handed to step t-1).
template <typename T, bool kPrev, bool kNext, bool kRec>
void bwd_pixels(int64_t lo, int64_t hi, int64_t hw, int64_t c, const T* __restrict dh_out,
                const T* __restrict dh_rec, const T* __restrict r, const T* __restrict ct,
                const T* __restrict g, const T* __restrict c_prev, const T* __restrict z,
                T* __restrict dc, T* __restrict dg, T* __restrict part) {
    for (int64_t px = lo; px < hi; ++px) {
      const int64_t b = px / hw, off = px * c;
      const T* __restrict gi = z + b * 3 * c;
      const T* __restrict gf = gi + c;
      const T* __restrict go = gf + c;
      const T* __restrict rb = kRec ? r + b * c : nullptr;
      T* __restrict si = part + b * 3 * c;
      T* __restrict sf = si + c;
      T* __restrict so = sf + c;
      for (int64_t k = 0; k < c; ++k) {
        T dh = dh_out[off + k];
        if (kRec) dh += dh_rec[off + k] + rb[k];
        const T tv = tanh_of(ct[off + k]);  // recomputed: C_t is still in cache from step t+1
        const T gv = g[off + k];
        so[k] += dh * tv;
        T dcv = dh * go[k] * (T(1) - tv * tv);
        if (kNext) dcv += dc[off + k];
        si[k] += dcv * gv;
        if (kPrev) sf[k] += dcv * c_prev[off + k];
        dg[off + k] = dcv * gi[k] * (T(1) - gv * gv);
        dc[off + k] = dcv * gf[k];
      }
    }
}

template <typename T, bool kPrev, bool kNext, bool kRec>
void bwd_step(int64_t n, int64_t hw, int64_t c, const T* dh_out, const T* dh_rec, const T* r,
              const T* ct, const T* g, const T* c_prev, const T* z, T* dc, T* dg, T* dz) {
  const int nt = threads_for(n * hw * c);
  std::vector<T> part(nt * n * 3 * c, T(0));
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int tid = thread_id();
    int64_t lo, hi;
    split(n * hw, tid, nt, lo, hi);
    bwd_pixels<T, kPrev, kNext, kRec>(lo, hi, hw, c, dh_out, dh_rec, r, ct, g, c_prev, z, dc, dg,
                                      part.data() + tid * n * 3 * c);
  }
  reduce_partials(part, nt, n * 3 * c, dz);
  for (int64_t k = 0; k < n * 3 * c; ++k) dz[k] *= z[k] * (T(1) - z[k]);
}

// Depthwise K x K convolution, stride 1, padding K / 2, NHWC; w is (K, K, C).
// out[b, y, x] = sum_taps in[b, y + dy, x + dx] o w[tap]; with `flip`, the taps are mirrored
// (w[K-1-ky, K-1-kx]), which makes it the gradient with respect to the input.
template <typename T>
void depthwise_pixels(int64_t lo, int64_t hi, int64_t height, int64_t width, int64_t c,
                      int64_t ks, bool flip, const T* __restrict in, const T* __restrict w,
                      T* __restrict out) {
    const int64_t pad = ks / 2;
    for (int64_t px = lo; px < hi; ++px) {
      const int64_t b = px / (height * width), y = (px / width) % height, x = px % width;
      T* __restrict o = out + px * c;
      std::fill(o, o + c, T(0));
      for (int64_t ky = 0; ky < ks; ++ky) {
        const int64_t yy = y + ky - pad;
        if (yy < 0 || yy >= height) continue;
        for (int64_t kx = 0; kx < ks; ++kx) {
          const int64_t xx = x + kx - pad;
          if (xx < 0 || xx >= width) continue;
          const T* __restrict src = in + ((b * height + yy) * width + xx) * c;
          const int64_t tap = flip ? (ks - 1 - ky) * ks + (ks - 1 - kx) : ky * ks + kx;
          const T* __restrict wt = w + tap * c;
          for (int64_t k = 0; k < c; ++k) o[k] += src[k] * wt[k];
        }
      }
    }
}

template <typename T>
void depthwise(int64_t n, int64_t height, int64_t width, int64_t c, int64_t ks, bool flip,
               const T* in, const T* w, T* out) {
  const int nt = threads_for(n * height * width * c);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    int64_t lo, hi;
    split(n * height * width, thread_id(), nt, lo, hi);
    depthwise_pixels<T>(lo, hi, height, width, c, ks, flip, in, w, out);
  }
}

// dw[tap] += sum over pixels of dout[b, y, x] o in[b, y + dy, x + dx]   (tap = (dy, dx)).
template <typename T>
void wgrad_pixels(int64_t lo, int64_t hi, int64_t height, int64_t width, int64_t c, int64_t ks,
                  const T* __restrict in, const T* __restrict dout, T* __restrict acc) {
    const int64_t pad = ks / 2;
    for (int64_t px = lo; px < hi; ++px) {
      const int64_t b = px / (height * width), y = (px / width) % height, x = px % width;
      const T* __restrict d = dout + px * c;
      for (int64_t ky = 0; ky < ks; ++ky) {
        const int64_t yy = y + ky - pad;
        if (yy < 0 || yy >= height) continue;
        for (int64_t kx = 0; kx < ks; ++kx) {
          const int64_t xx = x + kx - pad;
          if (xx < 0 || xx >= width) continue;
          const T* __restrict src = in + ((b * height + yy) * width + xx) * c;
          T* __restrict a = acc + (ky * ks + kx) * c;
          for (int64_t k = 0; k < c; ++k) a[k] += d[k] * src[k];
        }
      }
    }
}

template <typename T>
void depthwise_wgrad(int64_t n, int64_t height, int64_t width, int64_t c, int64_t ks,
                     const T* in, const T* dout, T* dw) {
  const int64_t len = ks * ks * c;
  const int nt = threads_for(n * height * width * c);
  std::vector<T> part(nt * len, T(0));
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int tid = thread_id();
    int64_t lo, hi;
    split(n * height * width, tid, nt, lo, hi);
    wgrad_pixels<T>(lo, hi, height, width, c, ks, in, dout, part.data() + tid * len);
  }
  reduce_partials(part, nt, len, dw, /*add=*/true);
}

template <typename T>
void fwd_dispatch(int64_t n, int64_t hw, int64_t c, T* g, const T* z, const T* c_prev, T* ct,
                  T* h, T* s) {
  if (c_prev) {
    if (s) fwd_step<T, true, true>(n, hw, c, g, z, c_prev, ct, h, s);
    else fwd_step<T, true, false>(n, hw, c, g, z, c_prev, ct, h, s);
  } else {
    if (s) fwd_step<T, false, true>(n, hw, c, g, z, c_prev, ct, h, s);
    else fwd_step<T, false, false>(n, hw, c, g, z, c_prev, ct, h, s);
  }
}

template <typename T, bool kPrev>
void bwd_dispatch2(int64_t n, int64_t hw, int64_t c, const T* dh_out, const T* dh_rec, const T* r,
                   const T* ct, const T* g, const T* c_prev, const T* z, int next, T* dc, T* dg,
                   T* dz) {
  if (next) {
    if (dh_rec) bwd_step<T, kPrev, true, true>(n, hw, c, dh_out, dh_rec, r, ct, g, c_prev, z, dc, dg, dz);
    else bwd_step<T, kPrev, true, false>(n, hw, c, dh_out, dh_rec, r, ct, g, c_prev, z, dc, dg, dz);
  } else {
    if (dh_rec) bwd_step<T, kPrev, false, true>(n, hw, c, dh_out, dh_rec, r, ct, g, c_prev, z, dc, dg, dz);
    else bwd_step<T, kPrev, false, false>(n, hw, c, dh_out, dh_rec, r, ct, g, c_prev, z, dc, dg, dz);
  }
}

template <typename T>
void bwd_dispatch(int64_t n, int64_t hw, int64_t c, const T* dh_out, const T* dh_rec, const T* r,
                  const T* ct, const T* g, const T* c_prev, const T* z, int next, T* dc, T* dg,
                  T* dz) {
  if (c_prev) bwd_dispatch2<T, true>(n, hw, c, dh_out, dh_rec, r, ct, g, c_prev, z, next, dc, dg, dz);
  else bwd_dispatch2<T, false>(n, hw, c, dh_out, dh_rec, r, ct, g, c_prev, z, next, dc, dg, dz);
}

}  // namespace

extern "C" {

// Null pointers mean: c_prev -- first step (C_{t-1} = 0); s -- no GAP wanted (last step);
// dh_rec (and r) -- last step (nothing from step t+1); next == 0 -- dc holds no dC_{t+1} term.
void va_fwd_step_f32(int64_t n, int64_t hw, int64_t c, float* g, const float* z,
                     const float* c_prev, float* ct, float* h, float* s) {
  fwd_dispatch<float>(n, hw, c, g, z, c_prev, ct, h, s);
}
void va_fwd_step_f64(int64_t n, int64_t hw, int64_t c, double* g, const double* z,
                     const double* c_prev, double* ct, double* h, double* s) {
  fwd_dispatch<double>(n, hw, c, g, z, c_prev, ct, h, s);
}
void va_bwd_step_f32(int64_t n, int64_t hw, int64_t c, const float* dh_out, const float* dh_rec,
                     const float* r, const float* ct, const float* g, const float* c_prev,
                     const float* z, int next, float* dc, float* dg, float* dz) {
  bwd_dispatch<float>(n, hw, c, dh_out, dh_rec, r, ct, g, c_prev, z, next, dc, dg, dz);
}
void va_bwd_step_f64(int64_t n, int64_t hw, int64_t c, const double* dh_out, const double* dh_rec,
                     const double* r, const double* ct, const double* g, const double* c_prev,
                     const double* z, int next, double* dc, double* dg, double* dz) {
  bwd_dispatch<double>(n, hw, c, dh_out, dh_rec, r, ct, g, c_prev, z, next, dc, dg, dz);
}
void va_depthwise_f32(int64_t n, int64_t h, int64_t w, int64_t c, int64_t k, int flip,
                      const float* in, const float* wt, float* out) {
  depthwise<float>(n, h, w, c, k, flip != 0, in, wt, out);
}
void va_depthwise_f64(int64_t n, int64_t h, int64_t w, int64_t c, int64_t k, int flip,
                      const double* in, const double* wt, double* out) {
  depthwise<double>(n, h, w, c, k, flip != 0, in, wt, out);
}
void va_depthwise_wgrad_f32(int64_t n, int64_t h, int64_t w, int64_t c, int64_t k,
                            const float* in, const float* dout, float* dw) {
  depthwise_wgrad<float>(n, h, w, c, k, in, dout, dw);
}
void va_depthwise_wgrad_f64(int64_t n, int64_t h, int64_t w, int64_t c, int64_t k,
                            const double* in, const double* dout, double* dw) {
  depthwise_wgrad<double>(n, h, w, c, k, in, dout, dw);
}
void va_tanh_f32(int64_t numel, const float* x, float* y) {
  for (int64_t k = 0; k < numel; ++k) y[k] = tanh_approx(x[k]);
}

}  // extern "C"

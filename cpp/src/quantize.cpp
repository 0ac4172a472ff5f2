#include "weightpress/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "weightpress/errors.h"
#include "weightpress/half.h"
#include "weightpress/kernels/quantize_block.h"
#include "weightpress/parallel.h"

namespace weightpress {
namespace {

// ---------------------------------------------------------------- fp16 emulation
// (the shared toolkit: weightpress/half.h over kernels/half_float.h)

// Filled once at load time, so the hot loops read it without a static-init guard.
const float* const kHalfTable = half_table();

struct Half {
    static constexpr bool kIsHalf = true;
    static std::uint32_t round_fast(float& x) { return round_half_fast(x); }
    static float load(std::uint16_t h) { return kHalfTable[h]; }
    static float round(float x) { return wp::round_half(x); }
    static std::uint16_t store(float x) { return static_cast<std::uint16_t>(wp::half_bits(wp::round_half(x))); }
};
struct Single {
    static constexpr bool kIsHalf = false;
    static std::uint32_t round_fast(float&) { return 0; }
    static float load(float x) { return x; }
    static float round(float x) { return x; }
    static float store(float x) { return x; }
};

// Multi-versioned on x86-64 Linux (see kmeans1d.cpp): IEEE operations round the same at
// every vector width and contraction is off, so the clones are bit-identical.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define WP_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define WP_CLONES
#endif

// Elementwise tail of the quantizer for one contiguous run, in tiles so that the loops are
// branch-free and vectorise. q = rint(w / scale) in the weight dtype, + zp, clipped; NaN -> 0.
// Adding zp needs no fp16 rounding: q and zp are integers and any sum beyond +-2048, where
// halves stop being integers, lies outside every 8-bit range and is clipped anyway.
template <typename T, typename In>
inline void quantize_run_impl(const In* w, std::size_t len, float scale, float zp, float qmin, float qmax,
                              std::uint8_t* data) {
    constexpr std::size_t kTile = 256;
    float x[kTile];
    std::uint32_t slow[kTile];
    for (std::size_t t0 = 0; t0 < len; t0 += kTile) {
        const std::size_t m = std::min(kTile, len - t0);
        const In* src = w + t0;
        for (std::size_t i = 0; i < m; ++i) x[i] = T::load(src[i]) / scale;
        std::uint32_t any_slow = 0;
        for (std::size_t i = 0; i < m; ++i) {
            slow[i] = T::round_fast(x[i]);
            any_slow |= slow[i];
        }
        if (any_slow)
            for (std::size_t i = 0; i < m; ++i)
                if (slow[i]) x[i] = T::round(x[i]);
        std::uint8_t* dst = data + t0;
        for (std::size_t i = 0; i < m; ++i) {
            // wp::rint_even without its |x| < 2^23 branch (so the loop vectorises): exactly rint
            // below 2^23 (every half value), +-Inf and NaN; larger fp32 values may come out
            // differently but stay far outside the clip range.
            const float a = std::fabs(x[i]);
            float q = std::copysign((a + 8388608.0f) - 8388608.0f, x[i]) + zp;
            q = q == q ? q : 0.0f;
            q = std::min(std::max(q, qmin), qmax);
            dst[i] = static_cast<std::uint8_t>(static_cast<std::int32_t>(q));
        }
    }
}

WP_CLONES void quantize_run(const std::uint16_t* w, std::size_t len, float scale, float zp, float qmin,
                            float qmax, std::uint8_t* data) {
    quantize_run_impl<Half>(w, len, scale, zp, qmin, qmax, data);
}

WP_CLONES void quantize_run(const float* w, std::size_t len, float scale, float zp, float qmin, float qmax,
                            std::uint8_t* data) {
    quantize_run_impl<Single>(w, len, scale, zp, qmin, qmax, data);
}

// Visits the elements of block `b` as runs of contiguous memory: f(offset, length).
template <typename F>
void for_each_run(const QuantizeSpec& s, std::size_t b, F&& f) {
    std::int64_t grid[8], start[8], stride[8];
    std::int64_t rem = static_cast<std::int64_t>(b);
    for (int a = s.rank - 1; a >= 0; --a) {
        grid[a] = s.shape[a] / s.block[a];
        start[a] = (rem % grid[a]) * s.block[a];
        rem /= grid[a];
    }
    stride[s.rank - 1] = 1;
    for (int a = s.rank - 2; a >= 0; --a) stride[a] = stride[a + 1] * s.shape[a + 1];
    // Merge trailing axes that the block covers entirely into one contiguous run.
    int inner = s.rank - 1;
    std::int64_t run = s.block[inner];
    while (inner > 0 && s.block[inner] == s.shape[inner]) {
        --inner;
        run *= s.block[inner];
    }
    std::int64_t idx[8] = {0};
    for (;;) {
        std::int64_t offset = 0;
        for (int a = 0; a < inner; ++a) offset += (start[a] + idx[a]) * stride[a];
        offset += start[inner] * stride[inner];
        f(static_cast<std::size_t>(offset), static_cast<std::size_t>(run));
        int a = inner - 1;
        for (; a >= 0; --a) {
            if (++idx[a] < s.block[a]) break;
            idx[a] = 0;
        }
        if (a < 0) return;
    }
}

template <typename T, typename In, typename Out>
void quantize_impl(const In* w, const QuantizeSpec& s, int threads, std::uint8_t* data, Out* scale_out,
                   std::uint8_t* zp_out) {
    const wp::QuantRange range = wp::quant_range(static_cast<uint32_t>(s.nbits), s.is_signed, s.symmetric);
    const float qmin = range.qmin, qmax = range.qmax;
    const bool has_zp = !(s.is_signed && s.symmetric);
    const std::size_t blocks = quantize_block_count(s);
    parallel_for(blocks, threads, [&](int, std::size_t b) {
        float mn = std::numeric_limits<float>::infinity(), mx = -mn;
        bool nan_seen = false;
        for_each_run(s, b, [&](std::size_t off, std::size_t len) {
            float lo_run = mn, hi_run = mx;  // locals: the compiler keeps them in registers
            bool nan_run = false;
            const In* src = w + off;
            for (std::size_t i = 0; i < len; ++i) {
                const float v = T::load(src[i]);
                lo_run = std::min(lo_run, v);
                hi_run = std::max(hi_run, v);
                nan_run |= v != v;
            }
            mn = lo_run;
            mx = hi_run;
            nan_seen = nan_seen || nan_run;
        });
        if (nan_seen || !std::isfinite(mn) || !std::isfinite(mx))
            throw NonFiniteInput("quantize: weight contains NaN or Inf");
        // Scale and zero point: the body shared with the Metal kernel (kernels/quantize_block.h).
        const wp::BlockQuant q =
            wp::block_qparams(mn, mx, static_cast<uint32_t>(s.nbits), s.is_signed, s.symmetric, T::kIsHalf);
        const float scale = q.scale;
        const float zp = q.zp;
        scale_out[b] = T::store(scale);
        if (zp_out) zp_out[b] = static_cast<std::uint8_t>(static_cast<std::int32_t>(q.stored_zp));
        const float zp_add = has_zp ? zp : 0.0f;
        for_each_run(s, b, [&](std::size_t off, std::size_t len) {
            quantize_run(w + off, len, scale, zp_add, qmin, qmax, data + off);
        });
    });
}

void check(const QuantizeSpec& s) {
    if (s.rank < 1 || s.rank > 8) throw std::invalid_argument("quantize: rank must be in [1, 8]");
    if (s.nbits != 4 && s.nbits != 8) throw std::invalid_argument("quantize: nbits must be 4 or 8");
    for (int a = 0; a < s.rank; ++a)
        if (s.block[a] <= 0 || s.shape[a] % s.block[a] != 0)
            throw std::invalid_argument("quantize: block sizes must divide the shape");
}

}  // namespace

std::size_t quantize_block_count(const QuantizeSpec& s) {
    std::size_t n = 1;
    for (int a = 0; a < s.rank; ++a) n *= static_cast<std::size_t>(s.shape[a] / s.block[a]);
    return n;
}

void quantize_f16(const std::uint16_t* weight, const QuantizeSpec& spec, int threads, std::uint8_t* data,
                  std::uint16_t* scale, std::uint8_t* zero_point) {
    check(spec);
    quantize_impl<Half>(weight, spec, threads, data, scale, zero_point);
}

void quantize_f32(const float* weight, const QuantizeSpec& spec, int threads, std::uint8_t* data, float* scale,
                  std::uint8_t* zero_point) {
    check(spec);
    quantize_impl<Single>(weight, spec, threads, data, scale, zero_point);
}

}  // namespace weightpress

#include "weightpress/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "weightpress/errors.h"
#include "weightpress/half.h"
#include "weightpress/kernels/quantize_block.h"
#include "weightpress/multiversion.h"
#include "weightpress/pack.h"
#include "weightpress/parallel.h"
#include "quantize_detail.h"

namespace weightpress {
namespace {

using detail::for_each_run;

// ---------------------------------------------------------------- the weight's dtype
// fp16 arithmetic is emulated per operation (weightpress/half.h over kernels/half_float.h).

struct Half {
    static constexpr bool kIsHalf = true;
    static float load(std::uint16_t h) { return half_to_float_branchless(h); }
    static float round_normal(float x) { return round_half_in_normal_range(x); }
    static std::uint16_t store(float x) { return static_cast<std::uint16_t>(wp::half_bits(wp::round_half(x))); }
};
struct Single {
    static constexpr bool kIsHalf = false;
    static float load(float x) { return x; }
    static float round_normal(float x) { return x; }
    static float store(float x) { return x; }
};

struct Mode {
    wp::QuantRange range;
    std::uint32_t nbits, is_signed, symmetric;
    bool has_zp;  // every mode but signed symmetric
};

Mode mode_of(const QuantizeSpec& s) {
    Mode m;
    m.range = wp::quant_range(static_cast<std::uint32_t>(s.nbits), s.is_signed, s.symmetric);
    m.nbits = static_cast<std::uint32_t>(s.nbits);
    m.is_signed = s.is_signed;
    m.symmetric = s.symmetric;
    m.has_zp = !(s.is_signed && s.symmetric);
    return m;
}

// One element: clip(rint(w / scale in the weight's dtype) + zp) as the stored byte; NaN -> 0.
// The fp16 rounding of w / scale is applied in the normal half range only, which is exact
// for the byte: below it |x| < 2^-14 and the rounded value is at most 2^-14, both rint to
// +-0; from 65520 up rounding gives +-Inf while x stays >= 65520 in magnitude, and plus a
// zero point below 256 both clip to the same bound; NaN stays NaN. Adding zp needs no fp16
// rounding: q and zp are integers and any sum beyond +-2048, where halves stop being
// integers, lies outside every 8-bit range and is clipped anyway.
template <typename T, typename In>
WP_FORCE_INLINE std::uint8_t quantize_element(In w, float scale, float zp, float qmin, float qmax) {
    const float x = T::round_normal(T::load(w) / scale);
    // wp::rint_even without its |x| < 2^23 branch: exactly rint below 2^23 (every half
    // value), +-Inf and NaN; larger fp32 values may come out differently but clip the same.
    const float a = std::fabs(x);
    float q = std::copysign((a + 8388608.0f) - 8388608.0f, x) + zp;
    q = q == q ? q : 0.0f;
    q = std::min(std::max(q, qmin), qmax);
    return static_cast<std::uint8_t>(static_cast<std::int32_t>(q));
}

template <typename T, typename In>
WP_FORCE_INLINE void quantize_run_impl(const In* w, std::size_t len, float scale, float zp, float qmin, float qmax,
                                       std::uint8_t* data) {
    for (std::size_t i = 0; i < len; ++i) data[i] = quantize_element<T>(w[i], scale, zp, qmin, qmax);
}

WP_MULTIVERSION_FN(void, quantize_run,
                   (const std::uint16_t* w, std::size_t len, float scale, float zp, float qmin, float qmax,
                    std::uint8_t* data),
                   (w, len, scale, zp, qmin, qmax, data),
                   quantize_run_impl<Half>(w, len, scale, zp, qmin, qmax, data))

WP_MULTIVERSION_FN(void, quantize_run,
                   (const float* w, std::size_t len, float scale, float zp, float qmin, float qmax,
                    std::uint8_t* data),
                   (w, len, scale, zp, qmin, qmax, data),
                   quantize_run_impl<Single>(w, len, scale, zp, qmin, qmax, data))

// ---------------------------------------------------------------- contiguous blocks
// Every layout coremltools infers for linear and conv weights (per-tensor, per-channel on
// axis 0, per-block along axis 1 with the kernel axes whole) makes each block one run of
// `len` consecutive elements. Those take this path: block extrema from integer keys of the
// bit patterns (they order like the values and vectorise; -0 and +0 tie, which
// block_qparams cannot tell apart: it only compares with 0 and takes fabs); short blocks in
// chunks, their parameters computed across blocks branch-free; long blocks cut into pieces
// (partial extrema, then the elements); optionally the output packed to nbits as it is made.

// Block length when every block is one contiguous run, else 0.
std::size_t contiguous_block_length(const QuantizeSpec& s) {
    int inner = s.rank - 1;
    std::size_t len = static_cast<std::size_t>(s.block[inner]);
    while (inner > 0 && s.block[inner] == s.shape[inner]) {
        --inner;
        len *= static_cast<std::size_t>(s.block[inner]);
    }
    for (int a = 0; a < inner; ++a)
        if (s.block[a] != 1) return 0;
    return len;
}

// Order-preserving integer keys of fp16 / fp32 bit patterns, and their non-finite test.
struct HalfKeys {
    using Key = std::int16_t;
    static Key key(std::uint16_t h) {
        const std::int16_t m = static_cast<std::int16_t>(h & 0x7fff);
        return (h & 0x8000) ? static_cast<std::int16_t>(-m) : m;
    }
    static bool nonfinite(std::uint16_t h) { return (h & 0x7fff) >= 0x7c00; }
    static float value(Key k) {
        return half_to_float_branchless(k < 0 ? (0x8000u | static_cast<std::uint32_t>(-k))
                                              : static_cast<std::uint32_t>(k));
    }
};
struct FloatKeys {
    using Key = std::int32_t;
    static Key key(float x) {
        std::uint32_t u;
        std::memcpy(&u, &x, sizeof u);
        const std::int32_t m = static_cast<std::int32_t>(u & 0x7fffffffu);
        return (u >> 31) ? -m : m;
    }
    static bool nonfinite(float x) {
        std::uint32_t u;
        std::memcpy(&u, &x, sizeof u);
        return (u & 0x7fffffffu) >= 0x7f800000u;
    }
    static float value(Key k) {
        const std::uint32_t u = k < 0 ? (0x80000000u | static_cast<std::uint32_t>(-k)) : static_cast<std::uint32_t>(k);
        float x;
        std::memcpy(&x, &u, sizeof x);
        return x;
    }
};

template <typename T>
struct KeysOf;
template <>
struct KeysOf<Half> {
    using type = HalfKeys;
};
template <>
struct KeysOf<Single> {
    using type = FloatKeys;
};

template <typename K>
struct Extrema {
    typename K::Key lo = std::numeric_limits<typename K::Key>::max();
    typename K::Key hi = std::numeric_limits<typename K::Key>::min();
    bool nonfinite = false;
    void merge(const Extrema& o) {
        lo = std::min(lo, o.lo);
        hi = std::max(hi, o.hi);
        nonfinite = nonfinite || o.nonfinite;
    }
};

template <typename K, typename In>
WP_FORCE_INLINE Extrema<K> extrema_impl(const In* w, std::size_t n) {
    typename K::Key lo = std::numeric_limits<typename K::Key>::max();
    typename K::Key hi = std::numeric_limits<typename K::Key>::min();
    unsigned bad = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const typename K::Key k = K::key(w[i]);
        lo = std::min(lo, k);
        hi = std::max(hi, k);
        bad |= K::nonfinite(w[i]);
    }
    Extrema<K> e;
    e.lo = lo;
    e.hi = hi;
    e.nonfinite = bad != 0;
    return e;
}

WP_MULTIVERSION_FN(Extrema<HalfKeys>, extrema_of,
                   (const std::uint16_t* w, std::size_t n),
                   (w, n), extrema_impl<HalfKeys>(w, n))
WP_MULTIVERSION_FN(Extrema<FloatKeys>, extrema_of,
                   (const float* w, std::size_t n),
                   (w, n), extrema_impl<FloatKeys>(w, n))

[[noreturn]] void throw_nonfinite() { throw NonFiniteInput("quantize: weight contains NaN or Inf"); }

// A value in the weight's dtype where rounding it is exact branch-free: fp16 rounding in the
// normal range; `outside` is set when v lies where it is not (a nonzero subnormal, or an
// overflow to Inf), and the caller redoes that block with block_qparams.
template <typename T>
WP_FORCE_INLINE float in_dtype_checked(float v, std::uint32_t& outside) {
    if (!T::kIsHalf) return v;
    const float a = std::fabs(v);
    outside |= (static_cast<std::uint32_t>(a > 0.0f) & static_cast<std::uint32_t>(a < 6.103515625e-05f)) |
               (static_cast<std::uint32_t>(a >= 65520.0f) &
                static_cast<std::uint32_t>(a <= std::numeric_limits<float>::max()));
    return T::round_normal(v);
}

// block_qparams across `count` blocks (the same operations in the same order), without
// branches so that the loop vectorises; redo[b] marks a block whose fp16 intermediates left
// the normal range (the caller recomputes it with block_qparams).
template <typename T, bool Symmetric>
WP_FORCE_INLINE void block_params(const float* mn, const float* mx, std::size_t count, const Mode& m, float* scale,
                                  float* zp, std::uint32_t* redo) {
    const float qmin = m.range.qmin, qmax = m.range.qmax, levels = qmax - qmin;
    const float symmetric_zp = m.has_zp ? static_cast<float>(static_cast<int>(qmax) / 2) : 0.0f;
    for (std::size_t b = 0; b < count; ++b) {
        float lo, hi;
        if (Symmetric) {
            const float r = std::max(std::fabs(mn[b]), std::fabs(mx[b]));
            lo = -r;
            hi = r;
        } else {
            lo = mn[b] < 0.0f ? mn[b] : 0.0f;  // np.minimum(0.0, min) keeps +0 for a -0 minimum
            hi = mx[b] > 0.0f ? mx[b] : 0.0f;
        }
        std::uint32_t outside = 0;
        const float range = in_dtype_checked<T>(hi - lo, outside);
        scale[b] = in_dtype_checked<T>(range / levels, outside);
        if (Symmetric) {
            zp[b] = symmetric_zp;
        } else {
            const float num = in_dtype_checked<T>(in_dtype_checked<T>(qmin * hi, outside) -
                                                      in_dtype_checked<T>(qmax * lo, outside), outside);
            const float ratio = in_dtype_checked<T>(num / range, outside);
            const float a = std::fabs(ratio);
            const float z = std::copysign((a + 8388608.0f) - 8388608.0f, ratio);  // rint (clipped next)
            zp[b] = z != z ? z : std::min(std::max(z, qmin), qmax);
        }
        redo[b] = outside;
    }
}

// T::store for a value already in the weight's dtype that is zero or normal (an fp16
// subnormal or infinite scale marks its block for the exact path, which stores it again).
template <typename T>
WP_FORCE_INLINE auto store_normal_or_zero(float x) {
    if constexpr (T::kIsHalf) {
        std::uint32_t u;
        std::memcpy(&u, &x, sizeof u);
        const std::uint32_t a = u & 0x7fffffffu;
        const std::uint32_t normal = (((a >> 23) - 112u) << 10) | ((a >> 13) & 0x3ffu);
        const std::uint32_t nonzero = 0u - static_cast<std::uint32_t>(a != 0);
        return static_cast<std::uint16_t>(((u >> 16) & 0x8000u) | (normal & nonzero));
    } else {
        return x;
    }
}

WP_FORCE_INLINE std::uint8_t stored_zero_point(float z, const wp::QuantRange& r) {
    const float v = z == z ? std::min(std::max(z, r.qmin), r.qmax) : 0.0f;  // wp::clip_to_byte
    return static_cast<std::uint8_t>(static_cast<std::int32_t>(v));
}

// How far ahead of the block being reduced its successors are requested from memory.
constexpr std::size_t kPrefetchBytes = 4096;

// Scratch of one worker for a chunk of short blocks.
struct ChunkScratch {
    std::vector<float> mn, mx, scale, zp;
    std::vector<std::uint32_t> redo;
    std::vector<std::uint8_t> bytes;  // a chunk's values before packing
    void reserve(std::size_t blocks) {
        if (mn.size() >= blocks) return;
        mn.resize(blocks);
        mx.resize(blocks);
        scale.resize(blocks);
        zp.resize(blocks);
        redo.resize(blocks);
    }
};

// `count` consecutive blocks of `len` elements from w: extrema, parameters (stored to
// scale_out / zp_out) and values (to out, one byte per element). Returns false, having
// stored nothing, when a block holds NaN or Inf (the caller throws: an exception must not
// leave a target_clones function, GCC may mark those nothrow).
template <typename T, typename In, typename Out>
WP_FORCE_INLINE bool short_blocks_impl(const In* w, std::size_t len, std::size_t count, const Mode& m,
                                       ChunkScratch& sc, Out* scale_out, std::uint8_t* zp_out, std::uint8_t* out) {
    using K = typename KeysOf<T>::type;
    float* mn = sc.mn.data();
    float* mx = sc.mx.data();
    float* scale = sc.scale.data();
    float* zp = sc.zp.data();
    std::uint32_t* redo = sc.redo.data();
    unsigned bad = 0;
    for (std::size_t b = 0; b < count; ++b) {
        // the hardware prefetcher alone leaves this loop waiting on memory (measured: 1.5x)
        __builtin_prefetch(reinterpret_cast<const char*>(w + b * len) + kPrefetchBytes);
        const Extrema<K> e = extrema_impl<K>(w + b * len, len);
        bad |= e.nonfinite;
        mn[b] = K::value(e.lo);
        mx[b] = K::value(e.hi);
    }
    if (bad) return false;
    if (m.symmetric)
        block_params<T, true>(mn, mx, count, m, scale, zp, redo);
    else
        block_params<T, false>(mn, mx, count, m, scale, zp, redo);
    // the stored parameters: the branch-free forms, then the rare redone blocks exactly
    for (std::size_t b = 0; b < count; ++b) scale_out[b] = store_normal_or_zero<T>(scale[b]);
    if (zp_out)
        for (std::size_t b = 0; b < count; ++b) zp_out[b] = stored_zero_point(zp[b], m.range);
    for (std::size_t b = 0; b < count; ++b) {
        if (!redo[b]) continue;  // a block of subnormal range, or one overflowing fp16
        const wp::BlockQuant q = wp::block_qparams(mn[b], mx[b], m.nbits, m.is_signed, m.symmetric, T::kIsHalf);
        scale[b] = q.scale;
        zp[b] = q.zp;
        scale_out[b] = T::store(q.scale);
        if (zp_out) zp_out[b] = static_cast<std::uint8_t>(static_cast<std::int32_t>(q.stored_zp));
    }
    const float qmin = m.range.qmin, qmax = m.range.qmax;
    for (std::size_t b = 0; b < count; ++b) {
        const In* src = w + b * len;
        std::uint8_t* dst = out + b * len;
        const float s = scale[b], z = zp[b];
        for (std::size_t i = 0; i < len; ++i) dst[i] = quantize_element<T>(src[i], s, z, qmin, qmax);
    }
    return true;
}

WP_MULTIVERSION_FN(bool, short_blocks,
                   (const std::uint16_t* w, std::size_t len, std::size_t count, const Mode& m, ChunkScratch& sc,
                    std::uint16_t* scale_out, std::uint8_t* zp_out, std::uint8_t* out),
                   (w, len, count, m, sc, scale_out, zp_out, out),
                   short_blocks_impl<Half>(w, len, count, m, sc, scale_out, zp_out, out))
WP_MULTIVERSION_FN(bool, short_blocks,
                   (const float* w, std::size_t len, std::size_t count, const Mode& m, ChunkScratch& sc,
                    float* scale_out, std::uint8_t* zp_out, std::uint8_t* out),
                   (w, len, count, m, sc, scale_out, zp_out, out),
                   short_blocks_impl<Single>(w, len, count, m, sc, scale_out, zp_out, out))

// Elements per work item: short blocks are grouped into chunks of about this many elements,
// long blocks cut into pieces of exactly this many (a multiple of 8, so that every piece of
// a block starting on a byte boundary of the packed stream starts on one too).
constexpr std::size_t kChunk = 16384;

template <typename T, typename In, typename Out>
void quantize_contiguous(const In* w, const QuantizeSpec& s, std::size_t len, int threads, std::uint8_t* data,
                         bool pack, Out* scale_out, std::uint8_t* zp_out) {
    using K = typename KeysOf<T>::type;
    const Mode m = mode_of(s);
    const std::size_t blocks = quantize_block_count(s);
    const int workers = resolve_threads(threads);
    std::vector<ChunkScratch> scratch(static_cast<std::size_t>(workers));
    // Values to `data` (one byte each), or through the worker's scratch, packed into place.
    auto emit = [&](int worker, std::size_t begin, std::size_t n, auto&& fill) {
        if (!pack) {
            fill(data + begin);
            return;
        }
        std::vector<std::uint8_t>& bytes = scratch[static_cast<std::size_t>(worker)].bytes;
        if (bytes.size() < n) bytes.resize(n);
        fill(bytes.data());
        pack_bits_range(bytes.data(), n, s.nbits, data + begin / 8 * static_cast<std::size_t>(s.nbits));
    };

    if (len <= kChunk) {
        // Chunks of whole blocks, a multiple of 8 elements long when packing.
        std::size_t per_chunk = std::max<std::size_t>(1, kChunk / len);
        if (pack)
            while ((per_chunk * len) % 8 != 0) ++per_chunk;
        const std::size_t chunks = (blocks + per_chunk - 1) / per_chunk;
        parallel_for(chunks, threads, [&](int worker, std::size_t c) {
            const std::size_t b0 = c * per_chunk, count = std::min(blocks, b0 + per_chunk) - b0;
            ChunkScratch& sc = scratch[static_cast<std::size_t>(worker)];
            sc.reserve(count);
            emit(worker, b0 * len, count * len, [&](std::uint8_t* out) {
                if (!short_blocks(w + b0 * len, len, count, m, sc, scale_out + b0, zp_out ? zp_out + b0 : nullptr, out))
                    throw_nonfinite();
            });
        });
        return;
    }
    // Long blocks: partial extrema per piece, then the elements piece by piece.
    const std::size_t pieces_per_block = (len + kChunk - 1) / kChunk;
    const std::size_t pieces = blocks * pieces_per_block;
    std::vector<Extrema<K>> partial(pieces);
    parallel_for(pieces, threads, [&](int, std::size_t p) {
        const std::size_t b = p / pieces_per_block, at = (p % pieces_per_block) * kChunk;
        partial[p] = extrema_of(w + b * len + at, std::min(kChunk, len - at));
    });
    std::vector<wp::BlockQuant> q(blocks);
    for (std::size_t b = 0; b < blocks; ++b) {
        Extrema<K> e;
        for (std::size_t p = 0; p < pieces_per_block; ++p) e.merge(partial[b * pieces_per_block + p]);
        if (e.nonfinite) throw_nonfinite();
        q[b] = wp::block_qparams(K::value(e.lo), K::value(e.hi), m.nbits, m.is_signed, m.symmetric, T::kIsHalf);
        scale_out[b] = T::store(q[b].scale);
        if (zp_out) zp_out[b] = static_cast<std::uint8_t>(static_cast<std::int32_t>(q[b].stored_zp));
    }
    parallel_for(pieces, threads, [&](int worker, std::size_t p) {
        const std::size_t b = p / pieces_per_block, at = (p % pieces_per_block) * kChunk;
        const std::size_t begin = b * len + at, n = std::min(kChunk, len - at);
        emit(worker, begin, n, [&](std::uint8_t* out) {
            quantize_run(w + begin, n, q[b].scale, m.has_zp ? q[b].zp : 0.0f, m.range.qmin, m.range.qmax, out);
        });
    });
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

}  // namespace

std::size_t quantize_block_count(const QuantizeSpec& s) {
    std::size_t n = 1;
    for (int a = 0; a < s.rank; ++a) n *= static_cast<std::size_t>(s.shape[a] / s.block[a]);
    return n;
}

namespace {

template <typename T, typename In, typename Out>
void quantize_any(const In* weight, const QuantizeSpec& spec, int threads, std::uint8_t* data, bool pack, Out* scale,
                  std::uint8_t* zero_point) {
    detail::check_spec(spec);
    const std::size_t len = contiguous_block_length(spec);
    if (len != 0 && (!pack || len <= kChunk || len % 8 == 0 || quantize_block_count(spec) == 1)) {
        quantize_contiguous<T>(weight, spec, len, threads, data, pack && spec.nbits < 8, scale, zero_point);
        return;
    }
    if (!pack || spec.nbits == 8) {
        quantize_impl<T>(weight, spec, threads, data, scale, zero_point);
        return;
    }
    std::size_t n = 1;
    for (int a = 0; a < spec.rank; ++a) n *= static_cast<std::size_t>(spec.shape[a]);
    std::vector<std::uint8_t> bytes(n);
    quantize_impl<T>(weight, spec, threads, bytes.data(), scale, zero_point);
    pack_bits(bytes.data(), n, spec.nbits, data, threads);
}

}  // namespace

void quantize_f16(const std::uint16_t* weight, const QuantizeSpec& spec, int threads, std::uint8_t* data,
                  std::uint16_t* scale, std::uint8_t* zero_point, bool pack) {
    quantize_any<Half>(weight, spec, threads, data, pack, scale, zero_point);
}

void quantize_f32(const float* weight, const QuantizeSpec& spec, int threads, std::uint8_t* data, float* scale,
                  std::uint8_t* zero_point, bool pack) {
    quantize_any<Single>(weight, spec, threads, data, pack, scale, zero_point);
}

}  // namespace weightpress

// ---------------------------------------------------------------- error of a quantization

namespace weightpress {
namespace {

// Rows (every axis but the last) per work item: fixed, so that the partial sums and the
// order they are added in do not depend on the thread count.
constexpr std::size_t kSseRowsPerChunk = 64;

// T: the weight's dtype (Half or Single above), for loading the weight.
template <typename T, typename Weight, typename Scale, typename Dequantize>
double quantize_sse_impl(const Weight* weight, const QuantizeSpec& spec, const std::uint8_t* data, bool packed,
                         const Scale* scale, const std::uint8_t* zero_point, int threads, Dequantize dequantize) {
    const int r = spec.rank;
    const std::size_t cols = static_cast<std::size_t>(spec.shape[r - 1]);
    const std::size_t col_block = static_cast<std::size_t>(spec.block[r - 1]);
    std::size_t rows = 1;
    std::int64_t grid_stride[8];  // C-order strides of the block grid
    std::int64_t stride = 1;
    for (int a = r - 1; a >= 0; --a) {
        grid_stride[a] = stride;
        stride *= spec.shape[a] / spec.block[a];
        if (a < r - 1) rows *= static_cast<std::size_t>(spec.shape[a]);
    }
    const std::size_t chunks = (rows + kSseRowsPerChunk - 1) / kSseRowsPerChunk;
    std::vector<double> partial(chunks, 0.0);
    auto zero = [&](std::size_t b) -> int {
        if (!zero_point) return 0;
        return spec.is_signed ? static_cast<int>(static_cast<std::int8_t>(zero_point[b])) : zero_point[b];
    };
    const bool nibbles = packed && spec.nbits == 4;
    parallel_for(chunks, threads, [&](int, std::size_t chunk) {
        const std::size_t row_begin = chunk * kSseRowsPerChunk;
        const std::size_t row_end = std::min(rows, row_begin + kSseRowsPerChunk);
        std::vector<int> q(col_block);
        double sum = 0.0;
        for (std::size_t row = row_begin; row < row_end; ++row) {
            // block-grid offset of this row's outer coordinates
            std::int64_t base = 0;
            std::size_t rest = row;
            for (int a = r - 2; a >= 0; --a) {
                const std::int64_t coord = static_cast<std::int64_t>(rest % static_cast<std::size_t>(spec.shape[a]));
                rest /= static_cast<std::size_t>(spec.shape[a]);
                base += coord / spec.block[a] * grid_stride[a];
            }
            const std::size_t first = row * cols;
            for (std::size_t c0 = 0; c0 < cols; c0 += col_block) {
                const std::size_t b = static_cast<std::size_t>(base) + c0 / col_block;
                const Scale s = scale[b];
                const int z = zero(b);
                const std::size_t at = first + c0;
                // the block's integers minus the zero point, then one branch-free loop
                if (nibbles) {
                    for (std::size_t c = 0; c < col_block; ++c) {
                        const std::size_t i = at + c;
                        const unsigned nibble = (data[i >> 1] >> ((i & 1) * 4)) & 0xfu;  // LSB first
                        q[c] = (spec.is_signed ? static_cast<int>(nibble ^ 8u) - 8 : static_cast<int>(nibble)) - z;
                    }
                } else if (spec.is_signed) {
                    for (std::size_t c = 0; c < col_block; ++c) q[c] = static_cast<std::int8_t>(data[at + c]) - z;
                } else {
                    for (std::size_t c = 0; c < col_block; ++c) q[c] = static_cast<int>(data[at + c]) - z;
                }
                // eight running sums (a fixed order, so the loop vectorises without reassociating)
                double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                std::size_t c = 0;
                for (; c + 8 <= col_block; c += 8)
                    for (int j = 0; j < 8; ++j) {
                        const double d = dequantize(s, q[c + j]) - static_cast<double>(T::load(weight[at + c + j]));
                        lane[j] += d * d;
                    }
                for (; c < col_block; ++c) {
                    const double d = dequantize(s, q[c]) - static_cast<double>(T::load(weight[at + c]));
                    lane[0] += d * d;
                }
                for (double v : lane) sum += v;
            }
        }
        partial[chunk] = sum;
    });
    double total = 0.0;
    for (double p : partial) total += p;
    return total;
}

}  // namespace

double quantize_sse_f16(const std::uint16_t* weight, const QuantizeSpec& spec, const std::uint8_t* data, bool packed,
                        const std::uint16_t* scale, const std::uint8_t* zero_point, int threads) {
    // scale * (q - z) in half arithmetic: q - z is an integer below 2^10 (exact), the product
    // of an 11-bit and a 10-bit significand is exact in float, rounded to half once.
    return quantize_sse_impl<Half>(weight, spec, data, packed, scale, zero_point, threads, [](std::uint16_t s, int d) {
        return static_cast<double>(round_half_branchless(Half::load(s) * static_cast<float>(d)));
    });
}

double quantize_sse_f32(const float* weight, const QuantizeSpec& spec, const std::uint8_t* data, bool packed,
                        const float* scale, const std::uint8_t* zero_point, int threads) {
    return quantize_sse_impl<Single>(weight, spec, data, packed, scale, zero_point, threads,
                                     [](float s, int d) { return static_cast<double>(s * static_cast<float>(d)); });
}

}  // namespace weightpress

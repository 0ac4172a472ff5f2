#include "weightpress/prune.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <stdexcept>
#include <string>
#include <vector>

#include "weightpress/errors.h"
#include "weightpress/half.h"
#include "weightpress/kernels/half_float.h"
#include "weightpress/multiversion.h"
#include "weightpress/parallel.h"

namespace weightpress {
namespace {

constexpr std::size_t kChunk = 1 << 16;  // elements per chunk: a multiple of 8, so mask bytes never straddle

// ---------------------------------------------------------------- sparsify
// The keep test as integer compares on magnitude keys: the bit pattern without its sign
// (non-negative IEEE values order like their bits; -0 and +0 share key 0). An element
// survives when key(w) != 0 and, by threshold, key(magnitude) > cut_key, where cut_key is
// the key of the largest value of the dtype <= threshold, so the compare is exact for any
// float threshold; or, by mask, when pruned[i] == 0. A key at or above the Inf pattern is
// NaN or Inf: reported, never kept silently.

struct HalfBits {
    using T = std::uint16_t;
    static constexpr std::uint32_t kMagnitude = 0x7fffu, kInf = 0x7c00u;
    static std::uint32_t key(T v) { return v & kMagnitude; }
    static std::uint32_t cut_key(float t) {
        if (!(t >= 0.0f)) return 0;  // negative or NaN: every nonzero element survives
        std::uint32_t h = half_from_double(static_cast<double>(t));
        if (static_cast<float>(half_to_double(static_cast<std::uint16_t>(h))) > t) --h;  // round down
        return h;
    }
};
struct FloatBits {
    using T = float;
    static constexpr std::uint32_t kMagnitude = 0x7fffffffu, kInf = 0x7f800000u;
    static std::uint32_t key(T v) {
        std::uint32_t u;
        std::memcpy(&u, &v, sizeof u);
        return u & kMagnitude;
    }
    static std::uint32_t cut_key(float t) { return t >= 0.0f ? key(t) : 0; }
};

// Eight 0/1 bytes (element i in byte i) to one LSB-first mask byte: in the product every
// byte lands on its own bit of the top byte, with no carries (docs/formats.md, "Pruning").
inline std::uint32_t pack_flags8(const std::uint8_t* flags) {
    std::uint64_t x;
    std::memcpy(&x, flags, 8);
    return static_cast<std::uint32_t>((x * 0x0102040810204080ull) >> 56);
}

// Pass 1 over one chunk: mask bytes and survivors. Returns the survivors, or SIZE_MAX when
// the chunk holds NaN/Inf (no exception out of a multiversioned function).
template <typename K>
WP_FORCE_INLINE std::size_t mask_chunk_impl(const typename K::T* w, std::size_t n, const typename K::T* magnitude,
                                            const std::uint8_t* pruned, std::uint32_t cut, std::uint8_t* mask) {
    constexpr std::size_t kTile = 512;  // flags for a tile, then packed
    std::uint8_t flags[kTile];
    std::size_t count = 0;
    std::uint32_t bad = 0;
    for (std::size_t t0 = 0; t0 < n; t0 += kTile) {
        const std::size_t m = std::min(kTile, n - t0);
        const typename K::T* src = w + t0;
        if (pruned) {
            const std::uint8_t* p = pruned + t0;
            for (std::size_t i = 0; i < m; ++i) {
                const std::uint32_t k = K::key(src[i]);
                bad |= static_cast<std::uint32_t>(k >= K::kInf);
                flags[i] = static_cast<std::uint8_t>(static_cast<std::uint32_t>(k != 0) & static_cast<std::uint32_t>(p[i] == 0));
            }
        } else if (magnitude) {
            const typename K::T* mag = magnitude + t0;
            for (std::size_t i = 0; i < m; ++i) {
                const std::uint32_t k = K::key(src[i]);
                bad |= static_cast<std::uint32_t>(k >= K::kInf);
                flags[i] = static_cast<std::uint8_t>(static_cast<std::uint32_t>(k != 0) &
                                                     static_cast<std::uint32_t>(K::key(mag[i]) > cut));
            }
        } else {
            for (std::size_t i = 0; i < m; ++i) {
                const std::uint32_t k = K::key(src[i]);
                bad |= static_cast<std::uint32_t>(k >= K::kInf);
                flags[i] = static_cast<std::uint8_t>(static_cast<std::uint32_t>(k > cut) & static_cast<std::uint32_t>(k != 0));
            }
        }
        for (std::size_t i = 0; i < m; ++i) count += flags[i];
        const std::size_t full = m / 8;
        std::uint8_t* out = mask + t0 / 8;
        for (std::size_t j = 0; j < full; ++j) out[j] = static_cast<std::uint8_t>(pack_flags8(flags + 8 * j));
        if (m % 8) {  // the weight's last partial byte
            std::uint32_t byte = 0;
            for (std::size_t i = full * 8; i < m; ++i) byte |= static_cast<std::uint32_t>(flags[i]) << (i - full * 8);
            out[full] = static_cast<std::uint8_t>(byte);
        }
    }
    return bad ? SIZE_MAX : count;
}

WP_MULTIVERSION_FN(std::size_t, mask_chunk,
                   (const std::uint16_t* w, std::size_t n, const std::uint16_t* magnitude,
                    const std::uint8_t* pruned, std::uint32_t cut, std::uint8_t* mask),
                   (w, n, magnitude, pruned, cut, mask),
                   mask_chunk_impl<HalfBits>(w, n, magnitude, pruned, cut, mask))
WP_MULTIVERSION_FN(std::size_t, mask_chunk,
                   (const float* w, std::size_t n, const float* magnitude, const std::uint8_t* pruned,
                    std::uint32_t cut, std::uint8_t* mask),
                   (w, n, magnitude, pruned, cut, mask),
                   mask_chunk_impl<FloatBits>(w, n, magnitude, pruned, cut, mask))

// For each mask byte, the positions of its set bits (then padding): the gather copies eight
// candidates per byte unconditionally and advances by the byte's population.
struct GatherTable {
    std::uint8_t index[256][8];
    std::uint8_t count[256];
    GatherTable() {
        for (std::uint32_t m = 0; m < 256; ++m) {
            std::uint32_t j = 0;
            for (std::uint32_t b = 0; b < 8; ++b)
                if ((m >> b) & 1u) index[m][j++] = static_cast<std::uint8_t>(b);
            count[m] = static_cast<std::uint8_t>(j);
            for (; j < 8; ++j) index[m][j] = 7;
        }
    }
};
const GatherTable kGather;

// Pass 2 over one chunk: the survivors in order to out[0, survivors). Eight values are
// stored per mask byte while at least eight slots of the chunk's range remain (the extra
// ones are overwritten by the next byte); the tail goes one value at a time.
template <typename T>
void gather_chunk(const T* w, std::size_t n, const std::uint8_t* mask, T* out, std::size_t survivors) {
    T* const end = out + survivors;
    std::size_t byte = 0;
    const std::size_t bytes = (n + 7) / 8;
    for (; byte < bytes && end - out >= 8 && byte * 8 + 8 <= n; ++byte) {
        const std::uint32_t m = mask[byte];
        const std::uint8_t* ix = kGather.index[m];
        const T* base = w + byte * 8;
        for (int j = 0; j < 8; ++j) out[j] = base[ix[j]];
        out += kGather.count[m];
    }
    for (; byte < bytes; ++byte) {
        const std::uint32_t m = mask[byte];
        for (std::uint32_t b = 0; b < 8 && byte * 8 + b < n; ++b)
            if ((m >> b) & 1u) *out++ = w[byte * 8 + b];
    }
}

template <typename K>
SparsifyPlan sparsify_mask(const typename K::T* w, std::size_t n, const typename K::T* magnitude,
                           const std::uint8_t* pruned, float threshold, int threads, std::uint8_t* packed) {
    const std::uint32_t cut = K::cut_key(threshold);
    const std::size_t chunks = (n + kChunk - 1) / kChunk;
    SparsifyPlan plan;
    plan.offsets.assign(chunks + 1, 0);
    std::atomic<bool> bad{false};
    parallel_for(chunks, threads, [&](int, std::size_t c) {
        const std::size_t begin = c * kChunk, len = std::min(n, begin + kChunk) - begin;
        const std::size_t count = mask_chunk(w + begin, len, magnitude ? magnitude + begin : nullptr,
                                             pruned ? pruned + begin : nullptr, cut, packed + begin / 8);
        if (count == SIZE_MAX) {
            bad.store(true, std::memory_order_relaxed);
            plan.offsets[c + 1] = 0;
        } else {
            plan.offsets[c + 1] = count;
        }
    });
    for (std::size_t c = 0; c < chunks; ++c) plan.offsets[c + 1] += plan.offsets[c];
    plan.survivors = plan.offsets[chunks];
    plan.nonfinite = bad.load();
    return plan;
}

template <typename T>
void sparsify_gather(const T* w, std::size_t n, const std::uint8_t* packed, const SparsifyPlan& plan, int threads,
                     T* nonzero) {
    const std::size_t chunks = plan.offsets.size() - 1;
    parallel_for(chunks, threads, [&](int, std::size_t c) {
        const std::size_t begin = c * kChunk, len = std::min(n, begin + kChunk) - begin;
        gather_chunk(w + begin, len, packed + begin / 8, nonzero + plan.offsets[c], plan.offsets[c + 1] - plan.offsets[c]);
    });
}

// One block of rows (`rows` consecutive rows of `inner` values): the L2 norm per column, in
// the weight's dtype, stored to every row of the block. The fp16 helpers are branch-free so
// that the column loops vectorise.
template <typename T, typename Load, typename Round, typename Store>
WP_FORCE_INLINE void block_norms(const T* w, std::size_t rows, std::size_t inner, float* acc, T* out, Load load,
                                 Round round, Store store) {
    for (std::size_t r = 0; r < inner; ++r) {
        const float v = load(w[r]);
        acc[r] = round(v * v);
    }
    for (std::size_t c = 1; c < rows; ++c) {
        const T* row = w + c * inner;
        for (std::size_t r = 0; r < inner; ++r) {
            const float v = load(row[r]);
            acc[r] = round(acc[r] + round(v * v));
        }
    }
    for (std::size_t c = 0; c < rows; ++c) {
        T* row = out + c * inner;
        for (std::size_t r = 0; r < inner; ++r) row[r] = store(round(std::sqrt(acc[r])));
    }
}

// (bodies of their own: lambdas hold commas a macro argument cannot)
WP_FORCE_INLINE void block_norms_of_body(const std::uint16_t* w, std::size_t rows, std::size_t inner, float* acc,
                                         std::uint16_t* out) {
    // fp16 emulated per operation, as numpy: the bit-exact helpers (weightpress/half.h)
    block_norms(w, rows, inner, acc, out, [](std::uint16_t h) { return half_to_float_branchless(h); },
                [](float x) { return round_half_branchless(x); },
                [](float x) { return static_cast<std::uint16_t>(half_bits_branchless(x)); });
}
WP_MULTIVERSION_FN(void, block_norms_of,
                   (const std::uint16_t* w, std::size_t rows, std::size_t inner, float* acc, std::uint16_t* out),
                   (w, rows, inner, acc, out), block_norms_of_body(w, rows, inner, acc, out))

WP_FORCE_INLINE void block_norms_of_body(const float* w, std::size_t rows, std::size_t inner, float* acc, float* out) {
    block_norms(w, rows, inner, acc, out, [](float x) { return x; }, [](float x) { return x; },
                [](float x) { return x; });
}
WP_MULTIVERSION_FN(void, block_norms_of,
                   (const float* w, std::size_t rows, std::size_t inner, float* acc, float* out),
                   (w, rows, inner, acc, out), block_norms_of_body(w, rows, inner, acc, out))

template <typename T>
void block_magnitude(const T* w, std::size_t outer, std::size_t channel, std::size_t inner, std::size_t block,
                     int threads, T* out) {
    const std::size_t blocks = (channel + block - 1) / block;
    parallel_for(outer * blocks, threads, [&](int, std::size_t task) {
        const std::size_t a = task / blocks, first = (task % blocks) * block;
        const std::size_t last = std::min(channel, first + block);
        std::vector<float> acc(inner);
        const std::size_t at = (a * channel + first) * inner;
        block_norms_of(w + at, last - first, inner, acc.data(), out + at);
    });
}

}  // namespace

void block_magnitude_f16(const std::uint16_t* w, std::size_t outer, std::size_t channel, std::size_t inner,
                         std::size_t block, int threads, std::uint16_t* out) {
    block_magnitude(w, outer, channel, inner, block, threads, out);
}

void block_magnitude_f32(const float* w, std::size_t outer, std::size_t channel, std::size_t inner,
                         std::size_t block, int threads, float* out) {
    block_magnitude(w, outer, channel, inner, block, threads, out);
}

SparsifyPlan sparsify_mask_f16(const std::uint16_t* w, std::size_t n, const std::uint16_t* magnitude,
                               const std::uint8_t* pruned, float threshold, int threads, std::uint8_t* packed_mask) {
    return sparsify_mask<HalfBits>(w, n, magnitude, pruned, threshold, threads, packed_mask);
}

SparsifyPlan sparsify_mask_f32(const float* w, std::size_t n, const float* magnitude, const std::uint8_t* pruned,
                               float threshold, int threads, std::uint8_t* packed_mask) {
    return sparsify_mask<FloatBits>(w, n, magnitude, pruned, threshold, threads, packed_mask);
}

void sparsify_gather_f16(const std::uint16_t* w, std::size_t n, const std::uint8_t* packed_mask,
                         const SparsifyPlan& plan, int threads, std::uint16_t* nonzero) {
    sparsify_gather(w, n, packed_mask, plan, threads, nonzero);
}

void sparsify_gather_f32(const float* w, std::size_t n, const std::uint8_t* packed_mask, const SparsifyPlan& plan,
                         int threads, float* nonzero) {
    sparsify_gather(w, n, packed_mask, plan, threads, nonzero);
}

void order_statistics_f16(const std::uint16_t* magnitude, std::size_t n, const std::size_t* ks, std::size_t count,
                          int threads, std::uint16_t* out) {
    constexpr std::size_t kBins = 32768;
    const std::size_t chunks = (n + kChunk - 1) / kChunk;
    const int workers = worker_count(chunks, threads);
    std::vector<std::vector<std::uint64_t>> partial(workers, std::vector<std::uint64_t>(kBins, 0));
    parallel_for(chunks, threads, [&](int w, std::size_t c) {
        const std::size_t begin = c * kChunk, end = std::min(n, begin + kChunk);
        std::uint64_t* h = partial[w].data();
        for (std::size_t i = begin; i < end; ++i) ++h[magnitude[i] & 0x7fff];  // |value|
    });
    std::vector<std::uint64_t> hist(kBins, 0);
    for (auto& p : partial)
        for (std::size_t b = 0; b < kBins; ++b) hist[b] += p[b];
    for (std::size_t b = 0x7c01; b < kBins; ++b)  // NaN patterns cannot be ranked (Inf ranks last)
        if (hist[b]) throw NonFiniteInput("prune: weight contains NaN");
    for (std::size_t j = 0; j < count; ++j) {
        // Non-negative halves sort by their bit patterns.
        std::uint64_t seen = 0;
        std::uint16_t value = 0;
        for (std::size_t b = 0; b < 0x8000; ++b) {
            seen += hist[b];
            if (ks[j] < seen) {
                value = static_cast<std::uint16_t>(b);
                break;
            }
        }
        out[j] = value;
    }
}

void order_statistics_f32(const float* magnitude, std::size_t n, const std::size_t* ks, std::size_t count,
                          float* out) {
    std::vector<float> copy(n);
    bool nan = false;
    for (std::size_t i = 0; i < n; ++i) {
        copy[i] = std::fabs(magnitude[i]);
        nan |= copy[i] != copy[i];
    }
    if (nan) throw NonFiniteInput("prune: weight contains NaN");  // cannot be ranked (Inf ranks last)
    for (std::size_t j = 0; j < count; ++j) {
        std::nth_element(copy.begin(), copy.begin() + ks[j], copy.end());
        out[j] = copy[ks[j]];
    }
}

// ---------------------------------------------------------------- n:m
// Magnitude order of IEEE values = unsigned order of their bits without the sign (NaN is
// refused upstream; -0 and +0 share key 0), so fp16 and fp32 weights are ranked without
// converting or copying them. In a group of m the element of rank r (smaller keys, then
// equal keys at lower positions, padding past the channel's end included with key 0) is
// pruned when r < n: the lower index first among equal magnitudes, as a stable sort.

constexpr int kSmallM = 16;   // groups up to this size rank by counting (m compares per value)
constexpr std::size_t kLanes = 64;  // values ranked side by side

// Ranks `lanes` groups at once: keys[t][l] is the key at group position t of lane l; marks
// pruned[t][l] for the positions t < valid.
template <typename Bits>
WP_FORCE_INLINE void rank_lanes(const Bits (*keys)[kLanes], std::size_t lanes, int m, int valid, int n,
                                std::uint8_t (*pruned)[kLanes]) {
    for (int t = 0; t < valid; ++t) {
        std::uint32_t rank[kLanes];
        for (std::size_t l = 0; l < lanes; ++l) rank[l] = 0;
        for (int j = 0; j < m; ++j) {
            const std::uint32_t earlier = static_cast<std::uint32_t>(j < t);
            for (std::size_t l = 0; l < lanes; ++l)
                rank[l] += static_cast<std::uint32_t>(keys[j][l] < keys[t][l]) |
                           (static_cast<std::uint32_t>(keys[j][l] == keys[t][l]) & earlier);
        }
        for (std::size_t l = 0; l < lanes; ++l) pruned[t][l] = static_cast<std::uint8_t>(rank[l] < static_cast<std::uint32_t>(n));
    }
}

// One outer slice [channel, inner] of a weight: groups of m along the channel axis, for
// every inner position. The lanes are the (group, inner position) pairs in memory order,
// kLanes at a time, whatever inner is (9 for a 3x3 conv, 1 for a linear weight along dim 1).
template <typename Bits>
WP_FORCE_INLINE void nm_slice_small(const Bits* w, std::size_t channel, std::size_t inner, int n, int m,
                                    std::uint8_t* out) {
    constexpr Bits kMagnitude = static_cast<Bits>(static_cast<Bits>(~Bits(0)) >> 1);
    Bits keys[kSmallM][kLanes];
    std::uint8_t pruned[kSmallM][kLanes];
    std::size_t offset[kLanes];  // of the lane's first group position
    std::uint32_t valid[kLanes];  // real positions in the lane's group (the last one may be short)
    const std::size_t groups = (channel + m - 1) / m;
    const std::size_t total = groups * inner;
    std::size_t g = 0, i = 0;  // the next lane's group and inner position
    for (std::size_t l0 = 0; l0 < total; l0 += kLanes) {
        const std::size_t lanes = std::min(kLanes, total - l0);
        for (std::size_t l = 0; l < lanes; ++l) {
            offset[l] = g * static_cast<std::size_t>(m) * inner + i;
            valid[l] = static_cast<std::uint32_t>(std::min<std::size_t>(m, channel - g * m));
            if (++i == inner) {
                i = 0;
                ++g;
            }
        }
        for (int t = 0; t < m; ++t)
            for (std::size_t l = 0; l < lanes; ++l)
                keys[t][l] = static_cast<std::uint32_t>(t) < valid[l] ? Bits(w[offset[l] + t * inner] & kMagnitude)
                                                                      : Bits(0);
        rank_lanes(keys, lanes, m, m, n, pruned);
        for (int t = 0; t < m; ++t)
            for (std::size_t l = 0; l < lanes; ++l)
                if (static_cast<std::uint32_t>(t) < valid[l]) out[offset[l] + t * inner] = pruned[t][l];
    }
}

WP_MULTIVERSION_FN(void, nm_slice,
                   (const std::uint16_t* w, std::size_t channel, std::size_t inner, int n, int m, std::uint8_t* out),
                   (w, channel, inner, n, m, out), nm_slice_small(w, channel, inner, n, m, out))
WP_MULTIVERSION_FN(void, nm_slice,
                   (const std::uint32_t* w, std::size_t channel, std::size_t inner, int n, int m, std::uint8_t* out),
                   (w, channel, inner, n, m, out), nm_slice_small(w, channel, inner, n, m, out))

// Groups larger than kSmallM: a selection per group (rare: m is 4 or 8 in practice).
template <typename Bits>
void nm_slice_large(const Bits* w, std::size_t channel, std::size_t inner, int n, int m, std::uint8_t* out) {
    constexpr Bits kMagnitude = static_cast<Bits>(static_cast<Bits>(~Bits(0)) >> 1);
    const std::size_t groups = (channel + m - 1) / m;
    std::vector<std::uint32_t> order(m);
    for (std::size_t i = 0; i < inner; ++i)
        for (std::size_t g = 0; g < groups; ++g) {
            const std::size_t base = g * m;
            auto key = [&](std::uint32_t t) {
                return base + t < channel ? Bits(w[(base + t) * inner + i] & kMagnitude) : Bits(0);
            };
            for (int t = 0; t < m; ++t) order[t] = static_cast<std::uint32_t>(t);
            auto less = [&](std::uint32_t a, std::uint32_t b) {
                const Bits ka = key(a), kb = key(b);
                return ka < kb || (ka == kb && a < b);
            };
            if (n < m) std::nth_element(order.begin(), order.begin() + n, order.end(), less);
            for (int t = 0; t < m; ++t)
                if (base + t < channel) out[(base + t) * inner + i] = 0;
            for (int t = 0; t < n; ++t)
                if (base + order[t] < channel) out[(base + order[t]) * inner + i] = 1;
        }
}

template <typename Bits>
void nm_prune_mask_bits(const Bits* bits, std::size_t outer, std::size_t channel, std::size_t inner, int n, int m,
                        int threads, std::uint8_t* pruned) {
    if (n < 0 || m < 1 || n > m)
        throw std::invalid_argument("prune: n:m needs 0 <= n <= m and m >= 1, got " + std::to_string(n) + ":" +
                                    std::to_string(m));
    const std::size_t slice = channel * inner;
    parallel_for(outer, threads, [&](int, std::size_t o) {
        if (m <= kSmallM)
            nm_slice(bits + o * slice, channel, inner, n, m, pruned + o * slice);
        else
            nm_slice_large(bits + o * slice, channel, inner, n, m, pruned + o * slice);
    });
}

void nm_prune_mask_f16(const std::uint16_t* bits, std::size_t outer, std::size_t channel, std::size_t inner, int n,
                       int m, int threads, std::uint8_t* pruned) {
    nm_prune_mask_bits(bits, outer, channel, inner, n, m, threads, pruned);
}

void nm_prune_mask_f32(const std::uint32_t* bits, std::size_t outer, std::size_t channel, std::size_t inner, int n,
                       int m, int threads, std::uint8_t* pruned) {
    nm_prune_mask_bits(bits, outer, channel, inner, n, m, threads, pruned);
}

}  // namespace weightpress

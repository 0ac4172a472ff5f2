#include "weightpress/prune.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <stdexcept>
#include <string>
#include <vector>

#include "weightpress/half.h"
#include "weightpress/kernels/half_float.h"
#include "weightpress/parallel.h"

namespace weightpress {
namespace {

constexpr std::size_t kChunk = 1 << 16;  // elements per chunk: a multiple of 8, so mask bytes never straddle

inline float f16(std::uint16_t h) { return static_cast<float>(half_to_double(h)); }

struct F16 {
    using T = std::uint16_t;
    static float value(T v) { return f16(v); }
    static bool is_zero(T v) { return (v & 0x7fff) == 0; }
    static float magnitude(T v) { return f16(static_cast<T>(v & 0x7fff)); }
};
struct F32 {
    using T = float;
    static float value(T v) { return v; }
    static bool is_zero(T v) { return v == 0.0f; }
    static float magnitude(T v) { return std::fabs(v); }
};

// The keep test on fp16 bit patterns: for non-negative halves, value order is the order of
// the bits, so |w| <= t compares (bits & 0x7fff) with the bits of t (t must be a half value).
struct HalfKeys {
    bool usable;
    std::uint16_t threshold;
};

inline HalfKeys half_threshold_key(float threshold) {
    if (!(threshold >= 0.0f)) return {false, 0};
    const std::uint16_t key = half_from_double(static_cast<double>(threshold));
    return {static_cast<float>(half_to_double(key)) == threshold, key};
}

template <typename K>
std::size_t sparsify(const typename K::T* w, std::size_t n, const typename K::T* magnitude,
                     const std::uint8_t* pruned, float threshold, int threads, std::uint8_t* packed,
                     typename K::T* nonzero) {
    const std::size_t chunks = (n + kChunk - 1) / kChunk;
    std::vector<std::size_t> counts(chunks + 1, 0);
    auto keep = [&](std::size_t i) {
        if (K::is_zero(w[i])) return false;
        if (pruned) return pruned[i] == 0;
        const float mag = magnitude ? K::value(magnitude[i]) : K::magnitude(w[i]);
        return !(mag <= threshold);
    };
    HalfKeys keys{false, 0};
    if constexpr (std::is_same_v<K, F16>) keys = half_threshold_key(threshold);
    // Pass 1: the mask bytes and the survivors per chunk.
    parallel_for(chunks, threads, [&](int, std::size_t c) {
        const std::size_t begin = c * kChunk, end = std::min(n, begin + kChunk);
        std::size_t count = 0;
        if constexpr (std::is_same_v<K, F16>) {
            if (pruned || keys.usable) {  // branch-free on the bits
                const std::uint16_t* mag = magnitude ? magnitude : w;
                std::size_t byte = begin / 8;
                for (; byte * 8 + 8 <= end; ++byte) {
                    std::uint32_t bits = 0;
                    for (std::uint32_t b = 0; b < 8; ++b) {
                        const std::size_t i = byte * 8 + b;
                        const std::uint32_t survives =
                            pruned ? std::uint32_t(pruned[i] == 0) : std::uint32_t((mag[i] & 0x7fffu) > keys.threshold);
                        bits |= (std::uint32_t((w[i] & 0x7fffu) != 0) & survives) << b;
                    }
                    packed[byte] = static_cast<std::uint8_t>(bits);
                    count += static_cast<std::size_t>(__builtin_popcount(bits));
                }
                if (byte * 8 < end) {
                    std::uint8_t bits = 0;
                    for (std::size_t b = 0; byte * 8 + b < end; ++b)
                        if (keep(byte * 8 + b)) {
                            bits |= static_cast<std::uint8_t>(1u << b);
                            ++count;
                        }
                    packed[byte] = bits;
                }
                counts[c + 1] = count;
                return;
            }
        }
        for (std::size_t byte = begin / 8; byte * 8 < end; ++byte) {
            std::uint8_t bits = 0;
            for (std::size_t b = 0; b < 8 && byte * 8 + b < end; ++b)
                if (keep(byte * 8 + b)) {
                    bits |= static_cast<std::uint8_t>(1u << b);
                    ++count;
                }
            packed[byte] = bits;
        }
        counts[c + 1] = count;
    });
    for (std::size_t c = 0; c < chunks; ++c) counts[c + 1] += counts[c];
    // Pass 2: gather the survivors into their place, a mask byte at a time: the 8 candidates
    // are compacted into a local buffer without branches, then copied (no write can spill
    // into the next chunk's range).
    parallel_for(chunks, threads, [&](int, std::size_t c) {
        const std::size_t begin = c * kChunk, end = std::min(n, begin + kChunk);
        typename K::T* out = nonzero + counts[c];
        typename K::T local[8];
        for (std::size_t byte = begin / 8; byte * 8 < end; ++byte) {
            const std::uint32_t bits = packed[byte];
            if (bits == 0) continue;
            const std::size_t base = byte * 8;
            const std::size_t len = std::min<std::size_t>(8, end - base);
            std::size_t j = 0;
            for (std::size_t b = 0; b < len; ++b) {
                local[j] = w[base + b];
                j += (bits >> b) & 1u;
            }
            std::memcpy(out, local, j * sizeof(typename K::T));
            out += j;
        }
    });
    return counts[chunks];
}


template <typename T, typename Load, typename Round, typename Store>
void block_magnitude(const T* w, std::size_t outer, std::size_t channel, std::size_t inner, std::size_t block,
                     int threads, T* out, Load load, Round round, Store store) {
    const std::size_t blocks = (channel + block - 1) / block;
    parallel_for(outer * blocks, threads, [&](int, std::size_t task) {
        const std::size_t a = task / blocks, first = (task % blocks) * block;
        const std::size_t last = std::min(channel, first + block);
        std::vector<float> acc(inner);
        for (std::size_t c = first; c < last; ++c) {
            const T* row = w + (a * channel + c) * inner;
            for (std::size_t r = 0; r < inner; ++r) {
                const float v = load(row[r]);
                const float sq = round(v * v);
                acc[r] = c == first ? sq : round(acc[r] + sq);
            }
        }
        for (std::size_t r = 0; r < inner; ++r) acc[r] = round(std::sqrt(acc[r]));
        for (std::size_t c = first; c < last; ++c) {
            T* row = out + (a * channel + c) * inner;
            for (std::size_t r = 0; r < inner; ++r) row[r] = store(acc[r]);
        }
    });
}

}  // namespace

void block_magnitude_f16(const std::uint16_t* w, std::size_t outer, std::size_t channel, std::size_t inner,
                         std::size_t block, int threads, std::uint16_t* out) {
    // fp16 emulation with the bit-exact helpers shared with the Metal kernels (no double)
    block_magnitude(w, outer, channel, inner, block, threads, out,
                    [](std::uint16_t h) { return wp::half_to_float(h); }, [](float x) { return wp::round_half(x); },
                    [](float x) { return static_cast<std::uint16_t>(wp::half_bits(x)); });
}

void block_magnitude_f32(const float* w, std::size_t outer, std::size_t channel, std::size_t inner,
                         std::size_t block, int threads, float* out) {
    block_magnitude(w, outer, channel, inner, block, threads, out, [](float x) { return x; },
                    [](float x) { return x; }, [](float x) { return x; });
}

std::size_t sparsify_f16(const std::uint16_t* w, std::size_t n, const std::uint16_t* magnitude,
                         const std::uint8_t* pruned, float threshold, int threads, std::uint8_t* packed_mask,
                         std::uint16_t* nonzero) {
    return sparsify<F16>(w, n, magnitude, pruned, threshold, threads, packed_mask, nonzero);
}

std::size_t sparsify_f32(const float* w, std::size_t n, const float* magnitude, const std::uint8_t* pruned,
                         float threshold, int threads, std::uint8_t* packed_mask, float* nonzero) {
    return sparsify<F32>(w, n, magnitude, pruned, threshold, threads, packed_mask, nonzero);
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
    for (std::size_t i = 0; i < n; ++i) copy[i] = std::fabs(magnitude[i]);
    for (std::size_t j = 0; j < count; ++j) {
        std::nth_element(copy.begin(), copy.begin() + ks[j], copy.end());
        out[j] = copy[ks[j]];
    }
}

// Magnitude order of IEEE values = unsigned order of their bits without the sign (NaN is
// refused upstream; -0 and +0 share key 0), so fp16 and fp32 weights are ranked without
// converting or copying them.
template <typename Bits>
void nm_prune_mask_bits(const Bits* bits, std::size_t rows, std::size_t channel, int n, int m, int threads,
                        std::uint8_t* pruned) {
    constexpr Bits kMagnitude = static_cast<Bits>(static_cast<Bits>(~Bits(0)) >> 1);  // all bits but the sign
    if (n < 0 || m < 1 || n > m)  // (the small-group path below indexes a 16-slot array up to n)
        throw std::invalid_argument("prune: n:m needs 0 <= n <= m and m >= 1, got " + std::to_string(n) + ":" +
                                    std::to_string(m));
    const std::size_t groups = (channel + m - 1) / m;
    parallel_for(rows, threads, [&](int, std::size_t r) {
        std::vector<std::uint32_t> order(m);
        const Bits* row = bits + r * channel;
        std::uint8_t* out = pruned + r * channel;
        std::memset(out, 0, channel);
        for (std::size_t g = 0; g < groups; ++g) {
            const std::size_t base = g * m;
            auto key = [&](std::uint32_t t) { return base + t < channel ? Bits(row[base + t] & kMagnitude) : Bits(0); };
            if (m <= 16) {
                // small groups (2:4, 4:8 ...): insertion sort of (key, index), stable, so equal
                // magnitudes keep index order and the lower index is pruned first
                std::uint64_t sorted[16];
                for (int t = 0; t < m; ++t) {
                    const std::uint64_t item = (std::uint64_t(key(t)) << 32) | std::uint32_t(t);
                    int u = t;
                    for (; u > 0 && sorted[u - 1] > item; --u) sorted[u] = sorted[u - 1];
                    sorted[u] = item;
                }
                for (int t = 0; t < n; ++t) {
                    const std::size_t idx = base + std::uint32_t(sorted[t]);
                    if (idx < channel) out[idx] = 1;
                }
                continue;
            }
            for (int t = 0; t < m; ++t) order[t] = static_cast<std::uint32_t>(t);
            auto less = [&](std::uint32_t a, std::uint32_t b) {
                const Bits ka = key(a), kb = key(b);
                return ka < kb || (ka == kb && a < b);
            };
            if (n < m) std::nth_element(order.begin(), order.begin() + n, order.end(), less);
            for (int t = 0; t < n; ++t)
                if (base + order[t] < channel) out[base + order[t]] = 1;
        }
    });
}

void nm_prune_mask_f16(const std::uint16_t* bits, std::size_t rows, std::size_t channel, int n, int m, int threads,
                       std::uint8_t* pruned) {
    nm_prune_mask_bits(bits, rows, channel, n, m, threads, pruned);
}

void nm_prune_mask_f32(const std::uint32_t* bits, std::size_t rows, std::size_t channel, int n, int m, int threads,
                       std::uint8_t* pruned) {
    nm_prune_mask_bits(bits, rows, channel, n, m, threads, pruned);
}

}  // namespace weightpress

#include "weightpress/pack.h"

#include <algorithm>
#include <cstring>

#include "weightpress/multiversion.h"
#include "weightpress/parallel.h"

namespace weightpress {
namespace {

// A chunk of 8 * 65536 elements (a multiple of 8) always starts on a byte boundary for every
// nbits, so chunks are independent and the result does not depend on the thread count.
constexpr std::size_t kChunkElems = 8 * 65536;

// Eight fields of nbits form exactly nbits bytes of the stream, so whole groups of eight are
// independent: gathered into one 64-bit word (LSB-first, as the stream orders them) and
// stored as its low nbits bytes. Only a last partial group goes bit by bit.
WP_FORCE_INLINE void pack_range_impl(const std::uint8_t* v, std::size_t n, int nbits, std::uint8_t* out) {
    const std::uint64_t mask = (1u << nbits) - 1u;
    const std::size_t groups = n / 8;
    for (std::size_t g = 0; g < groups; ++g) {
        const std::uint8_t* x = v + 8 * g;
        std::uint64_t word = 0;
        for (int i = 0; i < 8; ++i) word |= (static_cast<std::uint64_t>(x[i]) & mask) << (i * nbits);
        std::uint8_t bytes[8];
        for (int b = 0; b < 8; ++b) bytes[b] = static_cast<std::uint8_t>(word >> (8 * b));  // little-endian order
        std::memcpy(out + g * static_cast<std::size_t>(nbits), bytes, static_cast<std::size_t>(nbits));
    }
    std::uint64_t acc = 0;
    int bits = 0;
    std::size_t o = groups * static_cast<std::size_t>(nbits);
    for (std::size_t i = groups * 8; i < n; ++i) {
        acc |= (static_cast<std::uint64_t>(v[i]) & mask) << bits;
        bits += nbits;
        while (bits >= 8) {
            out[o++] = static_cast<std::uint8_t>(acc);
            acc >>= 8;
            bits -= 8;
        }
    }
    if (bits > 0) out[o] = static_cast<std::uint8_t>(acc);
}

// One specialised body per width (the shifts become constants).
template <int Bits>
WP_FORCE_INLINE void pack_fixed(const std::uint8_t* v, std::size_t n, std::uint8_t* out) {
    pack_range_impl(v, n, Bits, out);
}

// Widths that divide a byte: each output byte from its own 8 / nbits inputs (vectorises).
template <int Bits>
WP_FORCE_INLINE void pack_dividing(const std::uint8_t* v, std::size_t n, std::uint8_t* out) {
    constexpr int kPer = 8 / Bits;
    constexpr std::uint32_t kMask = (1u << Bits) - 1u;
    const std::size_t whole = n / kPer;
    for (std::size_t j = 0; j < whole; ++j) {
        std::uint32_t byte = 0;
        for (int i = 0; i < kPer; ++i) byte |= (v[j * kPer + i] & kMask) << (i * Bits);
        out[j] = static_cast<std::uint8_t>(byte);
    }
    if (n % kPer) pack_range_impl(v + whole * kPer, n % kPer, Bits, out + whole);
}

// 6 bits: four fields are three bytes.
WP_FORCE_INLINE void pack6(const std::uint8_t* v, std::size_t n, std::uint8_t* out) {
    const std::size_t groups = n / 4;
    for (std::size_t g = 0; g < groups; ++g) {
        const std::uint32_t a = v[4 * g] & 63u, b = v[4 * g + 1] & 63u, c = v[4 * g + 2] & 63u, d = v[4 * g + 3] & 63u;
        out[3 * g] = static_cast<std::uint8_t>(a | (b << 6));
        out[3 * g + 1] = static_cast<std::uint8_t>((b >> 2) | (c << 4));
        out[3 * g + 2] = static_cast<std::uint8_t>((c >> 4) | (d << 2));
    }
    if (n % 4) pack_range_impl(v + groups * 4, n % 4, 6, out + groups * 3);
}

WP_FORCE_INLINE void pack_range_body(const std::uint8_t* v, std::size_t n, int nbits, std::uint8_t* out) {
    switch (nbits) {
        case 8: std::memcpy(out, v, n); return;
        case 1: pack_fixed<1>(v, n, out); return;
        case 2: pack_dividing<2>(v, n, out); return;
        case 3: pack_fixed<3>(v, n, out); return;
        case 4: pack_dividing<4>(v, n, out); return;
        case 5: pack_fixed<5>(v, n, out); return;
        case 6: pack6(v, n, out); return;
        default: pack_fixed<7>(v, n, out); return;
    }
}
WP_MULTIVERSION_FN(void, pack_range,
                   (const std::uint8_t* v, std::size_t n, int nbits, std::uint8_t* out),
                   (v, n, nbits, out), pack_range_body(v, n, nbits, out))

// The inverse, a group of eight fields (nbits bytes) at a time.
WP_FORCE_INLINE void unpack_range_impl(const std::uint8_t* p, std::size_t n, int nbits, std::uint8_t* out) {
    const std::uint64_t mask = (1u << nbits) - 1u;
    const std::size_t groups = n / 8;
    for (std::size_t g = 0; g < groups; ++g) {
        std::uint64_t word = 0;
        const std::uint8_t* x = p + g * static_cast<std::size_t>(nbits);
        for (int b = 0; b < nbits; ++b) word |= static_cast<std::uint64_t>(x[b]) << (8 * b);
        for (int i = 0; i < 8; ++i) out[8 * g + i] = static_cast<std::uint8_t>((word >> (i * nbits)) & mask);
    }
    std::uint64_t acc = 0;
    int bits = 0;
    std::size_t o = groups * static_cast<std::size_t>(nbits);
    for (std::size_t i = groups * 8; i < n; ++i) {
        while (bits < nbits) {
            acc |= static_cast<std::uint64_t>(p[o++]) << bits;
            bits += 8;
        }
        out[i] = static_cast<std::uint8_t>(acc & mask);
        acc >>= nbits;
        bits -= nbits;
    }
}

template <int Bits>
WP_FORCE_INLINE void unpack_fixed(const std::uint8_t* p, std::size_t n, std::uint8_t* out) {
    unpack_range_impl(p, n, Bits, out);
}

template <int Bits>
WP_FORCE_INLINE void unpack_dividing(const std::uint8_t* p, std::size_t n, std::uint8_t* out) {
    constexpr int kPer = 8 / Bits;
    constexpr std::uint32_t kMask = (1u << Bits) - 1u;
    const std::size_t whole = n / kPer;
    for (std::size_t j = 0; j < whole; ++j)
        for (int i = 0; i < kPer; ++i) out[j * kPer + i] = static_cast<std::uint8_t>((p[j] >> (i * Bits)) & kMask);
    if (n % kPer) unpack_range_impl(p + whole, n % kPer, Bits, out + whole * kPer);
}

WP_FORCE_INLINE void unpack6(const std::uint8_t* p, std::size_t n, std::uint8_t* out) {
    const std::size_t groups = n / 4;
    for (std::size_t g = 0; g < groups; ++g) {
        const std::uint32_t x = p[3 * g], y = p[3 * g + 1], z = p[3 * g + 2];
        out[4 * g] = static_cast<std::uint8_t>(x & 63u);
        out[4 * g + 1] = static_cast<std::uint8_t>(((x >> 6) | (y << 2)) & 63u);
        out[4 * g + 2] = static_cast<std::uint8_t>(((y >> 4) | (z << 4)) & 63u);
        out[4 * g + 3] = static_cast<std::uint8_t>(z >> 2);
    }
    if (n % 4) unpack_range_impl(p + groups * 3, n % 4, 6, out + groups * 4);
}

WP_FORCE_INLINE void unpack_range_body(const std::uint8_t* p, std::size_t n, int nbits, std::uint8_t* out) {
    switch (nbits) {
        case 8: std::memcpy(out, p, n); return;
        case 1: unpack_dividing<1>(p, n, out); return;
        case 2: unpack_dividing<2>(p, n, out); return;
        case 3: unpack_fixed<3>(p, n, out); return;
        case 4: unpack_dividing<4>(p, n, out); return;
        case 5: unpack_fixed<5>(p, n, out); return;
        case 6: unpack6(p, n, out); return;
        default: unpack_fixed<7>(p, n, out); return;
    }
}
WP_MULTIVERSION_FN(void, unpack_range,
                   (const std::uint8_t* p, std::size_t n, int nbits, std::uint8_t* out),
                   (p, n, nbits, out), unpack_range_body(p, n, nbits, out))

}  // namespace

void pack_bits_range(const std::uint8_t* values, std::size_t n, int nbits, std::uint8_t* out) {
    pack_range(values, n, nbits, out);
}

void pack_bits(const std::uint8_t* values, std::size_t n, int nbits, std::uint8_t* out, int threads) {
    const std::size_t chunks = (n + kChunkElems - 1) / kChunkElems;
    parallel_for(chunks, threads, [&](int, std::size_t c) {
        const std::size_t begin = c * kChunkElems, end = std::min(n, begin + kChunkElems);
        pack_range(values + begin, end - begin, nbits, out + begin / 8 * nbits);
    });
}

void unpack_bits(const std::uint8_t* packed, std::size_t n, int nbits, std::uint8_t* out, int threads) {
    const std::size_t chunks = (n + kChunkElems - 1) / kChunkElems;
    parallel_for(chunks, threads, [&](int, std::size_t c) {
        const std::size_t begin = c * kChunkElems, end = std::min(n, begin + kChunkElems);
        unpack_range(packed + begin / 8 * nbits, end - begin, nbits, out + begin);
    });
}

}  // namespace weightpress

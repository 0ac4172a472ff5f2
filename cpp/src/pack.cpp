#include "weightpress/pack.h"

#include <algorithm>
#include <cstring>

#include "weightpress/parallel.h"

namespace weightpress {
namespace {

// A chunk of 8 * 65536 elements (a multiple of 8) always starts on a byte boundary for every
// nbits, so chunks are independent and the result does not depend on the thread count.
constexpr std::size_t kChunkElems = 8 * 65536;

void pack_range(const std::uint8_t* v, std::size_t n, int nbits, std::uint8_t* out) {
    const std::uint32_t mask = (1u << nbits) - 1u;
    switch (nbits) {
        case 8:
            std::memcpy(out, v, n);
            return;
        case 4:
            for (std::size_t i = 0; i + 1 < n; i += 2)
                out[i / 2] = static_cast<std::uint8_t>((v[i] & 15u) | ((v[i + 1] & 15u) << 4));
            if (n & 1) out[n / 2] = static_cast<std::uint8_t>(v[n - 1] & 15u);
            return;
        default:
            break;
    }
    std::uint64_t acc = 0;
    int bits = 0;
    std::size_t o = 0;
    for (std::size_t i = 0; i < n; ++i) {
        acc |= static_cast<std::uint64_t>(v[i] & mask) << bits;
        bits += nbits;
        while (bits >= 8) {
            out[o++] = static_cast<std::uint8_t>(acc);
            acc >>= 8;
            bits -= 8;
        }
    }
    if (bits > 0) out[o] = static_cast<std::uint8_t>(acc);
}

void unpack_range(const std::uint8_t* p, std::size_t n, int nbits, std::uint8_t* out) {
    const std::uint32_t mask = (1u << nbits) - 1u;
    if (nbits == 8) {
        std::memcpy(out, p, n);
        return;
    }
    std::uint64_t acc = 0;
    int bits = 0;
    std::size_t o = 0;
    for (std::size_t i = 0; i < n; ++i) {
        while (bits < nbits) {
            acc |= static_cast<std::uint64_t>(p[o++]) << bits;
            bits += 8;
        }
        out[i] = static_cast<std::uint8_t>(acc & mask);
        acc >>= nbits;
        bits -= nbits;
    }
}

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

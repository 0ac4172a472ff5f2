// IEEE 754 binary16 conversions, exact and independent of compiler support for _Float16.
//
// half_from_double rounds a double straight to half (round to nearest, ties to even),
// which is what numpy's float64 -> float16 cast does. Going through float first can
// double-round, and coremltools casts its float64 centroids straight to float16.
#pragma once

#include <cstdint>
#include <cstring>

namespace weightpress {

inline double half_to_double(std::uint16_t h) {
    const int sign = h >> 15;
    const int exponent = (h >> 10) & 0x1f;
    const int mantissa = h & 0x3ff;
    double value;
    if (exponent == 0) {
        value = static_cast<double>(mantissa) * (1.0 / 16777216.0);  // m * 2^-24
    } else if (exponent == 31) {
        std::uint64_t bits = mantissa ? 0x7ff8000000000000ull : 0x7ff0000000000000ull;
        std::memcpy(&value, &bits, sizeof value);
    } else {
        std::uint64_t bits = (static_cast<std::uint64_t>(exponent - 15 + 1023) << 52) |
                             (static_cast<std::uint64_t>(mantissa) << 42);
        std::memcpy(&value, &bits, sizeof value);
    }
    return sign ? -value : value;
}

inline std::uint16_t half_from_double(double d) {
    std::uint64_t bits;
    std::memcpy(&bits, &d, sizeof bits);
    const std::uint16_t sign = static_cast<std::uint16_t>((bits >> 48) & 0x8000);
    const int exponent = static_cast<int>((bits >> 52) & 0x7ff);
    std::uint64_t mantissa = bits & 0xfffffffffffffull;
    if (exponent == 0x7ff) return sign | (mantissa ? 0x7e00 : 0x7c00);  // NaN / Inf
    const int e = exponent - 1023;                                    // unbiased
    if (e > 15) return sign | 0x7c00;                                 // overflow
    // Significand with the implicit bit, as a 53-bit integer.
    std::uint64_t significand = mantissa | (exponent ? (1ull << 52) : 0);
    // Number of low bits to drop so that the result has the half's precision:
    // normal halves keep 11 significant bits (e >= -14); subnormals fewer.
    int shift = (e >= -14) ? 42 : 42 + (-14 - e);
    if (shift > 53 + 1) return sign;  // far below the smallest subnormal: rounds to zero
    std::uint64_t kept = significand >> shift;
    const std::uint64_t rest = significand & ((1ull << shift) - 1);
    const std::uint64_t halfway = 1ull << (shift - 1);
    if (rest > halfway || (rest == halfway && (kept & 1))) ++kept;
    if (e >= -14) {
        // kept has 11 bits (or 12 after a carry that bumps the exponent).
        int he = e + 15;
        if (kept >> 11) {
            kept >>= 1;
            ++he;
        }
        if (he >= 31) return sign | 0x7c00;
        return sign | static_cast<std::uint16_t>((he << 10) | (kept & 0x3ff));
    }
    // Subnormal: kept counts units of 2^-24; a carry into 2^-14 gives the smallest normal.
    return sign | static_cast<std::uint16_t>(kept);
}

}  // namespace weightpress

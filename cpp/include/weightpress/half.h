// The CPU's fp16 toolkit: the bit-exact IEEE binary16 helpers of kernels/half_float.h
// (shared with the Metal kernels: decode, per-operation rounding, rint) plus what only the
// CPU needs, a double -> half conversion and fast paths for hot loops. Every fast path here
// is checked against the shared helpers by check_fp16_paths (tests/test_pack.py).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "weightpress/kernels/half_float.h"

namespace weightpress {

// Exact: every binary16 value is a float, and every float a double.
inline double half_to_double(std::uint16_t h) { return static_cast<double>(wp::half_to_float(h)); }

// half_from_double rounds a double straight to half (round to nearest, ties to even),
// which is what numpy's float64 -> float16 cast does. Going through float first can
// double-round, and coremltools casts its float64 centroids straight to float16.
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

// The decode as a 65,536-entry table (the quantizer's hot loop reads it instead of
// branching); filled from wp::half_to_float once.
const float* half_table();

// In-place rounding to the nearest half for the normal half range (2^-14 <= |x| < 65520,
// where it equals wp::round_half); returns 1 and leaves x untouched elsewhere, where the
// caller must use wp::round_half. Branch-free, so tile loops vectorise.
inline std::uint32_t round_half_fast(float& x) {
    std::uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    const std::uint32_t exponent = (u >> 23) & 0xff;
    const std::uint32_t rounded = (u + 0xfff + ((u >> 13) & 1)) & ~0x1fffu;
    const std::uint32_t ok = (exponent >= 113) & ((u & 0x7fffffffu) < 0x477ff000u);
    if (ok) std::memcpy(&x, &rounded, sizeof x);
    return ok ^ 1u;
}

// Mismatches between every CPU path and the shared helpers over `n` float samples (fast
// rounding vs wp::round_half, the decode table and half_to_double vs wp::half_to_float over
// all 65,536 patterns, half_from_double of a float vs wp::half_bits(wp::round_half)).
std::size_t check_fp16_paths(const float* samples, std::size_t n);

}  // namespace weightpress

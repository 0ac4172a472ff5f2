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

// wp::half_to_float without branches or a table, so that loops over fp16 data vectorise
// (x86 without F16C in the baseline, NEON, any width): normal halves by rebiasing the
// exponent, subnormals as mantissa * 2^-24 (an exact integer-to-float product), Inf/NaN by
// forcing the exponent to all ones. Checked over all 65,536 patterns by check_fp16_paths.
inline float half_to_float_branchless(std::uint32_t h) {
    const std::uint32_t magnitude = h & 0x7fffu;
    const std::uint32_t sign = (h & 0x8000u) << 16;
    const float subnormal = static_cast<float>(static_cast<std::int32_t>(magnitude)) * 5.9604644775390625e-8f;
    std::uint32_t subnormal_bits;
    std::memcpy(&subnormal_bits, &subnormal, sizeof subnormal_bits);
    // selects as masks: GCC if-converts these where it keeps `?:` as control flow
    const std::uint32_t is_special = 0u - static_cast<std::uint32_t>(magnitude >= 0x7c00u);
    const std::uint32_t is_subnormal = 0u - static_cast<std::uint32_t>(magnitude < 0x400u);
    // rebiased exponent; for Inf/NaN (exponent 31 -> 143) OR-ing 0xff covers it exactly
    std::uint32_t bits = ((magnitude << 13) + (112u << 23)) | (is_special & 0x7f800000u);
    bits = (bits & ~is_subnormal) | (subnormal_bits & is_subnormal);
    bits |= sign;
    float out;
    std::memcpy(&out, &bits, sizeof out);
    return out;
}

// wp::round_half inside the normal half range (2^-14 <= |x| < 65520), x unchanged outside
// it (zero, subnormal halves, overflow to Inf, Inf, NaN). Branch-free, so loops vectorise;
// a caller uses it only where it proves the outside cases do not matter (the quantizer:
// there rint and clipping give the same byte either way).
inline float round_half_in_normal_range(float x) {
    std::uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    const std::uint32_t exponent = (u >> 23) & 0xffu;
    const std::uint32_t rounded = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
    const std::uint32_t normal =
        0u - (static_cast<std::uint32_t>(exponent >= 113u) & static_cast<std::uint32_t>((u & 0x7fffffffu) < 0x477ff000u));
    u = (rounded & normal) | (u & ~normal);
    float out;
    std::memcpy(&out, &u, sizeof out);
    return out;
}

// wp::round_half without branches, for every input (loops over fp16 arithmetic vectorise):
// the normal range by rounding the mantissa, the subnormal range as multiples of 2^-24
// (rint of x * 2^24 is exact there: below 2^10), overflow to Inf, NaN unchanged.
inline float round_half_branchless(float x) {
    std::uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    const std::uint32_t sign = u & 0x80000000u;
    const std::uint32_t a = u & 0x7fffffffu;
    const std::uint32_t normal_bits = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
    float magnitude;
    std::memcpy(&magnitude, &a, sizeof magnitude);
    const float scaled = magnitude * 16777216.0f;  // exact: a power of two
    const float sub = ((scaled + 8388608.0f) - 8388608.0f) * 5.9604644775390625e-8f;
    std::uint32_t sub_bits;
    std::memcpy(&sub_bits, &sub, sizeof sub_bits);
    const std::uint32_t is_nan = 0u - static_cast<std::uint32_t>(a > 0x7f800000u);
    const std::uint32_t overflows = 0u - static_cast<std::uint32_t>(a >= 0x477ff000u);
    const std::uint32_t is_normal = 0u - static_cast<std::uint32_t>(a >= 0x38800000u);
    std::uint32_t bits = (normal_bits & is_normal) | ((sub_bits | sign) & ~is_normal);
    bits = (bits & ~overflows) | ((sign | 0x7f800000u) & overflows);
    bits = (bits & ~is_nan) | (u & is_nan);
    float out;
    std::memcpy(&out, &bits, sizeof out);
    return out;
}

// wp::half_bits without branches: the binary16 bits of a float that is a binary16 value.
inline std::uint32_t half_bits_branchless(float v) {
    std::uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    const std::uint32_t sign = (u >> 16) & 0x8000u;
    const std::uint32_t a = u & 0x7fffffffu;
    float magnitude;
    std::memcpy(&magnitude, &a, sizeof magnitude);
    const std::uint32_t normal = (((a >> 23) - 112u) << 10) | ((a >> 13) & 0x3ffu);
    const std::uint32_t sub = static_cast<std::uint32_t>(static_cast<std::int32_t>(magnitude * 16777216.0f));
    const std::uint32_t is_normal = 0u - static_cast<std::uint32_t>(a >= 0x38800000u);
    const std::uint32_t is_inf = 0u - static_cast<std::uint32_t>(a == 0x7f800000u);
    const std::uint32_t is_nan = 0u - static_cast<std::uint32_t>(a > 0x7f800000u);
    std::uint32_t bits = (normal & is_normal) | (sub & ~is_normal);
    bits = (bits & ~is_inf) | (0x7c00u & is_inf);
    bits = (bits & ~is_nan) | (0x7e00u & is_nan);
    return sign | bits;
}

// Mismatches between every CPU path and the shared helpers over `n` float samples
// (round_half_in_normal_range vs wp::round_half in the normal range and x outside it;
// round_half_branchless vs wp::round_half everywhere; half_bits_branchless vs wp::half_bits
// on every half value;
// half_to_float_branchless and half_to_double vs wp::half_to_float over all 65,536 patterns; half_from_double of a float vs wp::half_bits(wp::round_half)).
std::size_t check_fp16_paths(const float* samples, std::size_t n);

}  // namespace weightpress

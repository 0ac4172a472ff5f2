// fp16 <-> float32 without a half type or double: bit-exact IEEE conversions, round to
// nearest even. A binary16 operation is emulated as float32 compute + wp_round_half; for
// +, -, *, / of fp16 operands that double rounding is exact (24 >= 2 * 11 + 2 bits).
#pragma once

#include "portable.h"

namespace wp {

WP_INLINE float half_to_float(uint32_t h) {
    const uint32_t sign = (h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    const uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
        const float v = float(mantissa) * 5.9604644775390625e-8f;
        return wp_bits_float(wp_float_bits(v) | sign);
    }
    if (exponent == 31) return wp_bits_float(sign | 0x7f800000u | (mantissa << 13));
    return wp_bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

// Rounds |x| < 2^23 to an integer, half to even (np.rint), with the 2^23 trick.
WP_INLINE float rint_even(float x) {
    const float a = WP_MATH::fabs(x);
    if (!(a < 8388608.0f)) return x;
    return WP_MATH::copysign((a + 8388608.0f) - 8388608.0f, x);
}

// The float nearest to x among binary16 values (ties to even), as a float.
WP_INLINE float round_half(float x) {
    const uint32_t u = wp_float_bits(x);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return x;                                       // NaN
    if (a >= 0x477ff000u) return wp_bits_float((u & 0x80000000u) | 0x7f800000u);  // rounds to +-Inf
    if (a >= 0x38800000u) {                                              // normal half range
        const uint32_t rounded = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
        return wp_bits_float(rounded);
    }
    // subnormal half: multiples of 2^-24 (scaling by powers of two is exact)
    const float scaled = rint_even(x * 16777216.0f);
    return WP_MATH::copysign(scaled * 5.9604644775390625e-8f, x);
}

// Binary16 bits of a float that is already a binary16 value (from round_half).
WP_INLINE uint32_t half_bits(float v) {
    const uint32_t u = wp_float_bits(v);
    const uint32_t sign = (u >> 16) & 0x8000u;
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;
    if (a >= 0x7f800000u) return sign | 0x7c00u;
    if (a >= 0x38800000u) return sign | (((a >> 23) - 112u) << 10) | ((a >> 13) & 0x3ffu);
    return sign | uint32_t(wp_bits_float(a) * 16777216.0f);  // subnormal: exact integer
}

}  // namespace wp

#include "weightpress/half.h"

#include <cmath>

namespace weightpress {

namespace {

bool same_bits(float a, float b) {
    std::uint32_t x, y;
    std::memcpy(&x, &a, 4);
    std::memcpy(&y, &b, 4);
    return x == y || (a != a && b != b);  // any NaN equals any NaN
}

}  // namespace

std::size_t check_fp16_paths(const float* samples, std::size_t n) {
    std::size_t bad = 0;
    for (std::uint32_t h = 0; h < 65536; ++h) {
        const float shared = wp::half_to_float(h);
        bad += !same_bits(half_to_float_branchless(h), shared);
        const double d = half_to_double(static_cast<std::uint16_t>(h));
        bad += !(d == static_cast<double>(shared) || (d != d && shared != shared));
        if (!std::isnan(shared)) bad += wp::half_bits(shared) != h;  // the inverse of the decode
        bad += half_bits_branchless(shared) != wp::half_bits(shared);
    }
    for (std::size_t i = 0; i < n; ++i) {
        const float x = samples[i];
        const float shared = wp::round_half(x);
        const float a = std::fabs(x);
        const bool normal = a >= 6.103515625e-05f && a < 65520.0f;
        bad += !same_bits(round_half_in_normal_range(x), normal ? shared : x);
        bad += !same_bits(round_half_branchless(x), shared);
        bad += half_from_double(static_cast<double>(x)) != static_cast<std::uint16_t>(wp::half_bits(shared));
    }
    return bad;
}

}  // namespace weightpress

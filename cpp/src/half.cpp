#include "weightpress/half.h"

#include <cmath>

namespace weightpress {

const float* half_table() {
    static const float* table = [] {
        static float values[65536];
        for (std::uint32_t h = 0; h < 65536; ++h) values[h] = wp::half_to_float(h);
        return values;
    }();
    return table;
}

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
    const float* table = half_table();
    for (std::uint32_t h = 0; h < 65536; ++h) {
        const float shared = wp::half_to_float(h);
        bad += !same_bits(table[h], shared);
        const double d = half_to_double(static_cast<std::uint16_t>(h));
        bad += !(d == static_cast<double>(shared) || (d != d && shared != shared));
        if (!std::isnan(shared)) bad += wp::half_bits(shared) != h;  // the inverse of the decode
    }
    for (std::size_t i = 0; i < n; ++i) {
        const float x = samples[i];
        const float shared = wp::round_half(x);
        float fast = x;
        if (round_half_fast(fast) == 0) bad += !same_bits(fast, shared);
        bad += half_from_double(static_cast<double>(x)) != static_cast<std::uint16_t>(wp::half_bits(shared));
    }
    return bad;
}

}  // namespace weightpress

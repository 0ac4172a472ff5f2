// Shared by quantize.cpp and quantize_fit.cpp: walking one block of a QuantizeSpec.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "weightpress/quantize.h"

namespace weightpress::detail {

// The integers the spec's dtype holds: [-2^(n-1), 2^(n-1) - 1] signed, [0, 2^n - 1] unsigned.
inline int full_range_lo(const QuantizeSpec& s) { return s.is_signed ? -(1 << (s.nbits - 1)) : 0; }
inline int full_range_hi(const QuantizeSpec& s) {
    return s.is_signed ? (1 << (s.nbits - 1)) - 1 : (1 << s.nbits) - 1;
}

// The spec every quantization kernel accepts (std::invalid_argument otherwise).
inline void check_spec(const QuantizeSpec& s) {
    if (s.rank < 1 || s.rank > 8) throw std::invalid_argument("quantize: rank must be in [1, 8]");
    if (s.nbits != 4 && s.nbits != 8) throw std::invalid_argument("quantize: nbits must be 4 or 8");
    for (int a = 0; a < s.rank; ++a)
        if (s.block[a] <= 0 || s.shape[a] % s.block[a] != 0)
            throw std::invalid_argument("quantize: block sizes must divide the shape");
}

// Visits the elements of block `b` as runs of contiguous memory: f(offset, length).
template <typename F>
inline void for_each_run(const QuantizeSpec& s, std::size_t b, F&& f) {
    std::int64_t grid[8], start[8], stride[8];
    std::int64_t rem = static_cast<std::int64_t>(b);
    for (int a = s.rank - 1; a >= 0; --a) {
        grid[a] = s.shape[a] / s.block[a];
        start[a] = (rem % grid[a]) * s.block[a];
        rem /= grid[a];
    }
    stride[s.rank - 1] = 1;
    for (int a = s.rank - 2; a >= 0; --a) stride[a] = stride[a + 1] * s.shape[a + 1];
    // Merge trailing axes that the block covers entirely into one contiguous run.
    int inner = s.rank - 1;
    std::int64_t run = s.block[inner];
    while (inner > 0 && s.block[inner] == s.shape[inner]) {
        --inner;
        run *= s.block[inner];
    }
    std::int64_t idx[8] = {0};
    for (;;) {
        std::int64_t offset = 0;
        for (int a = 0; a < inner; ++a) offset += (start[a] + idx[a]) * stride[a];
        offset += start[inner] * stride[inner];
        f(static_cast<std::size_t>(offset), static_cast<std::size_t>(run));
        int a = inner - 1;
        for (; a >= 0; --a) {
            if (++idx[a] < s.block[a]) break;
            idx[a] = 0;
        }
        if (a < 0) return;
    }
}

}  // namespace weightpress::detail

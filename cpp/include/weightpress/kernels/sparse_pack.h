// Pruning's outputs in two passes: the mask bytes (bit b of byte j = element 8j + b is kept,
// LSB-first as numpy's packbits little) with their population counts, then, after an
// exclusive scan of the counts, the kept values gathered in C order. Kept = not zero and
// |w| > cut (ties at the cut are pruned, as coremltools; docs/formats.md, "Pruning").
#pragma once

#include "half_float.h"
#include "params.h"

namespace wp {

WP_INLINE bool sparse_keep(WP_CONST_DEVICE uint16_t* h16, WP_CONST_DEVICE uint32_t* f32, SparseParams p, uint32_t e) {
    // |w| from the bit pattern: exact, and the same for fp16 and float32
    const float a = p.is_half ? half_to_float(uint32_t(h16[e]) & 0x7fffu) : WP_MATH::fabs(wp_bits_float(f32[e]));
    return a != 0.0f && a > wp_bits_float(p.cut_bits);
}

WP_INLINE uint32_t sparse_mask_byte(WP_CONST_DEVICE uint16_t* h16, WP_CONST_DEVICE uint32_t* f32, SparseParams p,
                                    uint32_t j) {
    uint32_t byte = 0;
    for (uint32_t b = 0; b < 8u; ++b) {
        const uint32_t e = j * 8u + b;
        if (e >= p.count) break;
        byte |= uint32_t(sparse_keep(h16, f32, p, e)) << b;
    }
    return byte;
}

WP_INLINE uint32_t popcount8(uint32_t byte) {
    uint32_t n = 0;
    for (uint32_t b = 0; b < 8u; ++b) n += (byte >> b) & 1u;
    return n;
}

// Writes the kept values of mask byte j starting at out[offset] (its exclusive scan entry).
WP_INLINE void sparse_gather_byte(WP_CONST_DEVICE uint16_t* h16, WP_CONST_DEVICE uint32_t* f32, SparseParams p,
                                  uint32_t mask, uint32_t offset, WP_DEVICE uint16_t* out16, WP_DEVICE uint32_t* out32,
                                  uint32_t j) {
    for (uint32_t b = 0; b < 8u; ++b) {
        if (!((mask >> b) & 1u)) continue;
        const uint32_t e = j * 8u + b;
        if (p.is_half) {
            out16[offset] = h16[e];
        } else {
            out32[offset] = f32[e];
        }
        ++offset;
    }
}

}  // namespace wp

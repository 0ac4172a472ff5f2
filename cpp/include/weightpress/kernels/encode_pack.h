// LUT encoding fused with sub-byte packing, one output byte per call: byte j holds stream
// bits [8j, 8j + 8) of the LSB-first stream in which element e occupies bits
// [e * nbits, (e + 1) * nbits) (Core ML's packing, docs/formats.md; elements may straddle bytes for 3 and 6
// bits). Every byte is computed independently, so any thread count gives the same bytes.
#pragma once

#include "params.h"

namespace wp {

// codes: the LUT index of every fp16 bit pattern (what the clustering decided).
WP_INLINE uint32_t encode_pack_byte(WP_CONST_DEVICE uint16_t* values, WP_CONST_DEVICE uint8_t* codes,
                                    EncodePackParams p, uint32_t j) {
    uint32_t byte = 0;
    for (uint32_t b = 0; b < 8u; ++b) {
        const uint32_t bit = j * 8u + b;
        const uint32_t e = bit / p.nbits;
        if (e >= p.count) break;
        byte |= ((uint32_t(codes[values[e]]) >> (bit - e * p.nbits)) & 1u) << b;
    }
    return byte;
}

// The same packing of small integers given directly (quantized data, int4 as two's complement).
WP_INLINE uint32_t pack_byte(WP_CONST_DEVICE uint8_t* values, uint32_t count, uint32_t nbits, uint32_t j) {
    uint32_t byte = 0;
    for (uint32_t b = 0; b < 8u; ++b) {
        const uint32_t bit = j * 8u + b;
        const uint32_t e = bit / nbits;
        if (e >= count) break;
        byte |= ((uint32_t(values[e]) >> (bit - e * nbits)) & 1u) << b;
    }
    return byte;
}

}  // namespace wp

// LUT encode + sub-byte pack, and plain sub-byte packing: one output byte per thread.
#include "weightpress/kernels/encode_pack.h"

kernel void wp_encode_pack(const device uint16_t* values [[buffer(0)]],
                           const device uint8_t* codes [[buffer(1)]],
                           device uint8_t* packed [[buffer(2)]],
                           constant wp::EncodePackParams& p [[buffer(3)]],
                           uint gid [[thread_position_in_grid]]) {
    if (gid < p.packed_bytes) packed[gid] = uint8_t(wp::encode_pack_byte(values, codes, p, gid));
}

kernel void wp_pack_bits(const device uint8_t* values [[buffer(0)]],
                         device uint8_t* packed [[buffer(1)]],
                         constant wp::EncodePackParams& p [[buffer(2)]],
                         uint gid [[thread_position_in_grid]]) {
    if (gid < p.packed_bytes) packed[gid] = uint8_t(wp::pack_byte(values, p.count, p.nbits, gid));
}

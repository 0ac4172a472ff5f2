// Blockwise quantization: one threadgroup per block. The lanes reduce the block's min and
// max (simdgroup reductions, then across simdgroups through threadgroup memory), thread 0
// derives scale and zero point, then every lane quantizes its strided share of the block.
// Data is one byte per element; wp_pack_bits packs 4-bit data afterwards.
#include "weightpress/kernels/quantize_block.h"

kernel void wp_quantize_block(const device uint16_t* h16 [[buffer(0)]],
                              const device float* f32 [[buffer(1)]],
                              device uint8_t* data [[buffer(2)]],
                              device uint32_t* scale_bits [[buffer(3)]],
                              device uint8_t* zero_point [[buffer(4)]],
                              constant wp::QuantizeParams& p [[buffer(5)]],
                              uint block [[threadgroup_position_in_grid]],
                              uint lane [[thread_position_in_threadgroup]],
                              uint lanes [[threads_per_threadgroup]],
                              uint simd_lane [[thread_index_in_simdgroup]],
                              uint simd_group [[simdgroup_index_in_threadgroup]]) {
    WP_THREADGROUP_ARRAY(float, group_min, 32);
    WP_THREADGROUP_ARRAY(float, group_max, 32);
    WP_THREADGROUP_ARRAY(float, block_q, 3);
    const uint32_t size = p.block_rows * p.block_cols;
    float mn = INFINITY, mx = -INFINITY;
    for (uint32_t t = lane; t < size; t += lanes) {
        const float v = wp::load_value(h16, f32, p.is_half, wp::block_element(p, block, t));
        mn = metal::min(mn, v);
        mx = metal::max(mx, v);
    }
    mn = simd_min(mn);
    mx = simd_max(mx);
    if (simd_lane == 0) {
        group_min[simd_group] = mn;
        group_max[simd_group] = mx;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (lane == 0) {
        const uint32_t groups = (lanes + 31u) / 32u;
        for (uint32_t g = 1; g < groups; ++g) {
            mn = metal::min(mn, group_min[g]);
            mx = metal::max(mx, group_max[g]);
        }
        const wp::BlockQuant q = wp::block_qparams(mn, mx, p.nbits, p.is_signed, p.symmetric, p.is_half);
        block_q[0] = q.scale;
        block_q[1] = q.zp;
        block_q[2] = q.stored_zp;
        scale_bits[block] = p.is_half ? wp::half_bits(q.scale) : wp_float_bits(q.scale);
        zero_point[block] = uint8_t(uint32_t(int(q.stored_zp)) & 0xffu);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    wp::BlockQuant q;
    q.scale = block_q[0];
    q.zp = block_q[1];
    q.stored_zp = block_q[2];
    const wp::QuantRange r = wp::quant_range(p.nbits, p.is_signed, p.symmetric);
    for (uint32_t t = lane; t < size; t += lanes) {
        const uint32_t e = wp::block_element(p, block, t);
        data[e] = uint8_t(wp::quantize_value(wp::load_value(h16, f32, p.is_half, e), q, r, p.is_half));
    }
}

// Blockwise linear quantization, bit-identical to coremltools 9.0's compute_qparams_by_dtype
// (see weightpress/quantize.h and docs/formats.md, "Linear quantization", for the formulas): the per-block parameters from the block's
// min and max, then every element. fp16 arithmetic is emulated per operation (round_half).
// The CPU backend (cpp/src/quantize.cpp) computes its block parameters with block_qparams.
#pragma once

#include "half_float.h"
#include "params.h"

namespace wp {

struct QuantRange {
    float qmin;
    float qmax;
};

struct BlockQuant {
    float scale;
    float zp;      // added to rint(w / scale); 0 when the mode has no zero point
    float stored_zp;  // the zero point as stored (clipped; NaN -> 0)
};

WP_INLINE QuantRange quant_range(uint32_t nbits, uint32_t is_signed, uint32_t symmetric) {
    const int levels = 1 << nbits;
    QuantRange r;
    if (is_signed) {
        r.qmin = float(-levels / 2 + (symmetric ? 1 : 0));
        r.qmax = float(levels / 2 - 1);
    } else {
        r.qmin = 0.0f;
        r.qmax = float(levels - 1 - (symmetric ? 1 : 0));
    }
    return r;
}

WP_INLINE float in_dtype(float x, uint32_t is_half) { return is_half ? round_half(x) : x; }

WP_INLINE float clip_to_byte(float v, QuantRange r) {
    if (v != v) return 0.0f;  // numpy: NaN cast to a small int is 0 on x86
    return WP_MATH::min(WP_MATH::max(v, r.qmin), r.qmax);
}

// mn, mx: the block's minimum and maximum (finite).
WP_INLINE BlockQuant block_qparams(float mn, float mx, uint32_t nbits, uint32_t is_signed, uint32_t symmetric,
                                   uint32_t is_half) {
    const QuantRange r = quant_range(nbits, is_signed, symmetric);
    float lo, hi;
    if (symmetric) {
        const float m = WP_MATH::max(WP_MATH::fabs(mn), WP_MATH::fabs(mx));
        lo = -m;
        hi = m;
    } else {
        lo = mn < 0.0f ? mn : 0.0f;  // np.minimum(0.0, min) keeps +0 for a -0 minimum
        hi = mx > 0.0f ? mx : 0.0f;
    }
    const float range = in_dtype(hi - lo, is_half);
    BlockQuant q;
    q.scale = in_dtype(range / (r.qmax - r.qmin), is_half);
    q.zp = 0.0f;
    const bool has_zp = !(is_signed && symmetric);
    if (has_zp) {
        if (symmetric) {
            q.zp = float(int(r.qmax) / 2);
        } else {
            const float num = in_dtype(in_dtype(r.qmin * hi, is_half) - in_dtype(r.qmax * lo, is_half), is_half);
            q.zp = rint_even(in_dtype(num / range, is_half));
            if (!(q.zp != q.zp)) q.zp = WP_MATH::min(WP_MATH::max(q.zp, r.qmin), r.qmax);
        }
    }
    q.stored_zp = clip_to_byte(q.zp, r);
    return q;
}

// One element: clip(rint(w / scale) + zp) as the stored byte (int8 two's complement or uint8).
WP_INLINE uint32_t quantize_value(float w, BlockQuant q, QuantRange r, uint32_t is_half) {
    const float x = in_dtype(w / q.scale, is_half);
    const float v = clip_to_byte(rint_even(x) + q.zp, r);
    return uint32_t(int(v)) & 0xffu;
}

WP_INLINE float load_value(WP_CONST_DEVICE uint16_t* h16, WP_CONST_DEVICE float* f32, uint32_t is_half, uint32_t i) {
    return is_half ? half_to_float(h16[i]) : f32[i];
}

// Element t of block b (blocks of block_rows x block_cols over a rows x cols matrix, C order).
WP_INLINE uint32_t block_element(QuantizeParams p, uint32_t b, uint32_t t) {
    const uint32_t blocks_per_row = p.cols / p.block_cols;
    const uint32_t r = (b / blocks_per_row) * p.block_rows + t / p.block_cols;
    const uint32_t c = (b % blocks_per_row) * p.block_cols + t % p.block_cols;
    return r * p.cols + c;
}

}  // namespace wp

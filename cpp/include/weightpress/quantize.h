// Blockwise linear quantization, bit-identical to coremltools 9.0's
// optimize/_utils.py::compute_qparams_by_dtype (docs/formats.md, "Linear quantization").
//
// Layout: an N-D weight (rank <= 8) of shape `shape`, split into blocks of `block` elements
// per axis (block[a] divides shape[a]; block[a] == shape[a] means the whole axis). Blocks
// are numbered in C order of the block grid (shape[a] / block[a] per axis), which is the
// C order of coremltools' scale array.
//
// Arithmetic is done in the weight's dtype: for fp16 every numpy operation is emulated as
// float32 compute + round-to-nearest-even to half, exactly as numpy's half loops do.
//   symmetric: R = max(|min|, |max|), lo = -R, hi = R;  linear: lo = min(0, min), hi = max(0, max)
//   scale = (hi - lo) / (qmax - qmin);  q = rint(w / scale)
//   zero point: unsigned symmetric: qmax / 2 (integer division); linear:
//     clip(rint((qmin*hi - qmax*lo) / (hi - lo)), qmin, qmax); signed symmetric: none
//   q = clip(q + zp, qmin, qmax) -> integer; NaN (all-zero blocks: 0/0) becomes 0.
#pragma once

#include <cstddef>
#include <cstdint>

namespace weightpress {

struct QuantizeSpec {
    int rank;
    std::int64_t shape[8];
    std::int64_t block[8];
    int nbits;       // 4 or 8
    bool is_signed;  // int4/int8 vs uint4/uint8
    bool symmetric;  // linear_symmetric vs linear
};

// Number of blocks = prod(shape / block).
std::size_t quantize_block_count(const QuantizeSpec& spec);

// weight: fp16 bit patterns (quantize_f16) or float32 values (quantize_f32), C order.
// data: one int8/uint8 byte per element (weight's shape), or with `pack` the elements packed
// to nbits LSB-first (pack.h; packed_size(n, nbits) bytes), as Core ML stores them. scale: per block, in the weight's
// dtype (fp16 bits or float). zero_point: per block (int8/uint8 bytes) or nullptr when the
// mode has none (signed symmetric).
void quantize_f16(const std::uint16_t* weight, const QuantizeSpec& spec, int threads, std::uint8_t* data,
                  std::uint16_t* scale, std::uint8_t* zero_point, bool pack = false);
void quantize_f32(const float* weight, const QuantizeSpec& spec, int threads, std::uint8_t* data, float* scale,
                  std::uint8_t* zero_point, bool pack = false);

// The sum of squared differences, in double, between the weight and its dequantization
// scale * (data - zero_point) as constexpr_blockwise_shift_scale computes it in the weight's
// dtype (fp16: one rounding of an exact product). data as quantize_* wrote it (packed or
// not); the sum is independent of the thread count.
double quantize_sse_f16(const std::uint16_t* weight, const QuantizeSpec& spec, const std::uint8_t* data, bool packed,
                        const std::uint16_t* scale, const std::uint8_t* zero_point, int threads);
double quantize_sse_f32(const float* weight, const QuantizeSpec& spec, const std::uint8_t* data, bool packed,
                        const float* scale, const std::uint8_t* zero_point, int threads);

}  // namespace weightpress

// Parameter blocks shared by the host (C++ / Objective-C++) and the kernels: scalars only,
// 4-byte fields, sizes asserted on both sides so a layout mismatch cannot go unnoticed.
#pragma once

#include "portable.h"

namespace wp {

struct HistogramParams {
    uint32_t count;  // fp16 values
};

struct EncodePackParams {
    uint32_t count;         // values
    uint32_t nbits;         // 1, 2, 3, 4, 6 or 8
    uint32_t packed_bytes;  // ceil(count * nbits / 8)
};

struct NearestParams {
    uint32_t points;
    uint32_t centroids;
    uint32_t dim;
};

// A weight viewed as rows x cols (C order) in blocks of block_rows x block_cols.
struct QuantizeParams {
    uint32_t rows;
    uint32_t cols;
    uint32_t block_rows;
    uint32_t block_cols;
    uint32_t nbits;      // 4 or 8
    uint32_t is_signed;  // int4/int8
    uint32_t symmetric;  // linear_symmetric
    uint32_t is_half;    // values are fp16 bit patterns (else float32 bits)
};

struct SparseParams {
    uint32_t count;
    uint32_t mask_bytes;  // ceil(count / 8)
    uint32_t is_half;
    uint32_t cut_bits;  // |w| <= cut is pruned; cut as float32 bits (exact for fp16 values)
};

static_assert(sizeof(HistogramParams) == 4, "HistogramParams layout");
static_assert(sizeof(EncodePackParams) == 12, "EncodePackParams layout");
static_assert(sizeof(NearestParams) == 12, "NearestParams layout");
static_assert(sizeof(QuantizeParams) == 32, "QuantizeParams layout");
static_assert(sizeof(SparseParams) == 16, "SparseParams layout");

}  // namespace wp

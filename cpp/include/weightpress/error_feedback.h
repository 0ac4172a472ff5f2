// Error feedback (GPTQ-style rounding): a weight's stored numbers chosen column by column, each
// column's rounding error pushed into the columns not yet rounded, so that the layer's output
// on calibration inputs X errs as little as the format allows. The format does not change: the
// LUT (or the scales and zero points) stay as given; only the indices (or integers) differ.
//
// For a linear weight W (rows = output channels, cols = input channels) and H = X^T X:
//   1. damping: H + lambda * mean(diag H) * I (a column no input ever excites gets diag 1);
//   2. U: the upper Cholesky factor of H^-1 (H^-1 = U^T U);
//   3. for each column i in order, every row r: q = the nearest representable value of
//      W[r][i] (as Core ML decodes it); e = (W[r][i] - q) / U[i][i]; W[r][j] -= e * U[i][j]
//      for j > i.
// Rows are independent: each runs its columns in the same order whatever the thread count
// (and fp contraction is off), so the result does not depend on threads or tiling.
#pragma once

#include <cstddef>
#include <cstdint>

namespace weightpress {

// Step 1 and 2 in place: H (n x n, row-major, symmetric; its lower triangle is read) becomes
// U (upper triangle; the strict lower triangle is zeroed). Returns false when H is not
// positive definite even after damping (NaN in the statistics, or damping 0 with a
// rank-deficient H). The result does not depend on `threads`.
bool inverse_hessian_factor(double* h, std::size_t n, double damping, int threads = 1);

// What a weight element may become.
struct FeedbackTarget {
    bool half = false;  // the weight's dtype: fp16 (values decode through fp16 rounding) or fp32
    // Palettization: entries[lut_of_row[r] * lut_size + k] are the LUT values (already values of
    // the dtype), the code is the entry's index.
    const float* entries = nullptr;
    const std::int32_t* lut_of_row = nullptr;
    int lut_size = 0;
    // Linear quantization (entries == nullptr): per (row, column block) a scale (a value of the
    // dtype) and a zero point; code = level, clipped to [qmin, qmax]; value = scale * (code - zp)
    // decoded in the dtype.
    const float* scales = nullptr;
    const std::int32_t* zero_points = nullptr;  // nullptr: 0
    std::size_t col_block = 0;                  // columns per block (cols for per-channel)
    int qmin = 0, qmax = 0;
};

// Step 3. w: rows x cols (row-major, double), the weight; overwritten with what remains of it
// (not needed after). codes: rows x cols, the chosen index or level per element.
void error_feedback(double* w, std::size_t rows, std::size_t cols, const double* u, const FeedbackTarget& target,
                    std::int32_t* codes, int threads);

}  // namespace weightpress

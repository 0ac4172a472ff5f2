// Best-error quantization parameters (fit = "best"; docs/formats.md, "Best-error scales").
//
// coremltools derives a block's scale from its extrema alone. The scale that minimises the
// block's squared error is found here instead, over the full integer range of the dtype
// (int4: -8..7, where coremltools' symmetric mode stops at -7):
//
//   E(s) = sum_i (w_i - s * clip(round(w_i / s), lo, hi))^2,   lo <= 0 <= hi the levels
//
// For a fixed assignment of levels E is a quadratic in s; the assignment changes only at
// the breakpoints s = |w_i| / (k + 1/2), where E is continuous (both roundings err equally).
// Sweeping every breakpoint in order and minimising each piece's quadratic over its
// interval gives the global minimum over real s. Two monotone lower bounds limit the sweep
// to where that minimum can lie: the clipping error sum max(0, |w_i| - s*cap_i)^2 (falls as
// s grows) and the error of the elements that round to zero, sum_{|w_i| < s/2} w_i^2
// (rises), each against the error of a feasible scale.
//
// The stored scale is a value of the weight's dtype, and Core ML decodes in that dtype, so
// the last step is decided in the decoder's own arithmetic: the dtype neighbours of the
// best local minima, and coremltools' own scale, each with every element at its nearest
// level as decoded, the smallest error winning (ties: coremltools' parameters, else the
// smallest zero point, then scale). The result is never worse than coremltools' parameters.
//
// Affine modes (a zero point) repeat the sweep for candidate zero points: every one for
// 4-bit dtypes, coremltools' and its four nearest for 8-bit (a search, not an exhaustive
// optimum); coremltools' own (scale, zero point) is always a candidate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "weightpress/quantize.h"

namespace weightpress {

// Same layout and outputs as quantize_f16 / quantize_f32 (quantize.h).
void quantize_best_f16(const std::uint16_t* weight, const QuantizeSpec& spec, int threads, std::uint8_t* data,
                       std::uint16_t* scale, std::uint8_t* zero_point, bool pack = false);
void quantize_best_f32(const float* weight, const QuantizeSpec& spec, int threads, std::uint8_t* data, float* scale,
                       std::uint8_t* zero_point, bool pack = false);

// The real-arithmetic core, for tests: local minima of E(s) over s > 0 for levels lo..hi,
// best first (at most `keep`), as (scale, error) in double. Empty when no scale matters
// (every value zero, or no value can reach a nonzero level).
struct ScaleCandidate {
    double scale;
    double error;
};
std::vector<ScaleCandidate> best_real_scales(const double* w, std::size_t n, int lo, int hi, std::size_t keep = 8);

}  // namespace weightpress

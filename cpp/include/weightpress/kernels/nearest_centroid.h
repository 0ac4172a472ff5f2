// Nearest centroid of one point (vector palettization's assignment step): squared L2 in
// float32, the lowest index among equal distances.
#pragma once

#include "params.h"

namespace wp {

WP_INLINE uint32_t nearest_centroid(WP_CONST_DEVICE float* points, WP_CONST_DEVICE float* centroids, NearestParams p,
                                    uint32_t i) {
    uint32_t best = 0;
    float best_d = 0.0f;
    for (uint32_t c = 0; c < p.centroids; ++c) {
        float d = 0.0f;
        for (uint32_t t = 0; t < p.dim; ++t) {
            const float diff = points[i * p.dim + t] - centroids[c * p.dim + t];
            const float sq = diff * diff;
            d = d + sq;
        }
        if (c == 0 || d < best_d) {
            best_d = d;
            best = c;
        }
    }
    return best;
}

}  // namespace wp

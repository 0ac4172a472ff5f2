// Vector palettization's assignment step: one point per thread.
#include "weightpress/kernels/nearest_centroid.h"

kernel void wp_nearest_centroid(const device float* points [[buffer(0)]],
                                const device float* centroids [[buffer(1)]],
                                device uint32_t* labels [[buffer(2)]],
                                constant wp::NearestParams& p [[buffer(3)]],
                                uint gid [[thread_position_in_grid]]) {
    if (gid < p.points) labels[gid] = wp::nearest_centroid(points, centroids, p, gid);
}

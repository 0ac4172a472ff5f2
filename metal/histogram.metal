// fp16 histogram over 65,536 bins (device atomics: the table is too large for threadgroup memory).
#include "weightpress/kernels/histogram.h"

kernel void wp_histogram_f16(const device uint16_t* values [[buffer(0)]],
                             device wp_atomic_u32* bins [[buffer(1)]],
                             constant wp::HistogramParams& p [[buffer(2)]],
                             uint gid [[thread_position_in_grid]]) {
    if (gid < p.count) wp::histogram_add(values, bins, gid);
}

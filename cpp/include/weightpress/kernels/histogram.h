// fp16 histogram: one count per 16-bit pattern (65,536 bins). Counting is order-free, so
// any schedule gives the same bins as the CPU's.
#pragma once

#include "params.h"

namespace wp {

WP_INLINE void histogram_add(WP_CONST_DEVICE uint16_t* values, WP_DEVICE wp_atomic_u32* bins, uint32_t i) {
    wp_atomic_add(bins + values[i], 1u);
}

}  // namespace wp

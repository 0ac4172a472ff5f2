// Host names of the Metal kernels: the [[kernel]] functions in metal/*.metal are named
// "wp_" + name, and the host looks pipelines up through this list only.
#pragma once

#define WP_METAL_KERNELS(X)  \
    X(histogram_f16)         \
    X(encode_pack)           \
    X(pack_bits)             \
    X(nearest_centroid)      \
    X(quantize_block)        \
    X(sparse_mask)           \
    X(sparse_gather)

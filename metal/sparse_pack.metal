// Pruning outputs: mask bytes and their population counts (pass 1), an exclusive scan of
// the counts on the host, then the kept values gathered in C order (pass 2).
#include "weightpress/kernels/sparse_pack.h"

kernel void wp_sparse_mask(const device uint16_t* h16 [[buffer(0)]],
                           const device uint32_t* f32 [[buffer(1)]],
                           device uint8_t* mask [[buffer(2)]],
                           device uint32_t* counts [[buffer(3)]],
                           constant wp::SparseParams& p [[buffer(4)]],
                           uint gid [[thread_position_in_grid]]) {
    if (gid >= p.mask_bytes) return;
    const uint32_t byte = wp::sparse_mask_byte(h16, f32, p, gid);
    mask[gid] = uint8_t(byte);
    counts[gid] = wp::popcount8(byte);
}

kernel void wp_sparse_gather(const device uint16_t* h16 [[buffer(0)]],
                             const device uint32_t* f32 [[buffer(1)]],
                             const device uint8_t* mask [[buffer(2)]],
                             const device uint32_t* offsets [[buffer(3)]],
                             device uint16_t* out16 [[buffer(4)]],
                             device uint32_t* out32 [[buffer(5)]],
                             constant wp::SparseParams& p [[buffer(6)]],
                             uint gid [[thread_position_in_grid]]) {
    if (gid < p.mask_bytes) wp::sparse_gather_byte(h16, f32, p, mask[gid], offsets[gid], out16, out32, gid);
}

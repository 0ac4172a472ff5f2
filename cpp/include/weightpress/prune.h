// Pruning kernels (docs/formats.md, "Pruning" and "Bit packing").
//
// sparsify_mask_* then sparsify_gather_*: decide which elements survive and pack the mask
// LSB-first (numpy packbits(bitorder="little")), then gather the surviving values in C order
// into an array of exactly plan.survivors (allocated between the two calls). An element
// survives when it is not pruned and is not zero (coremltools' mask is W' != 0, so zeros
// that existed before pruning are masked out too).
//   pruned by threshold: magnitude <= threshold, where magnitude is |w| or a caller-given
//   map (block sparsity) and the comparison is exact in the weight's dtype;
//   or pruned by a caller-given byte mask (n:m).
// plan.nonfinite: the weight holds NaN or Inf (the caller refuses it; gather is not called).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace weightpress {

struct SparsifyPlan {
    std::vector<std::size_t> offsets;  // survivors before each chunk (exclusive scan)
    std::size_t survivors = 0;
    bool nonfinite = false;
};

SparsifyPlan sparsify_mask_f16(const std::uint16_t* w, std::size_t n, const std::uint16_t* magnitude,
                               const std::uint8_t* pruned, float threshold, int threads, std::uint8_t* packed_mask);
SparsifyPlan sparsify_mask_f32(const float* w, std::size_t n, const float* magnitude, const std::uint8_t* pruned,
                               float threshold, int threads, std::uint8_t* packed_mask);
void sparsify_gather_f16(const std::uint16_t* w, std::size_t n, const std::uint8_t* packed_mask,
                         const SparsifyPlan& plan, int threads, std::uint16_t* nonzero);
void sparsify_gather_f32(const float* w, std::size_t n, const std::uint8_t* packed_mask, const SparsifyPlan& plan,
                         int threads, float* nonzero);

// Order statistics of magnitudes |x| (the percentile's neighbours): out[j] is the ks[j]-th
// smallest |x| (0-based). fp16: one counting pass over the 32,768 non-negative bit patterns
// (their order is the value order); fp32: selection (nth_element) on a copy.
void order_statistics_f16(const std::uint16_t* magnitude, std::size_t n, const std::size_t* ks, std::size_t count,
                          int threads, std::uint16_t* out);
void order_statistics_f32(const float* magnitude, std::size_t n, const std::size_t* ks, std::size_t count,
                          float* out);

// Block sparsity magnitude map (coremltools' _apply_block_sparsity): the weight seen as
// [outer, channel, inner] (dim 0: outer = 1; dim 1: outer = shape[0]); channels are cut into
// blocks of `block` (the last one zero-padded) and every element gets its block's L2 norm
// sqrt(sum over the block's channels of w^2), summed in channel order, in the weight dtype
// (fp16: rounded to half after every operation, as numpy).
void block_magnitude_f16(const std::uint16_t* w, std::size_t outer, std::size_t channel, std::size_t inner,
                         std::size_t block, int threads, std::uint16_t* out);
void block_magnitude_f32(const float* w, std::size_t outer, std::size_t channel, std::size_t inner,
                         std::size_t block, int threads, float* out);

// n:m selection on a weight seen as [outer, channel, inner] bit patterns (fp16 or fp32, C
// order, no NaN): along the channel axis, for every outer and inner position, groups of m
// (the last one padded with zero magnitudes past `channel`, as coremltools pads); in each
// group the n smallest magnitudes are pruned, the lower index first among equal ones.
// pruned has the weight's layout: 1 = pruned.
void nm_prune_mask_f16(const std::uint16_t* bits, std::size_t outer, std::size_t channel, std::size_t inner, int n,
                       int m, int threads, std::uint8_t* pruned);
void nm_prune_mask_f32(const std::uint32_t* bits, std::size_t outer, std::size_t channel, std::size_t inner, int n,
                       int m, int threads, std::uint8_t* pruned);

}  // namespace weightpress

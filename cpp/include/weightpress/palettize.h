// Scalar (cluster_dim == 1) k-means palettization of independent groups.
//
// Input: G groups of L contiguous elements (the caller has already swapped the channel
// axis to the front and split it into groups, as coremltools does: docs/formats.md,
// "Palettization"), either fp16 bit
// patterns or fp32 values, optional per-element importance (>= 0).
// Per group: the distinct values are collected (fp16: one histogram over the 65,536 bit
// patterns; fp32: sort + unique), clustered optimally by kmeans1d_optimal into
// k = min(#distinct, 2^nbits) clusters, and every element is encoded as its cluster id.
//
// Output per group g (arrays are row-major, g first):
//   centroids[g*K + c]  float64 cluster means, ascending, zero-padded to K = 2^nbits
//   indices[g*L + e]    cluster id of element e (0 <= id < k)
//   objective[g]        weighted SSE of the partition against the float64 centroids
//   sse[g]              plain SSE after the centroids are cast to the weight's dtype
//   clusters[g]         k
// Distinct values with zero total importance do not influence the clustering; they are
// encoded to the nearest centroid. ±0 count as one value (+0 unless every zero is -0).
// Results do not depend on the thread count.
#pragma once

#include <cstddef>
#include <cstdint>

namespace weightpress {

struct ScalarPalettizeOutput {
    double* centroids;
    std::uint8_t* indices;
    double* objective;
    double* sse;
    std::int32_t* clusters;
};

void palettize_scalar_f16(const std::uint16_t* bits, const double* importance, std::size_t groups,
                          std::size_t group_len, int nbits, int threads,
                          const ScalarPalettizeOutput& out);

void palettize_scalar_f32(const float* values, const double* importance, std::size_t groups,
                          std::size_t group_len, int nbits, int threads,
                          const ScalarPalettizeOutput& out);

// The clustering of palettize_scalar_f16 from per-group histograms counts[G * 65536] (the
// Metal path counts on the GPU): centroids, objective, sse and clusters as above (out.indices
// unused), and codes[g * 65536 + p], the cluster of fp16 pattern p in group g (0 where p is
// absent), from which the indices are a gather.
void palettize_from_histograms_f16(const std::uint32_t* counts, std::size_t groups, int nbits, int threads,
                                   const ScalarPalettizeOutput& out, std::uint8_t* codes);

// Optimal objective for 1..max_clusters clusters per group: curve[g*max_clusters + c] is
// the minimum weighted SSE with c+1 clusters (0 once c+1 >= #distinct values).
void sse_curve_f16(const std::uint16_t* bits, const double* importance, std::size_t groups,
                   std::size_t group_len, int max_clusters, int threads, double* curve);
void sse_curve_f32(const float* values, const double* importance, std::size_t groups,
                   std::size_t group_len, int max_clusters, int threads, double* curve);

// The same objective at the cluster counts ks[0..nk) only (out[g*nk + j]; 0 once ks[j] >=
// #distinct values): one fast solve per count, for planners that need a few bit widths.
void sse_at_f16(const std::uint16_t* bits, const double* importance, std::size_t groups, std::size_t group_len,
                const std::uint32_t* ks, std::size_t nk, int threads, double* out);
void sse_at_f32(const float* values, const double* importance, std::size_t groups, std::size_t group_len,
                const std::uint32_t* ks, std::size_t nk, int threads, double* out);

}  // namespace weightpress

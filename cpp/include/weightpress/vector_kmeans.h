// Vector k-means for vector palettization (cluster_dim > 1).
//
// No exact algorithm exists for d > 1. This is Lloyd's algorithm with a deterministic
// greedy k-means++ seed, run n_init times per group, keeping the lowest objective.
//
// Input
//   points  [groups, n, dim] row-major float64
//   weight  [groups, n] per-point weight (>= 0) or nullptr (all 1)
//   k       clusters, 1 <= k <= 256
// Output
//   centroids [groups, k, dim]  rows >= clusters_used are zero
//   labels    [groups, n]       nearest centroid (lowest index on ties)
//   objective [groups]          weighted SSE of the labelling against the centroids
//   clusters_used [groups]      min(k, number of distinct points)
// Determinism: the seed of group g depends only on (seed, g); results do not depend on
// the thread count.
#pragma once

#include <cstddef>
#include <cstdint>

namespace weightpress {

struct VectorKMeansOptions {
    int max_iter = 300;
    int n_init = 3;
    std::uint64_t seed = 0;
    double tol = 1e-4;  // stop when the objective improves by less than tol (relative)
};

void vector_kmeans(const double* points, const double* weight, std::size_t groups, std::size_t n,
                   std::size_t dim, std::size_t k, const VectorKMeansOptions& options, int threads,
                   double* centroids, std::uint8_t* labels, double* objective,
                   std::int32_t* clusters_used);

}  // namespace weightpress

// Exact weighted 1-D k-means (minimum weighted sum of squared errors).
//
// Contract
//   x[0..n)  strictly increasing values; w[0..n) positive weights (counts or importance).
//   k        number of clusters, 1 <= k <= n.
// Output
//   starts[0..k]    cluster c holds x[starts[c] .. starts[c+1]); starts[0] = 0, starts[k] = n.
//   centroids[0..k) weighted means, ascending.
//   sse_by_k[0..k)  (optional) optimal objective with 1, 2, ..., k clusters.
//
// Arithmetic follows coremltools' bundled kmeans1d (Grønlund et al. 2017 DP) so that the
// same partition and bit-identical centroids come out wherever the optimum is unique:
//   prefix sums  cw += w, cs += w*x, cs2 += (w*x)*x, each accumulated in double;
//   interval cost(j, i) with W = cw[i+1]-cw[j], S = cs[i+1]-cs[j], mu = S/W:
//                r = cs2[i+1]-cs2[j]; r += W*(mu*mu); r -= (2*mu)*S;
//   ties between split points go to the leftmost (smallest) split;
//   centroid of [t, e): c = 0; for i in [t, e): c += ((x[i]-c) * (cw[i+1]-cw[i])) / (cw[i+1]-cw[t]).
// The DP itself is ours: per cluster count a divide-and-conquer over the monotone
// argmin (Monge cost), bounded below by the previous layer's split.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>
#include <vector>

namespace weightpress {

// Leaves new elements uninitialised on resize: the k x n split table of a large fp32 tensor
// is gigabytes, and every entry the DP reads it has written first. (Zero-filling it up front
// cost seconds of page faults, with no cancellation point.)
template <typename T>
struct UninitAllocator : std::allocator<T> {
    template <typename U>
    struct rebind {
        using other = UninitAllocator<U>;
    };
    UninitAllocator() = default;
    template <typename U>
    UninitAllocator(const UninitAllocator<U>&) noexcept {}
    template <typename U>
    void construct(U* p) noexcept {
        ::new (static_cast<void*>(p)) U;
    }
    template <typename U, typename... Args>
    void construct(U* p, Args&&... args) {
        ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }
};

// Reusable buffers; one per worker thread avoids allocation per group.
struct KMeans1DScratch {
    std::vector<double> cw, cs, cs2;   // prefix sums, size n+1
    std::vector<double> prev, cur;     // DP rows
    std::vector<std::uint32_t, UninitAllocator<std::uint32_t>> split;  // k x n argmin table (start of the last cluster)
    std::vector<double> candidates;    // inner-loop values
    std::vector<double> candidates_other;  // the second thread's, when threads > 1
};

void kmeans1d_optimal(const double* x, const double* w, std::size_t n, std::size_t k,
                      std::uint32_t* starts, double* centroids, KMeans1DScratch& scratch,
                      double* sse_by_k = nullptr, int threads = 1);

// kmeans1d's centroids for a given partition of raw (not merged) sorted points: per cluster
// [starts[c], starts[c+1]) the incremental weighted mean above, with prefix sums of w over
// all n points. Used when duplicated values were merged for the DP, so that the centroids
// come out as kmeans1d computes them from the raw elements.
void kmeans1d_running_means(const double* x, const double* w, std::size_t n, const std::uint64_t* starts,
                            std::size_t k, double* centroids);

}  // namespace weightpress

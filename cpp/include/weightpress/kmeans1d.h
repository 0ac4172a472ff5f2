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
//
// Two exact solvers share that arithmetic (docs/kmeans1d.md has the derivations):
//   full DP        per cluster count a divide-and-conquer over the monotone argmin (Monge
//                  cost), bounded below by the previous layer's split; O(k n log n).
//   windowed DP    Lagrangian relaxation certifies where boundaries can be: for a penalty
//                  lambda per cluster, F(p) (best penalised cost of [0, p)) and G(p) (of
//                  [p, n)) give LB(p) = F(p) + G(p) - k*lambda, a lower bound on every
//                  k-clustering with a boundary at p. With UB the cost of one k-clustering,
//                  positions with LB(p) > UB + margin hold no optimal boundary; the full DP
//                  then runs on the few survivors (the segments between them merged into
//                  super-points whose prefix sums are the original ones, so every interval
//                  cost is computed from the same doubles). O(n log n) per penalised pass,
//                  a handful of passes, independent of k.
// kmeans1d_optimal picks the windowed DP and falls back to the full DP whenever the
// certificate is too weak to pay off (degenerate data, tiny inputs) or sse_by_k is asked.
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

// Buffers of the windowed DP (penalised passes, windows, super-point problem).
struct KMeans1DWindowScratch {
    std::vector<double> forward, backward;       // F and G of the penalised passes, size n+1
    std::vector<std::uint32_t> count, arg;       // clusters and last-cluster start per prefix
    std::vector<std::uint32_t> rcount, rarg;     // the same for the reversed pass
    std::vector<std::uint64_t> deque;            // (candidate, first row) pairs
    std::vector<std::uint32_t> boundaries;       // surviving boundary positions
    std::vector<double> pcw, pcs, pcs2;          // prefix sums at the super-point edges
    std::vector<std::uint32_t> pstarts;
};

// Reusable buffers; one per worker thread avoids allocation per group.
struct KMeans1DScratch {
    std::vector<double> cw, cs, cs2;   // prefix sums, size n+1
    std::vector<double> prev, cur;     // DP rows
    std::vector<std::uint32_t, UninitAllocator<std::uint32_t>> split;  // k x n argmin table (start of the last cluster)
    std::vector<double> candidates;    // inner-loop values
    std::vector<double> candidates_other;  // the second thread's, when threads > 1
    KMeans1DWindowScratch window;
};

// Which solver kmeans1d_optimal uses: kAuto (windowed, falling back to full), or one of them
// forced (tests and benchmarks; kWindowed still falls back when no certificate is found).
enum class KMeans1DMethod { kAuto, kFull, kWindowed };

// What the last kmeans1d_optimal call did (for tests and benchmarks).
struct KMeans1DStats {
    bool windowed = false;        // the windowed DP produced the result
    int probes = 0;               // penalised passes over all points (the backward one included)
    int coarse_probes = 0;        // passes over the coarse warm-start copy
    std::size_t survivors = 0;    // boundary positions left by the certificate
    const char* fallback = "";    // why the full DP ran instead ("" when it did not)
};

void kmeans1d_optimal(const double* x, const double* w, std::size_t n, std::size_t k,
                      std::uint32_t* starts, double* centroids, KMeans1DScratch& scratch,
                      double* sse_by_k = nullptr, int threads = 1,
                      KMeans1DMethod method = KMeans1DMethod::kAuto, KMeans1DStats* stats = nullptr);

// kmeans1d's centroids for a given partition of raw (not merged) sorted points: per cluster
// [starts[c], starts[c+1]) the incremental weighted mean above, with prefix sums of w over
// all n points. Used when duplicated values were merged for the DP, so that the centroids
// come out as kmeans1d computes them from the raw elements.
void kmeans1d_running_means(const double* x, const double* w, std::size_t n, const std::uint64_t* starts,
                            std::size_t k, double* centroids);

}  // namespace weightpress

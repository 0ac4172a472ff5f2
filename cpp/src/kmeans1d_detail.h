// Internals shared by the two exact 1-D k-means solvers (kmeans1d.cpp, kmeans1d_windows.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "weightpress/kmeans1d.h"

namespace weightpress::detail {

#ifdef WP_COUNT_EVALS
inline long& eval_counter() { static long c = 0; return c; }
#endif

// Interval cost from prefix sums, in coremltools' kmeans1d arithmetic (see kmeans1d.h).
struct PrefixCost {
    const double* cw;
    const double* cs;
    const double* cs2;

    // Cost of one cluster over sorted indices [j, i] (inclusive), j <= i.
    inline double operator()(std::size_t j, std::size_t i) const {
#ifdef WP_COUNT_EVALS
        ++eval_counter();
#endif
        const double weight = cw[i + 1] - cw[j];
        const double sum = cs[i + 1] - cs[j];
        const double mu = sum / weight;
        double r = cs2[i + 1] - cs2[j];
        r += weight * (mu * mu);
        r -= (2 * mu) * sum;
        return r;
    }
};

// Prefix sums of (x, w) as kmeans1d accumulates them: cw[0] = cs[0] = cs2[0] = 0.
void prefix_sums(const double* x, const double* w, std::size_t n, double* cw, double* cs, double* cs2);

// The full DP over n points given by their prefix sums: starts[0..k] of the optimal
// partition (leftmost splits), sse_by_k[0..k) when asked.
void full_dp(const PrefixCost& cost, std::size_t n, std::size_t k, std::uint32_t* starts, KMeans1DScratch& s,
             double* sse_by_k, int threads);

// The windowed DP (kmeans1d.h): true with starts[0..k] filled, or false when the Lagrangian
// certificate is too weak to pay off (stats.fallback says why) and the full DP must run.
bool windowed_dp(const PrefixCost& cost, std::size_t n, std::size_t k,
                 std::uint32_t* starts, KMeans1DScratch& s, KMeans1DStats& stats);

// The optimal cost of k clusters from the windowed DP's penalty search alone: when a
// penalised pass lands on exactly k clusters, its penalised optimum minus k * lambda is the
// optimal k-cluster cost (to the rounding of the prefix-sum cost expressions; no boundary or
// final DP needed). False when no pass lands on k (the caller solves k exactly).
bool penalised_cost_at(const PrefixCost& cost, std::size_t n, std::size_t k, KMeans1DScratch& s, double& sse);

}  // namespace weightpress::detail

// The windowed exact 1-D k-means: a Lagrangian certificate of where optimal boundaries can
// lie, then the full DP on the survivors only (see kmeans1d.h and docs/kmeans1d.md).
//
// Penalised pass. For a penalty lambda per cluster,
//     F(0) = 0,   F(i+1) = min_{j <= i} F(j) + cost(j, i) + lambda
// is the best cost of [0, i] with any number of clusters, each paying lambda. The cost is
// Monge, so a later candidate j2 > j1 that is at least as good at row t stays so for every
// row after t: each candidate owns a contiguous run of rows, kept in a deque, and a new
// candidate's run is found by searching its crossover with the last one (first at the last
// row: a candidate that never overtakes is dropped for one evaluation).
//
// Certificate. With G(p) the same pass over the reversed points (the best penalised cost of
// [p, n)), every k-clustering with a boundary at p costs at least
//     LB(p) = F(p) + G(p) - k * lambda
// (its two sides are penalised solutions with c and k - c clusters). The bound is tight at
// the optimum when lambda lies in the subgradient of the optimal-cost curve at k, which a
// chord search over the counts finds in a few passes (the curve is convex in k for Monge
// costs). Any k-clustering gives an upper bound UB; positions with LB(p) > UB + margin
// hold no optimal boundary, and the margin covers every rounding difference between the
// passes and the final DP.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kmeans1d_detail.h"
#include "weightpress/parallel.h"
#include "weightpress/steering_math.h"

namespace weightpress::detail {
namespace {

constexpr int kMaxProbes = 16;
constexpr std::size_t kCoarsePointsPerCluster = 16;
constexpr std::size_t kFineStride = 8;
constexpr std::size_t kFineStrideMinPoints = 8192;  // below, the second copy costs more than it saves

// One penalised pass over "steps" s = 0..n-1. Forward, step s is row s and the candidate that
// starts a cluster at s; V[t] is F(t), the best penalised cost of [0, t). Backward, step s is
// row n-1-s and the candidate that ends a cluster there; V[t] is G(n - t), the best penalised
// cost of [n - t, n). Both read the same prefix sums, and every stored V is the reference
// expression of PrefixCost: the very computation the final DP makes. count[t] and arg[t]
// describe the solution behind V[t] (arg: the step of its last candidate).
//
// Deciding which of two candidates is better at a row only places a crossover, so it uses a
// division-free form with the same rounding scale (see Crossing); ties go to the newer one.
template <bool Forward>
void penalised_pass(const PrefixCost& cost, std::size_t n, double lambda, double* V, std::uint32_t* count,
                    std::uint32_t* arg, std::vector<std::uint64_t>& deque) {
    // deque entries: candidate step in the high half, the first row step it owns in the low half
    deque.resize(n);
    std::uint64_t* dq = deque.data();
    std::size_t head = 0, tail = 0;
    auto cand = [&](std::size_t e) { return static_cast<std::size_t>(dq[e] >> 32); };
    auto first = [&](std::size_t e) { return static_cast<std::size_t>(dq[e] & 0xffffffffu); };
    auto push = [&](std::size_t c, std::size_t row) { dq[tail++] = (static_cast<std::uint64_t>(c) << 32) | row; };
    // Prefix index of a candidate's fixed end and of a row's end (forward: the cluster is
    // [c, r], prefix indices c and r+1; backward: [n-1-r, n-1-c], prefix indices n-c and n-1-r).
    auto cand_edge = [&](std::size_t c) { return Forward ? c : n - c; };
    auto row_edge = [&](std::size_t r) { return Forward ? r + 1 : n - 1 - r; };
    auto value = [&](std::size_t c, std::size_t r) {
        return V[c] + (Forward ? cost(c, r) : cost(n - 1 - r, n - 1 - c)) + lambda;
    };
    // c (newer) at least as good as b (older) at row step t. With W, S the weight and sum of
    // each cluster and A = V - (cs2 at the candidate's edge, signed by direction), value(c) <=
    // value(b) is A_c - S_c^2/W_c <= A_b - S_b^2/W_b; times W_c W_b > 0 it needs no division.
    struct Crossing {
        double d;         // A_c - A_b
        double wc, sc;    // prefix weight and sum at c's fixed edge
        double wb, sb;    // the same for b
    };
    auto crossing = [&](std::size_t c, std::size_t b) {
        const std::size_t ec = cand_edge(c), eb = cand_edge(b);
        const double ac = Forward ? V[c] - cost.cs2[ec] : V[c] + cost.cs2[ec];
        const double ab = Forward ? V[b] - cost.cs2[eb] : V[b] + cost.cs2[eb];
        return Crossing{ac - ab, cost.cw[ec], cost.cs[ec], cost.cw[eb], cost.cs[eb]};
    };
    auto overtakes = [&](const Crossing& x, std::size_t t) {
        const std::size_t et = row_edge(t);
        const double w = cost.cw[et], sum = cost.cs[et];
        const double wc = Forward ? w - x.wc : x.wc - w;
        const double wb = Forward ? w - x.wb : x.wb - w;
        const double sc = Forward ? sum - x.sc : x.sc - sum;
        const double sb = Forward ? sum - x.sb : x.sb - sum;
        return x.d * (wc * wb) <= (sc * sc) * wb - (sb * sb) * wc;
    };
    V[0] = 0.0;
    count[0] = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t c = i;  // the candidate whose cluster begins (forward) or ends (backward) here
        while (tail > head && first(tail - 1) >= i && overtakes(crossing(c, cand(tail - 1)), first(tail - 1))) --tail;
        if (tail == head) {
            push(c, i);
        } else {
            const Crossing x = crossing(c, cand(tail - 1));
            const std::size_t lo = std::max(first(tail - 1), i);
            // (a back that owns rows from i on was just compared at its first row by the pops)
            if (first(tail - 1) < i && overtakes(x, lo)) {
                push(c, lo);
            } else {
                // first row step in (lo, n-1] where c overtakes the back. Crossovers are
                // usually 1-4 rows away: test those four at once (independent comparisons, one
                // branch), then gallop and bisect; none: c never wins.
                std::size_t z = n;
                unsigned hits = 0;
                for (unsigned d = 0; d < 4; ++d) {
                    const std::size_t t = std::min(lo + 1 + d, n - 1);
                    hits |= static_cast<unsigned>(lo + 1 + d < n && overtakes(x, t)) << d;
                }
                if (hits) {
                    z = lo + 1 + static_cast<std::size_t>(__builtin_ctz(hits));
                } else if (lo + 5 < n) {
                    std::size_t a = lo + 5, step = 1;
                    while (a < n) {
                        const std::size_t t = std::min(lo + 4 + step, n - 1);
                        if (overtakes(x, t)) {
                            z = t;
                            break;
                        }
                        a = t + 1;
                        step *= 2;
                    }
                    while (a < z) {
                        const std::size_t t = a + (z - a) / 2;
                        if (overtakes(x, t))
                            z = t;
                        else
                            a = t + 1;
                    }
                }
                if (z < n) push(c, z);
            }
        }
        while (tail - head >= 2 && first(head + 1) <= i) ++head;
        const std::size_t best = cand(head);
        V[i + 1] = value(best, i);
        count[i + 1] = count[best] + 1;
        arg[i + 1] = static_cast<std::uint32_t>(best);
    }
}

// Boundaries (cluster starts after the first) of the penalised solution ending at n.
void trace(const std::uint32_t* arg, std::size_t n, std::vector<std::uint32_t>& out) {
    out.clear();
    for (std::size_t e = n; e > 0;) {
        const std::size_t j = arg[e];
        if (j > 0) out.push_back(static_cast<std::uint32_t>(j));
        e = j;
    }
    std::reverse(out.begin(), out.end());
}

double clustering_cost(const PrefixCost& cost, const std::vector<std::uint32_t>& bounds, std::size_t n) {
    double total = 0.0;
    std::size_t begin = 0;
    for (std::size_t t = 0; t <= bounds.size(); ++t) {
        const std::size_t end = t < bounds.size() ? bounds[t] : n;
        total += cost(begin, end - 1);
        begin = end;
    }
    return total;
}

// Turns a clustering with any number of clusters into one with exactly k (a feasible upper
// bound, not an optimum): merges the cheapest adjacent pair, or splits the cluster whose best
// single split gains most, one step at a time.
void adjust_to_k(const PrefixCost& cost, std::size_t n, std::size_t k, std::vector<std::uint32_t>& bounds) {
    auto edge = [&](std::size_t t) { return t == 0 ? std::size_t(0) : t > bounds.size() ? n : bounds[t - 1]; };
    while (bounds.size() + 1 > k) {
        std::size_t best = 0;
        double best_delta = std::numeric_limits<double>::infinity();
        for (std::size_t t = 0; t < bounds.size(); ++t) {  // merge clusters t and t+1
            const std::size_t a = edge(t), m = edge(t + 1), e = edge(t + 2);
            const double delta = cost(a, e - 1) - cost(a, m - 1) - cost(m, e - 1);
            if (delta < best_delta) {
                best_delta = delta;
                best = t;
            }
        }
        bounds.erase(bounds.begin() + best);
    }
    while (bounds.size() + 1 < k) {
        std::size_t best_at = 0;
        double best_gain = -1.0;
        for (std::size_t t = 0; t <= bounds.size(); ++t) {
            const std::size_t a = edge(t), e = edge(t + 1);
            const double whole = cost(a, e - 1);
            for (std::size_t m = a + 1; m < e; ++m) {
                const double gain = whole - cost(a, m - 1) - cost(m, e - 1);
                if (gain > best_gain) {
                    best_gain = gain;
                    best_at = m;
                }
            }
        }
        if (best_gain < 0) break;  // every cluster is a single point: k > n cannot happen here
        bounds.insert(std::upper_bound(bounds.begin(), bounds.end(), static_cast<std::uint32_t>(best_at)),
                      static_cast<std::uint32_t>(best_at));
    }
}


// A first penalty from the cost of the equal-weight partition with the high-resolution law
// cost(k) ~ C / k^2: lambda in the middle of the subgradient interval at k.
double initial_penalty(const PrefixCost& cost, std::size_t n, std::size_t k) {
    const double total_weight = cost.cw[n];
    double quantile_cost = 0.0;
    for (std::size_t c = 0, begin = 0; c < k && begin < n; ++c) {
        std::size_t end = c + 1 == k ? n
                                     : static_cast<std::size_t>(std::lower_bound(cost.cw, cost.cw + n + 1,
                                                                                 total_weight * (c + 1) / k) -
                                                                cost.cw);
        end = std::min(std::max(end, begin + 1), n);
        quantile_cost += cost(begin, end - 1);
        begin = end;
    }
    const double kk = static_cast<double>(k);
    return 0.35 * quantile_cost * kk * kk * (1.0 / ((kk - 1) * (kk - 1)) - 1.0 / ((kk + 1) * (kk + 1)));
}

// Chord search for a penalty whose penalised optimum has k clusters. Each pass gives a point
// (count, cost) of the convex optimal-cost curve; with points on both sides of k the next
// lambda is the slope of the chord between the closest ones. Stops on count == k, or when
// the chord repeats (a hull edge through k: lambda is then dual optimal and the bound still
// tight). Leaves F, count and arg of the last pass in ws; returns false past the probe limit.
bool search_penalty(const PrefixCost& cost, std::size_t n, std::size_t k, double& lambda, KMeans1DWindowScratch& ws,
                    int& probes, int max_probes) {
    bool have_above = false, have_below = false;
    std::size_t k_above = 0, k_below = 0;
    double cost_above = 0, cost_below = 0;
    double last_lambda = 0, last_count = 0;  // the previous pass on the same side, for the local law
    const double kk = static_cast<double>(k);
    for (int probe = 0;; ++probe) {
        if (probe == max_probes) return false;
        throw_if_cancelled();
        penalised_pass<true>(cost, n, lambda, ws.forward.data(), ws.count.data(), ws.arg.data(), ws.deque);
        ++probes;
        const std::size_t got = ws.count[n];
        if (got == k) return true;
        const double cost_got = ws.forward[n] - static_cast<double>(got) * lambda;
        if (got > k && (!have_above || got <= k_above)) {
            have_above = true;
            k_above = got;
            cost_above = cost_got;
        } else if (got < k && (!have_below || got >= k_below)) {
            have_below = true;
            k_below = got;
            cost_below = cost_got;
        }
        double next;
        if (have_above && have_below) {
            next = (cost_below - cost_above) / static_cast<double>(k_above - k_below);
            if (!(next > 0) || std::fabs(next - lambda) <= 1e-12 * lambda) return true;  // hull edge
        } else {
            // one side only: count ~ lambda^(-1/a), a = 3 by the law or fitted from the last
            // two passes; at least 10% per step
            double a = 3.0;
            if (last_lambda > 0 && last_count != static_cast<double>(got)) {
                const double fitted = steering::log(lambda / last_lambda) /
                                      steering::log(last_count / static_cast<double>(got));
                if (fitted > 1.0 && fitted < 8.0) a = fitted;
            }
            const double ratio = steering::pow(static_cast<double>(got) / kk, a);
            last_lambda = lambda;
            last_count = static_cast<double>(got);
            next = got > k ? lambda * std::max(ratio, 1.1) : lambda * std::min(ratio, 1 / 1.1);
        }
        lambda = next;
    }
}

// The penalty the windowed DP works with: a chord search warm-started on coarse copies.
// True with the last (fine) pass in s.window (F, count, arg) and its penalty in lambda.
bool find_penalty(const PrefixCost& cost, std::size_t n, std::size_t k, KMeans1DScratch& s,
                  KMeans1DStats& stats, double& lambda) {
    KMeans1DWindowScratch& ws = s.window;
    ws.forward.resize(n + 1);
    ws.count.resize(n + 1);
    ws.arg.resize(n + 1);
    lambda = initial_penalty(cost, n, k);
    if (!(lambda > 0) || !std::isfinite(lambda)) {
        stats.fallback = "no spread to penalise";
        return false;
    }
    // Warm start on coarse copies (boundaries only every `stride` points, interval costs from
    // the same prefix sums): a pass over one costs 1/stride of a fine pass. Restricting the
    // boundaries raises every cluster count's cost by the boundaries' misplacement, which
    // flattens the curve: the coarsest copy's penalty is low, so a second, finer copy
    // (stride kFineStride) corrects it before the fine passes.
    for (std::size_t stride : {n / (kCoarsePointsPerCluster * k), kFineStride}) {
        if (stride < kFineStride || n / stride < kCoarsePointsPerCluster * k / 2) continue;
        if (stride == kFineStride && n < kFineStrideMinPoints) continue;
        const std::size_t m = (n + stride - 1) / stride;
        ws.pcw.resize(m + 1);
        ws.pcs.resize(m + 1);
        ws.pcs2.resize(m + 1);
        for (std::size_t q = 0; q <= m; ++q) {
            const std::size_t e = std::min(q * stride, n);
            ws.pcw[q] = s.cw[e];
            ws.pcs[q] = s.cs[e];
            ws.pcs2[q] = s.cs2[e];
        }
        double coarse = lambda;
        if (search_penalty(PrefixCost{ws.pcw.data(), ws.pcs.data(), ws.pcs2.data()}, m, k, coarse, ws,
                           stats.coarse_probes, kMaxProbes))
            lambda = coarse;
    }
    if (!search_penalty(cost, n, k, lambda, ws, stats.probes, kMaxProbes)) {
        stats.fallback = "no penalty found within the probe limit";
        return false;
    }
    return true;
}

}  // namespace

bool windowed_dp(const PrefixCost& cost, std::size_t n, std::size_t k,
                 std::uint32_t* starts, KMeans1DScratch& s, KMeans1DStats& stats) {
    KMeans1DWindowScratch& ws = s.window;
    double lambda = 0.0;
    if (!find_penalty(cost, n, k, s, stats, lambda)) return false;
    const std::size_t got = ws.count[n];

    // Upper bound: this pass's clustering, made exactly k clusters when it is not.
    trace(ws.arg.data(), n, ws.boundaries);
    if (got != k) adjust_to_k(cost, n, k, ws.boundaries);
    const double upper = clustering_cost(cost, ws.boundaries, n);

    // G from the backward pass over the same prefix sums.
    ws.backward.resize(n + 1);
    ws.rcount.resize(n + 1);
    ws.rarg.resize(n + 1);
    throw_if_cancelled();
    penalised_pass<false>(cost, n, lambda, ws.backward.data(), ws.rcount.data(), ws.rarg.data(), ws.deque);
    ++stats.probes;

    // Rounding: F, G, the upper bound and the final DP all evaluate interval costs from the
    // same prefix sums, so they differ from exact arithmetic on those stored sums only by the
    // rounding of the cost expressions and of the chains of additions: each cost is within
    // ~10 ulp of its interval's sum of w*x^2, disjoint intervals add up to at most cs2[n],
    // and a chain holds at most ~2k costs and penalties. The margin is 2^13 times that worst
    // case, still far below the cost of moving a boundary by one position on real data.
    const double kk = static_cast<double>(k);
    const double scale = s.cs2[n] + 4.0 * (kk + 1) * lambda;
    const double margin = std::ldexp((64.0 + 4.0 * kk) * scale, -40);
    const double bound = upper + margin + kk * lambda;  // LB(p) <= UB + margin, k*lambda moved over
    ws.boundaries.clear();
    for (std::size_t p = 1; p < n; ++p)
        if (ws.forward[p] + ws.backward[n - p] <= bound) ws.boundaries.push_back(static_cast<std::uint32_t>(p));
    stats.survivors = ws.boundaries.size();
    if (ws.boundaries.size() + 1 < k) {
        stats.fallback = "certificate inconsistent with its own upper bound";
        return false;
    }
    if (ws.boundaries.size() > n / 4) {
        stats.fallback = "certificate too weak (too many surviving boundaries)";
        return false;
    }

    // The full DP on super-points: the segments between surviving boundaries. Their prefix
    // sums are the original ones at the segment edges, so every interval cost below is the
    // very same floating-point computation as in the full DP over all points.
    const std::size_t m = ws.boundaries.size() + 1;
    ws.pcw.resize(m + 1);
    ws.pcs.resize(m + 1);
    ws.pcs2.resize(m + 1);
    auto edge = [&](std::size_t q) { return q == 0 ? std::size_t(0) : q == m ? n : ws.boundaries[q - 1]; };
    for (std::size_t q = 0; q <= m; ++q) {
        ws.pcw[q] = s.cw[edge(q)];
        ws.pcs[q] = s.cs[edge(q)];
        ws.pcs2[q] = s.cs2[edge(q)];
    }
    ws.pstarts.resize(k + 1);
    full_dp(PrefixCost{ws.pcw.data(), ws.pcs.data(), ws.pcs2.data()}, m, k, ws.pstarts.data(), s, nullptr, 1);
    for (std::size_t c = 0; c <= k; ++c) starts[c] = static_cast<std::uint32_t>(edge(ws.pstarts[c]));
    return true;
}

bool penalised_cost_at(const PrefixCost& cost, std::size_t n, std::size_t k, KMeans1DScratch& s, double& sse) {
    KMeans1DStats stats;
    double lambda = 0.0;
    if (k < 2 || k >= n || !find_penalty(cost, n, k, s, stats, lambda)) return false;
    KMeans1DWindowScratch& ws = s.window;
    if (ws.count[n] != k) return false;  // a hull edge through k: the caller solves it
    sse = ws.forward[n] - static_cast<double>(k) * lambda;
    return true;
}

}  // namespace weightpress::detail

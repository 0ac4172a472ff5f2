#include "weightpress/kmeans1d.h"

#include <algorithm>
#include <cmath>
#include <future>
#include <limits>

#include "kmeans1d_detail.h"
#include "weightpress/multiversion.h"
#include "weightpress/parallel.h"
#include "weightpress/steering_math.h"

namespace weightpress {
namespace detail {
namespace {

// prev[j-1] + cost(j, i) for m consecutive candidates j. IEEE division, addition and
// multiplication are exact-rounded at any vector width and contraction is off, so the
// wider copies give bit-identical values (multiversion.h).
WP_FORCE_INLINE void candidate_costs_body(const double* cw, const double* cs, const double* cs2, const double* pv,
                                          double cw_end, double cs_end, double cs2_end, std::size_t m, double* vals) {
    for (std::size_t t = 0; t < m; ++t) {
        const double weight = cw_end - cw[t];
        const double sum = cs_end - cs[t];
        const double mu = sum / weight;
        double r = cs2_end - cs2[t];
        r += weight * (mu * mu);
        r -= (2 * mu) * sum;
        vals[t] = pv[t] + r;
    }
}
WP_MULTIVERSION_FN(void, candidate_costs,
                   (const double* cw, const double* cs, const double* cs2, const double* pv, double cw_end,
                    double cs_end, double cs2_end, std::size_t m, double* vals),
                   (cw, cs, cs2, pv, cw_end, cs_end, cs2_end, m, vals),
                   candidate_costs_body(cw, cs, cs2, pv, cw_end, cs_end, cs2_end, m, vals))

// One DP layer: cur[i] = min_{j in [lo_j, i]} prev[j-1] + cost(j, i) for rows i in
// [row_lo, row_hi], with the leftmost argmin stored in split_row[i].
class Layer {
  public:
    Layer(const PrefixCost& cost, const double* prev, double* cur, std::uint32_t* split_row,
          const std::uint32_t* lower_bound, std::size_t min_split, std::vector<double>& buf)
        : cost_(cost), prev_(prev), cur_(cur), split_(split_row), lower_(lower_bound),
          min_split_(min_split), buf_(buf) {}

    // Rows [lo, hi] whose argmins are known to lie in [opt_lo, opt_hi].
    void solve(std::size_t lo, std::size_t hi, std::size_t opt_lo, std::size_t opt_hi) {
        while (lo <= hi) {
            const std::size_t mid = lo + (hi - lo) / 2;
            std::size_t a = std::max(opt_lo, min_split_);
            if (lower_) a = std::max<std::size_t>(a, lower_[mid]);
            const std::size_t b = std::min(opt_hi, mid);
            if (a > b) a = b;  // only possible through rounding noise in the bounds
            const std::size_t best = argmin(mid, a, b);
            if (mid > lo) solve(lo, mid - 1, opt_lo, best);
            lo = mid + 1;
            opt_lo = best;
        }
    }

    // The same recursion with the two halves below the top row on two threads (each with
    // its own candidate buffer). Rows are independent given their bounds, so the result is
    // the same as solve()'s. Worth it only for one large problem (fp32 per-tensor).
    void solve_two_threads(std::size_t lo, std::size_t hi, std::size_t opt_lo, std::size_t opt_hi,
                           std::vector<double>& other_buf) {
        const std::size_t mid = lo + (hi - lo) / 2;
        std::size_t a = std::max(opt_lo, min_split_);
        if (lower_) a = std::max<std::size_t>(a, lower_[mid]);
        const std::size_t b = std::min(opt_hi, mid);
        if (a > b) a = b;
        const std::size_t best = argmin(mid, a, b);
        // std::async rather than a raw std::thread: an exception on the other thread (an
        // allocation failure, say) reaches the caller through the future instead of
        // terminating the process.
        std::future<void> left;
        if (mid > lo)
            left = std::async(std::launch::async, [&, mid, best] {
                Layer other(cost_, prev_, cur_, split_, lower_, min_split_, other_buf);
                other.solve(lo, mid - 1, opt_lo, best);
            });
        try {
            if (mid < hi) solve(mid + 1, hi, best, opt_hi);
        } catch (...) {
            if (left.valid()) left.wait();
            throw;
        }
        if (left.valid()) left.get();
    }

    // Rows [lo, hi] from the last down: each row's argmin is bounded above by the next
    // row's (row monotonicity) and below by the previous layer's (Knuth's bounds). Cheaper
    // than divide-and-conquer once clusters are small: the window is about n / c^2 wide.
    void solve_descending(std::size_t lo, std::size_t hi) {
        std::size_t upper = hi;
        for (std::size_t i = hi + 1; i-- > lo;) {
            std::size_t a = min_split_;
            if (lower_) a = std::max<std::size_t>(a, lower_[i]);
            const std::size_t b = std::min(upper, i);
            if (a > b) a = b;  // only possible through rounding noise in the bounds
            upper = argmin(i, a, b);
        }
    }

  private:
    // Leftmost j in [a, b] minimising prev[j-1] + cost(j, i). Values are computed in a
    // separate pass so the compiler can vectorise the divisions.
    std::size_t argmin(std::size_t i, std::size_t a, std::size_t b) {
        const std::size_t m = b - a + 1;
        if (m <= 8) {  // short ranges (most rows at deep levels): no buffer round trip
            std::size_t best = a;
            double best_val = prev_[a - 1] + cost_(a, i);
            for (std::size_t j = a + 1; j <= b; ++j) {
                const double v = prev_[j - 1] + cost_(j, i);
                if (v < best_val) {
                    best_val = v;
                    best = j;
                }
            }
            cur_[i] = best_val;
            split_[i] = static_cast<std::uint32_t>(best);
            return best;
        }
        if (buf_.size() < m) buf_.resize(m);
        double* vals = buf_.data();
        candidate_costs(cost_.cw + a, cost_.cs + a, cost_.cs2 + a, prev_ + a - 1, cost_.cw[i + 1],
                        cost_.cs[i + 1], cost_.cs2[i + 1], m, vals);
        std::size_t best = 0;
        double best_val = vals[0];
        for (std::size_t t = 1; t < m; ++t) {
            if (vals[t] < best_val) {
                best_val = vals[t];
                best = t;
            }
        }
        cur_[i] = best_val;
        split_[i] = static_cast<std::uint32_t>(a + best);
        return a + best;
    }

    const PrefixCost& cost_;
    const double* prev_;
    double* cur_;
    std::uint32_t* split_;
    const std::uint32_t* lower_;
    std::size_t min_split_;
    std::vector<double>& buf_;
};

}  // namespace

void prefix_sums(const double* x, const double* w, std::size_t n, double* cw, double* cs, double* cs2) {
    cw[0] = cs[0] = cs2[0] = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        const double wx = w[i] * x[i];
        cw[i + 1] = w[i] + cw[i];
        cs[i + 1] = wx + cs[i];
        cs2[i + 1] = wx * x[i] + cs2[i];
    }
}

void full_dp(const PrefixCost& cost, std::size_t n, std::size_t k, std::uint32_t* starts, KMeans1DScratch& s,
             double* sse_by_k, int threads) {
    s.prev.resize(n);
    s.cur.resize(n);
    s.split.resize(k * n);
    // Layer 0: one cluster over [0, i].
    for (std::size_t i = 0; i < n; ++i) s.prev[i] = cost(0, i);
    if (sse_by_k) sse_by_k[0] = s.prev[n - 1];

    // Layer c (c+1 clusters): row i needs c non-empty clusters on [0, j), so j >= c and
    // i >= c. Every row up to n-1 is kept because the next layer reads this layer's
    // splits as lower bounds; the last layer needs row n-1 only.
    for (std::size_t c = 1; c < k; ++c) {
        throw_if_cancelled();
        std::uint32_t* split_row = s.split.data() + c * n;
        const std::uint32_t* lower = c >= 2 ? s.split.data() + (c - 1) * n : nullptr;
        const std::size_t row_lo = (c == k - 1 && !sse_by_k) ? n - 1 : c;
        const std::size_t row_hi = n - 1;
        Layer layer(cost, s.prev.data(), s.cur.data(), split_row, lower, c, s.candidates);
        // Divide-and-conquer costs about log2(n) candidates per row; the descending sweep
        // about n / (c (c + 1)) once the previous layer bounds each row from below.
        const double window = static_cast<double>(n) / (static_cast<double>(c) * (c + 1));
        if (lower && window < steering::log2(static_cast<double>(n)))
            layer.solve_descending(row_lo, row_hi);
        else if (threads > 1 && row_hi - row_lo > (1u << 16))
            layer.solve_two_threads(row_lo, row_hi, c, row_hi, s.candidates_other);
        else
            layer.solve(row_lo, row_hi, c, row_hi);
        if (sse_by_k) sse_by_k[c] = s.cur[n - 1];
        std::swap(s.prev, s.cur);
    }

    // Backtrack from the last cluster.
    starts[k] = static_cast<std::uint32_t>(n);
    std::size_t end = n;
    for (std::size_t c = k; c-- > 0;) {
        const std::size_t begin = c == 0 ? 0 : s.split[c * n + end - 1];
        starts[c] = static_cast<std::uint32_t>(begin);
        end = begin;
    }
}

}  // namespace detail

// The windowed DP needs enough points per cluster for its passes to beat the layers of the
// full DP, and k >= 3 (k <= 2 is one or two cheap layers).
constexpr std::size_t kWindowedMinPointsPerCluster = 8;

void kmeans1d_optimal(const double* x, const double* w, std::size_t n, std::size_t k,
                      std::uint32_t* starts, double* centroids, KMeans1DScratch& s,
                      double* sse_by_k, int threads, KMeans1DMethod method, KMeans1DStats* stats) {
    KMeans1DStats local;
    KMeans1DStats& st = stats ? *stats : local;
    st = KMeans1DStats{};
    s.cw.resize(n + 1);
    s.cs.resize(n + 1);
    s.cs2.resize(n + 1);
    detail::prefix_sums(x, w, n, s.cw.data(), s.cs.data(), s.cs2.data());
    const detail::PrefixCost cost{s.cw.data(), s.cs.data(), s.cs2.data()};

    bool done = false;
    if (method == KMeans1DMethod::kFull) {
        st.fallback = "full DP requested";
    } else if (sse_by_k) {
        st.fallback = "the SSE of every cluster count needs every layer";
    } else if (k < 3 || n < kWindowedMinPointsPerCluster * k) {
        st.fallback = "small problem";
    } else {
        done = detail::windowed_dp(cost, n, k, starts, s, st);
    }
    if (!done) detail::full_dp(cost, n, k, starts, s, sse_by_k, threads);
    st.windowed = done;

    // Centroids as kmeans1d computes them.
    for (std::size_t c = 0; c < k; ++c) {
        const std::size_t begin = starts[c], end = starts[c + 1];
        double centroid = 0.0;
        for (std::size_t i = begin; i < end; ++i)
            centroid += ((x[i] - centroid) * (s.cw[i + 1] - s.cw[i])) / (s.cw[i + 1] - s.cw[begin]);
        centroids[c] = centroid;
    }
}

void kmeans1d_running_means(const double* x, const double* w, std::size_t n, const std::uint64_t* starts,
                            std::size_t k, double* centroids) {
    std::vector<double> cw(n + 1, 0.0);
    for (std::size_t i = 0; i < n; ++i) cw[i + 1] = w[i] + cw[i];
    for (std::size_t c = 0; c < k; ++c) {
        double centroid = 0.0;
        for (std::uint64_t i = starts[c]; i < starts[c + 1]; ++i)
            centroid += ((x[i] - centroid) * (cw[i + 1] - cw[i])) / (cw[i + 1] - cw[starts[c]]);
        centroids[c] = centroid;
    }
}

}  // namespace weightpress

#include "weightpress/vector_kmeans.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "weightpress/parallel.h"
#include "weightpress/steering_math.h"

namespace weightpress {
namespace {

// splitmix64: tiny, well-mixed, and the same on every platform.
struct Rng {
    std::uint64_t state;
    std::uint64_t next() {
        std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
};

inline double dist2(const double* a, const double* b, std::size_t dim) {
    double s = 0;
    for (std::size_t t = 0; t < dim; ++t) {
        const double d = a[t] - b[t];
        s += d * d;
    }
    return s;
}

struct Problem {
    const double* x;  // n x dim
    const double* w;  // n or nullptr
    std::size_t n, dim, k;
    double weight(std::size_t i) const { return w ? w[i] : 1.0; }
};

// Index of the first point of each distinct vector (in point order), up to limit+1.
std::size_t count_distinct(const Problem& p, std::size_t limit, std::vector<std::size_t>& firsts) {
    std::vector<std::size_t> order(p.n);
    for (std::size_t i = 0; i < p.n; ++i) order[i] = i;
    auto less = [&](std::size_t a, std::size_t b) {
        const double* xa = p.x + a * p.dim;
        const double* xb = p.x + b * p.dim;
        for (std::size_t t = 0; t < p.dim; ++t)
            if (xa[t] != xb[t]) return xa[t] < xb[t];
        return a < b;
    };
    std::sort(order.begin(), order.end(), less);
    firsts.clear();
    for (std::size_t j = 0; j < p.n && firsts.size() <= limit; ++j) {
        bool equal = j > 0;
        for (std::size_t t = 0; equal && t < p.dim; ++t)
            equal = p.x[order[j] * p.dim + t] == p.x[order[j - 1] * p.dim + t];
        if (!equal) firsts.push_back(order[j]);
    }
    std::sort(firsts.begin(), firsts.end());
    return firsts.size();
}

// Assigns every point to its nearest centroid; returns the weighted objective.
double assign(const Problem& p, const std::vector<double>& c, std::size_t k, std::uint8_t* labels,
              std::vector<double>& dist) {
    double total = 0;
    for (std::size_t i = 0; i < p.n; ++i) {
        const double* xi = p.x + i * p.dim;
        std::size_t best = 0;
        double best_d = dist2(xi, c.data(), p.dim);
        for (std::size_t j = 1; j < k; ++j) {
            const double d = dist2(xi, c.data() + j * p.dim, p.dim);
            if (d < best_d) {
                best_d = d;
                best = j;
            }
        }
        labels[i] = static_cast<std::uint8_t>(best);
        dist[i] = best_d;
        total += p.weight(i) * best_d;
    }
    return total;
}

// Greedy k-means++: each new centre is the best (lowest potential) of 2 + ln(k) candidates
// drawn with probability proportional to weight * distance^2.
void seed_plus_plus(const Problem& p, std::size_t k, Rng& rng, std::vector<double>& c,
                    std::vector<double>& closest, std::vector<double>& cand_closest) {
    const std::size_t trials = 2 + static_cast<std::size_t>(steering::log(static_cast<double>(k)));
    c.assign(k * p.dim, 0.0);
    double total_w = 0;
    for (std::size_t i = 0; i < p.n; ++i) total_w += p.weight(i);
    auto draw = [&](const std::vector<double>& mass, double total) {
        double r = rng.uniform() * total, acc = 0;
        std::size_t last = p.n - 1;
        for (std::size_t i = 0; i < p.n; ++i) {
            if (mass[i] <= 0) continue;
            acc += mass[i];
            last = i;
            if (acc > r) return i;
        }
        return last;
    };
    std::vector<double> mass(p.n);
    for (std::size_t i = 0; i < p.n; ++i) mass[i] = p.weight(i);
    std::size_t first = total_w > 0 ? draw(mass, total_w) : 0;
    std::copy(p.x + first * p.dim, p.x + (first + 1) * p.dim, c.begin());
    closest.resize(p.n);
    double potential = 0;
    for (std::size_t i = 0; i < p.n; ++i) {
        closest[i] = dist2(p.x + i * p.dim, c.data(), p.dim);
        potential += p.weight(i) * closest[i];
    }
    cand_closest.resize(p.n);
    for (std::size_t j = 1; j < k; ++j) {
        for (std::size_t i = 0; i < p.n; ++i) mass[i] = p.weight(i) * closest[i];
        std::size_t best_candidate = 0;
        double best_potential = std::numeric_limits<double>::infinity();
        std::vector<double> best_closest;
        for (std::size_t t = 0; t < trials; ++t) {
            const std::size_t cand = potential > 0 ? draw(mass, potential) : (j % p.n);
            double pot = 0;
            for (std::size_t i = 0; i < p.n; ++i) {
                cand_closest[i] = std::min(closest[i], dist2(p.x + i * p.dim, p.x + cand * p.dim, p.dim));
                pot += p.weight(i) * cand_closest[i];
            }
            if (pot < best_potential) {
                best_potential = pot;
                best_candidate = cand;
                best_closest = cand_closest;
            }
        }
        std::copy(p.x + best_candidate * p.dim, p.x + (best_candidate + 1) * p.dim, c.begin() + j * p.dim);
        closest.swap(best_closest);
        potential = best_potential;
    }
}

double lloyd(const Problem& p, std::size_t k, const VectorKMeansOptions& opt, std::vector<double>& c,
             std::uint8_t* labels, std::vector<double>& dist) {
    std::vector<double> sums(k * p.dim), mass(k);
    double objective = assign(p, c, k, labels, dist);
    for (int iter = 0; iter < opt.max_iter; ++iter) {
        std::fill(sums.begin(), sums.end(), 0.0);
        std::fill(mass.begin(), mass.end(), 0.0);
        for (std::size_t i = 0; i < p.n; ++i) {
            const double wi = p.weight(i);
            mass[labels[i]] += wi;
            for (std::size_t t = 0; t < p.dim; ++t) sums[labels[i] * p.dim + t] += wi * p.x[i * p.dim + t];
        }
        for (std::size_t j = 0; j < k; ++j) {
            if (mass[j] > 0) {
                for (std::size_t t = 0; t < p.dim; ++t) c[j * p.dim + t] = sums[j * p.dim + t] / mass[j];
            } else {
                // Empty cluster: move it onto the point that currently costs the most.
                std::size_t far = 0;
                double far_cost = -1;
                for (std::size_t i = 0; i < p.n; ++i) {
                    const double cost = p.weight(i) * dist[i];
                    if (cost > far_cost) {
                        far_cost = cost;
                        far = i;
                    }
                }
                std::copy(p.x + far * p.dim, p.x + (far + 1) * p.dim, c.begin() + j * p.dim);
                dist[far] = 0;
            }
        }
        const double next = assign(p, c, k, labels, dist);
        const bool converged = objective - next <= opt.tol * objective;
        objective = next;
        if (converged) break;
    }
    return objective;
}

void solve_group(const Problem& p, const VectorKMeansOptions& opt, std::uint64_t group_seed, int inner_threads,
                 double* out_c, std::uint8_t* out_labels, double* out_obj, std::int32_t* out_used) {
    std::vector<std::size_t> firsts;
    const std::size_t distinct = count_distinct(p, p.k, firsts);
    std::fill(out_c, out_c + p.k * p.dim, 0.0);
    std::vector<double> dist(p.n);
    if (distinct <= p.k) {
        // Every distinct vector is its own centroid, in order of first appearance.
        std::vector<double> c(distinct * p.dim);
        for (std::size_t j = 0; j < distinct; ++j)
            std::copy(p.x + firsts[j] * p.dim, p.x + (firsts[j] + 1) * p.dim, c.begin() + j * p.dim);
        *out_obj = assign(p, c, distinct, out_labels, dist);
        std::copy(c.begin(), c.end(), out_c);
        *out_used = static_cast<std::int32_t>(distinct);
        return;
    }
    // Independent initialisations, each with its own seed, run in parallel; the best
    // objective wins (lowest run index on ties), so the thread count cannot matter.
    const std::size_t runs = static_cast<std::size_t>(std::max(1, opt.n_init));
    std::vector<std::vector<double>> run_c(runs);
    std::vector<std::vector<std::uint8_t>> run_labels(runs, std::vector<std::uint8_t>(p.n));
    std::vector<double> run_obj(runs);
    parallel_for(runs, inner_threads, [&](int, std::size_t run) {
        Rng rng{group_seed + 0x632be59bd9b4e019ull * (run + 1)};
        std::vector<double> closest, cand, run_dist(p.n);
        seed_plus_plus(p, p.k, rng, run_c[run], closest, cand);
        run_obj[run] = lloyd(p, p.k, opt, run_c[run], run_labels[run].data(), run_dist);
    });
    std::size_t best_run = 0;
    for (std::size_t r = 1; r < runs; ++r)
        if (run_obj[r] < run_obj[best_run]) best_run = r;
    const std::vector<double>& best_c = run_c[best_run];
    const double best = run_obj[best_run];
    std::copy(run_labels[best_run].begin(), run_labels[best_run].end(), out_labels);
    std::copy(best_c.begin(), best_c.end(), out_c);
    *out_obj = best;
    *out_used = static_cast<std::int32_t>(p.k);
}

}  // namespace

void vector_kmeans(const double* points, const double* weight, std::size_t groups, std::size_t n,
                   std::size_t dim, std::size_t k, const VectorKMeansOptions& options, int threads,
                   double* centroids, std::uint8_t* labels, double* objective,
                   std::int32_t* clusters_used) {
    if (k < 1 || k > 256) throw std::invalid_argument("vector_kmeans: k must be in [1, 256]");
    if (n == 0 || dim == 0) throw std::invalid_argument("vector_kmeans: empty input");
    const int inner = groups >= static_cast<std::size_t>(resolve_threads(threads)) ? 1 : threads;
    parallel_for(groups, threads, [&](int, std::size_t g) {
        Problem p{points + g * n * dim, weight ? weight + g * n : nullptr, n, dim, k};
        const std::uint64_t group_seed = options.seed * 0x100000001b3ull + g * 0x9e3779b97f4a7c15ull + 1;
        solve_group(p, options, group_seed, inner, centroids + g * k * dim, labels + g * n, objective + g,
                    clusters_used + g);
    });
}

}  // namespace weightpress

#include "weightpress/palettize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "weightpress/errors.h"
#include "weightpress/half.h"
#include "weightpress/kmeans1d.h"
#include "weightpress/parallel.h"
#include "kmeans1d_detail.h"

namespace weightpress {
namespace {

constexpr std::size_t kPatterns = 65536;
constexpr std::size_t kChunk = std::size_t(1) << 18;  // elements per parallel chunk

// Sorted distinct values of one group with their multiplicity and clustering weight.
struct Distinct {
    std::vector<double> x, weight, count;
    std::vector<std::uint16_t> pattern;  // fp16 only: bit pattern of each distinct value
    void clear(std::size_t expected = 0) {
        x.clear();
        weight.clear();
        count.clear();
        pattern.clear();
        x.reserve(expected);
        weight.reserve(expected);
        count.reserve(expected);
        pattern.reserve(expected);
    }
};

// Per-worker buffers, allocated once per call.
struct Scratch {
    std::vector<std::uint32_t> counts;   // fp16 histogram
    std::vector<double> importance;      // fp16 importance histogram
    std::vector<std::uint8_t> code;      // fp16 pattern -> cluster id
    std::vector<std::uint64_t> keys;     // fp32 sort keys with element index (weighted)
    std::vector<std::uint32_t> keys32, keys32_tmp;  // fp32 sort keys (unweighted), radix buffers
    Distinct distinct;
    std::vector<double> xs, ws;          // values that take part in the clustering
    std::vector<std::uint8_t> cluster_of;  // per distinct value
    std::vector<std::uint32_t> starts;
    std::vector<double> centroids;
    KMeans1DScratch dp;
};


[[noreturn]] void throw_nonfinite() {
    throw NonFiniteInput("palettize: weight contains NaN or Inf");
}

// ---------------------------------------------------------------- fp16 distinct values

void count_patterns(const std::uint16_t* bits, std::size_t n, std::uint32_t* counts) {
    for (std::size_t e = 0; e < n; ++e) ++counts[bits[e]];
}

// Histogram of one group; parallel over chunks when `threads` > 1 (counts are integers,
// so the per-chunk sums do not depend on the split).
void histogram_f16(const std::uint16_t* bits, const double* importance, std::size_t n, int threads,
                   Scratch& s) {
    s.counts.assign(kPatterns, 0);
    if (importance) {
        s.importance.assign(kPatterns, 0.0);
        for (std::size_t e = 0; e < n; ++e) {
            ++s.counts[bits[e]];
            s.importance[bits[e]] += importance[e];
        }
        return;
    }
    const std::size_t chunks = (n + kChunk - 1) / kChunk;
    if (threads <= 1 || chunks <= 1) {
        count_patterns(bits, n, s.counts.data());
        return;
    }
    const int workers = worker_count(chunks, threads);
    std::vector<std::vector<std::uint32_t>> partial(workers, std::vector<std::uint32_t>(kPatterns, 0));
    parallel_for(chunks, threads, [&](int w, std::size_t c) {
        const std::size_t begin = c * kChunk, end = std::min(n, begin + kChunk);
        count_patterns(bits + begin, end - begin, partial[w].data());
    });
    for (auto& part : partial)
        for (std::size_t p = 0; p < kPatterns; ++p) s.counts[p] += part[p];
}

void append_pattern(Scratch& s, std::uint16_t p, double value, bool weighted) {
    const double count = s.counts[p];
    s.distinct.x.push_back(value);
    s.distinct.count.push_back(count);
    s.distinct.weight.push_back(weighted ? s.importance[p] : count);
    s.distinct.pattern.push_back(p);
}

// Distinct values in ascending order: negative patterns from the most negative
// (0xFBFF) up to -0, then the zeros, then positives 0x0001..0x7BFF.
void distinct_from_histogram(Scratch& s, bool weighted) {
    for (std::size_t p = 0x7c00; p < 0x8000; ++p)
        if (s.counts[p] || s.counts[p | 0x8000]) throw_nonfinite();
    s.distinct.clear();
    for (std::size_t p = 0xfbff; p > 0x8000; --p)
        if (s.counts[p]) append_pattern(s, static_cast<std::uint16_t>(p), half_to_double(p), weighted);
    // One zero value; it keeps the sign only if every zero is negative.
    const std::uint32_t zeros = s.counts[0] + s.counts[0x8000];
    if (zeros) {
        const bool negative = s.counts[0] == 0;
        s.distinct.x.push_back(negative ? -0.0 : 0.0);
        s.distinct.count.push_back(zeros);
        s.distinct.weight.push_back(weighted ? s.importance[0] + s.importance[0x8000] : zeros);
        s.distinct.pattern.push_back(negative ? 0x8000 : 0);
    }
    for (std::size_t p = 1; p < 0x7c00; ++p)
        if (s.counts[p]) append_pattern(s, static_cast<std::uint16_t>(p), half_to_double(p), weighted);
}

// Small groups: scanning 65,536 histogram bins costs more than the group itself, so sort
// the patterns instead (two LSD radix passes over value-order keys) and run-length them.
constexpr std::size_t kSmallGroup = 16384;

inline std::uint16_t order_key(std::uint16_t p) {
    return (p & 0x8000) ? static_cast<std::uint16_t>(~p) : static_cast<std::uint16_t>(p | 0x8000);
}

void distinct_from_sort(const std::uint16_t* bits, std::size_t n, Scratch& s) {
    s.keys.resize(2 * n);  // reused as two uint16 buffers of n each
    std::uint16_t* a = reinterpret_cast<std::uint16_t*>(s.keys.data());
    std::uint16_t* b = a + n;
    std::size_t lo[257] = {0}, hi[257] = {0};
    for (std::size_t e = 0; e < n; ++e) {
        const std::uint16_t k = order_key(bits[e]);
        ++lo[(k & 0xff) + 1];
        ++hi[(k >> 8) + 1];
    }
    for (int d = 0; d < 256; ++d) {
        lo[d + 1] += lo[d];
        hi[d + 1] += hi[d];
    }
    for (std::size_t e = 0; e < n; ++e) {
        const std::uint16_t k = order_key(bits[e]);
        b[lo[k & 0xff]++] = k;
    }
    for (std::size_t e = 0; e < n; ++e) a[hi[b[e] >> 8]++] = b[e];
    s.distinct.clear(std::min<std::size_t>(n, kPatterns));
    for (std::size_t e = 0; e < n;) {
        const std::uint16_t key = a[e];
        std::size_t end = e + 1;
        while (end < n && a[end] == key) ++end;
        const std::uint16_t p = (key & 0x8000) ? static_cast<std::uint16_t>(key & 0x7fff)
                                               : static_cast<std::uint16_t>(~key);
        if (((p >> 10) & 0x1f) == 0x1f) throw_nonfinite();
        const double count = static_cast<double>(end - e);
        if ((p & 0x7fff) == 0 && !s.distinct.x.empty() && s.distinct.x.back() == 0.0) {
            // +0 right after -0: one zero value, positive once any zero is positive
            s.distinct.x.back() = 0.0;
            s.distinct.count.back() += count;
            s.distinct.weight.back() += count;
            s.distinct.pattern.back() = 0;
        } else {
            s.distinct.x.push_back(half_to_double(p));
            s.distinct.count.push_back(count);
            s.distinct.weight.push_back(count);
            s.distinct.pattern.push_back(p);
        }
        e = end;
    }
}

// ---------------------------------------------------------------- fp32 distinct values

std::uint32_t sortable_key(float v) {
    if (v == 0.0f) v = 0.0f;  // -0 and +0 are one value
    std::uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

float key_value(std::uint32_t key) {
    std::uint32_t u = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
    float v;
    std::memcpy(&v, &u, sizeof v);
    return v;
}

// LSD radix sort of 32-bit keys in three passes of 11 bits (into tmp and back: the sorted keys
// end in tmp's storage, swapped into keys).
void radix_sort_keys(std::vector<std::uint32_t>& keys, std::vector<std::uint32_t>& tmp) {
    const std::size_t n = keys.size();
    tmp.resize(n);
    constexpr int kBits = 11, kBuckets = 1 << kBits;
    std::vector<std::size_t> offset(kBuckets);
    for (int pass = 0; pass < 3; ++pass) {
        const int shift = pass * kBits;
        std::fill(offset.begin(), offset.end(), 0);
        for (std::size_t e = 0; e < n; ++e) ++offset[(keys[e] >> shift) & (kBuckets - 1)];
        std::size_t sum = 0;
        for (auto& o : offset) {
            const std::size_t c = o;
            o = sum;
            sum += c;
        }
        for (std::size_t e = 0; e < n; ++e) tmp[offset[(keys[e] >> shift) & (kBuckets - 1)]++] = keys[e];
        keys.swap(tmp);
    }
}

void distinct_f32(const float* values, const double* importance, std::size_t n, Scratch& s) {
    s.distinct.clear();
    if (!importance) {
        // unweighted: sort the bare keys (half the memory of key+index, and a radix sort)
        s.keys32.resize(n);
        for (std::size_t e = 0; e < n; ++e) {
            if (!std::isfinite(values[e])) throw_nonfinite();
            s.keys32[e] = sortable_key(values[e]);
        }
        radix_sort_keys(s.keys32, s.keys32_tmp);
        std::size_t runs = 0;
        for (std::size_t e = 0; e < n; ++e) runs += e == 0 || s.keys32[e] != s.keys32[e - 1];
        s.distinct.clear(runs);
        for (std::size_t e = 0; e < n;) {
            const std::uint32_t key = s.keys32[e];
            std::size_t end = e + 1;
            while (end < n && s.keys32[end] == key) ++end;
            const double count = static_cast<double>(end - e);
            s.distinct.x.push_back(key_value(key));
            s.distinct.count.push_back(count);
            s.distinct.weight.push_back(count);
            e = end;
        }
        if (n > kChunk) {  // large groups: give the memory back
            std::vector<std::uint32_t>().swap(s.keys32);
            std::vector<std::uint32_t>().swap(s.keys32_tmp);
        }
        return;
    }
    s.keys.resize(n);
    for (std::size_t e = 0; e < n; ++e) {
        if (!std::isfinite(values[e])) throw_nonfinite();
        // High half: the value's key; low half: the element index, so that importance is
        // accumulated in element order within each value.
        s.keys[e] = (static_cast<std::uint64_t>(sortable_key(values[e])) << 32) | e;
    }
    std::sort(s.keys.begin(), s.keys.end());
    std::size_t runs = 0;
    for (std::size_t e = 0; e < n; ++e) runs += e == 0 || (s.keys[e] >> 32) != (s.keys[e - 1] >> 32);
    s.distinct.clear(runs);
    for (std::size_t e = 0; e < n;) {
        const std::uint32_t key = static_cast<std::uint32_t>(s.keys[e] >> 32);
        double count = 0, weight = 0;
        for (; e < n && static_cast<std::uint32_t>(s.keys[e] >> 32) == key; ++e) {
            count += 1;
            weight += importance[s.keys[e] & 0xffffffffu];
        }
        s.distinct.x.push_back(key_value(key));
        s.distinct.count.push_back(count);
        s.distinct.weight.push_back(weight);
    }
    if (n > kChunk) std::vector<std::uint64_t>().swap(s.keys);  // large groups: give the memory back
}

// ---------------------------------------------------------------- clustering

// The values that take part in the clustering: every distinct value with a positive
// weight (no copy when that is all of them); when no value has any importance, all of
// them weighted by multiplicity.
struct ClusterInput {
    const double* x;
    const double* w;
    std::size_t m;
    bool all_zero_weight;
};

ClusterInput select_clustered(Scratch& s) {
    const Distinct& d = s.distinct;
    const std::size_t u = d.x.size();
    std::size_t positive = 0;
    for (std::size_t i = 0; i < u; ++i) positive += d.weight[i] > 0;
    if (positive == u) return {d.x.data(), d.weight.data(), u, false};
    if (positive == 0) return {d.x.data(), d.count.data(), u, true};
    s.xs.clear();
    s.ws.clear();
    for (std::size_t i = 0; i < u; ++i)
        if (d.weight[i] > 0) {
            s.xs.push_back(d.x[i]);
            s.ws.push_back(d.weight[i]);
        }
    return {s.xs.data(), s.ws.data(), positive, false};
}

// Clusters the distinct values in s.distinct; fills s.cluster_of, writes centroids,
// objective, sse and cluster count for group g. `to_dtype` rounds a centroid to the
// weight's dtype for the SSE.
template <typename Round>
void cluster_distinct(Scratch& s, int nbits, std::size_t g, const ScalarPalettizeOutput& out,
                      Round to_dtype, int threads) {
    const Distinct& d = s.distinct;
    const std::size_t u = d.x.size();
    const std::size_t K = std::size_t(1) << nbits;
    const ClusterInput in = select_clustered(s);
    const bool all_zero_weight = in.all_zero_weight;
    const std::size_t m = in.m;
    const std::size_t k = std::min(m, K);
    s.starts.resize(k + 1);
    s.centroids.assign(K, 0.0);
    kmeans1d_optimal(in.x, in.w, m, k, s.starts.data(), s.centroids.data(), s.dp, nullptr, threads);

    // Cluster id per distinct value: the partition for clustered values, the nearest
    // centroid for values that carried no weight.
    s.cluster_of.resize(u);
    std::size_t c = 0, j = 0;  // j walks the clustered values in order
    for (std::size_t i = 0; i < u; ++i) {
        if (all_zero_weight || d.weight[i] > 0) {
            while (j >= s.starts[c + 1]) ++c;
            s.cluster_of[i] = static_cast<std::uint8_t>(c);
            ++j;
        } else {
            std::size_t best = 0;
            double best_dist = std::fabs(d.x[i] - s.centroids[0]);
            for (std::size_t t = 1; t < k; ++t) {
                const double dist = std::fabs(d.x[i] - s.centroids[t]);
                if (dist < best_dist) {
                    best_dist = dist;
                    best = t;
                }
            }
            s.cluster_of[i] = static_cast<std::uint8_t>(best);
        }
    }

    double rounded[256];
    for (std::size_t t = 0; t < k; ++t) rounded[t] = to_dtype(s.centroids[t]);
    double objective = 0, sse = 0;
    for (std::size_t i = 0; i < u; ++i) {
        const std::size_t cid = s.cluster_of[i];
        const double e = d.x[i] - s.centroids[cid];
        objective += (all_zero_weight ? d.count[i] : d.weight[i]) * (e * e);
        const double r = d.x[i] - rounded[cid];
        sse += d.count[i] * (r * r);
    }
    std::copy(s.centroids.begin(), s.centroids.end(), out.centroids + g * K);
    out.objective[g] = objective;
    out.sse[g] = sse;
    out.clusters[g] = static_cast<std::int32_t>(k);
}

double round_to_half(double v) { return half_to_double(half_from_double(v)); }
double round_to_float(double v) { return static_cast<double>(static_cast<float>(v)); }

void encode_f16_range(const std::uint16_t* bits, std::size_t n, const std::uint8_t* code,
                      std::uint8_t* out) {
    for (std::size_t e = 0; e < n; ++e) out[e] = code[bits[e]];
}

void build_code_table(Scratch& s) {
    s.code.resize(kPatterns);
    const Distinct& d = s.distinct;
    for (std::size_t i = 0; i < d.x.size(); ++i) s.code[d.pattern[i]] = s.cluster_of[i];
    // Both zeros map to the zero value's cluster.
    if (!d.x.empty()) {
        for (std::size_t i = 0; i < d.x.size(); ++i)
            if (d.x[i] == 0.0) {
                s.code[0] = s.code[0x8000] = s.cluster_of[i];
                break;
            }
    }
}

void encode_f32_range(const float* values, std::size_t n, const Scratch& s, bool by_bounds,
                      const std::vector<double>& bounds, std::uint8_t* out) {
    const Distinct& d = s.distinct;
    if (by_bounds) {
        for (std::size_t e = 0; e < n; ++e) {
            const double v = values[e];
            out[e] = static_cast<std::uint8_t>(std::upper_bound(bounds.begin(), bounds.end(), v) -
                                               bounds.begin());
        }
    } else {
        for (std::size_t e = 0; e < n; ++e) {
            const double v = values[e];
            const std::size_t i = std::lower_bound(d.x.begin(), d.x.end(), v) - d.x.begin();
            out[e] = s.cluster_of[i];
        }
    }
}

void check_nbits(int nbits) {
    if (nbits < 1 || nbits > 8) throw std::invalid_argument("palettize: nbits must be in [1, 8]");
}

}  // namespace

void palettize_scalar_f16(const std::uint16_t* bits, const double* importance, std::size_t groups,
                          std::size_t group_len, int nbits, int threads,
                          const ScalarPalettizeOutput& out) {
    check_nbits(nbits);
    const int workers = worker_count(groups, threads);
    std::vector<Scratch> scratch(workers);
    auto one_group = [&](Scratch& s, std::size_t g, int inner_threads) {
        const std::uint16_t* b = bits + g * group_len;
        const double* imp = importance ? importance + g * group_len : nullptr;
        if (!imp && group_len < kSmallGroup) {
            distinct_from_sort(b, group_len, s);
        } else {
            histogram_f16(b, imp, group_len, inner_threads, s);
            distinct_from_histogram(s, imp != nullptr);
        }
        cluster_distinct(s, nbits, g, out, round_to_half, inner_threads);
        build_code_table(s);
        std::uint8_t* idx = out.indices + g * group_len;
        const std::size_t chunks = (group_len + kChunk - 1) / kChunk;
        parallel_for(chunks, inner_threads, [&](int, std::size_t c) {
            const std::size_t begin = c * kChunk, end = std::min(group_len, begin + kChunk);
            encode_f16_range(b + begin, end - begin, s.code.data(), idx + begin);
        });
    };
    if (groups >= static_cast<std::size_t>(resolve_threads(threads))) {
        parallel_for(groups, threads, [&](int w, std::size_t g) { one_group(scratch[w], g, 1); });
    } else {
        for (std::size_t g = 0; g < groups; ++g) one_group(scratch[0], g, threads);
    }
}

void palettize_scalar_f32(const float* values, const double* importance, std::size_t groups,
                          std::size_t group_len, int nbits, int threads,
                          const ScalarPalettizeOutput& out) {
    check_nbits(nbits);
    const int workers = worker_count(groups, threads);
    std::vector<Scratch> scratch(workers);
    auto one_group = [&](Scratch& s, std::size_t g, int inner_threads) {
        const float* v = values + g * group_len;
        const double* imp = importance ? importance + g * group_len : nullptr;
        distinct_f32(v, imp, group_len, s);
        cluster_distinct(s, nbits, g, out, round_to_float, inner_threads);
        // Clustered values form contiguous ranges: encode by the first value of each
        // cluster unless some values were left out of the clustering.
        bool by_bounds = true;
        for (double w : s.distinct.weight) by_bounds = by_bounds && w > 0;
        std::vector<double> bounds;
        if (by_bounds) {
            const std::size_t k = s.starts.size() - 1;
            for (std::size_t c = 1; c < k; ++c) bounds.push_back(s.distinct.x[s.starts[c]]);
        }
        std::uint8_t* idx = out.indices + g * group_len;
        const std::size_t chunks = (group_len + kChunk - 1) / kChunk;
        parallel_for(chunks, inner_threads, [&](int, std::size_t c) {
            const std::size_t begin = c * kChunk, end = std::min(group_len, begin + kChunk);
            encode_f32_range(v + begin, end - begin, s, by_bounds, bounds, idx + begin);
        });
    };
    if (groups >= static_cast<std::size_t>(resolve_threads(threads))) {
        parallel_for(groups, threads, [&](int w, std::size_t g) { one_group(scratch[w], g, 1); });
    } else {
        for (std::size_t g = 0; g < groups; ++g) one_group(scratch[0], g, threads);
    }
}

void palettize_from_histograms_f16(const std::uint32_t* counts, std::size_t groups, int nbits, int threads,
                                   const ScalarPalettizeOutput& out, std::uint8_t* codes) {
    check_nbits(nbits);
    const int workers = worker_count(groups, threads);
    std::vector<Scratch> scratch(workers);
    parallel_for(groups, threads, [&](int w, std::size_t g) {
        Scratch& s = scratch[w];
        s.counts.assign(counts + g * kPatterns, counts + (g + 1) * kPatterns);
        distinct_from_histogram(s, false);
        cluster_distinct(s, nbits, g, out, round_to_half, 1);
        s.code.assign(kPatterns, 0);
        build_code_table(s);
        std::copy(s.code.begin(), s.code.end(), codes + g * kPatterns);
    });
}

namespace {

// body(scratch, group, clustered values) for every group, its distinct values collected by
// collect(scratch, group), in parallel with one scratch per worker.
template <typename Collect, typename Body>
void for_each_clustered_group(std::size_t groups, int threads, Collect collect, Body body) {
    const int workers = worker_count(groups, threads);
    std::vector<Scratch> scratch(workers);
    parallel_for(groups, threads, [&](int w, std::size_t g) {
        Scratch& s = scratch[w];
        collect(s, g);
        body(s, g, select_clustered(s));
    });
}

template <typename Collect>
void sse_curve_groups(std::size_t groups, int max_clusters, int threads, double* curve,
                      Collect collect) {
    for_each_clustered_group(groups, threads, collect, [&](Scratch& s, std::size_t g, const ClusterInput& in) {
        const std::size_t m = in.m;
        const std::size_t k = std::min<std::size_t>(m, max_clusters);
        s.starts.resize(k + 1);
        s.centroids.resize(k);
        double* row = curve + g * max_clusters;
        kmeans1d_optimal(in.x, in.w, m, k, s.starts.data(), s.centroids.data(), s.dp, row);
        for (std::size_t c = 0; c < static_cast<std::size_t>(max_clusters); ++c)
            row[c] = c < k ? std::max(0.0, row[c]) : 0.0;
    });
}

// The optimal objective at the cluster counts ks only, one count at a time: the windowed
// solver's penalty search alone gives it when a penalised pass lands on the count (no
// boundaries, no final DP); otherwise (small problems, a hull edge through the count) the
// exact solve and the SSE of its partition. (Sharing passes between counts, without the
// coarse warm start, measured slower.)
constexpr std::size_t kPenaltyOnlyMinPointsPerCluster = 8;  // as the windowed solver

template <typename Collect>
void sse_at_groups(std::size_t groups, const std::uint32_t* ks, std::size_t nk, int threads, double* out,
                   Collect collect) {
    for_each_clustered_group(groups, threads, collect, [&](Scratch& s, std::size_t g, const ClusterInput& in) {
        bool have_sums = false;
        for (std::size_t j = 0; j < nk; ++j) {
            const std::size_t k = std::min<std::size_t>(in.m, ks[j]);
            double sse = 0.0;
            if (k > 0 && k < in.m) {
                bool done = false;
                if (k >= 3 && in.m >= kPenaltyOnlyMinPointsPerCluster * k) {
                    KMeans1DScratch& dp = s.dp;
                    if (!have_sums) {
                        dp.cw.resize(in.m + 1);
                        dp.cs.resize(in.m + 1);
                        dp.cs2.resize(in.m + 1);
                        detail::prefix_sums(in.x, in.w, in.m, dp.cw.data(), dp.cs.data(), dp.cs2.data());
                        have_sums = true;
                    }
                    done = detail::penalised_cost_at(detail::PrefixCost{dp.cw.data(), dp.cs.data(), dp.cs2.data()},
                                                     in.m, k, dp, sse);
                }
                if (!done) {
                    s.starts.resize(k + 1);
                    s.centroids.resize(k);
                    kmeans1d_optimal(in.x, in.w, in.m, k, s.starts.data(), s.centroids.data(), s.dp);
                    have_sums = false;  // (same sums, but leave no doubt)
                    for (std::size_t c = 0; c < k; ++c)
                        for (std::size_t i = s.starts[c]; i < s.starts[c + 1]; ++i) {
                            const double d = in.x[i] - s.centroids[c];
                            sse += in.w[i] * d * d;
                        }
                }
            }
            out[g * nk + j] = sse;
        }
    });
}

}  // namespace

void sse_at_f16(const std::uint16_t* bits, const double* importance, std::size_t groups, std::size_t group_len,
                const std::uint32_t* ks, std::size_t nk, int threads, double* out) {
    sse_at_groups(groups, ks, nk, threads, out, [&](Scratch& s, std::size_t g) {
        const double* imp = importance ? importance + g * group_len : nullptr;
        histogram_f16(bits + g * group_len, imp, group_len, 1, s);
        distinct_from_histogram(s, imp != nullptr);
    });
}

void sse_at_f32(const float* values, const double* importance, std::size_t groups, std::size_t group_len,
                const std::uint32_t* ks, std::size_t nk, int threads, double* out) {
    sse_at_groups(groups, ks, nk, threads, out, [&](Scratch& s, std::size_t g) {
        distinct_f32(values + g * group_len, importance ? importance + g * group_len : nullptr, group_len, s);
    });
}

void sse_curve_f16(const std::uint16_t* bits, const double* importance, std::size_t groups,
                   std::size_t group_len, int max_clusters, int threads, double* curve) {
    sse_curve_groups(groups, max_clusters, threads, curve, [&](Scratch& s, std::size_t g) {
        const double* imp = importance ? importance + g * group_len : nullptr;
        histogram_f16(bits + g * group_len, imp, group_len, 1, s);
        distinct_from_histogram(s, imp != nullptr);
    });
}

void sse_curve_f32(const float* values, const double* importance, std::size_t groups,
                   std::size_t group_len, int max_clusters, int threads, double* curve) {
    sse_curve_groups(groups, max_clusters, threads, curve, [&](Scratch& s, std::size_t g) {
        distinct_f32(values + g * group_len, importance ? importance + g * group_len : nullptr,
                     group_len, s);
    });
}

}  // namespace weightpress

#include "weightpress/error_feedback.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "weightpress/half.h"
#include "weightpress/parallel.h"

namespace weightpress {
namespace {

// sum_k a[k] * b[k] in eight partial sums of a fixed order (the loop vectorises and the bits do
// not depend on the instruction set; a single running sum would wait on every addition).
inline double dot(const double* a, const double* b, std::size_t n) {
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::size_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (std::size_t j = 0; j < 8; ++j) lane[j] += a[k + j] * b[k + j];
    for (std::size_t j = 0; k < n; ++k, ++j) lane[j] += a[k] * b[k];
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

// Lower Cholesky factor of the row-major symmetric matrix a (its lower triangle), in place.
bool cholesky_lower(double* a, std::size_t n) {
    for (std::size_t j = 0; j < n; ++j) {
        double* row_j = a + j * n;
        const double s = row_j[j] - dot(row_j, row_j, j);
        if (!(s > 0.0) || !std::isfinite(s)) return false;
        const double d = std::sqrt(s);
        row_j[j] = d;
        for (std::size_t i = j + 1; i < n; ++i) {
            double* row_i = a + i * n;
            row_i[j] = (row_i[j] - dot(row_i, row_j, j)) / d;
        }
        throw_if_cancelled();
    }
    return true;
}

}  // namespace

bool inverse_hessian_factor(double* h, std::size_t n, double damping) {
    if (n == 0) return true;
    double mean = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        double& d = h[i * n + i];
        if (!std::isfinite(d)) return false;
        if (d == 0.0) d = 1.0;  // an input never excited: its column's error costs nothing
        mean += d;
    }
    mean /= static_cast<double>(n);
    for (std::size_t i = 0; i < n; ++i) h[i * n + i] += damping * mean;
    if (!cholesky_lower(h, n)) return false;
    // X = L^-1 (lower), row by row: X[i] = (e_i - sum_{k<i} L[i][k] X[k]) / L[i][i]
    std::vector<double> x(n * n, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
        double* xi = x.data() + i * n;
        xi[i] = 1.0;
        for (std::size_t k = 0; k < i; ++k) {
            const double l = h[i * n + k];
            const double* xk = x.data() + k * n;
            for (std::size_t j = 0; j <= k; ++j) xi[j] -= l * xk[j];
        }
        const double d = h[i * n + i];
        for (std::size_t j = 0; j <= i; ++j) xi[j] /= d;
    }
    // H^-1 = X^T X, its lower triangle: sum over k of the outer product of row k with itself
    std::fill(h, h + n * n, 0.0);
    for (std::size_t k = 0; k < n; ++k) {
        const double* xk = x.data() + k * n;
        for (std::size_t i = 0; i <= k; ++i) {
            const double v = xk[i];
            double* hi = h + i * n;
            for (std::size_t j = 0; j <= i; ++j) hi[j] += v * xk[j];
        }
    }
    throw_if_cancelled();
    // U = (lower Cholesky factor of H^-1)^T
    if (!cholesky_lower(h, n)) return false;
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = i + 1; j < n; ++j) {
            h[i * n + j] = h[j * n + i];
            h[j * n + i] = 0.0;
        }
    return true;
}

namespace {

// One element's nearest representable value and its code.
struct Nearest {
    const FeedbackTarget& t;
    std::size_t cols;
    std::size_t blocks_per_row;
    // LUTs sorted once: values ascending, with their indices
    std::vector<double> sorted;
    std::vector<std::int32_t> order;

    Nearest(const FeedbackTarget& target, std::size_t rows, std::size_t cols_) : t(target), cols(cols_) {
        blocks_per_row = t.col_block ? (cols + t.col_block - 1) / t.col_block : 1;
        if (!t.entries) return;
        std::int32_t luts = 0;
        for (std::size_t r = 0; r < rows; ++r) luts = std::max(luts, t.lut_of_row[r] + 1);
        const std::size_t k = static_cast<std::size_t>(t.lut_size);
        sorted.resize(static_cast<std::size_t>(luts) * k);
        order.resize(sorted.size());
        for (std::int32_t g = 0; g < luts; ++g) {
            const float* e = t.entries + static_cast<std::size_t>(g) * k;
            std::int32_t* o = order.data() + static_cast<std::size_t>(g) * k;
            std::iota(o, o + k, 0);
            std::stable_sort(o, o + k, [&](std::int32_t a, std::int32_t b) { return e[a] < e[b]; });
            for (std::size_t i = 0; i < k; ++i) sorted[static_cast<std::size_t>(g) * k + i] = e[o[i]];
        }
    }

    double decode(float s, int level) const {
        const float p = s * static_cast<float>(level);
        return t.half ? static_cast<double>(round_half_branchless(p)) : static_cast<double>(p);
    }

    // value and code of element (r, c) nearest to x
    double operator()(std::size_t r, std::size_t c, double x, std::int32_t& code) const {
        if (t.entries) {
            const std::size_t k = static_cast<std::size_t>(t.lut_size);
            const std::size_t base = static_cast<std::size_t>(t.lut_of_row[r]) * k;
            const double* v = sorted.data() + base;
            const std::size_t at = static_cast<std::size_t>(std::lower_bound(v, v + k, x) - v);
            std::size_t best = at < k ? at : k - 1;
            if (at > 0 && (at == k || x - v[at - 1] <= v[at] - x)) best = at - 1;
            code = order[base + best];
            return v[best];
        }
        const std::size_t b = r * blocks_per_row + (t.col_block ? c / t.col_block : 0);
        const float s = t.scales[b];
        const int z = t.zero_points ? t.zero_points[b] : 0;
        if (!(s > 0.0f)) {  // an all-zero block: every level decodes to 0
            code = std::min(std::max(z, t.qmin), t.qmax);
            return 0.0;
        }
        const double guess = std::nearbyint(x / static_cast<double>(s)) + z;
        int q = static_cast<int>(std::min<double>(t.qmax, std::max<double>(t.qmin, guess)));
        double v = decode(s, q - z);
        const int step = x > v ? 1 : -1;
        const int q1 = q + step;
        if (q1 >= t.qmin && q1 <= t.qmax) {
            const double v1 = decode(s, q1 - z);
            if (std::fabs(x - v1) < std::fabs(x - v)) {
                q = q1;
                v = v1;
            }
        }
        code = q;
        return v;
    }
};

constexpr std::size_t kTileRows = 8;  // rows sharing each pass over a row of U

}  // namespace

void error_feedback(double* w, std::size_t rows, std::size_t cols, const double* u, const FeedbackTarget& target,
                    std::int32_t* codes, int threads) {
    const Nearest nearest(target, rows, cols);
    const std::size_t tiles = (rows + kTileRows - 1) / kTileRows;
    parallel_for(tiles, threads, [&](int, std::size_t tile) {
        const std::size_t r0 = tile * kTileRows, r1 = std::min(rows, r0 + kTileRows);
        double err[kTileRows];
        for (std::size_t i = 0; i < cols; ++i) {
            const double* ui = u + i * cols;
            for (std::size_t r = r0; r < r1; ++r) {
                const double x = w[r * cols + i];
                const double v = nearest(r, i, x, codes[r * cols + i]);
                err[r - r0] = (x - v) / ui[i];
            }
            for (std::size_t r = r0; r < r1; ++r) {
                double* wr = w + r * cols;
                const double e = err[r - r0];
                for (std::size_t j = i + 1; j < cols; ++j) wr[j] -= e * ui[j];
            }
        }
    });
}

}  // namespace weightpress

#include "weightpress/error_feedback.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "weightpress/half.h"
#include "weightpress/multiversion.h"
#include "weightpress/parallel.h"

namespace weightpress {
namespace {

// sum_k a[k] * b[k] in eight partial sums of a fixed order (the loop vectorises and the bits do
// not depend on the instruction set; a single running sum would wait on every addition).
WP_FORCE_INLINE double dot(const double* a, const double* b, std::size_t n) {
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::size_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (std::size_t j = 0; j < 8; ++j) lane[j] += a[k + j] * b[k + j];
    for (std::size_t j = 0; k < n; ++k, ++j) lane[j] += a[k] * b[k];
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

// H = R R^T with R upper triangular (Cholesky from the bottom-right corner), R in the upper
// triangle of the row-major symmetric matrix a, in place. Row j of R right of the diagonal
// is contiguous, so every entry is one dot product of two contiguous row tails:
//   R[j][j] = sqrt(A[j][j] - <R[j][j+1:], R[j][j+1:]>),
//   R[i][j] = (A[i][j] - <R[i][j+1:], R[j][j+1:]>) / R[j][j]   for i < j.
// Columns go in blocks of kCholeskyBlock from the right: first the block's own rows (the
// plain column-by-column order), then every row above it, each row taking the block's
// columns right to left, so that the block's rows stay in cache while a row's tail is read
// once per block rather than once per column, and the rows above split among threads. Every
// entry is the same expression of the same finished entries as in the column-by-column
// order, so the bits do not depend on the blocking or the thread count.
constexpr std::size_t kCholeskyBlock = 64;
constexpr std::size_t kCholeskyTileRows = 16;

// The block's own rows, column by column; false on a pivot that is not positive.
WP_FORCE_INLINE bool diagonal_block_impl(double* a, std::size_t n, std::size_t j0, std::size_t j1) {
    for (std::size_t m = j1; m-- > j0;) {
        double* row_m = a + m * n;
        const std::size_t tail = n - m - 1;
        const double s = row_m[m] - dot(row_m + m + 1, row_m + m + 1, tail);
        if (!(s > 0.0) || !std::isfinite(s)) return false;
        const double d = std::sqrt(s);
        row_m[m] = d;
        for (std::size_t i = j0; i < m; ++i) {
            double* row_i = a + i * n;
            row_i[m] = (row_i[m] - dot(row_i + m + 1, row_m + m + 1, tail)) / d;
        }
    }
    return true;
}
WP_MULTIVERSION_FN(bool, diagonal_block, (double* a, std::size_t n, std::size_t j0, std::size_t j1), (a, n, j0, j1),
                   diagonal_block_impl(a, n, j0, j1))

// Rows [i0, i1) above the block [j0, j1): each row's block columns, right to left.
WP_FORCE_INLINE int rows_above_impl(double* a, std::size_t n, std::size_t i0, std::size_t i1, std::size_t j0,
                                    std::size_t j1) {
    for (std::size_t i = i0; i < i1; ++i) {
        double* row_i = a + i * n;
        for (std::size_t m = j1; m-- > j0;) {
            const double* row_m = a + m * n;
            row_i[m] = (row_i[m] - dot(row_i + m + 1, row_m + m + 1, n - m - 1)) / row_m[m];
        }
    }
    return 0;
}
WP_MULTIVERSION_FN(int, rows_above,
                   (double* a, std::size_t n, std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1),
                   (a, n, i0, i1, j0, j1), rows_above_impl(a, n, i0, i1, j0, j1))

bool cholesky_upper_from_below(double* a, std::size_t n, int threads) {
    for (std::size_t j1 = n; j1 > 0;) {
        const std::size_t j0 = j1 > kCholeskyBlock ? j1 - kCholeskyBlock : 0;
        if (!diagonal_block(a, n, j0, j1)) return false;
        const std::size_t tiles = (j0 + kCholeskyTileRows - 1) / kCholeskyTileRows;
        parallel_for(tiles, threads, [&](int, std::size_t tile) {
            rows_above(a, n, tile * kCholeskyTileRows, std::min(j0, (tile + 1) * kCholeskyTileRows), j0, j1);
        });
        throw_if_cancelled();
        j1 = j0;
    }
    return true;
}

// Columns [ja, je) of U by back substitution, each stored as a row of ut.
WP_FORCE_INLINE int inverse_columns_impl(const double* r, double* ut, std::size_t n, std::size_t ja, std::size_t je) {
    for (std::size_t i = je; i-- > 0;) {
        const double* row_i = r + i * n;
        for (std::size_t j = std::max(i, ja); j < je; ++j) {
            double* u = ut + j * n;
            const double s = (i == j ? 1.0 : 0.0) - dot(row_i + i + 1, u + i + 1, j - i);
            u[i] = s / row_i[i];
        }
    }
    return 0;
}
WP_MULTIVERSION_FN(int, inverse_columns, (const double* r, double* ut, std::size_t n, std::size_t ja, std::size_t je),
                   (r, ut, n, ja, je), inverse_columns_impl(r, ut, n, ja, je))

constexpr std::size_t kInverseColumns = 32;  // columns of U solved together (sharing R's rows)

}  // namespace

// H^-1 = U^T U with U upper: if H = R R^T (R upper) then H^-1 = R^-T R^-1, so U = R^-1. One
// factorisation and one triangular inverse (GPTQ's route, a Cholesky of H, an inverse and a
// Cholesky of H^-1, does twice the work for the same U). Column j of U solves R u = e_j by
// back substitution; it is stored as row j of U^T, so each step is one contiguous dot, and
// the columns are independent (threads change nothing in the result).
bool inverse_hessian_factor(double* h, std::size_t n, double damping, int threads) {
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
    // the upper triangle is the one used: mirror the lower one into it (H is symmetric; take
    // the caller's lower triangle as the truth, as the former route did)
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = i + 1; j < n; ++j) h[i * n + j] = h[j * n + i];
    if (!cholesky_upper_from_below(h, n, threads)) return false;
    // ut row j = column j of U: u[i] = (delta_ij - sum_{k=i+1..j} R[i][k] u[k]) / R[i][i], for
    // i = j down to 0 (row i of R right of its diagonal is contiguous, as is u). Columns go
    // kInverseColumns at a time so that each row of R is read once for all of them; each
    // entry is the same expression whatever the grouping.
    std::vector<double> ut(n * n, 0.0);
    parallel_for((n + kInverseColumns - 1) / kInverseColumns, threads, [&](int, std::size_t group) {
        const std::size_t ja = group * kInverseColumns;
        inverse_columns(h, ut.data(), n, ja, std::min(n, ja + kInverseColumns));
    });
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < n; ++j) h[i * n + j] = j >= i ? ut[j * n + i] : 0.0;
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

// The column loop in blocks of kBlockCols (GPTQ's lazy batch): within a block each column's
// error updates only the block's later columns; after the block, its errors update the columns
// right of it in one pass, chunk by chunk (kChunkCols), so a chunk of U's block rows is read
// from cache by every row of the tile. Every element still receives its updates one column
// at a time in ascending column order, each rounded on its own (no fused multiply-add), so
// the bits are those of the plain column-by-column loop whatever the block, chunk, tile or
// thread count.
constexpr std::size_t kBlockCols = 64;
constexpr std::size_t kChunkCols = 256;
constexpr std::size_t kMaxTileRows = 64;

// wr[j] -= e_i * U[i][j] for the block's columns i in [i0, i1) ascending and j in [j0, j1):
// four columns per pass over wr, each update still its own rounded product and difference
// in the same order.
WP_FORCE_INLINE int trailing_update_impl(double* __restrict wr, const double* er, const double* u, std::size_t cols,
                                         std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
    std::size_t i = i0;
    for (; i + 4 <= i1; i += 4) {
        const double e0 = er[i - i0], e1 = er[i + 1 - i0], e2 = er[i + 2 - i0], e3 = er[i + 3 - i0];
        const double* __restrict u0 = u + i * cols;
        const double* __restrict u1 = u0 + cols;
        const double* __restrict u2 = u1 + cols;
        const double* __restrict u3 = u2 + cols;
        for (std::size_t j = j0; j < j1; ++j) {
            double x = wr[j];
            x -= e0 * u0[j];
            x -= e1 * u1[j];
            x -= e2 * u2[j];
            x -= e3 * u3[j];
            wr[j] = x;
        }
    }
    for (; i < i1; ++i) {
        const double e = er[i - i0];
        const double* __restrict ui = u + i * cols;
        for (std::size_t j = j0; j < j1; ++j) wr[j] -= e * ui[j];
    }
    return 0;
}
WP_MULTIVERSION_FN(int, trailing_update,
                   (double* wr, const double* er, const double* u, std::size_t cols, std::size_t i0, std::size_t i1,
                    std::size_t j0, std::size_t j1),
                   (wr, er, u, cols, i0, i1, j0, j1), trailing_update_impl(wr, er, u, cols, i0, i1, j0, j1))

}  // namespace

void error_feedback(double* w, std::size_t rows, std::size_t cols, const double* u, const FeedbackTarget& target,
                    std::int32_t* codes, int threads) {
    const Nearest nearest(target, rows, cols);
    // tiles small enough that every worker gets one
    const std::size_t workers = static_cast<std::size_t>(worker_count(rows, threads));
    const std::size_t tile_rows = std::max<std::size_t>(1, std::min(kMaxTileRows, (rows + workers - 1) / workers));
    const std::size_t tiles = (rows + tile_rows - 1) / tile_rows;
    parallel_for(tiles, threads, [&](int, std::size_t tile) {
        const std::size_t r0 = tile * tile_rows, r1 = std::min(rows, r0 + tile_rows);
        std::vector<double> err((r1 - r0) * kBlockCols);
        for (std::size_t i0 = 0; i0 < cols; i0 += kBlockCols) {
            const std::size_t i1 = std::min(cols, i0 + kBlockCols);
            for (std::size_t i = i0; i < i1; ++i) {
                const double* ui = u + i * cols;
                for (std::size_t r = r0; r < r1; ++r) {
                    double* wr = w + r * cols;
                    const double x = wr[i];
                    const double v = nearest(r, i, x, codes[r * cols + i]);
                    const double e = (x - v) / ui[i];
                    err[(r - r0) * kBlockCols + (i - i0)] = e;
                    for (std::size_t j = i + 1; j < i1; ++j) wr[j] -= e * ui[j];
                }
            }
            for (std::size_t j0 = i1; j0 < cols; j0 += kChunkCols) {
                const std::size_t j1 = std::min(cols, j0 + kChunkCols);
                for (std::size_t r = r0; r < r1; ++r)
                    trailing_update(w + r * cols, err.data() + (r - r0) * kBlockCols, u, cols, i0, i1, j0, j1);
            }
            throw_if_cancelled();
        }
    });
}

}  // namespace weightpress

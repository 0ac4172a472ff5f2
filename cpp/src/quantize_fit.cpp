#include "weightpress/quantize_fit.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "quantize_detail.h"
#include "weightpress/errors.h"
#include "weightpress/half.h"
#include "weightpress/kernels/quantize_block.h"
#include "weightpress/multiversion.h"
#include "weightpress/pack.h"
#include "weightpress/parallel.h"

namespace weightpress {
namespace {

// ---------------------------------------------------------------- the real-arithmetic sweep

// One nonzero value as the sweep sees it: its magnitude, and the largest level its sign
// can reach (hi for positive values, -lo for negative ones).
struct Magnitude {
    double a;
    int cap;
};

// Where the level of a value of magnitude a drops from k + 1 to k as the scale grows.
inline double breakpoint(double a, int k) { return a / (static_cast<double>(k) + 0.5); }

// The level (0..cap) of magnitude a just above scale s: the number of its breakpoints
// above s, counted with the same expression the sweep orders them by (so that the state at
// a sub-range's start and the events inside it agree exactly).
int level_above(const Magnitude& m, double s) {
    if (!(s > 0.0)) return m.cap;
    double guess = std::ceil(m.a / s - 0.5);
    int q = guess <= 0.0 ? 0 : guess >= m.cap ? m.cap : static_cast<int>(guess);
    while (q > 0 && !(breakpoint(m.a, q - 1) > s)) --q;
    while (q < m.cap && breakpoint(m.a, q) > s) ++q;
    return q;
}

struct Breakpoint {
    double at;
    double a;
    int k;  // the level drops from k + 1 to k at `at`
};

// Breakpoints held in memory at once; a longer sweep is cut into sub-ranges.
constexpr std::size_t kMaxBreakpoints = std::size_t{1} << 21;

// The best local minima, smallest error first.
class Candidates {
public:
    explicit Candidates(std::size_t keep) : keep_(std::max<std::size_t>(1, keep)) {}
    void offer(double s, double e) {
        if (list_.size() == keep_ && !(e < list_.back().error)) return;
        const auto at = std::upper_bound(list_.begin(), list_.end(), e,
                                         [](double v, const ScaleCandidate& c) { return v < c.error; });
        list_.insert(at, ScaleCandidate{s, e});
        if (list_.size() > keep_) list_.pop_back();
    }
    std::vector<ScaleCandidate> take() { return std::move(list_); }

private:
    std::size_t keep_;
    std::vector<ScaleCandidate> list_;
};

// One piece of E: on [from, to] the levels give A = sum a*q, B = sum q^2.
struct Piece {
    double from, to, A, B;
    double error(double w2, double s) const { return w2 + s * (s * B - 2.0 * A); }
};

// E(s) = w2 - 2 s A + s^2 B on the piece where the levels give A = sum a*q, B = sum q^2.
class Sweep {
public:
    // limit >= 0: also collect the pieces where E dips to limit or below.
    Sweep(double w2, std::size_t keep, double limit) : w2_(w2), limit_(limit), best_(keep) {}

    void start(double s, double A, double B) {
        A_ = A;
        B_ = B;
        at_ = s;
        first_ = true;
    }
    // The piece from the current position to y, then the level change there.
    void step_to(double y) {
        piece(at_, y);
        at_ = y;
    }
    void drop(double a, int k) {
        A_ -= a;
        B_ -= 2.0 * k + 1.0;
    }
    std::vector<ScaleCandidate> finish() {
        if (pending_) best_.offer(at_, error(at_));
        return best_.take();
    }
    std::vector<Piece> take_below() { return std::move(below_); }

private:
    double error(double s) const { return w2_ + s * (s * B_ - 2.0 * A_); }

    // Offers the local minima: a piece's interior minimum, or a breakpoint where a falling
    // piece meets a rising (or flat) one; the ends of the swept range count as breakpoints.
    // (The piece's minimiser A/B is compared as A vs B*x: no division but at a minimum.)
    void piece(double x, double y) {
        const bool first = first_;
        first_ = false;
        if (B_ <= 0.0) {  // every level zero: E = w2, flat
            if (limit_ >= 0.0 && w2_ <= limit_) below_.push_back({x, y, A_, B_});
            if (pending_) best_.offer(x, error(x));
            pending_ = false;
            return;
        }
        if (A_ <= B_ * x) {  // rising on [x, y]
            if (limit_ >= 0.0 && error(x) <= limit_) below_.push_back({x, y, A_, B_});
            if (pending_ || first) best_.offer(x, error(x));
            pending_ = false;
        } else if (A_ >= B_ * y) {  // falling on [x, y]
            if (limit_ >= 0.0 && error(y) <= limit_) below_.push_back({x, y, A_, B_});
            pending_ = true;
        } else {
            const double u = A_ / B_;
            const double e = error(u);
            if (limit_ >= 0.0 && e <= limit_) below_.push_back({x, y, A_, B_});
            best_.offer(u, e);
            pending_ = false;
        }
    }

    double w2_, limit_;
    std::vector<Piece> below_;
    Candidates best_;
    double A_ = 0.0, B_ = 0.0, at_ = 0.0;
    bool first_ = true, pending_ = false;
};

struct SweepResult {
    std::vector<ScaleCandidate> minima;               // best first
    std::vector<Piece> below;                         // the pieces where E <= limit somewhere (limit >= 0)
};

SweepResult sweep_scales(std::vector<Magnitude>& mags, double w2, std::size_t keep, double limit = -1.0) {
    if (mags.empty()) return {};
    // A feasible error bounds the optimum: no clipping (the largest a/cap), its levels, and
    // the best scale for those levels (E at A/B, never above E at the no-clip scale).
    double s_ref = 0.0;
    for (const Magnitude& m : mags) s_ref = std::max(s_ref, m.a / m.cap);
    double A = 0.0, B = 0.0;
    for (const Magnitude& m : mags) {
        const double q = std::min<double>(m.cap, std::nearbyint(m.a / s_ref));
        A += m.a * q;
        B += q * q;
    }
    // (a little above the bound, so that rounding in these sums cannot cut the optimum off)
    const double feasible = (B > 0.0 ? w2 - A * A / B : w2) * (1.0 + 1e-9) + 1e-300;
    const double upper = std::max(feasible, limit);

    // Below s_lo the clipping alone errs more than `upper` (bisection keeps LB(lo) > upper).
    auto clip_error = [&](double s) {
        double e = 0.0;
        for (const Magnitude& m : mags) {
            const double d = m.a - s * m.cap;
            if (d > 0.0) e += d * d;
        }
        return e;
    };
    double lo = 0.0, hi = s_ref;
    if (clip_error(0.0) > upper) {
        for (int i = 0; i < 30 && hi - lo > 1e-9 * hi; ++i) {
            const double mid = 0.5 * (lo + hi);
            (clip_error(mid) > upper ? lo : hi) = mid;
        }
    }
    const double s_lo = lo;
    // Above s_hi the values rounding to zero alone err more than `upper`.
    std::sort(mags.begin(), mags.end(), [](const Magnitude& x, const Magnitude& y) { return x.a < y.a; });
    double zeros = w2;  // values that never leave level 0
    for (const Magnitude& m : mags) zeros -= m.a * m.a;
    double s_hi = 2.0 * mags.back().a;  // beyond it every level is zero
    double below = std::max(0.0, zeros);
    for (const Magnitude& m : mags) {
        below += m.a * m.a;
        if (below > upper) {
            s_hi = 2.0 * m.a;
            break;
        }
    }
    if (s_hi < s_lo) s_hi = s_lo;

    Sweep sweep(w2, keep, limit);
    std::vector<int> level(mags.size());
    A = 0.0;
    B = 0.0;
    for (std::size_t i = 0; i < mags.size(); ++i) {
        level[i] = level_above(mags[i], s_lo);
        A += mags[i].a * level[i];
        B += static_cast<double>(level[i]) * level[i];
    }
    sweep.start(s_lo, A, B);
    // Sub-ranges (x, y] in ascending order, each holding at most kMaxBreakpoints (halved
    // geometrically until it does); `level` is the state at the current x.
    std::vector<Breakpoint> events;
    std::vector<std::pair<double, double>> todo{{s_lo, s_hi}};
    while (!todo.empty()) {
        const auto [x, y] = todo.back();
        todo.pop_back();
        std::size_t count = 0;
        for (std::size_t i = 0; i < mags.size(); ++i)
            count += static_cast<std::size_t>(level[i] - level_above(mags[i], y));
        if (count > kMaxBreakpoints && y > x * (1.0 + 1e-12) && x > 0.0) {
            const double mid = std::sqrt(x) * std::sqrt(y);
            todo.emplace_back(mid, y);
            todo.emplace_back(x, mid);
            continue;
        }
        events.clear();
        events.reserve(count);
        for (std::size_t i = 0; i < mags.size(); ++i) {
            const int stop = level_above(mags[i], y);
            for (int k = level[i] - 1; k >= stop; --k) events.push_back({breakpoint(mags[i].a, k), mags[i].a, k});
            level[i] = stop;
        }
        std::sort(events.begin(), events.end(), [](const Breakpoint& p, const Breakpoint& q) { return p.at < q.at; });
        for (const Breakpoint& e : events) {
            sweep.step_to(e.at);
            sweep.drop(e.a, e.k);
        }
        sweep.step_to(y);
        throw_if_cancelled();
    }
    SweepResult result;
    result.minima = sweep.finish();
    result.below = sweep.take_below();
    return result;
}

std::vector<Magnitude> magnitudes(const double* w, std::size_t n, int lo, int hi, double& w2) {
    std::vector<Magnitude> mags;
    mags.reserve(n);
    w2 = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        w2 += w[i] * w[i];
        const int cap = w[i] > 0.0 ? hi : -lo;
        if (w[i] != 0.0 && cap > 0) mags.push_back({std::fabs(w[i]), cap});
    }
    return mags;
}

// ---------------------------------------------------------------- the weight's dtype

struct HalfScale {
    using Stored = std::uint16_t;
    static constexpr bool kIsHalf = true;
    static float load(std::uint16_t h) { return wp::half_to_float(h); }
    static Stored nearest(double s) { return half_from_double(s); }
    static Stored store(float s) { return static_cast<Stored>(wp::half_bits(wp::round_half(s))); }
    static Stored up(Stored s) { return static_cast<Stored>(s + 1); }  // positive, finite: the next value
    static Stored down(Stored s) { return static_cast<Stored>(s - 1); }
    static bool usable(Stored s) { return s > 0 && s < 0x7c00; }
    static float value(Stored s) { return wp::half_to_float(s); }
    // The smallest positive value >= x (x >= 0), or an unusable one.
    static Stored at_least(double x) {
        Stored h = x > 0.0 ? half_from_double(x) : Stored{1};
        if (h < 0x7c00 && value(h) < x) ++h;
        return h;
    }
    // Rounding one decoded product: relative u for normal results, absolute eta below.
    static constexpr double kUnitRoundoff = 0x1p-11;
    static constexpr bool kSearchWindow = true;
    static constexpr std::size_t kMinimaForBound = 2;  // the window search below decides
    static constexpr double kSubnormalError = 0x1p-25;
    // constexpr_blockwise_shift_scale in fp16: the product of two halves is exact in float,
    // rounded to half once.
    static float decode_fast(float s, float level) { return round_half_branchless(s * level); }
};

struct FloatScale {
    using Stored = float;
    static constexpr bool kIsHalf = false;
    static float load(float x) { return x; }
    static Stored nearest(double s) { return static_cast<float>(s); }
    static Stored store(float s) { return s; }
    static Stored up(Stored s) { return std::nextafter(s, std::numeric_limits<float>::infinity()); }
    static Stored down(Stored s) { return std::nextafter(s, 0.0f); }
    static bool usable(Stored s) { return s > 0.0f && std::isfinite(s); }
    static float value(Stored s) { return s; }
    static Stored at_least(double x) {
        float f = x > 0.0 ? static_cast<float>(x) : std::numeric_limits<float>::denorm_min();
        if (std::isfinite(f) && f < x) f = up(f);
        return f;
    }
    static constexpr double kUnitRoundoff = 0x1p-24;
    static constexpr bool kSearchWindow = false;
    static constexpr std::size_t kMinimaForBound = 8;  // no window search: these decide
    static constexpr double kSubnormalError = 0x1p-150;
    static float decode_fast(float s, float level) { return s * level; }
};

// The error of a block at one stored scale, every value at its nearest level as decoded
// (levels lo..hi), the levels written to `levels`. Decoding is monotone in the level, so
// the nearest decoded value is one of the two around w: rint(w / s) is one of them (a
// decoded product errs by at most s/16 for |level| <= 128, too little to move the guess
// past the pair), and the side w lies on names the other. A zero scale decodes everything
// to zero (coremltools' all-zero blocks).
//
// Branch-free so that it vectorises; the squared errors are summed in double in eight
// lanes of a fixed order (the same bits on every instruction set). With `stop_above` the
// sum is abandoned, returning a value above it, once a chunk's running total exceeds it:
// it only grows, so such a scale cannot win.
constexpr std::size_t kErrorLanes = 8;
constexpr std::size_t kErrorChunk = 16;  // elements between early-exit checks (a multiple of the lanes)

// One value: its level (r, a float integer) and squared error at the nearest decoded level.
template <typename D>
WP_FORCE_INLINE double nearest_level(float x, float s, float divisor, float guard, float flo, float fhi, float& level) {
    float r = std::min(std::max(x / divisor * guard, flo), fhi);
    r = std::copysign((std::fabs(r) + 8388608.0f) - 8388608.0f, r);  // rint, |r| <= 255
    const float d0v = D::decode_fast(s, r);
    const float r1 = std::min(std::max(r + (x > d0v ? 1.0f : -1.0f), flo), fhi);
    const float d1v = D::decode_fast(s, r1);
    const double e0 = static_cast<double>(x) - static_cast<double>(d0v);
    const double e1 = static_cast<double>(x) - static_cast<double>(d1v);
    const bool take1 = e1 * e1 < e0 * e0;
    level = take1 ? r1 : r;
    return take1 ? e1 * e1 : e0 * e0;
}

template <typename D>
WP_FORCE_INLINE double block_error_impl(const float* w, std::size_t n, float s, int lo, int hi, int* levels,
                                        double stop_above) {
    const float flo = static_cast<float>(lo), fhi = static_cast<float>(hi);
    const float guard = s > 0.0f ? 1.0f : 0.0f;  // zero scale: every level 0
    const float divisor = s > 0.0f ? s : 1.0f;
    double lane[kErrorLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
    float level[kErrorLanes];
    std::size_t i = 0;
    while (i + kErrorLanes <= n) {
        const std::size_t stop = std::min(n - n % kErrorLanes, i + kErrorChunk);
        for (; i < stop; i += kErrorLanes) {
            for (std::size_t j = 0; j < kErrorLanes; ++j)
                lane[j] += nearest_level<D>(w[i + j], s, divisor, guard, flo, fhi, level[j]);
            for (std::size_t j = 0; j < kErrorLanes; ++j) levels[i + j] = static_cast<int>(level[j]);
        }
        double sum = 0.0;
        for (double v : lane) sum += v;
        if (sum > stop_above) return sum;
    }
    for (std::size_t j = 0; i < n; ++i, ++j) {
        lane[j] += nearest_level<D>(w[i], s, divisor, guard, flo, fhi, level[0]);
        levels[i] = static_cast<int>(level[0]);
    }
    double sum = 0.0;
    for (double v : lane) sum += v;
    return sum;
}

WP_MULTIVERSION_FN(double, block_error_half,
                   (const float* w, std::size_t n, float s, int lo, int hi, int* levels, double stop_above),
                   (w, n, s, lo, hi, levels, stop_above),
                   block_error_impl<HalfScale>(w, n, s, lo, hi, levels, stop_above))
WP_MULTIVERSION_FN(double, block_error_float,
                   (const float* w, std::size_t n, float s, int lo, int hi, int* levels, double stop_above),
                   (w, n, s, lo, hi, levels, stop_above),
                   block_error_impl<FloatScale>(w, n, s, lo, hi, levels, stop_above))

template <typename D>
double block_error(const float* w, std::size_t n, float s, int lo, int hi, int* levels,
                   double stop_above = std::numeric_limits<double>::infinity()) {
    if constexpr (D::kIsHalf)
        return block_error_half(w, n, s, lo, hi, levels, stop_above);
    else
        return block_error_float(w, n, s, lo, hi, levels, stop_above);
}

struct Choice {
    double error;
    float scale;  // a value of the dtype
    int zero_point;
};

// Zero points to try, coremltools' first.
std::vector<int> zero_points(const QuantizeSpec& spec, int full_lo, int full_hi, int coremltools_zp) {
    if (spec.symmetric) return {coremltools_zp};  // signed: none (0); unsigned: coremltools' midpoint
    std::vector<int> zs{coremltools_zp};
    const int reach = spec.nbits <= 4 ? full_hi - full_lo : 2;
    for (int d = 1; d <= reach; ++d)
        for (int z : {coremltools_zp - d, coremltools_zp + d})
            if (z >= full_lo && z <= full_hi) zs.push_back(z);
    return zs;
}

// Local minima per zero point whose dtype neighbours give the first decoder-checked bound.
constexpr std::size_t kMinimaChecked = 8;
// Dtype scales checked in the decoder's arithmetic per block, at most (see the docs: the
// window holds a few dozen in practice; past this bound the search stops, still never
// worse than coremltools).
constexpr std::size_t kMaxScalesChecked = std::size_t{1} << 14;

// The real error below which a dtype scale must lie to beat `best` in the decoder's
// arithmetic. Each decoded product errs by at most u|s q| + eta, so with e_i the real
// error of value i at its nearest real level,
//   E_true(s) >= sum ((1-u) sqrt(e_i) - u |w_i| - eta)^2 >= (1-u)^2 E - 2 sqrt(E) c,
//   c = u sqrt(W2) + eta sqrt(n)   (Cauchy-Schwarz),
// and E_true(s) <= best needs E <= r^2, r = (c + sqrt(c^2 + (1-u)^2 best)) / (1-u)^2.
template <typename D>
double real_error_limit(double best, double w2, std::size_t n) {
    const double u = D::kUnitRoundoff, v = (1.0 - u) * (1.0 - u);
    const double c = u * std::sqrt(w2) + D::kSubnormalError * std::sqrt(static_cast<double>(n));
    const double r = (c + std::sqrt(c * c + v * best)) / v;
    return r * r * (1.0 + 1e-9) + 1e-300;
}

template <typename D>
Choice best_choice(const float* w, std::size_t n, const QuantizeSpec& spec, std::vector<double>& wd,
                   int* levels) {
    float mn = std::numeric_limits<float>::infinity(), mx = -mn;
    for (std::size_t i = 0; i < n; ++i) {
        if (!std::isfinite(w[i])) throw NonFiniteInput("quantize: weight contains NaN or Inf");
        mn = std::min(mn, w[i]);
        mx = std::max(mx, w[i]);
    }
    const wp::BlockQuant cm = wp::block_qparams(mn, mx, static_cast<std::uint32_t>(spec.nbits), spec.is_signed,
                                                spec.symmetric, D::kIsHalf);
    const int full_lo = detail::full_range_lo(spec), full_hi = detail::full_range_hi(spec);
    const bool has_zp = !(spec.is_signed && spec.symmetric);
    const int cm_zp = has_zp ? static_cast<int>(cm.stored_zp) : 0;

    // coremltools' parameters first: they win every tie
    const float cm_scale = D::value(D::store(cm.scale));
    Choice best{block_error<D>(w, n, cm_scale, full_lo - cm_zp, full_hi - cm_zp, levels), cm_scale, cm_zp};
    bool best_is_coremltools = true;
    std::size_t checked = 0;
    std::vector<typename D::Stored> tried;
    auto check = [&](typename D::Stored v, int z, bool dedupe) {
        if (!D::usable(v)) return;
        if (dedupe) {  // the few neighbours of step 1; step 2's intervals are disjoint
            if (std::find(tried.begin(), tried.end(), v) != tried.end()) return;
            tried.push_back(v);
        }
        ++checked;
        const float scale = D::value(v);
        const double e = block_error<D>(w, n, scale, full_lo - z, full_hi - z, levels, best.error);
        // Ties: coremltools' parameters, else the smallest (zero point, scale), whatever the
        // order the candidates came in.
        if (e < best.error || (e == best.error && !best_is_coremltools &&
                               (z < best.zero_point || (z == best.zero_point && scale < best.scale)))) {
            best = Choice{e, scale, z};
            best_is_coremltools = false;
        }
    };

    // 1. The real sweep per zero point. It also keeps the pieces where the real error is low
    //    enough for a scale to beat coremltools' decoded error (a superset of step 2's
    //    window, which only shrinks as the bound improves), so one sweep serves both steps.
    wd.assign(w, w + n);
    double w2 = 0.0;
    for (double v : wd) w2 += v * v;
    const double first_limit = D::kSearchWindow ? real_error_limit<D>(best.error, w2, n) : -1.0;
    struct Solved {
        int z;
        SweepResult sweep;
    };
    std::vector<Solved> solved;
    std::vector<Magnitude> mags;
    for (int z : zero_points(spec, full_lo, full_hi, cm_zp)) {
        double unused = 0.0;
        mags = magnitudes(wd.data(), n, full_lo - z, full_hi - z, unused);
        Solved s{z, sweep_scales(mags, w2, kMinimaChecked, first_limit)};
        if (!s.sweep.minima.empty()) solved.push_back(std::move(s));
    }
    auto least = [](const Solved& s) { return s.sweep.minima.front().error; };
    std::stable_sort(solved.begin(), solved.end(), [&](const Solved& x, const Solved& y) { return least(x) < least(y); });
    //    The dtype neighbours of the best minima bound the decoded optimum from above.
    for (const Solved& s : solved) {
        if (least(s) > least(solved.front()) * 1.5) break;
        tried.clear();
        for (std::size_t m = 0; m < s.sweep.minima.size() && m < D::kMinimaForBound; ++m) {
            const typename D::Stored r = D::nearest(s.sweep.minima[m].scale);
            for (typename D::Stored v : {r, D::up(r), D::down(r)}) check(v, s.z, true);
        }
    }
    // 2. Every dtype scale whose real error is low enough to beat that bound: the decoder
    //    decides among them. fp32 stops at step 1: its window holds thousands of floats, and
    //    what they could gain is below the bound itself (about 4 * 2^-24 * sqrt(W2 * E), a
    //    relative 1e-6 on real blocks).
    if constexpr (!D::kSearchWindow) return best;
    for (const Solved& s : solved) {
        if (least(s) > real_error_limit<D>(best.error, w2, n)) continue;
        typename D::Stored next = 0;  // pieces meet at their ends: each value once
        for (const Piece& piece : s.sweep.below) {
            typename D::Stored v = std::max(D::at_least(piece.from), next);
            for (; D::usable(v) && D::value(v) <= piece.to; v = D::up(v)) {
                if (piece.error(w2, D::value(v)) > real_error_limit<D>(best.error, w2, n)) continue;
                if (checked >= kMaxScalesChecked) return best;
                check(v, s.z, false);
            }
            next = v;
        }
    }
    return best;
}

struct BlockScratch {
    std::vector<float> values;
    std::vector<double> wd;
    std::vector<int> levels;
};

template <typename D, typename In>
void quantize_best_any(const In* weight, const QuantizeSpec& spec, int threads, std::uint8_t* data, bool pack,
                       typename D::Stored* scale_out, std::uint8_t* zp_out) {
    detail::check_spec(spec);
    std::size_t count = 1;
    for (int a = 0; a < spec.rank; ++a) count *= static_cast<std::size_t>(spec.shape[a]);
    const std::size_t blocks = quantize_block_count(spec);
    const bool packed = pack && spec.nbits < 8;
    std::vector<std::uint8_t> unpacked(packed ? count : 0);
    std::uint8_t* bytes = packed ? unpacked.data() : data;
    std::vector<BlockScratch> scratch(static_cast<std::size_t>(resolve_threads(threads)));
    parallel_for(blocks, threads, [&](int worker, std::size_t b) {
        BlockScratch& sc = scratch[static_cast<std::size_t>(worker)];
        sc.values.clear();
        detail::for_each_run(spec, b, [&](std::size_t off, std::size_t len) {
            for (std::size_t i = 0; i < len; ++i) sc.values.push_back(D::load(weight[off + i]));
        });
        const std::size_t n = sc.values.size();
        sc.levels.resize(n);
        const Choice c = best_choice<D>(sc.values.data(), n, spec, sc.wd, sc.levels.data());
        const int full_lo = detail::full_range_lo(spec), full_hi = detail::full_range_hi(spec);
        block_error<D>(sc.values.data(), n, c.scale, full_lo - c.zero_point, full_hi - c.zero_point,
                       sc.levels.data());
        scale_out[b] = D::store(c.scale);
        if (zp_out) zp_out[b] = static_cast<std::uint8_t>(c.zero_point & 0xff);
        std::size_t i = 0;
        detail::for_each_run(spec, b, [&](std::size_t off, std::size_t len) {
            for (std::size_t j = 0; j < len; ++j, ++i)
                bytes[off + j] = static_cast<std::uint8_t>((sc.levels[i] + c.zero_point) & 0xff);
        });
    });
    if (packed) pack_bits(unpacked.data(), count, spec.nbits, data, threads);
}

}  // namespace

std::vector<ScaleCandidate> best_real_scales(const double* w, std::size_t n, int lo, int hi, std::size_t keep) {
    double w2 = 0.0;
    std::vector<Magnitude> mags = magnitudes(w, n, lo, hi, w2);
    return sweep_scales(mags, w2, keep).minima;
}

void quantize_best_f16(const std::uint16_t* weight, const QuantizeSpec& spec, int threads, std::uint8_t* data,
                       std::uint16_t* scale, std::uint8_t* zero_point, bool pack) {
    quantize_best_any<HalfScale>(weight, spec, threads, data, pack, scale, zero_point);
}

void quantize_best_f32(const float* weight, const QuantizeSpec& spec, int threads, std::uint8_t* data, float* scale,
                       std::uint8_t* zero_point, bool pack) {
    quantize_best_any<FloatScale>(weight, spec, threads, data, pack, scale, zero_point);
}

}  // namespace weightpress

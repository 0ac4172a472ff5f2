// Logarithm, exponential and power with the same bits on every IEEE-754 platform.
//
// They steer searches: the penalty search of the windowed k-means (kmeans1d_windows.cpp), the
// layer strategy of the full DP (kmeans1d.cpp) and the k-means++ trial count
// (vector_kmeans.cpp). libm's log, log2 and pow are not correctly rounded by contract, and
// glibc's and Apple's differ in the last bit for some arguments. A different penalty can
// change which of several exactly tied optimal clusterings the solver returns, and it
// changes the rounding of the SSE that sse_curve reads off a penalised pass, so with libm
// the results could differ between Linux and a Mac. These functions use only +, -, *, /
// (each correctly rounded by IEEE-754; contraction is off, -ffp-contract=off), floor and
// exact scalings by powers of two (frexp, ldexp): every platform computes the same bits.
//
// Accuracy: log and log2 within 4e-16, pow within 2e-14 relative (tests/test_isa.py compares
// them with libm through _core.steering_math); the searches need far less. Why no result
// depends on these bits but sse_curve's rounding: docs/kmeans1d.md.
//
// WEIGHTPRESS_STEERING_ULPS=N (tests only) moves every result by N ulps, to show what does
// and does not depend on these bits (tests/test_isa.py); read once.
#pragma once

#include <cmath>
#include <cstdlib>

namespace weightpress::steering {

inline int perturbation_ulps() {
    static const int ulps = [] {
        const char* v = std::getenv("WEIGHTPRESS_STEERING_ULPS");
        return v && *v ? std::atoi(v) : 0;
    }();
    return ulps;
}

inline double perturbed(double x) {
    for (int u = perturbation_ulps(); u > 0; --u) x = std::nextafter(x, HUGE_VAL);
    for (int u = perturbation_ulps(); u < 0; ++u) x = std::nextafter(x, -HUGE_VAL);
    return x;
}

constexpr double kLn2Hi = 6.93147180369123816490e-01;  // ln 2 to 32 bits: k * kLn2Hi is exact
constexpr double kLn2Lo = 1.90821492927058770002e-10;  // ln 2 - kLn2Hi
constexpr double kLn2 = 6.93147180559945286227e-01;

// Natural logarithm of a positive finite x.
inline double log_exact_bits(double x) {
    int e = 0;
    double m = std::frexp(x, &e);  // x = m 2^e, m in [0.5, 1): exact
    if (m < 0.70710678118654752440) {
        m *= 2.0;  // exact
        --e;
    }
    // m in [0.707, 1.414): log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172
    const double s = (m - 1.0) / (m + 1.0);
    const double s2 = s * s;
    double series = 1.0 / 25.0;
    for (int j = 23; j >= 1; j -= 2) series = series * s2 + 1.0 / j;
    return (e * kLn2Hi + 2.0 * s * series) + e * kLn2Lo;
}

// e^x for |x| < 700.
inline double exp_exact_bits(double x) {
    const double k = std::floor(x / kLn2 + 0.5);
    const double r = (x - k * kLn2Hi) - k * kLn2Lo;  // |r| <= 0.35
    double p = 1.0;
    for (int j = 18; j >= 1; --j) p = 1.0 + p * r / j;
    return std::ldexp(p, static_cast<int>(k));
}

inline double log(double x) { return perturbed(log_exact_bits(x)); }
inline double log2(double x) { return perturbed(log_exact_bits(x) / kLn2); }
// x^a for positive finite x and a moderate result.
inline double pow(double x, double a) { return perturbed(exp_exact_bits(a * log_exact_bits(x))); }

}  // namespace weightpress::steering

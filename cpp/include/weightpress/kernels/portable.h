// The subset of C++ that is also Metal Shading Language, for kernel bodies written once.
//
// Kernel headers include only this file. They use no double, no exceptions, no allocation,
// no recursion and no std:: names: everything they need comes from here.
//   WP_DEVICE / WP_CONST_DEVICE   address space of buffer pointers
//   WP_MATH::fabs, ::min, ::max, ::copysign, ::isnan   (metal:: or std::)
//   wp_float_bits / wp_bits_float                      bit casts (as_type / memcpy)
//   wp_atomic_u32, wp_atomic_add                       relaxed 32-bit atomics
// Floating-point contraction is disabled for kernel code: the CPU build passes
// -ffp-contract=off and the Metal library is compiled with fastMathEnabled = NO, and the
// bodies below never rely on fused multiply-adds.
#pragma once

#if defined(__METAL_VERSION__)
#include <metal_stdlib>
using namespace metal;
#define WP_DEVICE device
#define WP_CONST_DEVICE const device
#define WP_CONSTANT constant
#define WP_INLINE inline
#define WP_MATH metal
#define WP_THREADGROUP threadgroup
// Kernel-scope threadgroup arrays (shared by the threads of one threadgroup).
#ifndef WP_THREADGROUP_ARRAY
#define WP_THREADGROUP_ARRAY(type, name, size) threadgroup type name[size]
#endif
typedef metal::atomic_uint wp_atomic_u32;
inline uint32_t wp_float_bits(float x) { return as_type<uint32_t>(x); }
inline float wp_bits_float(uint32_t u) { return as_type<float>(u); }
inline void wp_atomic_add(WP_DEVICE wp_atomic_u32* p, uint32_t v) {
    metal::atomic_fetch_add_explicit(p, v, metal::memory_order_relaxed);
}
#else
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#define WP_DEVICE
#define WP_CONST_DEVICE const
#define WP_CONSTANT const
#define WP_INLINE inline
#define WP_MATH std
#define WP_THREADGROUP
typedef std::atomic<uint32_t> wp_atomic_u32;
inline uint32_t wp_float_bits(float x) {
    uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}
inline float wp_bits_float(uint32_t u) {
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}
inline void wp_atomic_add(wp_atomic_u32* p, uint32_t v) { p->fetch_add(v, std::memory_order_relaxed); }
#endif

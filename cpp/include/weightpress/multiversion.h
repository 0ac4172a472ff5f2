// Hot loops compiled for several x86-64 levels, the best picked when the module loads
// (GCC/clang target_clones; x86-64 Linux only, elsewhere one baseline build). IEEE
// operations round the same at every vector width and contraction is off
// (-ffp-contract=off), so every clone returns the same bits.
#pragma once

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define WP_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define WP_MULTIVERSION
#endif

// Never let an exception leave a multiversioned function (GCC 12 may treat the dispatched
// call as nothrow: the exception then terminates the process); return a status instead.
//
// A helper of a multiversioned loop must be inlined into each clone to be compiled for its
// instruction set (an out-of-line helper is built once, for the baseline).
#if defined(__GNUC__) || defined(__clang__)
#define WP_FORCE_INLINE inline __attribute__((always_inline))
#else
#define WP_FORCE_INLINE inline
#endif

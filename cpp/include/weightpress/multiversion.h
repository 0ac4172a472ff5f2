// Hot loops compiled for several x86-64 levels (x86-64-v4, x86-64-v3, the baseline), the
// best the CPU supports picked at run time (x86-64 Linux with GCC/clang; elsewhere one
// baseline build). IEEE operations round the same at every vector width and contraction is
// off (-ffp-contract=off), so every copy returns the same bits -- which tests check by
// capping the level: WEIGHTPRESS_ISA=baseline | x86-64-v3 | x86-64-v4 (never above what the
// CPU has), read once when the first kernel runs.
//
//   WP_MULTIVERSION_FN(ret, name, (params), (args), body_call)
// defines `ret name(params)` that runs `body_call` (an expression over args, usually a
// WP_FORCE_INLINE implementation) compiled once per level. The implementation and its
// helpers must be inlined into each copy to be compiled for its instruction set (an
// out-of-line helper is built once, for the baseline).
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define WP_FORCE_INLINE inline __attribute__((always_inline))
#else
#define WP_FORCE_INLINE inline
#endif

namespace weightpress {

// The level kernels run at: 0 baseline, 3 x86-64-v3, 4 x86-64-v4 (capped by WEIGHTPRESS_ISA).
int isa_level();
const char* isa_name();

}  // namespace weightpress

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define WP_MULTIVERSIONED 1
#define WP_MULTIVERSION_FN(ret, name, params, args, call)                                    \
    __attribute__((target("arch=x86-64-v4"))) static ret name##_x86_64_v4 params { return call; } \
    __attribute__((target("arch=x86-64-v3"))) static ret name##_x86_64_v3 params { return call; } \
    static ret name##_baseline params { return call; }                                         \
    ret name params {                                                                          \
        switch (::weightpress::isa_level()) {                                                  \
            case 4: return name##_x86_64_v4 args;                                              \
            case 3: return name##_x86_64_v3 args;                                              \
            default: return name##_baseline args;                                              \
        }                                                                                      \
    }
#else
#define WP_MULTIVERSIONED 0
#define WP_MULTIVERSION_FN(ret, name, params, args, call) \
    ret name params { return call; }
#endif

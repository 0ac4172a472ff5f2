// Which copy of the multiversioned loops runs (multiversion.h).
//
// The level is read feature by feature from CPUID and XGETBV rather than with
// __builtin_cpu_supports("x86-64-v4"): clang before 16 has no level strings ("invalid cpu
// feature string for builtin" from Debian's and Ubuntu 22.04's clang 14), and the features of
// each level are fixed by the x86-64 psABI, so one reading works with every compiler. A level
// also needs the OS to save its registers (XCR0), as the compilers' own checks require.
#include <cstdint>
#include <initializer_list>
#include <cstdlib>
#include <cstring>

#include "weightpress/multiversion.h"

#if WP_MULTIVERSIONED
#include <cpuid.h>
#endif

namespace weightpress {
namespace {

#if WP_MULTIVERSIONED
struct Cpuid {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
};

Cpuid cpuid(unsigned leaf, unsigned subleaf = 0) {
    Cpuid r;
    if (!__get_cpuid_count(leaf, subleaf, &r.eax, &r.ebx, &r.ecx, &r.edx)) return Cpuid{};
    return r;
}

bool bits(unsigned reg, std::initializer_list<int> positions) {
    for (int p : positions)
        if (!((reg >> p) & 1u)) return false;
    return true;
}

std::uint64_t xcr0() {
    std::uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (std::uint64_t(hi) << 32) | lo;
}

int detect() {
    const Cpuid l1 = cpuid(1), l7 = cpuid(7, 0), ext = cpuid(0x80000001u);
    // x86-64-v2: SSE3, SSSE3, CMPXCHG16B, SSE4.1, SSE4.2, POPCNT; LAHF/SAHF
    const bool v2 = bits(l1.ecx, {0, 9, 13, 19, 20, 23}) && bits(ext.ecx, {0});
    // OSXSAVE, then the OS saves XMM and YMM state
    const bool os_ymm = bits(l1.ecx, {27}) && (xcr0() & 0x6) == 0x6;
    // x86-64-v3: FMA, MOVBE, XSAVE, AVX, F16C; AVX2, BMI1, BMI2; LZCNT
    const bool v3 = v2 && os_ymm && bits(l1.ecx, {12, 22, 26, 28, 29}) && bits(l7.ebx, {3, 5, 8}) &&
                    bits(ext.ecx, {5});
    if (!v3) return 0;
    // x86-64-v4: AVX512F, AVX512DQ, AVX512CD, AVX512BW, AVX512VL; opmask and ZMM state saved
    const bool v4 = bits(l7.ebx, {16, 17, 28, 30, 31}) && (xcr0() & 0xe6) == 0xe6;
    return v4 ? 4 : 3;
}
#else
int detect() { return 0; }
#endif

int capped(int level) {
    const char* cap = std::getenv("WEIGHTPRESS_ISA");
    if (!cap || !*cap) return level;
    if (std::strcmp(cap, "baseline") == 0) return 0;
    if (std::strcmp(cap, "x86-64-v3") == 0) return level < 3 ? level : 3;
    return level;  // x86-64-v4 or anything else: what the CPU has
}

}  // namespace

int isa_level() {
    static const int level = capped(detect());
    return level;
}

const char* isa_name() {
    switch (isa_level()) {
        case 4: return "x86-64-v4";
        case 3: return "x86-64-v3";
        default: return "baseline";
    }
}

}  // namespace weightpress

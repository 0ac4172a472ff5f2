// Which copy of the multiversioned loops runs (multiversion.h).
#include <cstdlib>
#include <cstring>

#include "weightpress/multiversion.h"

namespace weightpress {
namespace {

int detect() {
#if WP_MULTIVERSIONED
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return 4;
    if (__builtin_cpu_supports("x86-64-v3")) return 3;
#endif
    return 0;
}

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

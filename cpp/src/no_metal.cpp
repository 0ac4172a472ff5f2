// Stub for builds without Metal (every platform but Apple's).
#include <stdexcept>

#include "weightpress/metal_backend.h"

namespace weightpress {

MetalStatus metal_status() {
#if defined(__linux__)
    const char* platform = "Linux";
#elif defined(_WIN32)
    const char* platform = "Windows";
#else
    const char* platform = "this platform";
#endif
    return {false, std::string("built without Metal: the Metal backend needs an Apple platform (this build: ") +
                       platform + ")"};
}

void metal_quantize(const void*, bool, std::uint32_t, std::uint32_t, std::uint32_t, std::uint32_t, int, bool, bool,
                    std::uint8_t*, void*, std::uint8_t*) {
    throw std::runtime_error("quantize: the Metal backend is not available: " + metal_status().reason);
}

}  // namespace weightpress

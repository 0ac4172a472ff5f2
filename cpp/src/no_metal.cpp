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

namespace {
[[noreturn]] void unavailable(const char* op) {
    throw std::runtime_error(std::string(op) + ": the Metal backend is not available: " + metal_status().reason);
}
}  // namespace

void metal_quantize(const void*, bool, std::uint32_t, std::uint32_t, std::uint32_t, std::uint32_t, int, bool, bool,
                    std::uint8_t*, void*, std::uint8_t*) {
    unavailable("quantize");
}

void metal_histogram_f16(const std::uint16_t*, std::size_t, std::uint32_t*) { unavailable("palettize"); }

void metal_encode_pack(const std::uint16_t*, std::size_t, const std::uint8_t*, int, std::uint8_t*) {
    unavailable("palettize");
}

void metal_pack_bits(const std::uint8_t*, std::size_t, int, std::uint8_t*) { unavailable("pack_bits"); }

std::size_t metal_sparsify(const void*, bool, std::size_t, float, std::uint8_t*, void*) { unavailable("prune"); }

}  // namespace weightpress

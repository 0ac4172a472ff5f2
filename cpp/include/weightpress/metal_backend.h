// The Metal backend behind a plain C++ interface. Built from metal/metal_backend.mm on Apple
// platforms (CMake if(APPLE)); everywhere else cpp/src/no_metal.cpp reports why not.
// Nothing here has run on a Mac yet: see metal/README.md for what was tested and how.
#pragma once

#include <cstdint>
#include <string>

namespace weightpress {

struct MetalStatus {
    bool available;
    std::string reason;  // why not, or the device name
};

MetalStatus metal_status();

// Blockwise quantization of a rows x cols weight (fp16 bit patterns or float32) in blocks of
// block_rows x block_cols: the contract of quantize_f16 / quantize_f32 (quantize.h) for a
// weight whose blocks tile a 2-D view. Throws std::runtime_error when Metal is unavailable.
void metal_quantize(const void* weight, bool is_half, std::uint32_t rows, std::uint32_t cols,
                    std::uint32_t block_rows, std::uint32_t block_cols, int nbits, bool is_signed, bool symmetric,
                    std::uint8_t* data, void* scale, std::uint8_t* zero_point);

}  // namespace weightpress

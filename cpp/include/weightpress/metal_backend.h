// The Metal backend behind a plain C++ interface. Built from metal/metal_backend.mm on Apple
// platforms (CMake if(APPLE)); everywhere else cpp/src/no_metal.cpp reports why not.
// Nothing here has run on a Mac yet: see metal/README.md for what was tested and how.
//
// Every function runs one or two of the shipped kernels (metal/*.metal) on shared buffers
// and throws std::runtime_error when Metal is unavailable. Their contracts are those of the
// CPU functions they stand in for, which the Python layer calls on the CPU otherwise.
#pragma once

#include <cstddef>
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
// weight whose blocks tile a 2-D view (kernel wp_quantize_block).
void metal_quantize(const void* weight, bool is_half, std::uint32_t rows, std::uint32_t cols,
                    std::uint32_t block_rows, std::uint32_t block_cols, int nbits, bool is_signed, bool symmetric,
                    std::uint8_t* data, void* scale, std::uint8_t* zero_point);

// bins[65536] = count of every fp16 bit pattern among values[0..n) (kernel wp_histogram_f16).
void metal_histogram_f16(const std::uint16_t* values, std::size_t n, std::uint32_t* bins);

// The LSB-first nbits-per-element stream of codes[values[e]] (kernel wp_encode_pack);
// nbits = 8 gives one code per byte (the unpacked indices).
void metal_encode_pack(const std::uint16_t* values, std::size_t n, const std::uint8_t* codes, int nbits,
                       std::uint8_t* packed);

// Core ML's sub-byte packing of values[0..n) (kernel wp_pack_bits): pack.h's pack_bits.
void metal_pack_bits(const std::uint8_t* values, std::size_t n, int nbits, std::uint8_t* packed);

// Pruning by a cut: mask bit e set where w[e] != 0 and |w[e]| > cut, the kept values
// gathered in C order (kernels wp_sparse_mask, wp_sparse_gather); values are fp16 bit
// patterns or float32. Returns the kept count. prune.h's sparsify with a threshold.
std::size_t metal_sparsify(const void* values, bool is_half, std::size_t n, float cut, std::uint8_t* mask,
                           void* kept);

}  // namespace weightpress

// Sub-byte packing as Core ML stores it (coremltools pack_elements_into_bits, MILBlob
// PackUInt8Span): elements form one LSB-first bit stream; element i occupies stream bits
// [i*nbits, (i+1)*nbits), stream bit b is bit (b % 8) of byte b / 8; the last byte is
// zero-padded. Signed values are packed as their two's-complement low nbits.
// (docs/formats.md, "Bit packing")
#pragma once

#include <cstddef>
#include <cstdint>

namespace weightpress {

inline std::size_t packed_size(std::size_t n, int nbits) {
    return (n * static_cast<std::size_t>(nbits) + 7) / 8;
}

// values[i] must fit in nbits (only the low nbits are used). out has packed_size bytes.
void pack_bits(const std::uint8_t* values, std::size_t n, int nbits, std::uint8_t* out, int threads);

// pack_bits of one range on the calling thread (kernels that pack their own chunks; a chunk
// must start at a byte boundary of the stream, e.g. at a multiple of 8 elements).
void pack_bits_range(const std::uint8_t* values, std::size_t n, int nbits, std::uint8_t* out);

// Inverse of pack_bits: out[i] = the i-th nbits field (zero-extended).
void unpack_bits(const std::uint8_t* packed, std::size_t n, int nbits, std::uint8_t* out, int threads);

}  // namespace weightpress

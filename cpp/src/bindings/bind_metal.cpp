#include <pybind11/numpy.h>

#include "bindings.h"
#include "weightpress/metal_backend.h"

namespace py = pybind11;

namespace weightpress::bindings {

void register_metal(py::module_& m) {
    m.def("metal_status", [] {
        const MetalStatus s = metal_status();
        return py::make_tuple(s.available, s.reason);
    }, "(available, reason) of the Metal backend in this build");
    m.def(
        "metal_quantize",
        [](py::array weight, std::uint32_t rows, std::uint32_t cols, std::uint32_t block_rows,
           std::uint32_t block_cols, int nbits, bool is_signed, bool symmetric) {
            const bool is_half = weight.dtype().itemsize() == 2;
            const auto blocks = static_cast<py::ssize_t>((rows / block_rows) * (cols / block_cols));
            py::array_t<std::uint8_t> data(static_cast<py::ssize_t>(rows) * cols);
            py::array scale = is_half ? py::array(py::array_t<std::uint16_t>(blocks))
                                      : py::array(py::array_t<float>(blocks));
            py::array_t<std::uint8_t> zp(blocks);
            const void* w = weight.data();
            void* sp = scale.mutable_data();
            std::uint8_t* d = data.mutable_data();
            std::uint8_t* z = zp.mutable_data();
            {
                py::gil_scoped_release release;
                metal_quantize(w, is_half, rows, cols, block_rows, block_cols, nbits, is_signed, symmetric, d, sp, z);
            }
            return py::make_tuple(data, scale, zp);
        },
        "Blockwise quantization on the GPU (Apple builds only)");
    m.def(
        "metal_histogram_f16",
        [](py::array_t<std::uint16_t, py::array::c_style> values) {
            py::array_t<std::uint32_t> bins(65536);
            const std::uint16_t* v = values.data();
            std::uint32_t* b = bins.mutable_data();
            const std::size_t n = static_cast<std::size_t>(values.size());
            py::gil_scoped_release release;
            metal_histogram_f16(v, n, b);
            return bins;
        },
        "65,536-bin histogram of fp16 bit patterns on the GPU");
    m.def(
        "metal_encode_pack",
        [](py::array_t<std::uint16_t, py::array::c_style> values, py::array_t<std::uint8_t, py::array::c_style> codes,
           int nbits) {
            if (codes.size() != 65536) throw py::value_error("palettize: the code table needs 65,536 entries");
            if (nbits < 1 || nbits > 8) throw py::value_error("palettize: nbits must be in 1..8");
            const std::size_t n = static_cast<std::size_t>(values.size());
            py::array_t<std::uint8_t> packed(static_cast<py::ssize_t>((n * nbits + 7) / 8));
            const std::uint16_t* v = values.data();
            const std::uint8_t* c = codes.data();
            std::uint8_t* o = packed.mutable_data();
            py::gil_scoped_release release;
            metal_encode_pack(v, n, c, nbits, o);
            return packed;
        },
        "codes[values] packed LSB-first, nbits per element, on the GPU");
    m.def(
        "metal_pack_bits",
        [](py::array_t<std::uint8_t, py::array::c_style> values, int nbits) {
            if (nbits < 1 || nbits > 8) throw py::value_error("pack_bits: nbits must be in 1..8");
            const std::size_t n = static_cast<std::size_t>(values.size());
            py::array_t<std::uint8_t> packed(static_cast<py::ssize_t>((n * nbits + 7) / 8));
            const std::uint8_t* v = values.data();
            std::uint8_t* o = packed.mutable_data();
            py::gil_scoped_release release;
            metal_pack_bits(v, n, nbits, o);
            return packed;
        },
        "Core ML's sub-byte packing on the GPU");
    m.def(
        "metal_sparsify",
        [](py::array values, float cut) {
            const bool is_half = values.dtype().itemsize() == 2;
            const std::size_t n = static_cast<std::size_t>(values.size());
            py::array_t<std::uint8_t> mask(static_cast<py::ssize_t>((n + 7) / 8));
            py::array kept = is_half ? py::array(py::array_t<std::uint16_t>(static_cast<py::ssize_t>(n)))
                                     : py::array(py::array_t<float>(static_cast<py::ssize_t>(n)));
            const void* v = values.data();
            std::uint8_t* m_ = mask.mutable_data();
            void* k = kept.mutable_data();
            std::size_t count;
            {
                py::gil_scoped_release release;
                count = metal_sparsify(v, is_half, n, cut, m_, k);
            }
            return py::make_tuple(mask, kept[py::slice(0, static_cast<py::ssize_t>(count), 1)]);
        },
        "Pruning by a cut on the GPU -> (packed mask, kept values)");
}

}  // namespace weightpress::bindings

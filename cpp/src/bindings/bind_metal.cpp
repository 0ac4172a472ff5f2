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
}

}  // namespace weightpress::bindings

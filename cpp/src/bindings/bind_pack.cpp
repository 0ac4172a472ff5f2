#include <pybind11/numpy.h>

#include "bindings.h"
#include "weightpress/half.h"
#include "weightpress/pack.h"

namespace py = pybind11;

namespace weightpress::bindings {

using U8 = py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast>;

void register_pack(py::module_& m) {
    m.def(
        "pack_bits",
        [](U8 values, int nbits, int threads) {
            if (nbits < 1 || nbits > 8) throw py::value_error("pack_bits: nbits must be in [1, 8]");
            const std::size_t n = static_cast<std::size_t>(values.size());
            U8 out(static_cast<py::ssize_t>(packed_size(n, nbits)));
            const std::uint8_t* in = values.data();
            std::uint8_t* o = out.mutable_data();
            run_cancellable([&] {
                pack_bits(in, n, nbits, o, threads);
            });
            return out;
        },
        py::arg("values"), py::arg("nbits"), py::arg("threads") = 0);
    m.def(
        "unpack_bits",
        [](U8 packed, std::size_t n, int nbits, int threads) {
            if (nbits < 1 || nbits > 8) throw py::value_error("unpack_bits: nbits must be in [1, 8]");
            if (static_cast<std::size_t>(packed.size()) < packed_size(n, nbits))
                throw py::value_error("unpack_bits: packed buffer too short");
            U8 out(static_cast<py::ssize_t>(n));
            const std::uint8_t* in = packed.data();
            std::uint8_t* o = out.mutable_data();
            run_cancellable([&] {
                unpack_bits(in, n, nbits, o, threads);
            });
            return out;
        },
        py::arg("packed"), py::arg("n"), py::arg("nbits"), py::arg("threads") = 0);
    m.def(
        "check_fp16_paths",
        [](py::array_t<float, py::array::c_style | py::array::forcecast> samples) {
            return check_fp16_paths(samples.data(), static_cast<std::size_t>(samples.size()));
        },
        "Mismatches between the CPU's fp16 fast paths and the shared bit-exact helpers (0 expected)");
}

}  // namespace weightpress::bindings

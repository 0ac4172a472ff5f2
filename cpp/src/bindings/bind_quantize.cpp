#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "bindings.h"
#include "weightpress/pack.h"
#include "weightpress/quantize.h"
#include "weightpress/quantize_fit.h"

namespace py = pybind11;

namespace weightpress::bindings {
namespace {

QuantizeSpec spec_of(py::array weight, const std::vector<std::int64_t>& block, int nbits, bool is_signed,
                     bool symmetric, const char* op) {
    QuantizeSpec spec{};
    spec.rank = static_cast<int>(weight.ndim());
    if (spec.rank < 1 || spec.rank > 8) throw py::value_error(std::string(op) + ": rank must be in [1, 8]");
    if (static_cast<int>(block.size()) != spec.rank) throw py::value_error(std::string(op) + ": one block size per axis");
    for (int a = 0; a < spec.rank; ++a) {
        spec.shape[a] = weight.shape(a);
        spec.block[a] = block[a];
        if (block[a] <= 0 || spec.shape[a] % block[a] != 0)
            throw py::value_error(std::string(op) + ": block sizes must divide the shape");
    }
    spec.nbits = nbits;
    spec.is_signed = is_signed;
    spec.symmetric = symmetric;
    return spec;
}

}  // namespace

void register_quantize(py::module_& m) {
    m.def(
        "quantize_blockwise",
        [](py::array weight, std::vector<std::int64_t> block, int nbits, bool is_signed, bool symmetric,
           int threads, bool packed, bool best) -> py::tuple {
            const QuantizeSpec spec = spec_of(weight, block, nbits, is_signed, symmetric, "quantize");
            std::vector<py::ssize_t> grid;
            for (int a = 0; a < spec.rank; ++a) grid.push_back(static_cast<py::ssize_t>(spec.shape[a] / block[a]));
            const bool has_zp = !(is_signed && symmetric);
            std::size_t count = 1;
            for (int a = 0; a < spec.rank; ++a) count *= static_cast<std::size_t>(spec.shape[a]);
            py::array data = packed
                ? py::array(py::dtype::of<std::uint8_t>(),
                            std::vector<py::ssize_t>{static_cast<py::ssize_t>(packed_size(count, nbits))})
                : py::array(is_signed ? py::dtype::of<std::int8_t>() : py::dtype::of<std::uint8_t>(),
                            std::vector<py::ssize_t>(weight.shape(), weight.shape() + spec.rank));
            py::array zp = has_zp ? py::array(is_signed ? py::dtype::of<std::int8_t>() : py::dtype::of<std::uint8_t>(), grid)
                                  : py::array();
            auto* d = static_cast<std::uint8_t*>(data.mutable_data());
            auto* z = has_zp ? static_cast<std::uint8_t*>(zp.mutable_data()) : nullptr;
            if (weight.dtype().is(py::dtype::of<std::uint16_t>())) {
                auto w = weight.cast<py::array_t<std::uint16_t, py::array::c_style>>();
                py::array_t<std::uint16_t> scale(grid);
                const std::uint16_t* wp = w.data();
                std::uint16_t* sp = scale.mutable_data();
                run_cancellable([&] {
                    if (best)
                        quantize_best_f16(wp, spec, threads, d, sp, z, packed);
                    else
                        quantize_f16(wp, spec, threads, d, sp, z, packed);
                });
                return py::tuple(py::make_tuple(data, scale, has_zp ? py::object(zp) : py::none()));
            }
            if (weight.dtype().is(py::dtype::of<float>())) {
                auto w = weight.cast<py::array_t<float, py::array::c_style>>();
                py::array_t<float> scale(grid);
                const float* wp = w.data();
                float* sp = scale.mutable_data();
                run_cancellable([&] {
                    if (best)
                        quantize_best_f32(wp, spec, threads, d, sp, z, packed);
                    else
                        quantize_f32(wp, spec, threads, d, sp, z, packed);
                });
                return py::tuple(py::make_tuple(data, scale, has_zp ? py::object(zp) : py::none()));
            }
            throw py::type_error("quantize: expected uint16 (fp16 bits) or float32 weight");
        },
        py::arg("weight"), py::arg("block"), py::arg("nbits"), py::arg("is_signed"), py::arg("symmetric"),
        py::arg("threads") = 0, py::arg("packed") = false, py::arg("best") = false,
        "Blockwise linear quantization -> (data int8/uint8 in the weight's shape, or with packed=True the values "
        "packed to nbits LSB-first as uint8; scale per block (fp16 bits or f32); zero point or None). "
        "best=True: best-error parameters (quantize_fit.h) instead of coremltools'");
    m.def(
        "best_real_scales",
        [](py::array_t<double, py::array::c_style | py::array::forcecast> values, int lo, int hi, std::size_t keep) {
            if (lo > 0 || hi < 0) throw py::value_error("best_real_scales: need lo <= 0 <= hi");
            std::vector<ScaleCandidate> found;
            const double* v = values.data();
            const std::size_t n = static_cast<std::size_t>(values.size());
            run_cancellable([&] { found = best_real_scales(v, n, lo, hi, keep); });
            py::list out;
            for (const ScaleCandidate& c : found) out.append(py::make_tuple(c.scale, c.error));
            return out;
        },
        py::arg("values"), py::arg("lo"), py::arg("hi"), py::arg("keep") = 8,
        "Local minima (scale, error), best first, of sum (v - s*clip(round(v/s), lo, hi))^2 over real s > 0");
    m.def(
        "quantize_sse",
        [](py::array weight, std::vector<std::int64_t> block, int nbits, bool is_signed, py::array data, bool packed,
           py::array scale, std::optional<py::array> zero_point, int threads) -> double {
            // (the mode does not enter the error: scale and zero point are given)
            const QuantizeSpec spec = spec_of(weight, block, nbits, is_signed, /*symmetric=*/true, "quantize_sse");
            std::size_t count = 1, blocks = 1;
            for (int a = 0; a < spec.rank; ++a) {
                count *= static_cast<std::size_t>(spec.shape[a]);
                blocks *= static_cast<std::size_t>(spec.shape[a] / spec.block[a]);
            }
            auto bytes = data.cast<py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast>>();
            if (static_cast<std::size_t>(bytes.size()) != (packed ? packed_size(count, nbits) : count))
                throw py::value_error("quantize_sse: data does not match the weight");
            if (static_cast<std::size_t>(scale.size()) != blocks ||
                (zero_point && static_cast<std::size_t>(zero_point->size()) != blocks))
                throw py::value_error("quantize_sse: one scale (and zero point) per block expected");
            py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast> zp;
            if (zero_point) zp = zero_point->cast<py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast>>();
            const std::uint8_t* d = bytes.data();
            const std::uint8_t* z = zero_point ? zp.data() : nullptr;
            double sse = 0.0;
            if (weight.dtype().is(py::dtype::of<std::uint16_t>()) && scale.dtype().is(py::dtype::of<std::uint16_t>())) {
                auto w = weight.cast<py::array_t<std::uint16_t, py::array::c_style>>();
                auto s = scale.cast<py::array_t<std::uint16_t, py::array::c_style>>();
                run_cancellable([&] { sse = quantize_sse_f16(w.data(), spec, d, packed, s.data(), z, threads); });
                return sse;
            }
            if (weight.dtype().is(py::dtype::of<float>()) && scale.dtype().is(py::dtype::of<float>())) {
                auto w = weight.cast<py::array_t<float, py::array::c_style>>();
                auto s = scale.cast<py::array_t<float, py::array::c_style>>();
                run_cancellable([&] { sse = quantize_sse_f32(w.data(), spec, d, packed, s.data(), z, threads); });
                return sse;
            }
            throw py::type_error("quantize_sse: expected fp16 bits (uint16) or float32 weight and scale");
        },
        py::arg("weight"), py::arg("block"), py::arg("nbits"), py::arg("is_signed"), py::arg("data"),
        py::arg("packed"), py::arg("scale"), py::arg("zero_point"), py::arg("threads") = 0,
        "Sum of squared errors of scale * (data - zero_point), in the weight's dtype, against the weight");
}

}  // namespace weightpress::bindings

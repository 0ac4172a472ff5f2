#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <optional>

#include "bindings.h"
#include "weightpress/errors.h"
#include "weightpress/prune.h"

namespace py = pybind11;

namespace weightpress::bindings {
namespace {

using U8 = py::array_t<std::uint8_t, py::array::c_style>;

template <typename T, typename Mask, typename Gather>
py::tuple run_sparsify(py::array weight, std::optional<py::array> magnitude, std::optional<U8> pruned,
                       float threshold, int threads, Mask mask, Gather gather) {
    auto w = weight.cast<py::array_t<T, py::array::c_style>>();
    const std::size_t n = static_cast<std::size_t>(w.size());
    const T* mag = nullptr;
    py::array_t<T, py::array::c_style> m;
    if (magnitude) {
        m = magnitude->cast<py::array_t<T, py::array::c_style>>();
        if (static_cast<std::size_t>(m.size()) != n) throw py::value_error("prune: magnitude map size mismatch");
        mag = m.data();
    }
    const std::uint8_t* p = nullptr;
    if (pruned) {
        if (static_cast<std::size_t>(pruned->size()) != n) throw py::value_error("prune: pruned mask size mismatch");
        p = pruned->data();
    }
    U8 packed(static_cast<py::ssize_t>((n + 7) / 8));
    std::uint8_t* pk = packed.mutable_data();
    const T* wp = w.data();
    SparsifyPlan plan;
    run_cancellable([&] { plan = mask(wp, n, mag, p, threshold, threads, pk); });
    if (plan.nonfinite) throw NonFiniteInput("prune: weight contains NaN or Inf");
    py::array_t<T> nonzero(static_cast<py::ssize_t>(plan.survivors));  // exactly the survivors
    T* nz = nonzero.mutable_data();
    run_cancellable([&] { gather(wp, n, pk, plan, threads, nz); });
    return py::make_tuple(packed, nonzero);
}

}  // namespace

void register_prune(py::module_& m) {
    m.def(
        "sparsify",
        [](py::array weight, std::optional<py::array> magnitude, std::optional<U8> pruned, float threshold,
           int threads) -> py::tuple {
            if (weight.dtype().is(py::dtype::of<std::uint16_t>()))
                return run_sparsify<std::uint16_t>(weight, magnitude, pruned, threshold, threads, sparsify_mask_f16,
                                                   sparsify_gather_f16);
            if (weight.dtype().is(py::dtype::of<float>()))
                return run_sparsify<float>(weight, magnitude, pruned, threshold, threads, sparsify_mask_f32,
                                           sparsify_gather_f32);
            throw py::type_error("prune: expected uint16 (fp16 bits) or float32 weight");
        },
        py::arg("weight"), py::arg("magnitude"), py::arg("pruned"), py::arg("threshold"), py::arg("threads") = 0,
        "Fused prune + mask pack + nonzero gather -> (packed mask u8, nonzero values)");
    m.def(
        "order_statistics",
        [](py::array magnitude, std::vector<std::size_t> ks, int threads) -> py::array {
            const std::size_t n = static_cast<std::size_t>(magnitude.size());
            for (std::size_t k : ks)
                if (k >= n) throw py::value_error("prune: order statistic out of range");
            if (magnitude.dtype().is(py::dtype::of<std::uint16_t>())) {
                auto m = magnitude.cast<py::array_t<std::uint16_t, py::array::c_style>>();
                py::array_t<std::uint16_t> out(static_cast<py::ssize_t>(ks.size()));
                const std::uint16_t* mp = m.data();
                std::uint16_t* o = out.mutable_data();
                run_cancellable([&] { order_statistics_f16(mp, n, ks.data(), ks.size(), threads, o); });
                return std::move(out);
            }
            auto m = magnitude.cast<py::array_t<float, py::array::c_style>>();
            py::array_t<float> out(static_cast<py::ssize_t>(ks.size()));
            const float* mp = m.data();
            float* o = out.mutable_data();
            run_cancellable([&] { order_statistics_f32(mp, n, ks.data(), ks.size(), o); });
            return std::move(out);
        },
        py::arg("magnitude"), py::arg("ks"), py::arg("threads") = 0);
    m.def(
        "block_magnitude",
        [](py::array weight, std::size_t outer, std::size_t channel, std::size_t inner, std::size_t block,
           int threads) -> py::array {
            if (outer * channel * inner != static_cast<std::size_t>(weight.size()) || block < 1)
                throw py::value_error("prune: block magnitude layout does not match the weight");
            if (weight.dtype().is(py::dtype::of<std::uint16_t>())) {
                auto w = weight.cast<py::array_t<std::uint16_t, py::array::c_style>>();
                py::array_t<std::uint16_t> out(weight.size());
                const std::uint16_t* wp = w.data();
                std::uint16_t* o = out.mutable_data();
                run_cancellable([&] { block_magnitude_f16(wp, outer, channel, inner, block, threads, o); });
                return std::move(out);
            }
            auto w = weight.cast<py::array_t<float, py::array::c_style>>();
            py::array_t<float> out(weight.size());
            const float* wp = w.data();
            float* o = out.mutable_data();
            run_cancellable([&] { block_magnitude_f32(wp, outer, channel, inner, block, threads, o); });
            return std::move(out);
        },
        py::arg("weight"), py::arg("outer"), py::arg("channel"), py::arg("inner"), py::arg("block"),
        py::arg("threads") = 0);
    m.def(
        "nm_prune_mask",
        [](py::array bits, std::size_t outer, std::size_t channel, std::size_t inner, int n, int m_, int threads) {
            if (!(bits.flags() & py::array::c_style) || outer * channel * inner != static_cast<std::size_t>(bits.size()))
                throw py::value_error("prune: n:m weights must be C-contiguous bit patterns of outer*channel*inner");
            U8 pruned(static_cast<py::ssize_t>(bits.size()));
            std::uint8_t* out = pruned.mutable_data();
            if (bits.dtype().is(py::dtype::of<std::uint16_t>())) {
                const auto* p = static_cast<const std::uint16_t*>(bits.data());
                run_cancellable([&] { nm_prune_mask_f16(p, outer, channel, inner, n, m_, threads, out); });
            } else if (bits.dtype().is(py::dtype::of<std::uint32_t>())) {
                const auto* p = static_cast<const std::uint32_t*>(bits.data());
                run_cancellable([&] { nm_prune_mask_f32(p, outer, channel, inner, n, m_, threads, out); });
            } else {
                throw py::type_error("prune: n:m expects fp16 (uint16) or fp32 (uint32) bit patterns");
            }
            return pruned;
        },
        py::arg("bits"), py::arg("outer"), py::arg("channel"), py::arg("inner"), py::arg("n"), py::arg("m"),
        py::arg("threads") = 0);
}

}  // namespace weightpress::bindings

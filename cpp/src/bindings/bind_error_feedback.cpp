#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <optional>
#include <vector>

#include "bindings.h"
#include "weightpress/error_feedback.h"

namespace py = pybind11;

namespace weightpress::bindings {

void register_error_feedback(py::module_& m) {
    m.def(
        "inverse_hessian_factor",
        [](py::array_t<double, py::array::c_style | py::array::forcecast> hessian, double damping,
           int threads) -> py::object {
            if (hessian.ndim() != 2 || hessian.shape(0) != hessian.shape(1))
                throw py::value_error("error_feedback: the Hessian must be square");
            const std::size_t n = static_cast<std::size_t>(hessian.shape(0));
            py::array_t<double> u({hessian.shape(0), hessian.shape(1)});
            std::copy(hessian.data(), hessian.data() + n * n, u.mutable_data());
            double* p = u.mutable_data();
            bool ok = false;
            run_cancellable([&] { ok = inverse_hessian_factor(p, n, damping, threads); });
            if (!ok) return py::none();
            return std::move(u);
        },
        py::arg("hessian"), py::arg("damping"), py::arg("threads") = 1,
        "U, the upper Cholesky factor of (H + damping * mean(diag H) * I)^-1, or None when that is not "
        "positive definite (the same bits for any thread count)");
    m.def(
        "error_feedback",
        [](py::array_t<double, py::array::c_style | py::array::forcecast> weight,
           py::array_t<double, py::array::c_style | py::array::forcecast> u, bool half,
           std::optional<py::array_t<float, py::array::c_style | py::array::forcecast>> entries,
           std::optional<py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>> lut_of_row,
           std::optional<py::array_t<float, py::array::c_style | py::array::forcecast>> scales,
           std::optional<py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>> zero_points,
           std::size_t col_block, int qmin, int qmax, int threads) {
            if (weight.ndim() != 2) throw py::value_error("error_feedback: a 2-D weight (rows, input columns)");
            const std::size_t rows = static_cast<std::size_t>(weight.shape(0));
            const std::size_t cols = static_cast<std::size_t>(weight.shape(1));
            if (u.ndim() != 2 || static_cast<std::size_t>(u.shape(0)) != cols ||
                static_cast<std::size_t>(u.shape(1)) != cols)
                throw py::value_error("error_feedback: U must be cols x cols");
            FeedbackTarget t;
            t.half = half;
            if (entries) {
                if (!lut_of_row || static_cast<std::size_t>(lut_of_row->size()) != rows || entries->ndim() != 2)
                    throw py::value_error("error_feedback: LUTs need entries [G, K] and one LUT index per row");
                t.entries = entries->data();
                t.lut_size = static_cast<int>(entries->shape(1));
                t.lut_of_row = lut_of_row->data();
                for (std::size_t r = 0; r < rows; ++r)
                    if (t.lut_of_row[r] < 0 || t.lut_of_row[r] >= entries->shape(0))
                        throw py::value_error("error_feedback: a row's LUT index is out of range");
            } else {
                if (!scales || col_block == 0) throw py::value_error("error_feedback: scales and col_block needed");
                const std::size_t blocks = rows * ((cols + col_block - 1) / col_block);
                if (static_cast<std::size_t>(scales->size()) != blocks ||
                    (zero_points && static_cast<std::size_t>(zero_points->size()) != blocks))
                    throw py::value_error("error_feedback: one scale (and zero point) per row and column block");
                t.scales = scales->data();
                t.zero_points = zero_points ? zero_points->data() : nullptr;
                t.col_block = col_block;
                t.qmin = qmin;
                t.qmax = qmax;
            }
            py::array_t<double> work({weight.shape(0), weight.shape(1)});
            std::copy(weight.data(), weight.data() + rows * cols, work.mutable_data());
            py::array_t<std::int32_t> codes({weight.shape(0), weight.shape(1)});
            double* wp = work.mutable_data();
            const double* up = u.data();
            std::int32_t* cp = codes.mutable_data();
            run_cancellable([&] { error_feedback(wp, rows, cols, up, t, cp, threads); });
            return codes;
        },
        py::arg("weight"), py::arg("u"), py::arg("half"), py::arg("entries") = py::none(),
        py::arg("lut_of_row") = py::none(), py::arg("scales") = py::none(), py::arg("zero_points") = py::none(),
        py::arg("col_block") = 0, py::arg("qmin") = 0, py::arg("qmax") = 0, py::arg("threads") = 0,
        "GPTQ-style rounding of a 2-D weight to given LUTs (codes = LUT indices) or scales (codes = levels)");
}

}  // namespace weightpress::bindings

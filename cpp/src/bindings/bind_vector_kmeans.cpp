#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>

#include "bindings.h"
#include "weightpress/errors.h"
#include "weightpress/vector_kmeans.h"

namespace py = pybind11;

namespace weightpress::bindings {

using F64 = py::array_t<double, py::array::c_style | py::array::forcecast>;

void register_vector_kmeans(py::module_& m) {
    m.def(
        "vector_kmeans",
        [](F64 points, int k, std::optional<F64> weights, int max_iter, int n_init, std::uint64_t seed, double tol,
           int threads) {
            if (points.ndim() != 3) throw py::value_error("vector_kmeans: points must be [groups, n, dim]");
            const std::size_t groups = points.shape(0), n = points.shape(1), dim = points.shape(2);
            if (k < 1 || k > 256) throw py::value_error("vector_kmeans: k must be in [1, 256], got " + std::to_string(k));
            if (weights && (weights->ndim() != 2 || static_cast<std::size_t>(weights->shape(0)) != groups ||
                            static_cast<std::size_t>(weights->shape(1)) != n))
                throw py::value_error("vector_kmeans: weights must be [groups, n]");
            const double* x = points.data();
            for (py::ssize_t i = 0; i < points.size(); ++i)
                if (!std::isfinite(x[i])) throw NonFiniteInput("vector_kmeans: points contain NaN or Inf");
            F64 centroids({groups, static_cast<std::size_t>(k), dim});
            py::array_t<std::uint8_t> labels({groups, n});
            F64 objective(groups);
            py::array_t<std::int32_t> used(groups);
            VectorKMeansOptions opt;
            opt.max_iter = max_iter;
            opt.n_init = n_init;
            opt.seed = seed;
            opt.tol = tol;
            const double* w = weights ? weights->data() : nullptr;
            double* c = centroids.mutable_data();
            std::uint8_t* l = labels.mutable_data();
            double* o = objective.mutable_data();
            std::int32_t* u = used.mutable_data();
            run_cancellable(
                [&] { vector_kmeans(x, w, groups, n, dim, static_cast<std::size_t>(k), opt, threads, c, l, o, u); });
            return py::make_tuple(centroids, labels, objective, used);
        },
        py::arg("points"), py::arg("k"), py::arg("weights") = py::none(), py::arg("max_iter") = 300,
        py::arg("n_init") = 3, py::arg("seed") = 0, py::arg("tol") = 1e-4, py::arg("threads") = 0,
        "Deterministic k-means++ + Lloyd per group -> (centroids [G,k,d], labels u8 [G,n], objective [G], "
        "clusters_used [G])");
}

}  // namespace weightpress::bindings

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "bindings.h"
#include "weightpress/half.h"
#include "weightpress/kmeans1d.h"
#include "weightpress/palettize.h"

namespace py = pybind11;

namespace weightpress::bindings {
namespace {

using F64 = py::array_t<double, py::array::c_style | py::array::forcecast>;
using U16 = py::array_t<std::uint16_t, py::array::c_style>;
using F32 = py::array_t<float, py::array::c_style>;

// data is [groups, group_len]: fp16 as its uint16 bit patterns, or float32.
py::tuple palettize_scalar(py::array data, std::optional<F64> importance, int nbits, int threads) {
    if (data.ndim() != 2) throw py::value_error("palettize: expected a [groups, group_len] array");
    const std::size_t groups = data.shape(0), len = data.shape(1);
    if (importance && (importance->ndim() != 2 || static_cast<std::size_t>(importance->shape(0)) != groups ||
                       static_cast<std::size_t>(importance->shape(1)) != len))
        throw py::value_error("palettize: importance must have the data's shape");
    const std::size_t K = std::size_t(1) << nbits;
    F64 centroids({groups, K});
    py::array_t<std::uint8_t> indices({groups, len});
    F64 objective(groups), sse(groups);
    py::array_t<std::int32_t> clusters(groups);
    ScalarPalettizeOutput out{centroids.mutable_data(), indices.mutable_data(), objective.mutable_data(),
                              sse.mutable_data(), clusters.mutable_data()};
    const double* imp = importance ? importance->data() : nullptr;
    if (py::isinstance<U16>(data) && data.dtype().itemsize() == 2) {
        U16 bits = data.cast<U16>();
        const std::uint16_t* p = bits.data();
        run_cancellable([&] { palettize_scalar_f16(p, imp, groups, len, nbits, threads, out); });
    } else if (py::isinstance<F32>(data)) {
        F32 values = data.cast<F32>();
        const float* p = values.data();
        run_cancellable([&] { palettize_scalar_f32(p, imp, groups, len, nbits, threads, out); });
    } else {
        throw py::type_error("palettize: expected uint16 (fp16 bits) or float32 data");
    }
    return py::make_tuple(centroids, indices, objective, sse, clusters);
}

py::tuple palettize_from_histograms(py::array_t<std::uint32_t, py::array::c_style> counts, int nbits, int threads) {
    if (counts.ndim() != 2 || counts.shape(1) != 65536)
        throw py::value_error("palettize: histograms must be [groups, 65536] uint32");
    const std::size_t groups = counts.shape(0);
    const std::size_t K = std::size_t(1) << nbits;
    F64 centroids({groups, K});
    F64 objective(groups), sse(groups);
    py::array_t<std::int32_t> clusters(groups);
    py::array_t<std::uint8_t> codes({groups, std::size_t(65536)});
    ScalarPalettizeOutput out{centroids.mutable_data(), nullptr, objective.mutable_data(), sse.mutable_data(),
                              clusters.mutable_data()};
    const std::uint32_t* c = counts.data();
    std::uint8_t* cp = codes.mutable_data();
    run_cancellable([&] { palettize_from_histograms_f16(c, groups, nbits, threads, out, cp); });
    return py::make_tuple(centroids, codes, objective, sse, clusters);
}

F64 sse_curve(py::array data, std::optional<F64> importance, int max_clusters, int threads,
              std::optional<std::vector<std::uint32_t>> ks) {
    if (data.ndim() != 2) throw py::value_error("sse_curve: expected a [groups, group_len] array");
    const std::size_t groups = data.shape(0), len = data.shape(1);
    if (ks) {  // only these cluster counts: [groups, len(ks)]
        const std::vector<std::uint32_t>& counts = *ks;
        F64 out({groups, counts.size()});
        double* o = out.mutable_data();
        const double* imp = importance ? importance->data() : nullptr;
        if (py::isinstance<U16>(data) && data.dtype().itemsize() == 2) {
            U16 bits = data.cast<U16>();
            const std::uint16_t* p = bits.data();
            run_cancellable([&] { sse_at_f16(p, imp, groups, len, counts.data(), counts.size(), threads, o); });
        } else if (py::isinstance<F32>(data)) {
            F32 values = data.cast<F32>();
            const float* p = values.data();
            run_cancellable([&] { sse_at_f32(p, imp, groups, len, counts.data(), counts.size(), threads, o); });
        } else {
            throw py::type_error("sse_curve: expected uint16 (fp16 bits) or float32 data");
        }
        return out;
    }
    F64 curve({groups, static_cast<std::size_t>(max_clusters)});
    double* c = curve.mutable_data();
    const double* imp = importance ? importance->data() : nullptr;
    if (py::isinstance<U16>(data) && data.dtype().itemsize() == 2) {
        U16 bits = data.cast<U16>();
        const std::uint16_t* p = bits.data();
        run_cancellable([&] { sse_curve_f16(p, imp, groups, len, max_clusters, threads, c); });
    } else if (py::isinstance<F32>(data)) {
        F32 values = data.cast<F32>();
        const float* p = values.data();
        run_cancellable([&] { sse_curve_f32(p, imp, groups, len, max_clusters, threads, c); });
    } else {
        throw py::type_error("sse_curve: expected uint16 (fp16 bits) or float32 data");
    }
    return curve;
}

// One exact k-means over strictly increasing values with positive weights (the contract of
// kmeans1d.h), for the drop-in replacement of coremltools' kmeans1d.cluster, with the solver
// chosen (tests and benchmarks) and what it did.
py::tuple kmeans1d_solve(F64 x, F64 w, std::size_t k, const std::string& method, int threads) {
    const std::size_t n = static_cast<std::size_t>(x.size());
    if (static_cast<std::size_t>(w.size()) != n) throw py::value_error("kmeans1d: x and w differ in length");
    if (k < 1 || k > n) throw py::value_error("kmeans1d: k must be in [1, n]");
    KMeans1DMethod m = KMeans1DMethod::kAuto;
    if (method == "full")
        m = KMeans1DMethod::kFull;
    else if (method == "windowed")
        m = KMeans1DMethod::kWindowed;
    else if (method != "auto")
        throw py::value_error("kmeans1d: method must be auto, full or windowed, got " + method);
    py::array_t<std::uint32_t> starts(k + 1);
    py::array_t<double> centroids(k);
    const double* xp = x.data();
    const double* wp = w.data();
    std::uint32_t* sp = starts.mutable_data();
    double* cp = centroids.mutable_data();
    KMeans1DStats stats;
    run_cancellable([&] {
        KMeans1DScratch scratch;
        kmeans1d_optimal(xp, wp, n, k, sp, cp, scratch, nullptr, threads < 1 ? 1 : threads, m, &stats);
    });
    py::dict info;
    info["windowed"] = stats.windowed;
    info["probes"] = stats.probes;
    info["coarse_probes"] = stats.coarse_probes;
    info["survivors"] = stats.survivors;
    info["fallback"] = std::string(stats.fallback);
    return py::make_tuple(starts, centroids, info);
}

py::array_t<double> kmeans1d_running_means_py(F64 x, F64 w, py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast> starts) {
    const std::size_t n = static_cast<std::size_t>(x.size());
    const std::size_t k = static_cast<std::size_t>(starts.size()) - 1;
    if (static_cast<std::size_t>(w.size()) != n || starts.size() < 2 || starts.data()[k] != n)
        throw py::value_error("kmeans1d_running_means: starts must partition [0, n)");
    py::array_t<double> centroids(k);
    kmeans1d_running_means(x.data(), w.data(), n, starts.data(), k, centroids.mutable_data());
    return centroids;
}

}  // namespace

void register_palettize(py::module_& m) {
    m.def("palettize_scalar", &palettize_scalar, py::arg("data"), py::arg("importance"), py::arg("nbits"),
          py::arg("threads") = 0,
          "Optimal scalar k-means per group -> (centroids f64 [G,K], indices u8 [G,L], objective [G], "
          "sse [G], clusters [G])");
    m.def("palettize_from_histograms", &palettize_from_histograms, py::arg("counts"), py::arg("nbits"),
          py::arg("threads") = 0,
          "The clustering of palettize_scalar from fp16 histograms [G, 65536] -> (centroids, codes [G, 65536], "
          "objective, sse, clusters)");
    m.def("kmeans1d_solve", &kmeans1d_solve, py::arg("x"), py::arg("w"), py::arg("k"), py::arg("method") = "auto",
          py::arg("threads") = 1,
          "Exact weighted 1-D k-means of strictly increasing x (solver auto, full or windowed) -> (starts u32 [k+1], "
          "centroids f64 [k], stats dict)");
    m.def("kmeans1d_running_means", &kmeans1d_running_means_py, py::arg("x"), py::arg("w"), py::arg("starts"),
          "kmeans1d's incremental centroids of sorted raw points for a partition given by starts [k+1]");
    m.def("sse_curve", &sse_curve, py::arg("data"), py::arg("importance"), py::arg("max_clusters"),
          py::arg("threads") = 0, py::arg("ks") = py::none(),
          "Optimal SSE per group for 1..max_clusters clusters [groups, max_clusters], or with ks only at "
          "those counts [groups, len(ks)]");
    m.def(
        "half_from_double",
        [](F64 values) {
            py::array_t<std::uint16_t> out(values.size());
            const double* in = values.data();
            std::uint16_t* o = out.mutable_data();
            for (py::ssize_t i = 0; i < values.size(); ++i) o[i] = half_from_double(in[i]);
            return out;
        },
        "Round float64 values to fp16 bit patterns (round to nearest even); for tests.");
}

}  // namespace weightpress::bindings

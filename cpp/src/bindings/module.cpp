#include <string>

#include "bindings.h"
#include "weightpress/errors.h"
#include "weightpress/multiversion.h"
#include "weightpress/steering_math.h"

PYBIND11_MODULE(_core, m) {
    m.doc() = "weightpress C++ kernels (marshalling only; see python/weightpress for the API)";
    pybind11::register_exception<weightpress::NonFiniteInput>(m, "NonFiniteError", PyExc_ValueError);
    weightpress::bindings::register_palettize(m);
    weightpress::bindings::register_pack(m);
    weightpress::bindings::register_vector_kmeans(m);
    weightpress::bindings::register_quantize(m);
    weightpress::bindings::register_prune(m);
    weightpress::bindings::register_metal(m);
    weightpress::bindings::register_error_feedback(m);
    m.def("isa", [] { return std::string(weightpress::isa_name()); },
          "The instruction-set level the multiversioned loops run at (baseline, x86-64-v3, x86-64-v4; "
          "capped by WEIGHTPRESS_ISA)");
    m.def(
        "steering_math",
        [](const std::string& fn, double x, double a) {
            namespace s = weightpress::steering;
            if (fn == "log") return s::log(x);
            if (fn == "log2") return s::log2(x);
            if (fn == "pow") return s::pow(x, a);
            throw pybind11::value_error("steering_math: fn must be log, log2 or pow, got '" + fn + "'");
        },
        pybind11::arg("fn"), pybind11::arg("x"), pybind11::arg("a") = 0.0,
        "The platform-independent log / log2 / pow that steer the k-means searches (steering_math.h), "
        "for tests");
}

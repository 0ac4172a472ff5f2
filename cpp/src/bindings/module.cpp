#include <string>

#include "bindings.h"
#include "weightpress/errors.h"
#include "weightpress/multiversion.h"

PYBIND11_MODULE(_core, m) {
    m.doc() = "weightpress C++ kernels (marshalling only; see python/weightpress for the API)";
    pybind11::register_exception<weightpress::NonFiniteInput>(m, "NonFiniteError", PyExc_ValueError);
    weightpress::bindings::register_palettize(m);
    weightpress::bindings::register_pack(m);
    weightpress::bindings::register_vector_kmeans(m);
    weightpress::bindings::register_quantize(m);
    weightpress::bindings::register_prune(m);
    weightpress::bindings::register_metal(m);
    m.def("isa", [] { return std::string(weightpress::isa_name()); },
          "The instruction-set level the multiversioned loops run at (baseline, x86-64-v3, x86-64-v4; "
          "capped by WEIGHTPRESS_ISA)");
}

#include "bindings.h"
#include "weightpress/errors.h"

PYBIND11_MODULE(_core, m) {
    m.doc() = "weightpress C++ kernels (marshalling only; see python/weightpress for the API)";
    pybind11::register_exception<weightpress::NonFiniteInput>(m, "NonFiniteError", PyExc_ValueError);
    weightpress::bindings::register_palettize(m);
    weightpress::bindings::register_pack(m);
    weightpress::bindings::register_vector_kmeans(m);
    weightpress::bindings::register_quantize(m);
    weightpress::bindings::register_prune(m);
    weightpress::bindings::register_metal(m);
}

#include "bindings.h"

PYBIND11_MODULE(_core, m) {
    m.doc() = "weightpress C++ kernels (marshalling only; see python/weightpress for the API)";
    weightpress::bindings::register_palettize(m);
    weightpress::bindings::register_pack(m);
    weightpress::bindings::register_vector_kmeans(m);
    weightpress::bindings::register_quantize(m);
    weightpress::bindings::register_prune(m);
    weightpress::bindings::register_metal(m);
}

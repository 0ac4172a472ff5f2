// Each family of kernels registers its functions on the _core module.
#pragma once

#include <pybind11/pybind11.h>

namespace weightpress::bindings {

void register_palettize(pybind11::module_& m);
void register_pack(pybind11::module_& m);
void register_vector_kmeans(pybind11::module_& m);
void register_quantize(pybind11::module_& m);
void register_prune(pybind11::module_& m);

}  // namespace weightpress::bindings

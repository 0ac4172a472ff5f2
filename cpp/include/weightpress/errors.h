// Exceptions the kernels throw for bad input, as types the bindings map to Python classes
// (the Python side branches on the class, never on message text).
#pragma once

#include <stdexcept>

namespace weightpress {

// The input holds NaN or Inf (found in a kernel's own pass over the data). The bindings
// raise it as weightpress._core.NonFiniteError, a ValueError; the Python layer then names
// the first offending element.
struct NonFiniteInput : std::domain_error {
    using std::domain_error::domain_error;
};

}  // namespace weightpress

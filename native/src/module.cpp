// The single pybind11 module of fedgate: native._core. It is 1:1 with the C++ kernels and has no
// policy; the Python modules of the native package validate every argument first.
#include <pybind11/pybind11.h>

#include "bindings.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = "fedgate C++ kernels (private: import native.mask / native.quant instead)";
    fedgate::bind_cpu(m);
    fedgate::bind_mask(m);
    fedgate::bind_quant(m);
    fedgate::bind_pack(m);
    fedgate::bind_shamir(m);
    fedgate::bind_noise(m);
}

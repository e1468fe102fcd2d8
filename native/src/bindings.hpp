// Registration functions, one per bind_*.cpp file, called by module.cpp.
#pragma once
#include <pybind11/pybind11.h>

namespace fedgate {
void bind_cpu(pybind11::module_& m);
void bind_mask(pybind11::module_& m);
void bind_quant(pybind11::module_& m);
void bind_pack(pybind11::module_& m);
void bind_shamir(pybind11::module_& m);
void bind_noise(pybind11::module_& m);
}  // namespace fedgate

#include <pybind11/pybind11.h>
#include <string>

#include "bindings.hpp"
#include "fedgate/cpu.hpp"

namespace fedgate {
void bind_cpu(pybind11::module_& m) {
#if defined(__x86_64__)
    m.attr("arch") = "x86_64";
#elif defined(__aarch64__)
    m.attr("arch") = "aarch64";
#else
    m.attr("arch") = "other";
#endif
    m.def("simd_level", [] { return std::string(simd_level_name(simd_level())); },
          "The SIMD level the kernels dispatch to on this CPU.");
}
}  // namespace fedgate

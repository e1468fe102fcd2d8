// native._core: exact Skellam noise and the randomized Hadamard rotation (no policy; see noise.py);
// the discrete Gaussian samplers are registered from bind_dgauss.cpp.
#include "bind_common.hpp"
#include "bindings.hpp"
#include "fedgate/noise.hpp"

namespace fedgate {

void bind_dgauss(pybind11::module_& m);  // bind_dgauss.cpp

namespace {

using bind::Arr;
namespace py = pybind11;

template <typename T>
void def_skellam_add(py::module_& m) {
    m.def(
        "skellam_add",
        [](Arr<T> acc, const py::bytes& seed, std::uint64_t num, std::uint64_t den, unsigned bits) {
            const auto key = bind::seed32(seed);
            const std::size_t n = bind::length_1d(acc, "acc");
            T* dst = bind::writable(acc);
            py::gil_scoped_release nogil;
            skellam_add<T>(key.data(), num, den, bits, dst, n);
        },
        py::arg("acc").noconvert(), py::arg("seed"), py::arg("num"), py::arg("den"), py::arg("bits"),
        "acc += Skellam(num/den) noise mod 2^bits, in place.");
}

}  // namespace

void bind_noise(py::module_& m) {
    bind_dgauss(m);
    m.def(
        "skellam_sample",
        [](const py::bytes& seed, std::uint64_t num, std::uint64_t den, Arr<std::int64_t> out) {
            const auto key = bind::seed32(seed);
            const std::size_t n = bind::length_1d(out, "out");
            std::int64_t* dst = bind::writable(out);
            py::gil_scoped_release nogil;
            skellam_sample(key.data(), num, den, n, dst);
        },
        py::arg("seed"), py::arg("num"), py::arg("den"), py::arg("out").noconvert(),
        "out = Skellam(num/den) samples (P1 - P2, P ~ Poisson(num/den)).");
    def_skellam_add<std::uint16_t>(m);
    def_skellam_add<std::uint32_t>(m);
    m.def(
        "fwht",
        [](Arr<float> x) {
            const std::size_t n = bind::length_1d(x, "x");
            float* dst = bind::writable(x);
            py::gil_scoped_release nogil;
            fwht(dst, n);
        },
        py::arg("x").noconvert(), "In-place orthonormal Walsh-Hadamard transform (power-of-two length).");
    m.def(
        "flip_signs",
        [](const py::bytes& seed, Arr<float> x) {
            const auto key = bind::seed32(seed);
            const std::size_t n = bind::length_1d(x, "x");
            float* dst = bind::writable(x);
            py::gil_scoped_release nogil;
            flip_signs(key.data(), dst, n);
        },
        py::arg("seed"), py::arg("x").noconvert(), "In-place seed-derived sign flips.");
}

}  // namespace fedgate

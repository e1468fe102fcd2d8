// pybind11 face of the Shamir kernels: 1:1, no policy (native/shamir.py validates every argument).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>

#include "bindings.hpp"
#include "fedgate/shamir.hpp"

namespace py = pybind11;

namespace fedgate {
namespace {
using U64 = py::array_t<uint64_t, py::array::c_style>;

U64 shamir_split(U64 secret, U64 coeffs, U64 xs) {
    if (secret.ndim() != 1 || coeffs.ndim() != 2 || xs.ndim() != 1)
        throw std::invalid_argument("shamir_split: bad ranks");
    const auto chunks = static_cast<std::size_t>(secret.shape(0));
    const auto degree = static_cast<std::size_t>(coeffs.shape(0));
    if (static_cast<std::size_t>(coeffs.shape(1)) != chunks)
        throw std::invalid_argument("shamir_split: coeffs shape");
    const auto n_x = static_cast<std::size_t>(xs.shape(0));
    U64 out({static_cast<py::ssize_t>(n_x), static_cast<py::ssize_t>(chunks)});
    const uint64_t* s = secret.data();
    const uint64_t* c = coeffs.data();
    const uint64_t* x = xs.data();
    uint64_t* o = out.mutable_data();
    {
        py::gil_scoped_release release;
        shamir::split(s, chunks, c, degree, x, n_x, o);
    }
    return out;
}

U64 shamir_lagrange(U64 xs) {
    if (xs.ndim() != 1) throw std::invalid_argument("shamir_lagrange: bad rank");
    const auto n = static_cast<std::size_t>(xs.shape(0));
    U64 out({static_cast<py::ssize_t>(n)});
    if (!shamir::lagrange_at_zero(xs.data(), n, out.mutable_data()))
        throw std::invalid_argument("shamir_lagrange: x-coordinates must be distinct, non-zero, < p");
    return out;
}

U64 shamir_combine(U64 lambda, U64 ys) {
    if (lambda.ndim() != 1 || ys.ndim() != 3) throw std::invalid_argument("shamir_combine: bad ranks");
    const auto n = static_cast<std::size_t>(lambda.shape(0));
    if (static_cast<std::size_t>(ys.shape(1)) != n) throw std::invalid_argument("shamir_combine: shape");
    const auto n_secrets = static_cast<std::size_t>(ys.shape(0));
    const auto chunks = static_cast<std::size_t>(ys.shape(2));
    U64 out({static_cast<py::ssize_t>(n_secrets), static_cast<py::ssize_t>(chunks)});
    const uint64_t* l = lambda.data();
    const uint64_t* y = ys.data();
    uint64_t* o = out.mutable_data();
    {
        py::gil_scoped_release release;
        shamir::combine(l, n, y, n_secrets, chunks, o);
    }
    return out;
}
}  // namespace

void bind_shamir(py::module_& m) {
    m.attr("shamir_prime") = py::int_(shamir::kPrime);
    m.def("shamir_split", &shamir_split, py::arg("secret"), py::arg("coeffs"), py::arg("xs"),
          "Evaluate the sharing polynomials at every x: (chunks,), (degree, chunks), (n,) -> (n, chunks).");
    m.def("shamir_lagrange", &shamir_lagrange, py::arg("xs"),
          "Lagrange basis coefficients at 0 for distinct non-zero x-coordinates.");
    m.def("shamir_combine", &shamir_combine, py::arg("lambda_"), py::arg("ys"),
          "Secrets from shares: (n,), (secrets, n, chunks) -> (secrets, chunks).");
}
}  // namespace fedgate

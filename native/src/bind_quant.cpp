// native._core: L2 norm, clipping, quantization (no policy; see quant.py).
#include "bind_common.hpp"
#include "bindings.hpp"
#include "fedgate/quant.hpp"

namespace fedgate {
namespace {

using bind::Arr;
namespace py = pybind11;

template <typename T>
void def_quant_ops(py::module_& m) {
    m.def(
        "quantize",
        [](const Arr<float>& x, double clip, unsigned bits, const py::bytes& seed, Arr<T> out) {
            const auto key = bind::seed32(seed);
            const std::size_t n = bind::length_1d(x, "x");
            if (bind::length_1d(out, "out") != n) throw std::invalid_argument("x and out differ in length");
            const float* src = x.data();
            T* dst = bind::writable(out);
            py::gil_scoped_release nogil;
            return quantize<T>(src, n, clip, bits, key.data(), dst);
        },
        py::arg("x").noconvert(), py::arg("clip"), py::arg("bits"), py::arg("seed"),
        py::arg("out").noconvert(), "Stochastic quantization into out; returns the count of non-finite x.");
    m.def(
        "dequantize",
        [](const Arr<T>& total, std::uint64_t count, double clip, unsigned bits, Arr<float> out) {
            const std::size_t n = bind::length_1d(total, "total");
            if (bind::length_1d(out, "out") != n) throw std::invalid_argument("total and out differ in length");
            const T* src = total.data();
            float* dst = bind::writable(out);
            py::gil_scoped_release nogil;
            return dequantize<T>(src, n, count, clip, bits, dst);
        },
        py::arg("total").noconvert(), py::arg("count"), py::arg("clip"), py::arg("bits"),
        py::arg("out").noconvert(), "Sum estimate from a ring sum; returns the count of impossible totals.");
}

}  // namespace

void bind_quant(py::module_& m) {
    m.def(
        "l2_norm",
        [](const Arr<float>& x) {
            const std::size_t n = bind::length_1d(x, "x");
            const float* src = x.data();
            py::gil_scoped_release nogil;
            return l2_norm(src, n);
        },
        py::arg("x").noconvert());
    m.def(
        "clip_l2",
        [](const Arr<float>& x, Arr<float> out, double max_norm) {
            const std::size_t n = bind::length_1d(x, "x");
            if (bind::length_1d(out, "out") != n) throw std::invalid_argument("x and out differ in length");
            const float* src = x.data();
            float* dst = bind::writable(out);
            py::gil_scoped_release nogil;
            return clip_l2(src, dst, n, max_norm);
        },
        py::arg("x").noconvert(), py::arg("out").noconvert(), py::arg("max_norm"),
        "out = x scaled to norm <= max_norm; returns the norm of x.");
    def_quant_ops<std::uint16_t>(m);
    def_quant_ops<std::uint32_t>(m);
}

}  // namespace fedgate

// native._core: dense bit-packing for the wire (no policy; see packing.py).
#include "bind_common.hpp"
#include "bindings.hpp"
#include "fedgate/pack.hpp"

namespace fedgate {
namespace {

using bind::Arr;
namespace py = pybind11;

template <typename T>
void def_pack_ops(py::module_& m) {
    m.def(
        "pack",
        [](const Arr<T>& values, unsigned bits) -> py::object {
            const std::size_t n = bind::length_1d(values, "values");
            if (bits < 1 || bits > 8 * sizeof(T)) throw std::invalid_argument("bits does not fit the dtype");
            py::bytes out(nullptr, static_cast<std::size_t>(packed_size(n, bits)));
            auto* dst = reinterpret_cast<std::uint8_t*>(PyBytes_AsString(out.ptr()));
            const T* src = values.data();
            bool ok = false;
            {
                py::gil_scoped_release nogil;
                ok = pack<T>(src, n, bits, dst);
            }
            if (!ok) return py::none();  // some value >= 2**bits
            return std::move(out);
        },
        py::arg("values").noconvert(), py::arg("bits"),
        "Packed bytes, or None when a value does not fit in bits.");
    m.def(
        "unpack",
        [](const py::buffer& data, unsigned bits, Arr<T> out) {
            const py::buffer_info info = data.request();
            if (info.ndim != 1 || info.itemsize != 1 || info.strides[0] != 1) {
                throw std::invalid_argument("data must be a contiguous byte buffer");
            }
            const std::size_t n = bind::length_1d(out, "out");
            T* dst = bind::writable(out);
            const auto* src = static_cast<const std::uint8_t*>(info.ptr);
            const auto nbytes = static_cast<std::size_t>(info.size);
            py::gil_scoped_release nogil;
            return unpack<T>(src, nbytes, n, bits, dst);
        },
        py::arg("data"), py::arg("bits"), py::arg("out").noconvert(),
        "Fills out from packed bytes; False when the padding bits are not zero.");
}

}  // namespace

void bind_pack(py::module_& m) {
    def_pack_ops<std::uint16_t>(m);
    def_pack_ops<std::uint32_t>(m);
}

}  // namespace fedgate

// native._core: ChaCha20, mask expansion/application and ring arithmetic (no policy; see mask.py).
#include <cstring>

#include "bind_common.hpp"
#include "bindings.hpp"
#include "fedgate/chacha20.hpp"
#include "fedgate/mask.hpp"
#include "fedgate/ring.hpp"

namespace fedgate {
namespace {

using bind::Arr;
namespace py = pybind11;

template <typename T>
void def_ring_ops(py::module_& m) {
    m.def(
        "expand",
        [](const py::bytes& seed, unsigned bits, Arr<T> out) {
            const auto key = bind::seed32(seed);
            const std::size_t n = bind::length_1d(out, "out");
            T* dst = bind::writable(out);
            py::gil_scoped_release nogil;
            expand<T>(key.data(), bits, dst, n);
        },
        py::arg("seed"), py::arg("bits"), py::arg("out").noconvert(),
        "out = expand(seed) mod 2**bits (uint16 or uint32 words of the mask PRG).");
    m.def(
        "apply_masks",
        [](Arr<T> acc, const py::sequence& add, const py::sequence& sub, unsigned bits) {
            const auto add_seeds = bind::seeds32(add);
            const auto sub_seeds = bind::seeds32(sub);
            const std::size_t n = bind::length_1d(acc, "acc");
            T* dst = bind::writable(acc);
            py::gil_scoped_release nogil;
            apply_masks<T>(dst, n, reinterpret_cast<const Seed*>(add_seeds.data()), add_seeds.size(),
                           reinterpret_cast<const Seed*>(sub_seeds.data()), sub_seeds.size(), bits);
        },
        py::arg("acc").noconvert(), py::arg("add_seeds"), py::arg("sub_seeds"), py::arg("bits"),
        "acc += sum(expand(add)) - sum(expand(sub)) mod 2**bits, in place.");
    m.def(
        "ring_add",
        [](Arr<T> acc, const Arr<T>& v, unsigned bits) {
            const std::size_t n = bind::length_1d(acc, "acc");
            if (bind::length_1d(v, "v") != n) throw std::invalid_argument("acc and v differ in length");
            T* dst = bind::writable(acc);
            const T* src = v.data();
            py::gil_scoped_release nogil;
            ring_add<T>(dst, src, n, bits);
        },
        py::arg("acc").noconvert(), py::arg("v").noconvert(), py::arg("bits"));
    m.def(
        "ring_sub",
        [](Arr<T> acc, const Arr<T>& v, unsigned bits) {
            const std::size_t n = bind::length_1d(acc, "acc");
            if (bind::length_1d(v, "v") != n) throw std::invalid_argument("acc and v differ in length");
            T* dst = bind::writable(acc);
            const T* src = v.data();
            py::gil_scoped_release nogil;
            ring_sub<T>(dst, src, n, bits);
        },
        py::arg("acc").noconvert(), py::arg("v").noconvert(), py::arg("bits"));
    m.def(
        "ring_sum",
        [](const py::sequence& rows, Arr<T> out, unsigned bits) {
            const std::size_t n = bind::length_1d(out, "out");
            std::vector<Arr<T>> keep;  // holds a reference to every row while the GIL is released
            std::vector<const T*> ptrs;
            keep.reserve(py::len(rows));
            ptrs.reserve(py::len(rows));
            for (const py::handle row : rows) {
                if (!py::isinstance<Arr<T>>(row)) {
                    throw std::invalid_argument("every row must be a C-contiguous array of the out dtype");
                }
                keep.push_back(py::reinterpret_borrow<Arr<T>>(row));
                if (bind::length_1d(keep.back(), "row") != n) throw std::invalid_argument("row length differs from out");
                ptrs.push_back(keep.back().data());
            }
            T* dst = bind::writable(out);
            py::gil_scoped_release nogil;
            ring_sum<T>(ptrs.data(), ptrs.size(), n, dst, bits);
        },
        py::arg("rows"), py::arg("out").noconvert(), py::arg("bits"));
}

}  // namespace

void bind_mask(py::module_& m) {
    m.def(
        "chacha20_keystream",
        [](const py::bytes& key, const py::bytes& nonce, std::uint32_t counter, std::uint64_t nbytes) {
            const std::string k = key, iv = nonce;
            if (k.size() != 32 || iv.size() != 12) throw std::invalid_argument("key must be 32 bytes, nonce 12");
            chacha20_check_range(counter, nbytes);
            const ChachaKey ck = chacha20_setup(reinterpret_cast<const std::uint8_t*>(k.data()),
                                                reinterpret_cast<const std::uint8_t*>(iv.data()));
            py::bytes out(nullptr, static_cast<std::size_t>(nbytes));
            auto* dst = reinterpret_cast<std::uint8_t*>(PyBytes_AsString(out.ptr()));
            {
                py::gil_scoped_release nogil;
                chacha20_keystream(ck, counter, dst, static_cast<std::size_t>(nbytes));
            }
            return out;
        },
        py::arg("key"), py::arg("nonce"), py::arg("counter"), py::arg("nbytes"),
        "Raw ChaCha20-IETF keystream (RFC 8439) from block `counter`.");
    def_ring_ops<std::uint16_t>(m);
    def_ring_ops<std::uint32_t>(m);
}

}  // namespace fedgate

// Helpers shared by the bind_*.cpp files: arrays are taken as they are (no conversion, no copy),
// and whatever the Python face might have missed is refused with a C++ exception, never a crash.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace fedgate::bind {

namespace py = pybind11;

// C-contiguous arrays of exactly this dtype; combined with py::arg().noconvert() a mismatch is a
// TypeError instead of a silent converted copy.
template <typename T>
using Arr = py::array_t<T, py::array::c_style>;

// The length of a 1-D array whose elements the kernels may load as T (so also its alignment).
template <typename T>
std::size_t length_1d(const Arr<T>& a, const char* name) {
    if (a.ndim() != 1) throw std::invalid_argument(std::string(name) + " must be one-dimensional");
    if (reinterpret_cast<std::uintptr_t>(a.data()) % alignof(T) != 0) {
        throw std::invalid_argument(std::string(name) + " is not aligned to its element size");
    }
    return static_cast<std::size_t>(a.shape(0));
}

template <typename T>
T* writable(Arr<T>& a) {
    return a.mutable_data();  // throws std::domain_error on a read-only array
}

inline std::array<std::uint8_t, 32> seed32(const py::handle& obj) {
    if (!PyBytes_Check(obj.ptr())) throw std::invalid_argument("a seed must be bytes");
    char* data = nullptr;
    Py_ssize_t len = 0;
    if (PyBytes_AsStringAndSize(obj.ptr(), &data, &len) != 0) throw py::error_already_set();
    if (len != 32) throw std::invalid_argument("a seed must be exactly 32 bytes");
    std::array<std::uint8_t, 32> out{};
    std::memcpy(out.data(), data, 32);
    return out;
}

inline std::vector<std::array<std::uint8_t, 32>> seeds32(const py::sequence& seq) {
    std::vector<std::array<std::uint8_t, 32>> out;
    out.reserve(py::len(seq));
    for (const py::handle item : seq) out.push_back(seed32(item));
    return out;
}

}  // namespace fedgate::bind

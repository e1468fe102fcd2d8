// native._core: the table discrete Gaussian sampler, the reference (Canonne-Kamath-Steinke) one,
// and read-only views of the table sampler's plan and its exact test for the tests (no policy;
// see noise.py).
#include "bind_common.hpp"
#include "dgauss_plan.hpp"
#include "fedgate/noise.hpp"

namespace fedgate {

void bind_dgauss(pybind11::module_& m);

namespace {

using bind::Arr;
namespace py = pybind11;

py::int_ to_pyint(dg::u128 x) {
    const py::int_ hi(static_cast<std::uint64_t>(x >> 64)), lo(static_cast<std::uint64_t>(x));
    return py::reinterpret_steal<py::int_>(PyNumber_Or(
        py::reinterpret_steal<py::object>(PyNumber_Lshift(hi.ptr(), py::int_(64).ptr())).ptr(), lo.ptr()));
}

template <typename T>
py::array_t<T> to_array(const std::vector<T>& v) {
    py::array_t<T> out(static_cast<py::ssize_t>(v.size()));
    std::copy(v.begin(), v.end(), out.mutable_data());
    return out;
}

template <typename T>
void def_add(py::module_& m) {
    m.def(
        "dgauss_add",
        [](Arr<T> acc, const py::bytes& seed, std::uint64_t num, std::uint64_t den, unsigned bits) {
            const auto key = bind::seed32(seed);
            const std::size_t n = bind::length_1d(acc, "acc");
            T* dst = bind::writable(acc);
            py::gil_scoped_release nogil;
            dgauss_add<T>(key.data(), num, den, bits, dst, n);
        },
        py::arg("acc").noconvert(), py::arg("seed"), py::arg("num"), py::arg("den"), py::arg("bits"),
        "acc += discrete Gaussian(num/den) noise mod 2^bits, in place (table sampler).");
    m.def(
        "dgauss_cks_add",
        [](Arr<T> acc, const py::bytes& seed, std::uint64_t num, std::uint64_t den, unsigned bits) {
            const auto key = bind::seed32(seed);
            const std::size_t n = bind::length_1d(acc, "acc");
            T* dst = bind::writable(acc);
            py::gil_scoped_release nogil;
            dgauss_cks_add<T>(key.data(), num, den, bits, dst, n);
        },
        py::arg("acc").noconvert(), py::arg("seed"), py::arg("num"), py::arg("den"), py::arg("bits"),
        "acc += discrete Gaussian(num/den) noise mod 2^bits, in place (reference sampler).");
}

py::dict plan_view(std::uint64_t num, std::uint64_t den) {
    std::shared_ptr<const dg::Plan> pl;
    {
        py::gil_scoped_release nogil;
        pl = dg::get_plan(num, den);
    }
    py::dict d;
    d["omega"] = pl->omega;
    d["J"] = pl->J;
    d["p"] = pl->p;
    d["C"] = pl->C;
    d["pool"] = pl->pool;
    d["slots"] = to_array(pl->slots);
    d["A"] = to_array(pl->A);
    d["prefix"] = to_array(pl->prefix);
    return d;
}

bool exact_view(std::uint64_t num, std::uint64_t den, std::uint64_t k, std::uint64_t m, unsigned s,
                std::uint64_t v_hi, std::uint64_t v_lo, bool stage2) {
    const std::shared_ptr<const dg::Plan> pl = dg::get_plan(num, den);
    if (m >= dg::u64{pl->J} * pl->w()) throw std::invalid_argument("dgauss_exact: m beyond the table");
    if (s > 1) throw std::invalid_argument("dgauss_exact: s must be 0 or 1");
    if (k > (std::uint64_t{1} << 32)) throw std::invalid_argument("dgauss_exact: k above the units");
    return dg::exact_test(*pl, k, m, s, v_hi, v_lo, stage2);
}

}  // namespace

void bind_dgauss(py::module_& m) {
    m.def(
        "dgauss_sample",
        [](const py::bytes& seed, std::uint64_t num, std::uint64_t den, Arr<std::int64_t> out) {
            const auto key = bind::seed32(seed);
            const std::size_t n = bind::length_1d(out, "out");
            std::int64_t* dst = bind::writable(out);
            py::gil_scoped_release nogil;
            dgauss_sample(key.data(), num, den, n, dst);
        },
        py::arg("seed"), py::arg("num"), py::arg("den"), py::arg("out").noconvert(),
        "out = discrete Gaussian N_Z(0, num/den) samples (table sampler).");
    m.def(
        "dgauss_cks_sample",
        [](const py::bytes& seed, std::uint64_t num, std::uint64_t den, Arr<std::int64_t> out) {
            const auto key = bind::seed32(seed);
            const std::size_t n = bind::length_1d(out, "out");
            std::int64_t* dst = bind::writable(out);
            py::gil_scoped_release nogil;
            dgauss_cks_sample(key.data(), num, den, n, dst);
        },
        py::arg("seed"), py::arg("num"), py::arg("den"), py::arg("out").noconvert(),
        "out = discrete Gaussian N_Z(0, num/den) samples (reference sampler).");
    def_add<std::uint16_t>(m);
    def_add<std::uint32_t>(m);
    m.def("dgauss_plan", &plan_view, py::arg("num"), py::arg("den"),
          "The table sampler's plan of num/den: omega, J, p, C, pool, slots, A, prefix.");
    m.def(
        "dgauss_exp_bounds",
        [](std::uint64_t num, std::uint64_t den) {
            if (den == 0 || den >= (std::uint64_t{1} << 56) || num >= (std::uint64_t{1} << 62)) {
                throw std::invalid_argument("dgauss_exp_bounds: need num < 2^62, 1 <= den < 2^56");
            }
            const dg::Interval e = dg::exp_neg(num, den);
            return py::make_tuple(to_pyint(e.lo), to_pyint(e.hi));
        },
        py::arg("num"), py::arg("den"), "(lo, hi) with lo <= 2^127 exp(-num/den) <= hi.");
    m.def(
        "dgauss_slow_path",
        [](std::uint64_t num, std::uint64_t den, bool pool, Arr<std::uint32_t> words) {
            const std::shared_ptr<const dg::Plan> pl = dg::get_plan(num, den);
            return dg::slow_path_words(*pl, pool, words.data(), bind::length_1d(words, "words"));
        },
        py::arg("num"), py::arg("den"), py::arg("pool"), py::arg("words").noconvert(),
        "The slow path after a pool hit (pool) or a rejection on the given secondary words.");
    m.def("dgauss_exact", &exact_view, py::arg("num"), py::arg("den"), py::arg("k"), py::arg("m"),
          py::arg("s"), py::arg("v_hi"), py::arg("v_lo"), py::arg("stage2"),
          "The exact test k + v / 2^128 < C phi(m) of the plan of num/den (raises if undecided).");
}

}  // namespace fedgate

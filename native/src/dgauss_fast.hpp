// The fast path of the table discrete Gaussian: one primary 32-bit word per sample decoded through
// the alias table, the same integer rule at every SIMD level (scalar here, AVX2 / AVX-512 in
// dgauss_x86.cpp). Lanes that need the slow path (pool hits, the rejected negative zero) are
// listed in order and left for the caller. Private to dgauss_*.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "dgauss_plan.hpp"

namespace fedgate::dg {

struct FastConsts {
    const std::uint32_t* slots;
    unsigned p, q, omega;
    std::uint32_t J;
    bool zero_check;  // w > 1: (m = 0, s = 1) is rejected
};

inline FastConsts fast_consts(const Plan& pl) {
    return {pl.slots.data(), pl.p, 32 - pl.p, pl.omega, pl.J, pl.omega > 0};
}

enum class Kind { out, pool, reject };

// One word: its outcome, and the sample when the outcome is "out".
inline Kind decode_word(const FastConsts& k, std::uint32_t u, std::int32_t* x) {
    const std::uint32_t slot = u >> k.q;
    const std::uint32_t v = u & ((std::uint32_t{1} << k.q) - 1);
    const std::uint32_t e = k.slots[slot];
    const std::uint32_t o = (v >> 1) < (e >> k.p) ? slot : (e & ((std::uint32_t{1} << k.p) - 1));
    if (o == k.J) return Kind::pool;
    const std::uint32_t r = v & ((std::uint32_t{1} << k.omega) - 1);
    const std::uint32_t s = (v >> k.omega) & 1;
    const std::uint32_t m = (o << k.omega) + r;
    if (k.zero_check && m == 0 && s == 1) return Kind::reject;
    *x = s != 0 ? -static_cast<std::int32_t>(m) : static_cast<std::int32_t>(m);
    return Kind::out;
}

// Applies a sample to its destination: T = int64 stores it, uint16 / uint32 add it mod 2^bits
// (mask = 2^bits - 1; two's complement, so adding the 32-bit image of x adds x).
template <typename T>
inline void apply(T* dst, std::int32_t x, std::uint32_t mask) {
    if constexpr (std::is_signed_v<T>) {
        (void)mask;
        *dst = x;
    } else {
        *dst = static_cast<T>((*dst + static_cast<std::uint32_t>(x)) & mask);
    }
}

// Decodes n words into dst (see apply); writes the indices of lanes left for the slow path to exc
// in order and returns their count. Those lanes of dst are left as they were (add) or unspecified
// (store).
template <typename T>
std::size_t decode_scalar(const FastConsts& k, const std::uint32_t* u, std::size_t n, T* dst,
                          std::uint32_t mask, std::uint32_t* exc) {
    std::size_t n_exc = 0;
    for (std::size_t i = 0; i < n; ++i) {
        std::int32_t x = 0;
        if (decode_word(k, u[i], &x) == Kind::out) {
            apply(dst + i, x, mask);
        } else {
            exc[n_exc++] = static_cast<std::uint32_t>(i);
        }
    }
    return n_exc;
}

template <typename T>
std::size_t decode_avx2(const FastConsts& k, const std::uint32_t* u, std::size_t n, T* dst,
                        std::uint32_t mask, std::uint32_t* exc);
template <typename T>
std::size_t decode_avx512(const FastConsts& k, const std::uint32_t* u, std::size_t n, T* dst,
                          std::uint32_t mask, std::uint32_t* exc);

}  // namespace fedgate::dg

// Ring arithmetic: the server's sum of masked vectors is memory-bound, so the loops are written
// for the auto-vectorizer and for cache reuse, not for a particular instruction set.
#include "fedgate/ring.hpp"

#include <algorithm>

namespace fedgate {

template <typename T>
void ring_add(T* acc, const T* v, std::size_t n, unsigned bits) {
    const T mask = ring_mask<T>(bits);
    for (std::size_t i = 0; i < n; ++i) acc[i] = static_cast<T>(acc[i] + v[i]) & mask;
}

template <typename T>
void ring_sub(T* acc, const T* v, std::size_t n, unsigned bits) {
    const T mask = ring_mask<T>(bits);
    for (std::size_t i = 0; i < n; ++i) acc[i] = static_cast<T>(acc[i] - v[i]) & mask;
}

template <typename T>
void ring_sum(const T* const* rows, std::size_t m, std::size_t n, T* out, unsigned bits) {
    const T mask = ring_mask<T>(bits);
    // Column blocks keep the output chunk in L1 while every row streams through it once; four rows
    // per pass cut the load/store traffic on the output.
    constexpr std::size_t block = 4096 / sizeof(T);
    for (std::size_t j0 = 0; j0 < n; j0 += block) {
        const std::size_t len = std::min(block, n - j0);
        T* o = out + j0;
        std::fill(o, o + len, T{0});
        std::size_t r = 0;
        for (; r + 4 <= m; r += 4) {
            const T* a = rows[r] + j0;
            const T* b = rows[r + 1] + j0;
            const T* c = rows[r + 2] + j0;
            const T* d = rows[r + 3] + j0;
            for (std::size_t j = 0; j < len; ++j) {
                o[j] = static_cast<T>(o[j] + static_cast<T>(static_cast<T>(a[j] + b[j]) + static_cast<T>(c[j] + d[j])));
            }
        }
        for (; r < m; ++r) {
            const T* a = rows[r] + j0;
            for (std::size_t j = 0; j < len; ++j) o[j] = static_cast<T>(o[j] + a[j]);
        }
        for (std::size_t j = 0; j < len; ++j) o[j] &= mask;
    }
}

#define FEDGATE_INSTANTIATE(T)                                                                   \
    template void ring_add<T>(T*, const T*, std::size_t, unsigned);                              \
    template void ring_sub<T>(T*, const T*, std::size_t, unsigned);                              \
    template void ring_sum<T>(const T* const*, std::size_t, std::size_t, T*, unsigned);
FEDGATE_INSTANTIATE(std::uint16_t)
FEDGATE_INSTANTIATE(std::uint32_t)
#undef FEDGATE_INSTANTIATE

}  // namespace fedgate

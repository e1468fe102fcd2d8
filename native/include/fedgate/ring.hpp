// Arithmetic in the ring Z_2^bits on uint16 (bits <= 16) or uint32 (bits <= 32) words.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace fedgate {

// The 2^bits - 1 mask of a ring width; throws std::invalid_argument unless 1 <= bits <= 8*sizeof(T).
template <typename T>
T ring_mask(unsigned bits) {
    if (bits < 1 || bits > 8 * sizeof(T)) {
        throw std::invalid_argument("ring width " + std::to_string(bits) + " does not fit a " +
                                    std::to_string(8 * sizeof(T)) + "-bit word");
    }
    return static_cast<T>(~std::uint64_t{0} >> (64 - bits));
}

// acc = acc +- v mod 2^bits, element-wise.
template <typename T>
void ring_add(T* acc, const T* v, std::size_t n, unsigned bits);
template <typename T>
void ring_sub(T* acc, const T* v, std::size_t n, unsigned bits);

// out = sum of the m rows mod 2^bits; rows may be anywhere in memory (each n long).
template <typename T>
void ring_sum(const T* const* rows, std::size_t m, std::size_t n, T* out, unsigned bits);

}  // namespace fedgate

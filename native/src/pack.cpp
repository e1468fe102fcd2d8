// Bit-packing with a 64-bit shift register; widths 8, 16 and 32 are plain narrowing copies.
#include "fedgate/pack.hpp"

#include <cstring>
#include <stdexcept>

#include "fedgate/ring.hpp"

namespace fedgate {
namespace {

template <typename W, typename T>
bool narrow(const T* values, std::size_t n, std::uint8_t* out) {
    T over = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const W w = static_cast<W>(values[i]);
        over |= static_cast<T>(values[i] ^ w);
        std::memcpy(out + i * sizeof(W), &w, sizeof(W));
    }
    return over == 0;
}

template <typename W, typename T>
void widen(const std::uint8_t* data, std::size_t n, T* out) {
    for (std::size_t i = 0; i < n; ++i) {
        W w;
        std::memcpy(&w, data + i * sizeof(W), sizeof(W));
        out[i] = static_cast<T>(w);
    }
}

}  // namespace

template <typename T>
bool pack(const T* values, std::size_t n, unsigned bits, std::uint8_t* out) {
    const T mask = ring_mask<T>(bits);
    if (bits == 8) return narrow<std::uint8_t>(values, n, out);
    if (bits == 16) return narrow<std::uint16_t>(values, n, out);
    if (bits == 32) return narrow<std::uint32_t>(values, n, out);
    std::uint64_t reg = 0;
    unsigned have = 0;  // bits in reg, always < 32 between values
    T over = 0;
    for (std::size_t i = 0; i < n; ++i) {
        over |= static_cast<T>(values[i] & ~mask);
        reg |= static_cast<std::uint64_t>(values[i] & mask) << have;
        have += bits;
        if (have >= 32) {
            const auto word = static_cast<std::uint32_t>(reg);
            std::memcpy(out, &word, 4);
            out += 4;
            reg >>= 32;
            have -= 32;
        }
    }
    for (; have > 0; have = have > 8 ? have - 8 : 0, reg >>= 8) *out++ = static_cast<std::uint8_t>(reg);
    return over == 0;
}

template <typename T>
bool unpack(const std::uint8_t* data, std::size_t nbytes, std::size_t n, unsigned bits, T* out) {
    const T mask = ring_mask<T>(bits);
    if (nbytes != packed_size(n, bits)) throw std::invalid_argument("packed length does not match n and bits");
    if (bits == 8) return widen<std::uint8_t>(data, n, out), true;
    if (bits == 16) return widen<std::uint16_t>(data, n, out), true;
    if (bits == 32) return widen<std::uint32_t>(data, n, out), true;
    const std::uint8_t* const end = data + nbytes;
    std::uint64_t reg = 0;
    unsigned have = 0;
    for (std::size_t i = 0; i < n; ++i) {
        if (have < bits) {
            if (end - data >= 4) {
                std::uint32_t word;
                std::memcpy(&word, data, 4);
                reg |= static_cast<std::uint64_t>(word) << have;
                data += 4;
                have += 32;
            } else {
                while (have < bits && data < end) {
                    reg |= static_cast<std::uint64_t>(*data++) << have;
                    have += 8;
                }
            }
        }
        out[i] = static_cast<T>(reg & mask);
        reg >>= bits;
        have -= bits;
    }
    // Whatever is left (at most 7 padding bits) must be zero.
    return reg == 0 && data == end;
}

template bool pack<std::uint16_t>(const std::uint16_t*, std::size_t, unsigned, std::uint8_t*);
template bool pack<std::uint32_t>(const std::uint32_t*, std::size_t, unsigned, std::uint8_t*);
template bool unpack<std::uint16_t>(const std::uint8_t*, std::size_t, std::size_t, unsigned, std::uint16_t*);
template bool unpack<std::uint32_t>(const std::uint8_t*, std::size_t, std::size_t, unsigned, std::uint32_t*);

}  // namespace fedgate

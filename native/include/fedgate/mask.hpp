// Ring masks from the ChaCha20 mask PRG (DESIGN.md fixed choice 1).
// T is std::uint16_t (bits <= 16) or std::uint32_t (bits <= 32); element i of the expansion of a
// seed is the little-endian T at keystream byte offset i * sizeof(T), reduced mod 2^bits.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fedgate/ring.hpp"

namespace fedgate {

using Seed = std::uint8_t[32];

template <typename T>
void expand(const std::uint8_t seed[32], unsigned bits, T* out, std::size_t n);

// acc = acc + sum(expand(add)) - sum(expand(sub)) mod 2^bits, streamed chunk by chunk: the keystream
// of each seed lives only in a small stack buffer, and each chunk of acc stays in L1 for all seeds.
template <typename T>
void apply_masks(T* acc, std::size_t n, const Seed* add, std::size_t n_add, const Seed* sub,
                 std::size_t n_sub, unsigned bits);

}  // namespace fedgate

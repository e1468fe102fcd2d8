// Dense bit-packing of ring elements for the wire: value i occupies bits [i*bits, (i+1)*bits) of a
// little-endian bit stream (bit j of the stream is bit j%8 of byte j/8); the last byte is zero-padded.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fedgate {

constexpr std::uint64_t packed_size(std::uint64_t n, unsigned bits) { return (n * bits + 7) / 8; }

// Writes packed_size(n, bits) bytes. Returns false (out unspecified) if a value is >= 2^bits.
template <typename T>
bool pack(const T* values, std::size_t n, unsigned bits, std::uint8_t* out);

// Reads exactly packed_size(n, bits) bytes (throws std::invalid_argument on another nbytes).
// Returns false if the padding bits of the last byte are not zero (a non-canonical encoding).
template <typename T>
bool unpack(const std::uint8_t* data, std::size_t nbytes, std::size_t n, unsigned bits, T* out);

}  // namespace fedgate

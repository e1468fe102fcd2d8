// ChaCha20-IETF keystream (RFC 8439): 256-bit key, 96-bit nonce, 32-bit block counter.
// The mask PRG of fedgate is this keystream with nonce "LibsodiumDRG" and counter 0, which is what
// libsodium's randombytes_buf_deterministic produces (DESIGN.md, fixed choice 1).
#pragma once

#include <cstddef>
#include <cstdint>

namespace fedgate {

constexpr std::size_t kChachaBlockBytes = 64;
// One nonce covers 2^32 blocks; libsodium refuses longer streams, and so do we.
constexpr std::uint64_t kChachaMaxBlocks = std::uint64_t{1} << 32;
constexpr std::uint8_t kLibsodiumDrgNonce[12] = {'L', 'i', 'b', 's', 'o', 'd',
                                                 'i', 'u', 'm', 'D', 'R', 'G'};

// The fixed part of the ChaCha20 input state: key and nonce as little-endian words.
struct ChachaKey {
    std::uint32_t key[8];
    std::uint32_t nonce[3];
};

ChachaKey chacha20_setup(const std::uint8_t key[32], const std::uint8_t nonce[12]);

// Writes the serialized blocks counter .. counter + nblocks - 1 to out (nblocks * 64 bytes).
// Precondition: counter + nblocks <= 2^32 (callers check with chacha20_check_range).
void chacha20_blocks(const ChachaKey& k, std::uint32_t counter, std::size_t nblocks, std::uint8_t* out);

// Throws std::length_error when nbytes of keystream starting at block `counter` would need a
// block counter beyond 2^32 - 1.
void chacha20_check_range(std::uint64_t counter, std::uint64_t nbytes);

// Any number of keystream bytes starting at the first byte of block `counter`.
void chacha20_keystream(const ChachaKey& k, std::uint32_t counter, std::uint8_t* out, std::size_t nbytes);

namespace detail {
// Wide paths: each handles a multiple of its batch width and returns how many blocks it wrote.
void chacha20_block_scalar(const ChachaKey& k, std::uint32_t counter, std::uint8_t out[64]);
std::size_t chacha20_blocks_avx2(const ChachaKey& k, std::uint32_t counter, std::size_t nblocks,
                                 std::uint8_t* out);
std::size_t chacha20_blocks_avx512(const ChachaKey& k, std::uint32_t counter, std::size_t nblocks,
                                   std::uint8_t* out);
std::size_t chacha20_blocks_neon(const ChachaKey& k, std::uint32_t counter, std::size_t nblocks,
                                 std::uint8_t* out);
}  // namespace detail

}  // namespace fedgate

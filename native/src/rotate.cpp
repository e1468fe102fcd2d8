// Randomized Hadamard rotation: y = H D x / sqrt(n) with D a diagonal of seed-derived signs.
// It spreads the mass of an update evenly over the coordinates, so the per-coordinate clip of the
// quantizer (and the modular wrap of the ring) rarely bites (Kairouz, Liu, Steinke 2021, Sec. 4).
// Plain loops: IEEE float32 add/sub without reassociation, the same bits at every SIMD level.
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "fedgate/chacha20.hpp"
#include "fedgate/noise.hpp"

namespace fedgate {
namespace {
// Not the noise nonce: the rotation seed is public within a round, and a noise seed reused as a
// rotation seed by mistake must still give an unrelated stream.
constexpr std::uint8_t kRotationNonce[12] = {'F', 'e', 'd', 'g', 'a', 't', 'e', 'R', 'o', 't', 'a', 't'};
}  // namespace

void fwht(float* x, std::size_t n) {
    if (n == 0 || (n & (n - 1)) != 0) throw std::invalid_argument("fwht: length must be a power of two");
    for (std::size_t h = 1; h < n; h *= 2) {
        for (std::size_t i = 0; i < n; i += 2 * h) {
            float* a = x + i;
            float* b = x + i + h;
            for (std::size_t j = 0; j < h; ++j) {
                const float u = a[j];
                const float v = b[j];
                a[j] = u + v;
                b[j] = u - v;
            }
        }
    }
    const auto scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
    for (std::size_t i = 0; i < n; ++i) x[i] *= scale;
}

void flip_signs(const std::uint8_t seed[32], float* x, std::size_t n) {
    const ChachaKey key = chacha20_setup(seed, kRotationNonce);
    constexpr std::size_t kChunkBytes = 1024;  // 8192 signs per chunk
    std::uint8_t bits[kChunkBytes];
    chacha20_check_range(0, (n + 7) / 8);
    for (std::size_t start = 0; start < n; start += 8 * kChunkBytes) {
        const std::size_t count = n - start < 8 * kChunkBytes ? n - start : 8 * kChunkBytes;
        const auto counter = static_cast<std::uint32_t>(start / 8 / kChachaBlockBytes);
        chacha20_keystream(key, counter, bits, (count + 7) / 8);
        for (std::size_t j = 0; j < count; ++j) {
            std::uint32_t w;
            std::memcpy(&w, x + start + j, 4);
            w ^= static_cast<std::uint32_t>((bits[j / 8] >> (j % 8)) & 1u) << 31;
            std::memcpy(x + start + j, &w, 4);
        }
    }
}

}  // namespace fedgate

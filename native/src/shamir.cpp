#include "fedgate/shamir.hpp"

#include <vector>

namespace fedgate {
namespace shamir {

uint64_t mul(uint64_t a, uint64_t b) {
    // Inputs are < 2^61, so the product is < 2^122 and folds twice into [0, p].
    const unsigned __int128 prod = static_cast<unsigned __int128>(a) * b;
    uint64_t lo = static_cast<uint64_t>(prod) & kPrime;
    uint64_t hi = static_cast<uint64_t>(prod >> 61);
    uint64_t r = lo + hi;
    r = (r & kPrime) + (r >> 61);
    return r == kPrime ? 0 : r;
}

uint64_t add(uint64_t a, uint64_t b) {
    uint64_t r = a + b;  // < 2^62, no overflow
    r = (r & kPrime) + (r >> 61);
    return r == kPrime ? 0 : r;
}

uint64_t sub(uint64_t a, uint64_t b) { return add(a, kPrime - b); }

uint64_t inv(uint64_t a) {
    // Fermat: a^(p-2). The exponent is public, so square-and-multiply leaks nothing secret.
    uint64_t result = 1, base = a, e = kPrime - 2;
    while (e) {
        if (e & 1) result = mul(result, base);
        base = mul(base, base);
        e >>= 1;
    }
    return result;
}

void split(const uint64_t* secret, std::size_t chunks, const uint64_t* coeffs, std::size_t degree,
           const uint64_t* xs, std::size_t n_x, uint64_t* out) {
    for (std::size_t i = 0; i < n_x; ++i) {
        const uint64_t x = xs[i];
        uint64_t* row = out + i * chunks;
        for (std::size_t c = 0; c < chunks; ++c) {
            // Horner from the highest coefficient down to the secret.
            uint64_t acc = 0;
            for (std::size_t j = degree; j > 0; --j) acc = add(mul(acc, x), coeffs[(j - 1) * chunks + c]);
            row[c] = add(mul(acc, x), secret[c]);
        }
    }
}

bool lagrange_at_zero(const uint64_t* xs, std::size_t n, uint64_t* out) {
    std::vector<uint64_t> num(n, 1), den(n, 1);
    for (std::size_t i = 0; i < n; ++i) {
        if (xs[i] == 0 || xs[i] >= kPrime) return false;
        for (std::size_t j = 0; j < n; ++j) {
            if (i == j) continue;
            if (xs[i] == xs[j]) return false;
            num[i] = mul(num[i], xs[j]);
            den[i] = mul(den[i], sub(xs[j], xs[i]));
        }
    }
    // One inversion for all denominators (Montgomery's batch trick).
    std::vector<uint64_t> prefix(n + 1, 1);
    for (std::size_t i = 0; i < n; ++i) prefix[i + 1] = mul(prefix[i], den[i]);
    uint64_t running = inv(prefix[n]);
    for (std::size_t i = n; i > 0; --i) {
        const uint64_t den_inv = mul(running, prefix[i - 1]);
        running = mul(running, den[i - 1]);
        out[i - 1] = mul(num[i - 1], den_inv);
    }
    return true;
}

void combine(const uint64_t* lambda, std::size_t n, const uint64_t* ys, std::size_t n_secrets,
             std::size_t chunks, uint64_t* out) {
    for (std::size_t s = 0; s < n_secrets; ++s) {
        const uint64_t* block = ys + s * n * chunks;
        for (std::size_t c = 0; c < chunks; ++c) {
            uint64_t acc = 0;
            for (std::size_t i = 0; i < n; ++i) acc = add(acc, mul(lambda[i], block[i * chunks + c] % kPrime));
            out[s * chunks + c] = acc;
        }
    }
}

}  // namespace shamir
}  // namespace fedgate

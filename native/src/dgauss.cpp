// The reference discrete Gaussian sampler (Canonne, Kamath, Steinke 2020, Algorithms 1-3) from the
// noise keystream, in integer arithmetic only. The default sampler is the table one
// (dgauss_table.cpp); this one stays as the independent check of its distribution.
//
// sigma^2 = a / b. With t = floor(sigma) + 1, propose Y from the discrete Laplace of scale t
// (Algorithm 2), accept with probability exp(-gamma), gamma = (|Y| - sigma^2 / t)^2 / (2 sigma^2)
// = (|Y| b t - a)^2 / (2 a b t^2). With a <= 2^44 (sigma^2 <= 2^32, b <= 2^12) and |Y| < 2^30 the
// numerator stays below 2^120 and the denominator below 2^91. |Y| >= 2^30 has probability below
// exp(-2^30 / t) <= exp(-8191) per proposal; the sampler throws rather than approximate it.
// Bernoulli(exp(-gamma)) (Algorithm 1) needs only Bernoulli(rational) trials; its expected work is
// O(1), so a sample costs O(1) expected keystream words whatever the variance.
#include <stdexcept>

#include "fedgate/noise.hpp"
#include "noise_stream.hpp"

namespace fedgate {
namespace {

using u128 = unsigned __int128;
using noise_detail::WordStream;

// Exactly uniform in [0, n), 1 <= n < 2^127.
u128 uniform_below_128(WordStream& rng, u128 n) {
    if (n <= ~std::uint64_t{0}) return noise_detail::uniform_below(rng, static_cast<std::uint64_t>(n));
    unsigned bits = 128;
    while (((n - 1) >> (bits - 1)) == 0) --bits;  // bit length of n - 1
    const u128 mask = (u128{1} << bits) - 1;
    for (;;) {
        const u128 hi = rng.next();
        const u128 r = ((hi << 64) | rng.next()) & mask;
        if (r < n) return r;
    }
}

inline bool bernoulli_128(WordStream& rng, u128 num, u128 den) {
    return num != 0 && uniform_below_128(rng, den) < num;
}

// Bernoulli(exp(-num / den)) for 0 <= num / den <= 1 (Algorithm 1): K is the first k with a failed
// Bernoulli(gamma / k); P(K > k) = gamma^k / k!, and P(K odd) = exp(-gamma).
bool bernoulli_exp_unit(WordStream& rng, u128 num, u128 den) {
    std::uint64_t k = 1;
    while (bernoulli_128(rng, num, den * k)) ++k;
    return (k & 1) == 1;
}

// Bernoulli(exp(-num / den)) for any num / den >= 0.
bool bernoulli_exp(WordStream& rng, u128 num, u128 den) {
    const u128 whole = num / den;
    for (u128 i = 0; i < whole; ++i) {
        if (!bernoulli_exp_unit(rng, 1, 1)) return false;
    }
    return bernoulli_exp_unit(rng, num % den, den);
}

// Discrete Laplace with P(Y = y) proportional to exp(-|y| / t), t >= 1 (Algorithm 2, s = 1).
std::int64_t discrete_laplace(WordStream& rng, std::uint64_t t) {
    for (;;) {
        const std::uint64_t u = noise_detail::uniform_below(rng, t);
        if (!bernoulli_exp_unit(rng, u, t)) continue;
        std::uint64_t v = 0;
        while (bernoulli_exp_unit(rng, 1, 1)) ++v;
        const std::uint64_t x = u + t * v;
        const bool negative = noise_detail::uniform_below(rng, 2) == 1;
        if (negative && x == 0) continue;
        if (x >= (std::uint64_t{1} << 30)) throw std::runtime_error("discrete Gaussian: proposal beyond 2^30");
        return negative ? -static_cast<std::int64_t>(x) : static_cast<std::int64_t>(x);
    }
}

struct DgaussPlan {
    std::uint64_t a, b, t;
};

DgaussPlan plan_dgauss(std::uint64_t num, std::uint64_t den) {
    if (den == 0 || den > kDgaussMaxDen) throw std::invalid_argument("dgauss: denominator out of range");
    if (num == 0) throw std::invalid_argument("dgauss: variance must be > 0");
    if (num / den > kDgaussMaxVariance || (num / den == kDgaussMaxVariance && num % den != 0)) {
        throw std::invalid_argument("dgauss: variance above the supported maximum");
    }
    const std::uint64_t whole = num / den;  // floor(sigma) = isqrt(floor(sigma^2))
    std::uint64_t r = 0;
    while ((r + 1) * (r + 1) <= whole) {
        std::uint64_t step = 1;
        while ((r + 2 * step) * (r + 2 * step) <= whole) step *= 2;
        r += step;
    }
    return {num, den, r + 1};
}

std::int64_t dgauss(WordStream& rng, const DgaussPlan& p) {
    const u128 den = u128{2} * p.a * p.b * p.t * p.t;
    for (;;) {
        const std::int64_t y = discrete_laplace(rng, p.t);
        const std::uint64_t ay = static_cast<std::uint64_t>(y < 0 ? -y : y);
        const u128 lhs = u128{ay} * p.b * p.t;
        const u128 w = lhs >= p.a ? lhs - p.a : p.a - lhs;
        if (bernoulli_exp(rng, w * w, den)) return y;
    }
}

}  // namespace

void dgauss_cks_sample(const std::uint8_t seed[32], std::uint64_t num, std::uint64_t den, std::size_t n,
                   std::int64_t* out) {
    const DgaussPlan plan = plan_dgauss(num, den);
    WordStream rng(seed);
    for (std::size_t i = 0; i < n; ++i) out[i] = dgauss(rng, plan);
}

template <typename T>
void dgauss_cks_add(const std::uint8_t seed[32], std::uint64_t num, std::uint64_t den, unsigned bits, T* acc,
                std::size_t n) {
    if (bits < 1 || bits > 8 * sizeof(T)) throw std::invalid_argument("noise: bits out of range");
    const DgaussPlan plan = plan_dgauss(num, den);
    const std::uint64_t mask = (std::uint64_t{1} << bits) - 1;
    WordStream rng(seed);
    for (std::size_t i = 0; i < n; ++i) {
        const std::int64_t s = dgauss(rng, plan);
        acc[i] = static_cast<T>((static_cast<std::uint64_t>(acc[i]) + static_cast<std::uint64_t>(s)) & mask);
    }
}

template void dgauss_cks_add<std::uint16_t>(const std::uint8_t*, std::uint64_t, std::uint64_t, unsigned,
                                            std::uint16_t*, std::size_t);
template void dgauss_cks_add<std::uint32_t>(const std::uint8_t*, std::uint64_t, std::uint64_t, unsigned,
                                            std::uint32_t*, std::size_t);

}  // namespace fedgate

// Exact Skellam sampling from the ChaCha20 keystream (integer arithmetic only).
//
// Poisson(lambda), lambda = num/den, is the sum of m = max(1, ceil(2 lambda)) independent
// Poisson(g) with g = lambda / m <= 1/2 (sums of independent Poissons are Poisson). Each
// Poisson(g) is drawn by rejection: propose K ~ Geometric, P(K = k) = (1 - g) g^k (Bernoulli(g)
// trials), accept with probability 1/k! (the product of Bernoulli(1/j), j = 2..k). The accepted K
// has P(K = k) proportional to g^k / k!, i.e. exactly Poisson(g); a proposal is accepted with
// probability (1 - g) e^g >= 0.82. Bernoulli(a/b) is "uniform integer in [0, b) < a", and the
// uniform integer comes from 64-bit keystream words by Lemire's multiply-and-reject method, which
// is exactly uniform. Nothing here rounds, so the only assumption is an ideal keystream.
#include "fedgate/noise.hpp"

#include <stdexcept>

#include "noise_stream.hpp"

namespace fedgate {
namespace {

using noise_detail::uniform_below;
using noise_detail::WordStream;

inline bool bernoulli(WordStream& rng, std::uint64_t num, std::uint64_t den) {
    return uniform_below(rng, den) < num;
}

// Poisson(a / b) for a / b <= 1/2.
std::int64_t poisson_half(WordStream& rng, std::uint64_t a, std::uint64_t b) {
    for (;;) {
        std::int64_t k = 0;
        while (bernoulli(rng, a, b)) ++k;
        bool accept = true;
        for (std::int64_t j = 2; j <= k && accept; ++j) accept = bernoulli(rng, 1, static_cast<std::uint64_t>(j));
        if (accept) return k;
    }
}

struct PoissonPlan {
    std::uint64_t pieces;
    std::uint64_t num;
    std::uint64_t den;  // each piece is Poisson(num / den), num / den <= 1/2
};

PoissonPlan plan_poisson(std::uint64_t num, std::uint64_t den) {
    if (den == 0 || den > kNoiseMaxDen) throw std::invalid_argument("noise: denominator out of range");
    if (num / den > kNoiseMaxLambda || (num / den == kNoiseMaxLambda && num % den != 0)) {
        throw std::invalid_argument("noise: Poisson mean above the supported maximum");
    }
    const std::uint64_t pieces = num == 0 ? 1 : (2 * num + den - 1) / den;  // ceil(2 lambda)
    return {pieces, num, den * pieces};
}

inline std::int64_t poisson(WordStream& rng, const PoissonPlan& p) {
    if (p.num == 0) return 0;
    std::int64_t total = 0;
    for (std::uint64_t i = 0; i < p.pieces; ++i) total += poisson_half(rng, p.num, p.den);
    return total;
}

}  // namespace

void skellam_sample(const std::uint8_t seed[32], std::uint64_t num, std::uint64_t den, std::size_t n,
                    std::int64_t* out) {
    const PoissonPlan plan = plan_poisson(num, den);
    WordStream rng(seed);
    for (std::size_t i = 0; i < n; ++i) {
        const std::int64_t a = poisson(rng, plan);
        out[i] = a - poisson(rng, plan);
    }
}

template <typename T>
void skellam_add(const std::uint8_t seed[32], std::uint64_t num, std::uint64_t den, unsigned bits, T* acc,
                 std::size_t n) {
    if (bits < 1 || bits > 8 * sizeof(T)) throw std::invalid_argument("noise: bits out of range");
    const PoissonPlan plan = plan_poisson(num, den);
    const std::uint64_t mask = bits == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << bits) - 1;
    WordStream rng(seed);
    for (std::size_t i = 0; i < n; ++i) {
        const std::int64_t a = poisson(rng, plan);
        const std::int64_t s = a - poisson(rng, plan);
        // Two's complement: adding the 64-bit image of s is adding s mod 2^bits.
        acc[i] = static_cast<T>((static_cast<std::uint64_t>(acc[i]) + static_cast<std::uint64_t>(s)) & mask);
    }
}

template void skellam_add<std::uint16_t>(const std::uint8_t*, std::uint64_t, std::uint64_t, unsigned,
                                         std::uint16_t*, std::size_t);
template void skellam_add<std::uint32_t>(const std::uint8_t*, std::uint64_t, std::uint64_t, unsigned,
                                         std::uint32_t*, std::size_t);

}  // namespace fedgate

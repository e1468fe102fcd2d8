// Shamir secret sharing over the prime field GF(p), p = 2^61 - 1 (a Mersenne prime, so reduction is
// a shift and an add). Secrets are vectors of field elements; x-coordinates are participant ids.
#pragma once
#include <cstddef>
#include <cstdint>

namespace fedgate {
namespace shamir {

constexpr uint64_t kPrime = (uint64_t{1} << 61) - 1;

uint64_t mul(uint64_t a, uint64_t b);
uint64_t add(uint64_t a, uint64_t b);
uint64_t sub(uint64_t a, uint64_t b);
uint64_t inv(uint64_t a);  // a != 0

// Evaluates, for every x in xs, the polynomials f_c(x) = secret[c] + sum_j coeffs[j][c] x^(j+1).
// secret: [chunks], coeffs: [degree][chunks] (all < p), out: [n_x][chunks].
void split(const uint64_t* secret, std::size_t chunks, const uint64_t* coeffs, std::size_t degree,
           const uint64_t* xs, std::size_t n_x, uint64_t* out);

// Lagrange basis coefficients at 0 for distinct non-zero xs (< p): out[i] = prod_{j!=i} x_j/(x_j-x_i).
// Returns false when two xs coincide or one is zero.
bool lagrange_at_zero(const uint64_t* xs, std::size_t n, uint64_t* out);

// out[c] = sum_i lambda[i] * ys[i][c] for secrets s = 0..n_secrets-1 sharing the same xs:
// ys: [n_secrets][n][chunks], out: [n_secrets][chunks].
void combine(const uint64_t* lambda, std::size_t n, const uint64_t* ys, std::size_t n_secrets,
             std::size_t chunks, uint64_t* out);

}  // namespace shamir
}  // namespace fedgate

// Rigorous bounds on exp(-num / den) in 127-bit fixed point, integer arithmetic only.
//
// exp(-g) = exp(-1)^n * exp(-f) with n = floor(g) and f = g - n in [0, 1). exp(-f) is the
// alternating Taylor series: its terms f^k / k! decrease, so the error after the last term taken is
// below the next term; each term is carried as an interval (rounded down and up). exp(-1)^n comes
// from a table of intervals built once by repeated multiplication.
//
// Width, in units of 2^-127: a term's interval grows by at most 2 per step (one rounding each
// way) and shrinks by f / k, so every term is at most 3 wide; at most 35 terms (1/k! < 2^-127
// from k = 34) and the tail make exp(-f) at most 106 wide. exp(-1)^n: w_1 <= 106,
// w_n <= w_{n-1} / e + 106 e^{1-n} + 2 <= 80 for n >= 2. The product: at most
// w_n + 106 e^{-n} + 2, so at most 106 / e + 106 + 2 < 148 (n = 1) and 106 for n = 0. noise.py's
// EXP_WIDTH_BOUND (150) and the undecided bound of docs/privacy.md rest on this; the tests measure
// at most 45.
#include "dgauss_fixed.hpp"

#include <array>

namespace fedgate::dg {
namespace {

constexpr int kMaxPower = 127;  // exp(-128) < 2^-184 is below the resolution

// exp(-fr / den) for 0 <= fr <= den.
Interval exp_unit(u64 fr, u64 den) {
    if (fr == 0) return {kOne, kOne};
    u128 even_lo = kOne, even_hi = kOne, odd_lo = 0, odd_hi = 0;
    Interval t{kOne, kOne};
    for (u64 k = 1;; ++k) {
        t = {mul_div(t.lo, fr, den * k, false), mul_div(t.hi, fr, den * k, true)};
        if (k % 2 == 0) {
            even_lo += t.lo;
            even_hi += t.hi;
        } else {
            odd_lo += t.lo;
            odd_hi += t.hi;
        }
        if (t.hi <= 1) break;  // the rest of the series is below one unit
    }
    const u128 sub = odd_hi + 1;
    return {even_lo > sub ? even_lo - sub : 0, even_hi - odd_lo + 1};
}

const std::array<Interval, kMaxPower + 1>& powers_of_exp_minus_one() {
    static const std::array<Interval, kMaxPower + 1> table = [] {
        std::array<Interval, kMaxPower + 1> out{};
        out[0] = {kOne, kOne};
        const Interval e1 = exp_unit(1, 1);
        for (int n = 1; n <= kMaxPower; ++n) out[static_cast<std::size_t>(n)] = mul(out[n - 1], e1);
        return out;
    }();
    return table;
}

}  // namespace

Interval exp_neg(u64 num, u64 den) {
    const u64 whole = num / den;
    if (whole > static_cast<u64>(kMaxPower)) return {0, 1};
    const Interval frac = exp_unit(num % den, den);
    return mul(powers_of_exp_minus_one()[whole], frac);
}

}  // namespace fedgate::dg

// Known-answer driver for the pure native kernels (no Python): replays native/kat/golden.txt, written
// on x86-64 from the Python face by make_golden.py, so a build for another architecture (aarch64 under
// qemu-user, see .ci/aarch64-kat.sh) is checked bit for bit against x86-64. Inputs too large to store
// are regenerated with splitmix64 exactly as make_golden.py does; outputs are FNV-1a-64 digests.
//
// Usage: fedgate_kat GOLDEN_FILE   (FEDGATE_SIMD=scalar|neon|avx2|avx512 caps the SIMD path)
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "fedgate/chacha20.hpp"
#include "fedgate/cpu.hpp"
#include "fedgate/mask.hpp"
#include "fedgate/pack.hpp"
#include "fedgate/quant.hpp"
#include "fedgate/ring.hpp"
#include "fedgate/shamir.hpp"

namespace {

using Bytes = std::vector<std::uint8_t>;
using u64 = std::uint64_t;

struct Splitmix {
    u64 state;
    u64 next() {
        state += 0x9E3779B97F4A7C15ull;
        u64 z = state;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
};

// Digests are over little-endian bytes; serialize explicitly so the host byte order never matters.
template <typename T>
Bytes le_bytes(const std::vector<T>& v) {
    Bytes out;
    out.reserve(v.size() * sizeof(T));
    for (T x : v) {
        u64 bits = 0;
        std::memcpy(&bits, &x, sizeof(T));
        for (std::size_t b = 0; b < sizeof(T); ++b) out.push_back(static_cast<std::uint8_t>(bits >> (8 * b)));
    }
    return out;
}

std::string fnv(const Bytes& data) {
    u64 h = 0xCBF29CE484222325ull;
    for (std::uint8_t b : data) h = (h ^ b) * 0x100000001B3ull;
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
    return buf;
}

template <typename T>
std::string fnv(const std::vector<T>& v) { return fnv(le_bytes(v)); }

Bytes unhex(const std::string& s) {
    if (s.size() % 2) throw std::runtime_error("odd hex length");
    Bytes out(s.size() / 2);
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::uint8_t>(std::stoul(s.substr(2 * i, 2), nullptr, 16));
    return out;
}

std::string hex(const Bytes& b) {
    std::string s;
    char buf[3];
    for (std::uint8_t x : b) { std::snprintf(buf, sizeof buf, "%02x", x); s += buf; }
    return s;
}

Bytes unhex_exact(const std::string& s, std::size_t len) {
    Bytes b = unhex(s);
    if (b.size() != len) throw std::runtime_error("expected " + std::to_string(len) + " bytes of hex");
    return b;
}

// Sizes in a golden file are small; a garbage line must not ask for gigabytes.
std::size_t size_arg(const std::string& s) {
    const unsigned long long v = std::stoull(s);
    if (v > (1ull << 22)) throw std::runtime_error("size " + s + " out of range");
    return static_cast<std::size_t>(v);
}

unsigned bits_arg(const std::string& s) {
    const unsigned long v = std::stoul(s);
    if (v < 1 || v > 32) throw std::runtime_error("bits " + s + " out of range");
    return static_cast<unsigned>(v);
}

double hexfloat(const std::string& s) { return std::strtod(s.c_str(), nullptr); }

template <typename T>
std::vector<T> gen_ring(u64 gen, std::size_t n, unsigned bits) {
    Splitmix g{gen};
    const u64 mask = bits == 64 ? ~0ull : (1ull << bits) - 1;
    std::vector<T> v(n);
    for (auto& x : v) x = static_cast<T>(g.next() & mask);
    return v;
}

std::vector<float> gen_f32(u64 gen, std::size_t n) {
    Splitmix g{gen};
    std::vector<float> v(n);
    for (auto& x : v) x = static_cast<float>(static_cast<double>(static_cast<std::int64_t>(g.next() >> 40) - (1ll << 23)) * 0x1p-22);
    return v;
}

std::vector<std::string> split_ws(const std::string& line) {
    std::istringstream in(line);
    std::vector<std::string> t;
    for (std::string w; in >> w;) t.push_back(w);
    return t;
}

// Each check returns "" on success, else what differed.
using Tok = std::vector<std::string>;

std::string check_chacha(const Tok& t) {
    const Bytes key = unhex_exact(t.at(1), 32), nonce = unhex_exact(t.at(2), 12), want = unhex(t.at(4));
    const auto k = fedgate::chacha20_setup(key.data(), nonce.data());
    Bytes got(want.size());
    const std::uint64_t counter = std::stoull(t.at(3));
    fedgate::chacha20_check_range(counter, got.size());
    fedgate::chacha20_keystream(k, static_cast<std::uint32_t>(counter), got.data(), got.size());
    return got == want ? "" : "keystream " + hex(got);
}

template <typename T>
std::string expand_t(const Tok& t) {
    const Bytes seed = unhex_exact(t.at(1), 32);
    const std::size_t n = size_arg(t.at(2));
    std::vector<T> out(n);
    fedgate::expand<T>(seed.data(), bits_arg(t.at(3)), out.data(), n);
    return fnv(out) == t.at(4) ? "" : "digest " + fnv(out);
}

std::string check_expand(const Tok& t) { return bits_arg(t.at(3)) <= 16 ? expand_t<std::uint16_t>(t) : expand_t<std::uint32_t>(t); }

template <typename T>
std::string apply_t(const Tok& t) {
    const unsigned bits = bits_arg(t.at(1));
    const std::size_t n = size_arg(t.at(2)), n_add = size_arg(t.at(4)), n_sub = size_arg(t.at(5));
    if (n_add + n_sub > 1024) throw std::runtime_error("too many seeds");
    std::vector<fedgate::Seed> seeds(n_add + n_sub + 1);
    for (std::size_t i = 0; i < n_add + n_sub; ++i) std::memcpy(seeds[i], unhex_exact(t.at(6 + i), 32).data(), 32);
    auto acc = gen_ring<T>(std::stoull(t.at(3)), n, bits);
    fedgate::apply_masks<T>(acc.data(), n, seeds.data(), n_add, seeds.data() + n_add, n_sub, bits);
    const std::string& want = t.at(6 + n_add + n_sub);
    return fnv(acc) == want ? "" : "digest " + fnv(acc);
}

std::string check_apply(const Tok& t) { return bits_arg(t.at(1)) <= 16 ? apply_t<std::uint16_t>(t) : apply_t<std::uint32_t>(t); }

template <typename T>
std::string ringsum_t(const Tok& t) {
    const unsigned bits = bits_arg(t.at(1));
    const std::size_t m = size_arg(t.at(2)), n = size_arg(t.at(3));
    if (m * n > (1u << 24)) throw std::runtime_error("ring sum too large");
    const u64 gen = std::stoull(t.at(4));
    std::vector<std::vector<T>> rows;
    std::vector<const T*> ptrs;
    for (std::size_t r = 0; r < m; ++r) rows.push_back(gen_ring<T>(gen + r, n, bits));
    for (auto& r : rows) ptrs.push_back(r.data());
    std::vector<T> out(n);
    fedgate::ring_sum<T>(ptrs.data(), m, n, out.data(), bits);
    return fnv(out) == t.at(5) ? "" : "digest " + fnv(out);
}

std::string check_ringsum(const Tok& t) { return bits_arg(t.at(1)) <= 16 ? ringsum_t<std::uint16_t>(t) : ringsum_t<std::uint32_t>(t); }

template <typename T>
std::string ringaddsub_t(const Tok& t) {
    const unsigned bits = bits_arg(t.at(1));
    const std::size_t n = size_arg(t.at(2));
    auto a = gen_ring<T>(std::stoull(t.at(3)), n, bits), c = a;
    const auto b = gen_ring<T>(std::stoull(t.at(4)), n, bits);
    fedgate::ring_add<T>(a.data(), b.data(), n, bits);
    fedgate::ring_sub<T>(c.data(), b.data(), n, bits);
    std::string err;
    if (fnv(a) != t.at(5)) err += "add " + fnv(a) + " ";
    if (fnv(c) != t.at(6)) err += "sub " + fnv(c);
    return err;
}

std::string check_ringaddsub(const Tok& t) { return bits_arg(t.at(1)) <= 16 ? ringaddsub_t<std::uint16_t>(t) : ringaddsub_t<std::uint32_t>(t); }

template <typename T>
std::string quantize_t(const Tok& t) {
    const Bytes seed = unhex_exact(t.at(1), 32);
    const std::size_t n = size_arg(t.at(2));
    const auto x = gen_f32(std::stoull(t.at(6)), n);
    std::vector<T> out(n);
    const std::size_t bad = fedgate::quantize<T>(x.data(), n, hexfloat(t.at(5)), bits_arg(t.at(3)), seed.data(), out.data());
    if (bad) return "non-finite count " + std::to_string(bad);
    return fnv(out) == t.at(7) ? "" : "digest " + fnv(out);
}

std::string check_quantize(const Tok& t) { return bits_arg(t.at(4)) <= 16 ? quantize_t<std::uint16_t>(t) : quantize_t<std::uint32_t>(t); }

template <typename T>
std::string dequantize_t(const Tok& t) {
    const std::size_t n = size_arg(t.at(1));
    const u64 count = std::stoull(t.at(2));
    const unsigned bits = bits_arg(t.at(3));
    Splitmix g{std::stoull(t.at(6))};
    const u64 bound = count * ((1ull << bits) - 1) + 1;
    std::vector<T> total(n);
    for (auto& v : total) v = static_cast<T>(g.next() % bound);
    std::vector<float> out(n);
    fedgate::dequantize<T>(total.data(), n, count, hexfloat(t.at(5)), bits, out.data());
    return fnv(out) == t.at(7) ? "" : "digest " + fnv(out);
}

std::string check_dequantize(const Tok& t) { return bits_arg(t.at(4)) <= 16 ? dequantize_t<std::uint16_t>(t) : dequantize_t<std::uint32_t>(t); }

std::string check_l2(const Tok& t) {
    const std::size_t n = size_arg(t.at(1));
    const auto x = gen_f32(std::stoull(t.at(2)), n);
    const double norm = fedgate::l2_norm(x.data(), n);
    std::vector<float> out(n);
    fedgate::clip_l2(x.data(), out.data(), n, hexfloat(t.at(4)));
    std::string err;
    const std::string got = hex(le_bytes(std::vector<double>{norm}));
    if (got != t.at(3)) err += "norm " + got + " ";
    if (fnv(out) != t.at(5)) err += "clipped " + fnv(out);
    return err;
}

template <typename T>
std::string pack_t(const Tok& t) {
    const unsigned bits = bits_arg(t.at(1));
    const std::size_t n = size_arg(t.at(2));
    const auto values = gen_ring<T>(std::stoull(t.at(3)), n, bits);
    Bytes packed(fedgate::packed_size(n, bits));
    if (!fedgate::pack<T>(values.data(), n, bits, packed.data())) return "pack refused in-range values";
    if (fnv(packed) != t.at(4)) return "digest " + fnv(packed);
    std::vector<T> back(n);
    if (!fedgate::unpack<T>(packed.data(), packed.size(), n, bits, back.data()) || back != values) return "unpack does not invert pack";
    return "";
}

std::string check_pack(const Tok& t) { return bits_arg(t.at(1)) <= 16 ? pack_t<std::uint16_t>(t) : pack_t<std::uint32_t>(t); }

std::string check_field(const Tok& t) {
    namespace s = fedgate::shamir;
    const u64 a = std::stoull(t.at(1)), b = std::stoull(t.at(2));
    if (a == 0 || a >= s::kPrime || b >= s::kPrime) throw std::runtime_error("field operands out of range");
    const u64 got[4] = {s::mul(a, b), s::add(a, b), s::sub(a, b), s::inv(a)};
    std::string err;
    const char* names[4] = {"mul", "add", "sub", "inv"};
    for (int i = 0; i < 4; ++i) {
        if (got[i] != std::stoull(t.at(3 + i))) err += std::string(names[i]) + " " + std::to_string(got[i]) + " ";
    }
    return err;
}

// RFC 8439 A.1 #1 (all-zero key and nonce, counter 0), embedded so the driver checks ChaCha20 even
// against a golden file without the shared vectors.
const char* const kEmbedded = "chacha 0000000000000000000000000000000000000000000000000000000000000000 "
                              "000000000000000000000000 0 76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
                              "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586";

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s GOLDEN_FILE\n", argv[0]);
        return 2;
    }
    std::ifstream in(argv[1]);
    if (!in) {
        std::fprintf(stderr, "cannot read %s\n", argv[1]);
        return 2;
    }
    const std::map<std::string, std::string (*)(const Tok&)> checks = {
        {"chacha", check_chacha},         {"expand", check_expand},   {"apply", check_apply},
        {"ringsum", check_ringsum},       {"ringaddsub", check_ringaddsub},
        {"quantize", check_quantize},     {"dequantize", check_dequantize},
        {"l2", check_l2},                 {"pack", check_pack},       {"field", check_field},
    };
    std::vector<std::string> lines{kEmbedded};
    for (std::string line; std::getline(in, line);) {
        if (!line.empty() && line[0] != '#') lines.push_back(line);
    }
    std::map<std::string, int> passed;
    int failed = 0;
    for (std::size_t i = 0; i < lines.size(); ++i) {
        const Tok t = split_ws(lines[i]);
        const auto it = checks.find(t.at(0));
        std::string err;
        try {
            err = it == checks.end() ? "unknown kind" : it->second(t);
        } catch (const std::exception& e) {
            err = std::string("exception: ") + e.what();
        }
        if (err.empty()) {
            ++passed[t.at(0)];
        } else {
            ++failed;
            std::fprintf(stderr, "FAIL line %zu (%s ...): %s\n", i, lines[i].substr(0, 60).c_str(), err.c_str());
        }
    }
    int total = 0;
    std::printf("simd=%s", fedgate::simd_level_name(fedgate::simd_level()));
    for (const auto& [kind, n] : passed) {
        std::printf(" %s=%d", kind.c_str(), n);
        total += n;
    }
    std::printf("\nKAT %s: %d passed, %d failed\n", failed ? "FAILED" : "OK", total, failed);
    return failed ? 1 : 0;
}

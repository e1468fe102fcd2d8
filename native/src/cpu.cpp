#include "fedgate/cpu.hpp"

#include <cstdlib>
#include <cstring>

namespace fedgate {
namespace {

SimdLevel detect() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return SimdLevel::avx512;
    if (__builtin_cpu_supports("avx2")) return SimdLevel::avx2;
    return SimdLevel::scalar;
#elif defined(__aarch64__)
    return SimdLevel::neon;  // Advanced SIMD is mandatory on AArch64.
#else
    return SimdLevel::scalar;
#endif
}

SimdLevel capped(SimdLevel hw) {
    const char* cap = std::getenv("FEDGATE_SIMD");
    if (cap == nullptr) return hw;
    SimdLevel want = hw;
    if (std::strcmp(cap, "scalar") == 0) want = SimdLevel::scalar;
    else if (std::strcmp(cap, "neon") == 0) want = SimdLevel::neon;
    else if (std::strcmp(cap, "avx2") == 0) want = SimdLevel::avx2;
    else if (std::strcmp(cap, "avx512") == 0) want = SimdLevel::avx512;
    // A cap never raises the level above what the hardware has.
    return static_cast<int>(want) < static_cast<int>(hw) ? want : hw;
}

}  // namespace

SimdLevel simd_level() {
    static const SimdLevel level = capped(detect());
    return level;
}

const char* simd_level_name(SimdLevel level) {
    switch (level) {
        case SimdLevel::scalar: return "scalar";
        case SimdLevel::neon: return "neon";
        case SimdLevel::avx2: return "avx2";
        case SimdLevel::avx512: return "avx512";
    }
    return "unknown";
}

}  // namespace fedgate

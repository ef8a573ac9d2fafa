/* Rewrites all of MIB MiB of memory every round, so every checkpoint is large (streamed to the
 * daemon in parts), and prints a checksum of the whole memory after each round.
 *
 *   big_rewrite MIB ROUNDS SLEEP_MS */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 64;
    long rounds = argc > 2 ? atol(argv[2]) : 10;
    long sleep_ms = argc > 3 ? atol(argv[3]) : 100;
    size_t words = (mib << 20) / 8;
    uint64_t *mem = malloc(words * 8);
    if (!mem) { fprintf(stderr, "cannot allocate %zu MiB\n", mib); return 1; }
    for (long k = 1; k <= rounds; k++) {
        uint64_t x = 0x9E3779B97F4A7C15ULL * (uint64_t)k, sum = 0;
        for (size_t i = 0; i < words; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            mem[i] = (i % 3 == 0) ? 0 : (x & 0x00FF00FF00FF00FFULL) + mem[i] / 3;
        }
        for (size_t i = 0; i < words; i++) sum = sum * 31 + mem[i];
        printf("round %ld sum %016llx\n", k, (unsigned long long)sum);
        fflush(stdout);
        struct timespec d = { sleep_ms / 1000, (sleep_ms % 1000) * 1000000L };
        nanosleep(&d, NULL);
    }
    return 0;
}

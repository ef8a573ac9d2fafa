/* A pure compute loop: no host call between its first and last line, for about argv[1] rounds
 * (default 200 million; ~1 s). Checkpoints can only stop it through safepoint polls.
 * Nested loops and a recursive helper put several frames and locals on the asyncify stack. */
#include <stdio.h>
#include <stdlib.h>

static unsigned long long mix(unsigned long long h, unsigned depth) {
    if (depth == 0) return h;
    unsigned long long acc = h;
    for (unsigned k = 0; k < 4; k++) acc = (acc ^ (k + depth)) * 1099511628211ULL;
    return mix(acc, depth - 1) ^ (acc >> 7);
}

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 200000000L;
    static unsigned table[4096];
    unsigned long long h = 1469598103934665603ULL;
    printf("start %ld\n", rounds);
    fflush(stdout);
    for (long i = 0; i < rounds / 64; i++) {
        for (int k = 0; k < 64; k++) {
            h = (h ^ (unsigned)(i * 31 + k)) * 1099511628211ULL;
            table[(h >> 20) & 4095] += (unsigned)h;
        }
        if ((i & 0xffff) == 0) h = mix(h, 6);
    }
    unsigned long long t = 0;
    for (int k = 0; k < 4096; k++) t = t * 31 + table[k];
    printf("done %016llx %016llx\n", h, t);
    return (int)(h % 5);
}

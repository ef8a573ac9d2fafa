/* Reads the world between stretches of computation: each line has its number, a fresh random
 * value and the monotonic time since the start. Recovery must replay the journal so that every
 * line appears exactly once and the times never go backwards. argv[1] = lines,
 * argv[2] = hash rounds per line (default 40000). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <stdint.h>

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv) {
    int lines = argc > 1 ? atoi(argv[1]) : 100;
    int rounds = argc > 2 ? atoi(argv[2]) : 40000;
    uint64_t t0 = now_ns(), h = 1469598103934665603ULL;
    for (int i = 0; i < lines; i++) {
        uint32_t r;
        arc4random_buf(&r, sizeof r);
        for (int k = 0; k < rounds; k++) h = (h ^ (uint64_t)(i + k)) * 1099511628211ULL;
        printf("line %d random %08x elapsed_us %llu hash %016llx\n", i, r,
               (unsigned long long)((now_ns() - t0) / 1000), (unsigned long long)h);
        fflush(stdout);
    }
    return 0;
}

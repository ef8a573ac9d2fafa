/* Naps argv[1] times for argv[2] ms each, holding argv[3] MiB of memory (default 0) (nanosleep -> poll_oneoff on a clock), touching a
 * little memory between naps, and reports for each nap whether it lasted at least what was
 * asked by the guest's own monotonic clock: a checkpoint, pause, migration or restore in the
 * middle of a nap must not shorten it. Output is the same under plain wasmtime. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static unsigned char scratch[1 << 20];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    int naps = argc > 1 ? atoi(argv[1]) : 10;
    int ms = argc > 2 ? atoi(argv[2]) : 200;
    size_t held = argc > 3 ? (size_t)atoi(argv[3]) << 20 : 0;
    struct timespec d = { ms / 1000, (long)(ms % 1000) * 1000000L };
    unsigned sum = 0;
    unsigned char *big = held ? malloc(held) : NULL;
    for (size_t j = 0; j < held; j += 4096)
        big[j] = (unsigned char)j | 1;
    for (int i = 0; i < naps; i++) {
        for (int j = 0; j < (int)sizeof scratch; j += 4096)
            scratch[j] = (unsigned char)(scratch[j] + i + 1), sum += scratch[j];
        for (size_t j = (size_t)i * 4096; j < held; j += 1 << 20)    /* a few pages of the rest */
            big[j]++, sum += big[j];
        double t0 = now();
        nanosleep(&d, NULL);
        double slept = now() - t0;
        printf("nap %d of %d ms: %s (sum %u)\n", i, ms, slept >= ms / 1e3 ? "whole" : "SHORT", sum);
        fflush(stdout);
    }
    return 0;
}

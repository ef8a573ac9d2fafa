/* An execution in numbered steps whose output depends on randomness: `steps N [SPIN [HOLD_AT]]`.
 * Each step draws 4 bytes from random_get, prints `step <i> <v>` (v = value % 1000) and flushes
 * it, so a test sees every step as it happens and can check that a resumed or moved run carries
 * on the same sum; between steps it spins SPIN iterations (default 0; about 0.5 ns each under
 * wasmtime) of a volatile loop, with no host call, so a test can slow it down. N defaults to 10.
 * At the end it prints `sum <sum of the v>`.
 *
 * Before step HOLD_AT (if given: bench/recovery) it holds: it naps 10 ms at a time until the
 * realtime clock shows a gap of more than 200 ms since the previous reading — roostd was killed
 * (the bench kills it then) and the guest restored. The first reading is taken before the last
 * line ahead of the hold is printed, so it is durable with that line (a worker flushes the
 * journal before output): a restored guest replays it, or the naps after it, and its first live
 * reading sees the gap. So the bench can kill roostd exactly at N - 10 steps, and the restored
 * run finishes without waiting. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <wasi/api.h>

static uint64_t realtime_ns(void) {
    __wasi_timestamp_t t = 0;
    __wasi_clock_time_get(__WASI_CLOCKID_REALTIME, 1, &t);
    return t;
}

static void hold(uint64_t prev) {
    uint64_t began = prev;
    struct timespec nap = {0, 10 * 1000 * 1000};
    for (;;) {
        nanosleep(&nap, NULL);
        uint64_t now = realtime_ns();
        if (now - prev > 200ULL * 1000 * 1000 || now - began > 600ULL * 1000 * 1000 * 1000) return;
        prev = now;
    }
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10;
    long long spin = argc > 2 ? atoll(argv[2]) : 0;
    long hold_at = argc > 3 ? atol(argv[3]) : -1;
    uint64_t sum = 0, mark = 0;
    for (long i = 0; i < n; i++) {
        if (i == hold_at) hold(mark);
        if (i > 0) {
            volatile long long counter = 0;
            while (counter < spin) counter = counter + 1;
        }
        uint32_t value = 0;
        if (__wasi_random_get((uint8_t *)&value, sizeof value) != 0) {
            fprintf(stderr, "random_get failed\n");
            return 1;
        }
        uint32_t v = value % 1000;
        sum += v;
        if (i + 1 == hold_at) mark = realtime_ns();
        printf("step %ld %u\n", i, (unsigned)v);
        fflush(stdout);
    }
    printf("sum %llu\n", (unsigned long long)sum);
    return 0;
}

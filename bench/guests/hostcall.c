/* Host-call cost: times batches of BATCH calls of one cheap WASI function with the monotonic
 * clock and prints one line per batch: "<function> <ns per call>". argv[1] = batches. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sched.h>
#include <wasi/api.h>

#define BATCH 100

static unsigned long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    int batches = argc > 1 ? atoi(argv[1]) : 2000;
    static char line[64 * 4000];
    size_t used = 0;
    for (int b = 0; b < batches; b++) {
        unsigned long long t0 = now_ns();
        for (int i = 0; i < BATCH; i++) sched_yield();
        unsigned long long t1 = now_ns();
        for (int i = 0; i < BATCH; i++) { __wasi_timestamp_t t; __wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &t); }
        unsigned long long t2 = now_ns();
        used += snprintf(line + used, sizeof line - used, "sched_yield %llu\nclock_time_get %llu\n",
                         (t1 - t0) / BATCH, (t2 - t1) / BATCH);
        if (used > sizeof line - 128) { fwrite(line, 1, used, stdout); used = 0; }
    }
    fwrite(line, 1, used, stdout);
    return 0;
}

// Clocks: print only facts both runtimes agree on.
#include <stdio.h>
#include <time.h>
#include <wasi/api.h>
int main(void) {
    __wasi_timestamp_t r, a, b;
    printf("res realtime=%d ", __wasi_clock_res_get(__WASI_CLOCKID_REALTIME, &r)); printf("pos=%d\n", r > 0);
    printf("res monotonic=%d ", __wasi_clock_res_get(__WASI_CLOCKID_MONOTONIC, &r)); printf("pos=%d\n", r > 0);
    printf("res process=%d\n", __wasi_clock_res_get(__WASI_CLOCKID_PROCESS_CPUTIME_ID, &r));
    printf("res thread=%d\n", __wasi_clock_res_get(__WASI_CLOCKID_THREAD_CPUTIME_ID, &r));
    printf("time process=%d\n", __wasi_clock_time_get(__WASI_CLOCKID_PROCESS_CPUTIME_ID, 1, &r));
    printf("time thread=%d\n", __wasi_clock_time_get(__WASI_CLOCKID_THREAD_CPUTIME_ID, 1, &r));
    int mono_ok = 1;
    __wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &a);
    for (int i = 0; i < 1000; i++) {
        __wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &b);
        if (b < a) mono_ok = 0;
        a = b;
    }
    printf("monotonic non-decreasing=%d\n", mono_ok);
    __wasi_clock_time_get(__WASI_CLOCKID_REALTIME, 1, &r);
    printf("realtime plausible=%d\n", r > 1600000000ull * 1000000000ull && r < 4000000000ull * 1000000000ull);
    time_t t = time(NULL);
    printf("time() plausible=%d\n", t > 1600000000 && t < 4000000000LL);
    struct timespec ts;
    printf("clock_gettime=%d\n", clock_gettime(CLOCK_MONOTONIC, &ts));
    printf("sched_yield=%d\n", __wasi_sched_yield());
    return 0;
}

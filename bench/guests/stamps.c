/* Output latency: `stamps N INTERVAL_US` prints N lines "t <ns>", each the wall clock
 * (CLOCK_REALTIME, nanoseconds since the epoch) read just before the line is written and flushed,
 * then sleeps INTERVAL_US microseconds. A client on the same host that reads the line subtracts
 * the stamp from its own wall clock: guest write -> visible to that client. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100;
    long interval_us = argc > 2 ? atol(argv[2]) : 10000;
    struct timespec pause = {interval_us / 1000000, (interval_us % 1000000) * 1000};
    for (long i = 0; i < n; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        printf("t %lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
        fflush(stdout);
        if (interval_us > 0) nanosleep(&pause, NULL);
    }
    return 0;
}

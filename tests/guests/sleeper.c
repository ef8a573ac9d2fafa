/* Sleeps argv[1] seconds in one call (poll_oneoff on a clock), then reports how long the sleep
 * took by the guest's own monotonic clock. Long sleeps are durable: checkpointed, worker
 * released, woken by a stored timer at the original deadline. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 10.0;
    struct timespec t0, t1, d = { (time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9) };
    clock_gettime(CLOCK_MONOTONIC, &t0);
    printf("sleeping %.1f s\n", seconds);
    fflush(stdout);
    nanosleep(&d, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double slept = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("woke after at least the requested time: %s\n", slept >= seconds ? "yes" : "no");
    return 0;
}

/* A guest asking for absurd sleeps. argv[1]: "ns" sleeps 1e19 ns through nanosleep; "u64" polls
 * a monotonic clock with a relative timeout of 2^64-1 ns; "abs" with an absolute deadline of
 * 2^64-1. None of them may fail the guest or stop other executions' timers: each is a very long
 * (durable, killable) sleep. "woke" is never printed in a test. */
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <wasi/api.h>

static int poll_forever(uint16_t flags) {
    __wasi_subscription_t sub;
    __wasi_event_t ev;
    __wasi_size_t n = 0;
    memset(&sub, 0, sizeof sub);
    sub.userdata = 42;
    sub.u.tag = __WASI_EVENTTYPE_CLOCK;
    sub.u.u.clock.id = __WASI_CLOCKID_MONOTONIC;
    sub.u.u.clock.timeout = UINT64_MAX;
    sub.u.u.clock.flags = flags;
    return __wasi_poll_oneoff(&sub, &ev, 1, &n);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "ns";
    printf("sleeping (%s)\n", mode);
    fflush(stdout);
    int rc = 0;
    if (strcmp(mode, "ns") == 0) {
        struct timespec d = { 10000000000LL, 0 };      /* 1e19 ns */
        rc = nanosleep(&d, NULL);
    } else {
        rc = poll_forever(strcmp(mode, "abs") == 0 ? __WASI_SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME : 0);
    }
    printf("woke: %d\n", rc);
    return 0;
}

// poll_oneoff: relative and absolute clock sleeps, stdin/stdout readiness, errors.
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <wasi/api.h>
static __wasi_timestamp_t now(void) { __wasi_timestamp_t t; __wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &t); return t; }
static void show(const char *what, int rc, __wasi_event_t *ev, __wasi_size_t n) {
    printf("%s: rc=%d n=%lu", what, rc, (unsigned long)n);
    for (__wasi_size_t i = 0; i < n && rc == 0; i++)
        printf(" [ud=%llu err=%d type=%d nbytes=%llu flags=%d]", (unsigned long long)ev[i].userdata, ev[i].error,
               ev[i].type, (unsigned long long)ev[i].fd_readwrite.nbytes, ev[i].fd_readwrite.flags);
    printf("\n");
}
int main(void) {
    __wasi_subscription_t s[3]; __wasi_event_t ev[3]; __wasi_size_t n = 0; int rc;
    memset(s, 0, sizeof s); memset(ev, 0, sizeof ev);
    __wasi_timestamp_t t0 = now();
    s[0].userdata = 7; s[0].u.tag = __WASI_EVENTTYPE_CLOCK;
    s[0].u.u.clock.id = __WASI_CLOCKID_MONOTONIC; s[0].u.u.clock.timeout = 50000000;
    rc = __wasi_poll_oneoff(s, ev, 1, &n); show("relative 50ms", rc, ev, n);
    __wasi_timestamp_t t1 = now();
    printf("slept >= 50ms: %d\n", t1 - t0 >= 50000000ull);
    s[0].u.u.clock.timeout = t1 + 30000000; s[0].u.u.clock.flags = __WASI_SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME;
    s[1] = s[0]; s[1].userdata = 8; s[1].u.u.clock.timeout = t1 + 500000000;
    rc = __wasi_poll_oneoff(s, ev, 2, &n); show("absolute 30ms vs 500ms", rc, ev, n);
    printf("slept >= 30ms: %d, < 400ms: %d\n", now() - t1 >= 30000000ull, now() - t1 < 400000000ull);
    memset(s, 0, sizeof s);
    s[0].userdata = 1; s[0].u.tag = __WASI_EVENTTYPE_FD_READ; s[0].u.u.fd_read.file_descriptor = 0;
    s[1].userdata = 2; s[1].u.tag = __WASI_EVENTTYPE_CLOCK; s[1].u.u.clock.id = __WASI_CLOCKID_MONOTONIC;
    s[1].u.u.clock.timeout = 5000000000ull;
    s[2].userdata = 3; s[2].u.tag = __WASI_EVENTTYPE_FD_WRITE; s[2].u.u.fd_write.file_descriptor = 1;
    rc = __wasi_poll_oneoff(s, ev, 3, &n); show("stdin+clock+stdout", rc, ev, n);
    rc = __wasi_poll_oneoff(s, ev, 0, &n); printf("zero subs: rc=%d\n", rc);
    s[0].u.u.fd_read.file_descriptor = 42;
    rc = __wasi_poll_oneoff(s, ev, 1, &n); printf("bad fd: rc=%d\n", rc);
    memset(s, 0, sizeof s);
    s[0].u.tag = __WASI_EVENTTYPE_CLOCK; s[0].u.u.clock.id = __WASI_CLOCKID_PROCESS_CPUTIME_ID; s[0].u.u.clock.timeout = 1;
    s[1] = s[0];
    rc = __wasi_poll_oneoff(s, ev, 2, &n); printf("cputime clock: rc=%d\n", rc);
    struct timespec req = {0, 20000000};
    __wasi_timestamp_t t2 = now();
    printf("nanosleep=%d ", nanosleep(&req, NULL)); printf("ok=%d\n", now() - t2 >= 20000000ull);
    printf("usleep=%d\n", usleep(1000));
    char buf[64]; ssize_t got = read(0, buf, sizeof buf);
    printf("stdin read %ld\n", (long)got);
    return 0;
}

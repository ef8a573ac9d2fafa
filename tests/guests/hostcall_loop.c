// Calls clock_time_get argv[1] times: measures the cost of one trivial host call.
#include <stdio.h>
#include <stdlib.h>
#include <wasi/api.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 0;
    __wasi_timestamp_t t, acc = 0;
    for (long i = 0; i < n; i++) { __wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &t); acc ^= t; }
    printf("%ld calls done %d\n", n, acc != 1);
    return 0;
}

/* An execution in numbered steps whose output depends on randomness: `steps N [SPIN]`. Each step
 * draws 4 bytes from random_get, prints `step <i> <v>` (v = value % 1000) and flushes it, so a test
 * sees every step as it happens and can check that a resumed or moved run carries on the same sum;
 * between steps it spins SPIN iterations (default 0; about 0.5 ns each under wasmtime) of a
 * volatile loop, with no host call, so a test can slow it down. N defaults to 10. At the end it
 * prints `sum <sum of the v>`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <wasi/api.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10;
    long long spin = argc > 2 ? atoll(argv[2]) : 0;
    uint64_t sum = 0;
    for (long i = 0; i < n; i++) {
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
        printf("step %ld %u\n", i, (unsigned)v);
        fflush(stdout);
    }
    printf("sum %llu\n", (unsigned long long)sum);
    return 0;
}

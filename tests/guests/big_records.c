/* One huge write and many MiB of files, then a while of computing (time to migrate it):
 *
 *   big_records OUT_MIB FILES_MIB ROUNDS
 *
 * writes OUT_MIB MiB (zeros and a line per MiB) to stdout in a single write(2) call (in halves while the host says ENOMEM:
 * wasmtime's own WASI does for 600 MiB), writes FILES_MIB MiB of files under
 * /data (ten files), then runs ROUNDS rounds of a little computing and a 20 ms sleep, printing a
 * line each. */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <errno.h>

static void fill(unsigned char *p, size_t n, uint64_t seed) {
    uint64_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        p[i] = 'a' + (x % 26);
        if (i % 100 == 99) p[i] = '\n';
    }
}

int main(int argc, char **argv) {
    size_t out_mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 8;
    size_t files_mib = argc > 2 ? strtoull(argv[2], NULL, 10) : 8;
    long rounds = argc > 3 ? atol(argv[3]) : 100;
    size_t n = out_mib << 20;
    unsigned char *buf = malloc(n > (1 << 20) ? n : (1 << 20));
    if (!buf) { fprintf(stderr, "cannot allocate %zu MiB\n", out_mib); return 1; }
    /* The write's bytes: zeros but for a numbered line at each MiB (pages left untouched stay
     * zero pages, which checkpoints do not store: the test pays for the output, not for as
     * much memory again), so pieces out of order or lost show. */
    for (size_t mib = 0; mib < out_mib; mib++)
        snprintf((char *)buf + (mib << 20), 64, "MiB %zu of %zu\n", mib, out_mib);
    size_t done = 0, step = n;
    while (done < n) {                 /* one call, unless the host takes less or refuses */
        size_t want = n - done < step ? n - done : step;
        ssize_t w = write(1, buf + done, want);
        if (w < 0 && errno == ENOMEM && step > (1 << 20)) { step /= 2; continue; }
        if (w <= 0) { perror("write"); return 2; }
        done += (size_t)w;
    }
    size_t each = (files_mib << 20) / 10;
    for (int f = 0; f < 10 && each; f++) {
        char name[64];
        snprintf(name, sizeof name, "/data/file%d.txt", f);
        FILE *fp = fopen(name, "wb");
        if (!fp) { perror(name); return 3; }
        size_t left = each;
        while (left) {
            size_t k = left < (1 << 20) ? left : (1 << 20);
            fill(buf, k, 1000 + f * 7 + left);
            fwrite(buf, 1, k, fp);
            left -= k;
        }
        fclose(fp);
    }
    uint64_t h = 1469598103934665603ULL;
    for (long r = 0; r < rounds; r++) {
        for (long k = 0; k < 300000; k++) h = (h ^ (uint64_t)(r * 31 + k)) * 1099511628211ULL;
        printf("round %ld %016llx\n", r, (unsigned long long)h);
        fflush(stdout);
        struct timespec d = { 0, 20 * 1000000L };
        nanosleep(&d, NULL);
    }
    return 0;
}

/* A small real WASI program for the README demo: counts primes below N with a segmented sieve,
 * reports progress on stdout, reads its configuration from a mounted file, and writes its
 * result to a file that `roost cp` reads back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 10) : 50000000UL;
    unsigned long segment = 1UL << 20;
    FILE *cfg = fopen("/data/label.txt", "r");
    char label[64] = "primes";
    if (cfg) { if (fgets(label, sizeof label, cfg)) label[strcspn(label, "\n")] = 0; fclose(cfg); }

    unsigned long root = 1; while (root * root <= n) root++;
    char *small = calloc(root + 1, 1), *seg = malloc(segment);
    unsigned long *base = malloc(sizeof(unsigned long) * (root + 1)), nbase = 0, count = 0;
    for (unsigned long i = 2; i <= root; i++) if (!small[i]) { base[nbase++] = i; for (unsigned long j = i * i; j <= root; j += i) small[j] = 1; }
    for (unsigned long lo = 2, k = 0; lo < n; lo += segment, k++) {
        unsigned long hi = lo + segment < n ? lo + segment : n;
        memset(seg, 0, hi - lo);
        for (unsigned long b = 0; b < nbase; b++) {
            unsigned long p = base[b], s = (lo + p - 1) / p * p;
            if (s < p * p) s = p * p;
            for (unsigned long j = s; j < hi; j += p) seg[j - lo] = 1;
        }
        for (unsigned long j = 0; j < hi - lo; j++) count += !seg[j];
        if (k % 8 == 7) { printf("%s: %lu below %lu\n", label, count, hi); fflush(stdout); }
    }
    printf("%s: %lu primes below %lu\n", label, count, n);
    FILE *out = fopen("/data/result.txt", "w");
    if (!out) { perror("/data/result.txt"); return 1; }
    fprintf(out, "pi(%lu) = %lu\n", n, count);
    fclose(out);
    fprintf(stderr, "done\n");
    return 0;
}

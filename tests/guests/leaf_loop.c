/* A long leaf loop called from an instrumented loop: `leaf` computes for argv[2] rounds with no
 * call at all (so preparation gives its loop a note-only poll and asyncify leaves it alone);
 * `main` calls it argv[1] times and prints, so main's loop gets a real safepoint poll. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) unsigned long long leaf(unsigned long long h, long rounds) {
    for (long i = 0; i < rounds; i++) h = (h ^ (unsigned long long)i) * 1099511628211ULL;
    return h;
}

int main(int argc, char **argv) {
    long calls = argc > 1 ? atol(argv[1]) : 10;
    long rounds = argc > 2 ? atol(argv[2]) : 100000000L;
    unsigned long long h = 1469598103934665603ULL;
    printf("start %ld %ld\n", calls, rounds);
    fflush(stdout);
    for (long c = 0; c < calls; c++) h = leaf(h + (unsigned long long)c, rounds);
    printf("done %016llx\n", h);
    return 0;
}

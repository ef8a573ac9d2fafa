/* bench/checkpoint's guest: dirties a chosen set of pages between checkpoints.
 *
 *   dirtier MIB FRACTION PATTERN ROUNDS [RUN_PAGES] [QUIET_MS] [FILL]
 *
 * Grows memory by MIB MiB and fills every page (so the first checkpoint stores all of it) with data
 * that compresses about like real heap contents (half the bytes pseudo-random), prints
 * "round 0", then for ROUNDS rounds (0: forever) writes one byte into each page of the set —
 * FRACTION of the pages, either `scattered` (single pages spread evenly) or `runs` (contiguous
 * runs of RUN_PAGES pages, default 64, spread evenly) — with a value that changes every round,
 * prints "round K" and stays quiet for QUIET_MS ms (default 300) in short sleeps: a short sleep
 * stays in the worker, and each one is a host call, so a checkpoint asked for in the quiet time
 * stops the guest within a couple of ms, between two rounds, never in the middle of one.
 * FILL (default 1) is the fraction of the pages filled at the start, spread evenly: below 1 the
 * memory is sparse (the rest stays zero), as a large heap mostly unused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>

#define PAGE 4096

static void quiet(int ms) {
    struct timespec d = { 0, 2 * 1000 * 1000 };       /* 2 ms per host call */
    for (int t = 0; t < ms; t += 2) nanosleep(&d, NULL);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: dirtier MIB FRACTION scattered|runs ROUNDS [RUN_PAGES] [QUIET_MS]\n");
        return 2;
    }
    size_t mib = strtoull(argv[1], NULL, 10);
    double fraction = atof(argv[2]);
    int runs = strcmp(argv[3], "runs") == 0;
    long rounds = atol(argv[4]);
    size_t run_pages = argc > 5 ? strtoull(argv[5], NULL, 10) : 64;
    int quiet_ms = argc > 6 ? atoi(argv[6]) : 300;
    double fill = argc > 7 ? atof(argv[7]) : 1.0;
    if (!runs && strcmp(argv[3], "scattered") != 0) { fprintf(stderr, "bad pattern %s\n", argv[3]); return 2; }

    size_t pages = (mib << 20) / PAGE;
    /* memory.grow directly: malloc (sbrk takes a signed increment) refuses 2 GiB at once */
    size_t old = __builtin_wasm_memory_grow(0, (mib << 20) / 65536);
    if (old == (size_t)-1) { fprintf(stderr, "cannot allocate %zu MiB\n", mib); return 1; }
    volatile uint8_t *mem = (volatile uint8_t *)(old * 65536);

    /* FILL of the pages touched: half the bytes of each word random (zstd level 1: ~2:1) */
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    size_t filled = (size_t)(pages * fill + 0.5);
    for (size_t f = 0; f < filled; f++) {
        size_t p = filled == pages ? f : (size_t)((double)f * pages / filled);
        volatile uint64_t *words = (volatile uint64_t *)(mem + p * PAGE);
        for (size_t i = 0; i < PAGE / 8; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            words[i] = x & 0x00FF00FF00FF00FFULL;
        }
    }

    size_t dirty = (size_t)(pages * fraction + 0.5);
    if (dirty < 1) dirty = 1;
    if (dirty > pages) dirty = pages;
    if (runs && run_pages > dirty) run_pages = dirty;
    size_t groups = runs ? (dirty + run_pages - 1) / run_pages : dirty;
    size_t group_len = runs ? run_pages : 1;
    printf("round 0 pages %zu dirty %zu groups %zu\n", pages, dirty, groups);
    fflush(stdout);
    quiet(quiet_ms);

    for (long k = 1; rounds == 0 || k <= rounds; k++) {
        uint8_t value = (uint8_t)(k * 37 + 1);
        size_t left = dirty;
        for (size_t g = 0; g < groups && left; g++) {
            /* group g starts at an even spread over memory; the last may be short */
            size_t start = (size_t)((double)g * pages / groups);
            size_t len = group_len < left ? group_len : left;
            if (start + len > pages) start = pages - len;
            for (size_t p = start; p < start + len; p++) mem[p * PAGE + 17] ^= value;
            left -= len;
        }
        printf("round %ld\n", k);
        fflush(stdout);
        quiet(quiet_ms);
    }
    return 0;
}

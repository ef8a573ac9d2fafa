/* Loop shapes for safepoint polls: a call-free leaf function with a long loop, nested loops,
 * several back-edges (continue), a switch-driven state machine (br_table inside the loop), a
 * do-while and a loop whose body calls a function. No host call between "start" and "done":
 * only the polls can stop it. argv[1] = rounds (default 40). */
#include <stdio.h>
#include <stdlib.h>

static unsigned buf[1 << 14];

__attribute__((noinline)) static unsigned leaf(unsigned seed, unsigned n) {
    unsigned h = seed;
    for (unsigned i = 0; i < n; i++) {
        h ^= h << 13; h ^= h >> 17; h ^= h << 5;
        if (h & 1) continue;
        buf[h & ((1 << 14) - 1)] += i;
    }
    return h;
}

__attribute__((noinline)) static unsigned machine(unsigned x, unsigned n) {
    unsigned state = 0, acc = 0;
    do {
        switch (state) {
        case 0: acc += x; state = (x >> 3) % 4; break;
        case 1: acc ^= x * 7; state = 2; break;
        case 2: acc = acc * 31 + 1; state = (acc & 1) ? 3 : 0; break;
        default: acc -= x; state = 0; break;
        }
        x = x * 1103515245u + 12345u;
    } while (--n);
    return acc;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 40;
    unsigned total = 0;
    printf("start %d\n", rounds);
    fflush(stdout);
    for (int r = 0; r < rounds; r++) {
        total += leaf(r + 1, 400000);
        for (int i = 0; i < 64; i++)
            for (int j = 0; j < 64; j++) total += buf[(i * 64 + j) & ((1 << 14) - 1)] ^ (unsigned)j;
        total += machine(total, 300000);
    }
    unsigned t = 0;
    for (int k = 0; k < (1 << 14); k++) t = t * 31 + buf[k];
    printf("done %08x %08x\n", total, t);
    return 0;
}

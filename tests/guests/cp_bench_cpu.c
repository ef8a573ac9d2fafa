/* CPU-heavy benchmark guest for preparation overhead: matrix multiply, qsort (indirect calls),
 * recursive fib, string hashing and a byte-level state machine. argv[1] = scale (default 3). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void *a, const void *b) {
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? -1 : x > y;
}
static unsigned fib(unsigned n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

int main(int argc, char **argv) {
    int scale = argc > 1 ? atoi(argv[1]) : 3;
    unsigned long long check = 0;
    enum { N = 160 };
    static double a[N][N], b[N][N], c[N][N];
    for (int r = 0; r < scale; r++) {
        for (int i = 0; i < N; i++) for (int j = 0; j < N; j++) { a[i][j] = (i * j + r) % 7; b[i][j] = (i + j) % 5; }
        for (int i = 0; i < N; i++) for (int j = 0; j < N; j++) {
            double s = 0; for (int k = 0; k < N; k++) s += a[i][k] * b[k][j]; c[i][j] = s;
        }
        check += (unsigned long long)c[N / 2][N / 3];
        size_t n = 200000; unsigned *v = malloc(n * sizeof *v); unsigned x = 12345 + r;
        for (size_t i = 0; i < n; i++) { x ^= x << 13; x ^= x >> 17; x ^= x << 5; v[i] = x; }
        qsort(v, n, sizeof *v, cmp);
        check += v[n / 2]; free(v);
        check += fib(25 + (r % 2));
        char *s = malloc(1 << 20); for (int i = 0; i < (1 << 20); i++) s[i] = 'a' + (i * 7 + r) % 26;
        unsigned h = 5381; for (int i = 0; i < (1 << 20); i++) h = h * 33 + s[i];
        int state = 0, words = 0; for (int i = 0; i < (1 << 20); i++) {
            int vow = strchr("aeiou", s[i]) != NULL;
            if (state == 0 && vow) { state = 1; words++; } else if (state == 1 && !vow) state = 0;
        }
        check += h + words; free(s);
    }
    printf("check %llu\n", check);
    return 0;
}

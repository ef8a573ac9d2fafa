/* Durable HTTP steps, one at a time: `http_loop N URL METHOD [METHOD...]`. Step i sends
 * METHOD[i % count] to URL (a POST/PUT carries the body "1"), reads the whole response, and
 * goes on; nothing is printed until the end, so the loop measures requests only. The loop is
 * timed with CLOCK_MONOTONIC (start-up excluded), and so is every step (one clock read per
 * step: under roost a journaled call of ~10 µs, small beside a durable request). The one line:
 *
 *   done OK ERRORS LOOP_NS P50_NS P90_NS P99_NS MAX_NS [FIRST_ERRNO FIRST_MESSAGE]
 *
 * OK: steps answered 2xx; ERRORS: steps that failed or were answered otherwise. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "roost.h"

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: http_loop N URL METHOD [METHOD...]\n");
        return 2;
    }
    long n = atol(argv[1]);
    const char *url = argv[2];
    char **methods = argv + 3;
    int count = argc - 3;
    if (n <= 0) {
        fprintf(stderr, "http_loop: N must be positive\n");
        return 2;
    }
    int64_t *steps = malloc(sizeof(int64_t) * (size_t)n);
    if (!steps)
        return 1;
    long ok = 0, errors = 0;
    int first_errno = 0;
    char first_error[256] = "";
    int64_t begin = now_ns(), prev = begin;
    for (long i = 0; i < n; i++) {
        const char *method = methods[i % count];
        int has_body = !strcmp(method, "POST") || !strcmp(method, "PUT");
        roost_http_response r;
        int err = roost_http(method, url, NULL, has_body ? "1" : NULL, has_body ? 1 : 0, &r);
        if (err) {
            errors++;
            if (!first_errno) {
                first_errno = err;
                snprintf(first_error, sizeof first_error, "%s", roost_http_error());
            }
        } else {
            if (r.status >= 200 && r.status < 300)
                ok++;
            else
                errors++;
            roost_http_free(&r);
        }
        int64_t t = now_ns();
        steps[i] = t - prev;
        prev = t;
    }
    int64_t loop = prev - begin;
    qsort(steps, (size_t)n, sizeof(int64_t), cmp_i64);
#define AT(p) steps[(size_t)((double)(n - 1) * (p) + 0.5)]
    printf("done %ld %ld %lld %lld %lld %lld %lld", ok, errors, (long long)loop, (long long)AT(0.5),
           (long long)AT(0.9), (long long)AT(0.99), (long long)steps[n - 1]);
    if (first_errno)
        printf(" %d %s", first_errno, first_error);
    printf("\n");
    free(steps);
    return 0;
}

/* Durable HTTP requests in numbered steps: `http_steps BASE_URL N [SPIN]`. Step i sends, by
 * i % 4: POST BASE/counter/c (the server's counter, +1 per applied request), GET BASE/counter/c,
 * PUT BASE/kv/k<i> (body "v<i>"), GET BASE/kv/k<i>; it prints `step <i> <METHOD> <status>
 * <body>` (or `step <i> <METHOD> error <errno> <message>`) and flushes, then spins SPIN
 * iterations of a volatile loop with no host call. Against the test server a run that is never
 * interrupted prints the same lines every time; so must a run that is killed and resumed, as
 * long as no request is repeated. At the end: `done <steps that succeeded>`. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "roost.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: http_steps BASE_URL N [SPIN]\n");
        return 2;
    }
    const char *base = argv[1];
    long n = atol(argv[2]);
    long long spin = argc > 3 ? atoll(argv[3]) : 0;
    long ok = 0;
    char url[512], body[64];
    for (long i = 0; i < n; i++) {
        const char *method;
        const char *payload = NULL;
        switch (i % 4) {
        case 0: method = "POST"; snprintf(url, sizeof url, "%scounter/c", base); break;
        case 1: method = "GET"; snprintf(url, sizeof url, "%scounter/c", base); break;
        case 2:
            method = "PUT";
            snprintf(url, sizeof url, "%skv/k%ld", base, i);
            snprintf(body, sizeof body, "v%ld", i);
            payload = body;
            break;
        default: method = "GET"; snprintf(url, sizeof url, "%skv/k%ld", base, i - 1); break;
        }
        roost_http_response r;
        int err = roost_http(method, url, "Accept: text/plain\r\n", payload,
                             payload ? strlen(payload) : 0, &r);
        if (err) {
            printf("step %ld %s error %d %s\n", i, method, err, roost_http_error());
        } else {
            printf("step %ld %s %d %.*s\n", i, method, r.status, (int)r.body_len, (char *)r.body);
            roost_http_free(&r);
            ok++;
        }
        fflush(stdout);
        volatile long long counter = 0;
        while (counter < spin) counter = counter + 1;
    }
    printf("done %ld\n", ok);
    return 0;
}

/* One durable HTTP request: `http_one METHOD URL [BODY]`. Prints `status <s>\n<body>` (the body
 * as received, then a newline) or `error <errno> <message>`, so a test can check one request's
 * outcome (a status, or the errno roost gave: EACCES, EMSGSIZE, ETIMEDOUT, EPROTO...). Exits 0
 * either way: the request's failure is the guest's to handle, not the execution's. */
#include <stdio.h>
#include <string.h>
#include "roost.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: http_one METHOD URL [BODY]\n");
        return 2;
    }
    const char *body = argc > 3 ? argv[3] : NULL;
    roost_http_response r;
    int err = roost_http(argv[1], argv[2], "Accept: text/plain\r\n", body, body ? strlen(body) : 0, &r);
    if (err) {
        printf("error %d %s\n", err, roost_http_error());
        return 0;
    }
    printf("status %d\n%.*s\n", r.status, (int)r.body_len, (char *)r.body);
    roost_http_free(&r);
    return 0;
}

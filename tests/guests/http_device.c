/* Durable HTTP requests through the device folder, with plain open/write/read and nothing of
 * roost's: `http_device BASE_URL N [SPIN]`. Step i sends, by i % 4: POST BASE/counter/c,
 * GET BASE/counter/c, PUT BASE/kv/k<i> (body "v<i>"), GET BASE/kv/k<i-1>, each by writing
 * "METHOD URL HTTP/1.1\r\nheaders\r\n\r\nbody" to a new file in /dev/http and reading the
 * response back; it prints `step <i> <METHOD> <status line> | <body>` and spins SPIN
 * iterations. Then two requests that fail (a URL not allowed: EACCES; a malformed request:
 * EINVAL), each printed with its errno and /dev/http/error, and a write after the response
 * (EINVAL). At the end: `done <steps that succeeded>`. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char response[65536];

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) return errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Sends `request` through a new device file; 0 and the response in `response`, or an errno. */
static int exchange(long i, const char *request, size_t len, size_t *got) {
    char path[64];
    snprintf(path, sizeof path, "/dev/http/req-%ld", i);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) return errno;
    int err = write_all(fd, request, len);
    *got = 0;
    ssize_t r = 1;
    while (!err && (r = read(fd, response + *got, sizeof response - 1 - *got)) > 0) *got += (size_t)r;
    if (!err && r < 0) err = errno;
    response[*got] = 0;
    if (!err && write(fd, "x", 1) >= 0) err = -1;          /* a write after the response: refused */
    else if (!err && errno != EINVAL) err = -2;
    close(fd);
    unlink(path);
    return err;
}

static const char *last_error(void) {
    static char buf[1024];
    int fd = open("/dev/http/error", O_RDONLY);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    buf[n < 0 ? 0 : n] = 0;
    if (fd >= 0) close(fd);
    return buf;
}

static void print_outcome(long i, const char *method, int err, size_t got) {
    if (err) {
        printf("step %ld %s error %d %s\n", i, method, err, last_error());
    } else {
        char *eol = strstr(response, "\r\n");
        char *body = strstr(response, "\r\n\r\n");
        printf("step %ld %s %.*s | %.*s\n", i, method, eol ? (int)(eol - response) : 0, response,
               body ? (int)(got - (size_t)(body + 4 - response)) : 0, body ? body + 4 : "");
    }
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: http_device BASE_URL N [SPIN]\n");
        return 2;
    }
    const char *base = argv[1];
    long n = atol(argv[2]);
    long long spin = argc > 3 ? atoll(argv[3]) : 0;
    long ok = 0;
    char request[1024];
    for (long i = 0; i < n; i++) {
        const char *method;
        int len;
        switch (i % 4) {
        case 0: method = "POST"; len = snprintf(request, sizeof request, "POST %scounter/c HTTP/1.1\r\nAccept: text/plain\r\n\r\n", base); break;
        case 1: method = "GET"; len = snprintf(request, sizeof request, "GET %scounter/c HTTP/1.1\r\n\r\n", base); break;
        case 2:
            method = "PUT";
            len = snprintf(request, sizeof request, "PUT %skv/k%ld HTTP/1.1\r\nContent-Type: text/plain\r\n\r\nv%ld", base, i, i);
            break;
        default: method = "GET"; len = snprintf(request, sizeof request, "GET %skv/k%ld HTTP/1.1\r\n\r\n", base, i - 1); break;
        }
        size_t got;
        int err = exchange(i, request, (size_t)len, &got);
        print_outcome(i, method, err, got);
        ok += !err;
        volatile long long counter = 0;
        while (counter < spin) counter = counter + 1;
    }
    size_t got;
    const char *denied = "GET http://127.0.0.2:9/nowhere HTTP/1.1\r\n\r\n";
    print_outcome(n, "GET", exchange(n, denied, strlen(denied), &got), got);
    const char *malformed = "GET\r\n\r\n";
    print_outcome(n + 1, "GET", exchange(n + 1, malformed, strlen(malformed), &got), got);
    printf("done %ld\n", ok);
    return 0;
}

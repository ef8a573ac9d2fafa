/*
 * roost.h — roost's guest SDK for C: durable outbound HTTP for WASI programs.
 * Header only: include it in a program compiled for wasm32-wasi (wasi-libc); nothing to link.
 * `roost sdk-path` prints the folder holding c/roost.h.
 *
 * Every request is durable: roost journals it (and, with replication.ack = one | all,
 * replicates it) before it leaves, sends it with an Idempotency-Key derived from the execution
 * and the request's number (unless the headers set one), and journals the response before the
 * program sees it. After a crash the journal answers; a request cut off by the crash is sent
 * again with the same key when its method is idempotent or its destination honours keys,
 * otherwise it fails with ECANCELED. See HTTP_ABI.md beside this folder.
 *
 * Outbound HTTP is off unless the execution was started with --allow-http PREFIX and the daemon's
 * config allows that destination ([[http.allow]]): else EACCES.
 *
 *     roost_http_response r;
 *     int err = roost_http("POST", "https://api.example.com/orders",
 *                          "Content-Type: application/json\r\n", body, body_len, &r);
 *     if (err) { fprintf(stderr, "%s\n", roost_http_error()); ... }   // a WASI errno
 *     else { ... r.status, r.headers, r.body ...; roost_http_free(&r); }
 */
#ifndef ROOST_H
#define ROOST_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the raw imports (module "roost"; the ABI of HTTP_ABI.md) ---- */
typedef struct {
    uint32_t handle;        /* of the response roost holds until read or closed */
    uint32_t status;        /* HTTP status */
    uint32_t headers_len;   /* bytes of "Name: value\r\n"... */
    uint32_t body_len;
} roost_http_result;

#define ROOST_IMPORT(name) __attribute__((import_module("roost"), import_name(name)))

ROOST_IMPORT("http_request")
uint32_t __roost_http_request(const char *method, size_t method_len, const char *url,
                              size_t url_len, const char *headers, size_t headers_len,
                              const void *body, size_t body_len, roost_http_result *result);
ROOST_IMPORT("http_response_read")
uint32_t __roost_http_response_read(uint32_t handle, char *headers, size_t headers_cap,
                                    void *body, size_t body_cap);
ROOST_IMPORT("http_response_close")
uint32_t __roost_http_response_close(uint32_t handle);
ROOST_IMPORT("http_error")
uint32_t __roost_http_error(char *buf, size_t cap, size_t *len);

/* ---- the convenience call ---- */
typedef struct {
    int status;
    char *headers;          /* "Name: value\r\n"..., NUL-terminated */
    size_t headers_len;
    void *body;             /* NUL-terminated too (not counted in body_len) */
    size_t body_len;
} roost_http_response;

/* Send a request; 0 or a WASI errno (EACCES denied, ECANCELED cut off by a crash and not safe
 * to send again, ETIMEDOUT, ECONNREFUSED, ECONNRESET, EMSGSIZE response too large, EPROTO TLS,
 * EINVAL malformed, ENOMEM). headers: "Name: value\r\n"... or NULL. On 0 *resp is filled and
 * its headers and body malloc'ed: release them with roost_http_free. */
static inline int roost_http(const char *method, const char *url, const char *headers,
                             const void *body, size_t body_len, roost_http_response *resp) {
    roost_http_result r;
    memset(resp, 0, sizeof *resp);
    uint32_t err = __roost_http_request(method, strlen(method), url, strlen(url),
                                        headers ? headers : "", headers ? strlen(headers) : 0,
                                        body ? body : "", body ? body_len : 0, &r);
    if (err)
        return (int)err;
    char *h = (char *)malloc(r.headers_len + 1);
    char *b = (char *)malloc(r.body_len + 1);
    if (!h || !b) {
        free(h);
        free(b);
        __roost_http_response_close(r.handle);
        return ENOMEM;
    }
    err = __roost_http_response_read(r.handle, h, r.headers_len, b, r.body_len);
    if (err) {
        free(h);
        free(b);
        __roost_http_response_close(r.handle);
        return (int)err;
    }
    h[r.headers_len] = 0;
    b[r.body_len] = 0;
    resp->status = (int)r.status;
    resp->headers = h;
    resp->headers_len = r.headers_len;
    resp->body = b;
    resp->body_len = r.body_len;
    return 0;
}

static inline void roost_http_free(roost_http_response *resp) {
    free(resp->headers);
    free(resp->body);
    resp->headers = NULL;
    resp->body = NULL;
}

/* The message of the latest failed request ("" if none); valid until the next request. */
static inline const char *roost_http_error(void) {
    static char buf[1024];
    size_t len = 0;
    if (__roost_http_error(buf, sizeof buf - 1, &len))
        len = 0;
    buf[len] = 0;
    return buf;
}

#ifdef __cplusplus
}
#endif
#endif /* ROOST_H */

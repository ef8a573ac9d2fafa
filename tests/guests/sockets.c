// sock_* on non-socket descriptors: each answers an errno, never crashes.
#include <stdio.h>
#include <stdint.h>
#define IMP(n) __attribute__((import_module("wasi_snapshot_preview1"), import_name(n)))
IMP("sock_accept") int32_t sock_accept(int32_t fd, int32_t flags, int32_t out);
IMP("sock_recv") int32_t sock_recv(int32_t fd, int32_t iovs, int32_t n, int32_t flags, int32_t nread, int32_t roflags);
IMP("sock_send") int32_t sock_send(int32_t fd, int32_t iovs, int32_t n, int32_t flags, int32_t nwritten);
IMP("sock_shutdown") int32_t sock_shutdown(int32_t fd, int32_t how);
static char buf[16];
static uint32_t iov[2], out[2];
int main(void) {
    iov[0] = (uint32_t)(uintptr_t)buf; iov[1] = sizeof buf;
    int fds[] = {0, 1, 2, 3, 99};
    for (int i = 0; i < 5; i++) {
        int fd = fds[i];
        printf("fd %d: accept=%d", fd, sock_accept(fd, 0, (int32_t)(uintptr_t)out));
        printf(" recv=%d", sock_recv(fd, (int32_t)(uintptr_t)iov, 1, 0, (int32_t)(uintptr_t)out, (int32_t)(uintptr_t)(out + 1)));
        printf(" send=%d", sock_send(fd, (int32_t)(uintptr_t)iov, 1, 0, (int32_t)(uintptr_t)out));
        printf(" shutdown=%d\n", sock_shutdown(fd, 3));
    }
    return 0;
}

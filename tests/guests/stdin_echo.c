// Reads all of stdin with read(2) in odd-sized chunks and echoes it with a summary.
#include <stdio.h>
#include <unistd.h>
#include <wasi/api.h>
int main(void) {
    char buf[7]; long total = 0; ssize_t n; unsigned sum = 0;
    while ((n = read(0, buf, sizeof buf)) > 0) {
        fwrite(buf, 1, n, stdout);
        for (ssize_t i = 0; i < n; i++) sum = sum * 31 + (unsigned char)buf[i];
        total += n;
    }
    printf("\n[read %ld bytes, last=%ld, sum=%u]\n", total, (long)n, sum);
    printf("read at eof=%ld\n", (long)read(0, buf, sizeof buf));
    __wasi_filesize_t off; __wasi_size_t got;
    __wasi_iovec_t iov = { (uint8_t *)buf, sizeof buf };
    printf("seek stdin=%d\n", __wasi_fd_seek(0, 0, __WASI_WHENCE_SET, &off));
    printf("tell stdin=%d\n", __wasi_fd_tell(0, &off));
    printf("pread stdin=%d\n", __wasi_fd_pread(0, &iov, 1, 0, &got));
    printf("pwrite stdout=%d\n", __wasi_fd_pwrite(1, (__wasi_ciovec_t *)&iov, 1, 0, &got));
    printf("read stdout=%d\n", __wasi_fd_read(1, &iov, 1, &got));
    printf("write stdin=%d\n", __wasi_fd_write(0, (__wasi_ciovec_t *)&iov, 1, &got));
    __wasi_fdstat_t st;
    for (int fd = 0; fd < 3; fd++) {
        int rc = __wasi_fd_fdstat_get(fd, &st);
        printf("fdstat %d=%d type=%d flags=%d base=%llx inh=%llx\n", fd, rc, st.fs_filetype, st.fs_flags,
               (unsigned long long)st.fs_rights_base, (unsigned long long)st.fs_rights_inheriting);
    }
    __wasi_filestat_t fs;
    int rc = __wasi_fd_filestat_get(0, &fs);
    printf("filestat 0=%d type=%d size=%llu nlink=%llu\n", rc, fs.filetype, (unsigned long long)fs.size, (unsigned long long)fs.nlink);
    return 0;
}

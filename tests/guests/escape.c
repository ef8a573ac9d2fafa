// Attempts to leave the preopened directory: ../, absolute symlinks, symlink loops.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wasi/api.h>
#define T(label, expr) do { errno = 0; long _r = (long)(expr); printf("%s = %ld errno=%d\n", label, _r, _r < 0 ? errno : 0); } while (0)
static int raw_open(int dirfd, const char *p) {
    __wasi_fd_t fd; int rc = __wasi_path_open(dirfd, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, p, 0, __WASI_RIGHTS_FD_READ, 0, 0, &fd);
    if (rc == 0) close(fd);
    return rc;
}
int main(void) {
    struct stat st;
    T("open ../x", open("/app/../etc/passwd", O_RDONLY));
    T("open /etc/passwd", open("/etc/passwd", O_RDONLY));
    T("raw ../x", raw_open(3, "../x"));
    T("raw sub/../../x", raw_open(3, "sub/../../x"));
    T("raw sub/../in.txt", raw_open(3, "sub/../in.txt"));
    T("raw /etc/passwd", raw_open(3, "/etc/passwd"));
    T("raw empty", raw_open(3, ""));
    T("raw .", raw_open(3, "."));
    T("raw ./in.txt", raw_open(3, "./in.txt"));
    T("raw ..", raw_open(3, ".."));
    T("symlink abs", symlink("/etc/passwd", "/app/abs"));
    T("symlink up", symlink("../outside", "/app/up"));
    T("symlink loop a", symlink("loopb", "/app/loopa"));
    T("symlink loop b", symlink("loopa", "/app/loopb"));
    T("symlink ok", symlink("sub/inner.txt", "/app/okl"));
    T("raw abs", raw_open(3, "abs"));
    T("raw up", raw_open(3, "up"));
    T("raw loop", raw_open(3, "loopa"));
    T("raw okl", raw_open(3, "okl"));
    T("stat abs", lstat("/app/abs", &st));
    T("stat up follow", stat("/app/up", &st));
    T("mkdir ../x", __wasi_path_create_directory(3, "../x"));
    T("unlink ../x", __wasi_path_unlink_file(3, "../x"));
    T("rmdir ..", __wasi_path_remove_directory(3, ".."));
    T("rmdir .", __wasi_path_remove_directory(3, "."));
    T("mkdir .", __wasi_path_create_directory(3, "."));
    int sub = open("/app/sub", O_RDONLY | O_DIRECTORY);
    T("sub ../in.txt", raw_open(sub, "../in.txt"));
    T("sub inner.txt", raw_open(sub, "inner.txt"));
    T("chdir sub", chdir("/app/sub"));
    T("open ../in.txt via cwd", open("../in.txt", O_RDONLY) >= 0);
    T("rename out", __wasi_path_rename(3, "in.txt", 3, "../stolen"));
    T("link out", __wasi_path_link(3, 0, "in.txt", 3, "../stolen"));
    char buf[32];
    __wasi_size_t n;
    T("readlink abs", __wasi_path_readlink(3, "abs", (uint8_t *)buf, sizeof buf, &n));
    printf("  [%.*s]\n", (int)n, buf);
    return 0;
}

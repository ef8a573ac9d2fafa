/* argv[1] (default 2000) directories nested in one another, made and walked one level at a
 * time through directory descriptors (no path grows with the depth), a directory at the bottom, then
 * the top renamed (the host checks that a directory is not moved into itself) and the bottom
 * reached again through the new name, level by level. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int descend(int top, int depth) {
    int fd = top;
    for (int i = 0; i < depth; i++) {
        int next = openat(fd, "d", O_RDONLY | O_DIRECTORY);
        if (next < 0) { printf("open level %d: errno %d\n", i, errno); return -1; }
        if (fd != top) close(fd);
        fd = next;
    }
    return fd;
}

int main(int argc, char **argv) {
    int depth = argc > 1 ? atoi(argv[1]) : 2000;
    int root = open("/data", O_RDONLY | O_DIRECTORY);
    if (mkdirat(root, "top", 0755)) { printf("mkdir top: errno %d\n", errno); return 1; }
    int top = openat(root, "top", O_RDONLY | O_DIRECTORY);
    int fd = top;
    for (int i = 0; i < depth; i++) {
        if (mkdirat(fd, "d", 0755)) { printf("mkdir level %d: errno %d\n", i, errno); return 1; }
        int next = openat(fd, "d", O_RDONLY | O_DIRECTORY);
        if (fd != top) close(fd);
        fd = next;
    }
    printf("mkdir bottom: %d\n", mkdirat(fd, "bottom", 0755));
    close(fd);
    close(top);
    printf("made %d levels\n", depth);
    printf("rename top into itself: %s\n", renameat(root, "top", root, "top/d/d/x") ? "refused" : "allowed");
    printf("rename top: %d\n", renameat(root, "top", root, "moved"));
    top = openat(root, "moved", O_RDONLY | O_DIRECTORY);
    fd = descend(top, depth);
    struct stat st;
    printf("bottom found: %d dir=%d\n", fstatat(fd, "bottom", &st, 0), S_ISDIR(st.st_mode));
    return 0;
}

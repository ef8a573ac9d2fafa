// The file API through libc: create/write/read/seek/tell/pread/pwrite/truncate/append/stat,
// rename/unlink/mkdir/rmdir/readdir/links/symlinks/readlink/renumber/fdstat, and errnos.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wasi/api.h>

#define T(label, expr) do { errno = 0; long _r = (long)(expr); printf("%s = %ld errno=%d\n", label, _r, _r < 0 ? errno : 0); } while (0)

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void listdir(const char *path) {
    DIR *d = opendir(path);
    if (!d) { printf("opendir %s failed errno=%d\n", path, errno); return; }
    char *names[64]; int n = 0; struct dirent *e;
    while ((e = readdir(d)) && n < 64) {
        char tmp[300]; snprintf(tmp, sizeof tmp, "%s:%d", e->d_name, e->d_type);
        names[n++] = strdup(tmp);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp);
    printf("ls %s:", path);
    for (int i = 0; i < n; i++) { printf(" %s", names[i]); free(names[i]); }
    printf("\n");
}

static void showstat(const char *path, int follow) {
    struct stat st; int rc = follow ? stat(path, &st) : lstat(path, &st);
    if (rc) { printf("stat %s errno=%d\n", path, errno); return; }
    printf("stat %s: size=%lld nlink=%lu reg=%d dir=%d lnk=%d\n", path, (long long)(S_ISDIR(st.st_mode) ? -1 : st.st_size),
           (unsigned long)(S_ISDIR(st.st_mode) ? 0 : st.st_nlink), S_ISREG(st.st_mode), S_ISDIR(st.st_mode), S_ISLNK(st.st_mode));
}

static void cat(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { printf("cat %s errno=%d\n", path, errno); return; }
    char buf[256]; size_t n = fread(buf, 1, sizeof buf - 1, f); buf[n] = 0; fclose(f);
    printf("cat %s (%zu): [%s]\n", path, n, buf);
}

int main(void) {
    chdir("/work");
    cat("input.txt");
    int fd = open("a.txt", O_CREAT | O_RDWR | O_TRUNC, 0644);
    T("write", write(fd, "hello world\n", 12));
    T("lseek set", lseek(fd, 6, SEEK_SET));
    T("write", write(fd, "WORLD", 5));
    T("lseek cur", lseek(fd, 0, SEEK_CUR));
    T("lseek end", lseek(fd, 0, SEEK_END));
    T("lseek end-3", lseek(fd, -3, SEEK_END));
    T("lseek neg", lseek(fd, -100, SEEK_SET));
    char buf[64] = {0};
    T("read", read(fd, buf, sizeof buf)); printf("  [%s]\n", buf);
    T("pwrite", pwrite(fd, "XY", 2, 0));
    memset(buf, 0, sizeof buf);
    T("pread", pread(fd, buf, 5, 0)); printf("  [%s]\n", buf);
    T("pread past end", pread(fd, buf, 5, 100));
    T("tell after pread", lseek(fd, 0, SEEK_CUR));
    T("lseek far", lseek(fd, 20, SEEK_SET));
    T("write gap", write(fd, "!", 1));
    T("ftruncate 8", ftruncate(fd, 8));
    T("ftruncate 10", ftruncate(fd, 10));
    struct stat st; fstat(fd, &st); printf("fstat size=%lld\n", (long long)st.st_size);
    T("fsync", fsync(fd));
    T("fdatasync", fdatasync(fd));
    T("posix_fadvise", posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL));
    T("posix_fallocate", posix_fallocate(fd, 0, 100));
    T("close", close(fd));
    T("close again", close(fd));
    cat("a.txt");

    fd = open("a.txt", O_WRONLY | O_APPEND);
    T("append write", write(fd, "tail", 4));
    T("append tell", lseek(fd, 0, SEEK_CUR));
    T("append pwrite", pwrite(fd, "P", 1, 0));
    T("fcntl getfl append", (fcntl(fd, F_GETFL) & O_APPEND) != 0);
    T("fcntl setfl 0", fcntl(fd, F_SETFL, 0));
    T("fcntl getfl append", (fcntl(fd, F_GETFL) & O_APPEND) != 0);
    T("read wronly", read(fd, buf, 4));
    close(fd);
    cat("a.txt");
    fd = open("a.txt", O_RDONLY);
    T("write rdonly", write(fd, "x", 1));
    T("ftruncate rdonly", ftruncate(fd, 0));
    T("fcntl getfl", fcntl(fd, F_GETFL) & O_ACCMODE);
    close(fd);

    T("open missing", open("missing.txt", O_RDONLY));
    T("open excl existing", open("a.txt", O_CREAT | O_EXCL | O_WRONLY, 0644));
    T("open file as dir", open("a.txt", O_RDONLY | O_DIRECTORY));
    T("open file/", open("a.txt/", O_RDONLY));
    T("open missing dir", open("nodir/x", O_RDONLY));
    T("open dir wronly", open("sub", O_WRONLY));
    T("open trunc dir", open("sub", O_RDWR | O_TRUNC));
    T("create in missing dir", open("nodir/x", O_CREAT | O_WRONLY, 0644));
    T("create trailing slash", open("newf/", O_CREAT | O_WRONLY, 0644));

    T("mkdir d1", mkdir("d1", 0755));
    T("mkdir d1 again", mkdir("d1", 0755));
    T("mkdir d1/d2/", mkdir("d1/d2/", 0755));
    T("mkdir nodir/x", mkdir("nodir/x", 0755));
    T("mkdir a.txt/x", mkdir("a.txt/x", 0755));
    fd = open("d1/f", O_CREAT | O_WRONLY, 0644); write(fd, "in d1", 5); close(fd);
    T("rmdir nonempty", rmdir("d1"));
    T("rmdir file", rmdir("a.txt"));
    T("rmdir missing", rmdir("zzz"));
    T("unlink dir", unlink("d1"));
    T("unlink missing", unlink("zzz"));
    listdir("d1");
    listdir(".");
    listdir("sub");

    T("link", link("a.txt", "b.txt"));
    showstat("a.txt", 1);
    T("link exists", link("a.txt", "b.txt"));
    T("link dir", link("d1", "d1link"));
    T("link missing", link("zzz", "zz2"));
    T("unlink b", unlink("b.txt"));
    showstat("a.txt", 1);

    T("symlink", symlink("a.txt", "sl"));
    T("symlink dir", symlink("d1", "sld"));
    T("symlink dangling", symlink("nowhere", "dangle"));
    T("symlink exists", symlink("a.txt", "sl"));
    showstat("sl", 1); showstat("sl", 0);
    cat("sl"); cat("sld/f"); cat("dangle");
    char lb[64] = {0};
    T("readlink", readlink("sl", lb, sizeof lb)); printf("  [%s]\n", lb);
    memset(lb, 0, sizeof lb);
    T("readlink short", readlink("sl", lb, 3)); printf("  [%s]\n", lb);
    T("readlink file", readlink("a.txt", lb, sizeof lb));
    T("readlink missing", readlink("zzz", lb, sizeof lb));
    T("open nofollow", open("sl", O_RDONLY | O_NOFOLLOW));
    T("unlink symlink", unlink("dangle"));

    T("rename file", rename("a.txt", "c.txt"));
    T("rename missing", rename("a.txt", "d.txt"));
    T("rename into dir", rename("c.txt", "d1/c.txt"));
    T("rename file over dir", rename("d1/c.txt", "d1/d2"));
    T("rename dir over file", rename("d1/d2", "d1/c.txt"));
    T("mkdir e", mkdir("e", 0755));
    T("rename dir over nonempty", rename("e", "d1"));
    T("rename dir over empty", rename("d1", "e"));
    T("rename dir into itself", rename("e", "e/d2/x"));
    T("rename same", rename("e/c.txt", "e/c.txt"));
    fd = open("r1", O_CREAT | O_WRONLY, 0644); write(fd, "one", 3); close(fd);
    fd = open("r2", O_CREAT | O_WRONLY, 0644); write(fd, "two", 3); close(fd);
    T("rename over file", rename("r1", "r2"));
    cat("r2");
    listdir("e");
    listdir(".");

    // open-unlinked file keeps its data
    fd = open("tmp", O_CREAT | O_RDWR, 0644); write(fd, "ghost", 5);
    T("unlink open", unlink("tmp"));
    memset(buf, 0, sizeof buf);
    T("pread unlinked", pread(fd, buf, 5, 0)); printf("  [%s]\n", buf);
    close(fd);

    // renumber and fdstat through the raw API
    int f1 = open("r2", O_RDONLY), f2 = open("e/c.txt", O_RDONLY);
    T("renumber", __wasi_fd_renumber(f1, f2));
    memset(buf, 0, sizeof buf);
    T("read renumbered", read(f2, buf, 10)); printf("  [%s]\n", buf);
    T("read old", read(f1, buf, 10));
    T("renumber bad", __wasi_fd_renumber(77, f2));
    __wasi_fdstat_t fs;
    T("fdstat file", __wasi_fd_fdstat_get(f2, &fs));
    printf("  type=%d flags=%d base=%llx inh=%llx\n", fs.fs_filetype, fs.fs_flags, (unsigned long long)fs.fs_rights_base, (unsigned long long)fs.fs_rights_inheriting);
    T("fdstat preopen", __wasi_fd_fdstat_get(3, &fs));
    printf("  type=%d flags=%d base=%llx inh=%llx\n", fs.fs_filetype, fs.fs_flags, (unsigned long long)fs.fs_rights_base, (unsigned long long)fs.fs_rights_inheriting);
    int dfd = open("e", O_RDONLY | O_DIRECTORY);
    T("fdstat dir", __wasi_fd_fdstat_get(dfd, &fs));
    printf("  type=%d flags=%d base=%llx inh=%llx\n", fs.fs_filetype, fs.fs_flags, (unsigned long long)fs.fs_rights_base, (unsigned long long)fs.fs_rights_inheriting);
    T("set_rights", __wasi_fd_fdstat_set_rights(f2, 0, 0));
    T("set_rights stdio", __wasi_fd_fdstat_set_rights(1, 0, 0));
    T("set_flags dir", __wasi_fd_fdstat_set_flags(dfd, 0));
    T("set_flags sync", __wasi_fd_fdstat_set_flags(f2, __WASI_FDFLAGS_SYNC));
    T("set_flags nonblock", __wasi_fd_fdstat_set_flags(f2, __WASI_FDFLAGS_NONBLOCK));
    T("fdstat file", __wasi_fd_fdstat_get(f2, &fs)); printf("  flags=%d\n", fs.fs_flags);
    T("seek dir", lseek(dfd, 0, SEEK_SET));
    T("read dir", read(dfd, buf, 4));
    T("fsync dir", __wasi_fd_sync(dfd));
    T("datasync dir", __wasi_fd_datasync(dfd));
    T("advise dir", __wasi_fd_advise(dfd, 0, 0, 0));
    T("allocate dir", __wasi_fd_allocate(dfd, 0, 1));
    T("filestat_set_size dir", __wasi_fd_filestat_set_size(dfd, 0));
    T("readdir file", __wasi_fd_readdir(f2, (uint8_t *)buf, sizeof buf, 0, (__wasi_size_t *)&fs));
    __wasi_fd_t nfd;
    T("path_open via file fd", __wasi_path_open(f2, 0, "x", 0, 0, 0, 0, &nfd));
    T("path_open via stdout", __wasi_path_open(1, 0, "x", 0, 0, 0, 0, &nfd));
    T("path_open dir+creat", __wasi_path_open(3, 0, "q", __WASI_OFLAGS_DIRECTORY | __WASI_OFLAGS_CREAT, 0, 0, 0, &nfd));
    T("mkdir via file fd", __wasi_path_create_directory(f2, "zz"));
    T("link follow", __wasi_path_link(3, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, "r2", 3, "r3"));
    T("prestat file", __wasi_fd_prestat_get(f2, (__wasi_prestat_t *)buf));
    T("prestat_dir_name file", __wasi_fd_prestat_dir_name(f2, (uint8_t *)buf, 10));
    T("prestat_dir_name short", __wasi_fd_prestat_dir_name(3, (uint8_t *)buf, 2));
    T("prestat bad", __wasi_fd_prestat_get(99, (__wasi_prestat_t *)buf));
    T("filestat bad", __wasi_fd_filestat_get(99, (__wasi_filestat_t *)buf));
    T("futimens", futimens(f2, NULL));
    struct timespec tsp[2] = {{1, 0}, {2, 0}};
    T("utimensat", utimensat(AT_FDCWD, "r2", tsp, 0));
    stat("r2", &st); printf("  mtime=%lld atime=%lld\n", (long long)st.st_mtim.tv_sec, (long long)st.st_atim.tv_sec);
    T("set_times both", __wasi_fd_filestat_set_times(f2, 1, 1, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_ATIM_NOW));
    T("path set_times both", __wasi_path_filestat_set_times(3, 0, "r2", 1, 1, __WASI_FSTFLAGS_MTIM | __WASI_FSTFLAGS_MTIM_NOW));
    T("path set_times", __wasi_path_filestat_set_times(3, 0, "r2", 5000000000ull, 6000000000ull, __WASI_FSTFLAGS_MTIM | __WASI_FSTFLAGS_ATIM));
    stat("r2", &st); printf("  mtime=%lld atime=%lld\n", (long long)st.st_mtim.tv_sec, (long long)st.st_atim.tv_sec);
    close(f2); close(dfd);

    // raw readdir: cookies and truncation
    dfd = open("e", O_RDONLY | O_DIRECTORY);
    uint8_t rb[512]; __wasi_size_t used;
    T("readdir big", __wasi_fd_readdir(dfd, rb, sizeof rb, 0, &used));
    printf("  used=%lu\n", (unsigned long)used);
    char *ents[16]; int ne = 0; char nexts[128] = "";
    for (__wasi_size_t off = 0; off + sizeof(__wasi_dirent_t) <= used && ne < 16;) {
        __wasi_dirent_t *d = (__wasi_dirent_t *)(rb + off);
        char tmp[128]; snprintf(tmp, sizeof tmp, "namlen=%u type=%d name=%.*s", d->d_namlen, d->d_type, d->d_namlen, (char *)(d + 1));
        ents[ne++] = strdup(tmp);
        snprintf(nexts + strlen(nexts), sizeof nexts - strlen(nexts), " %llu", (unsigned long long)d->d_next);
        off += sizeof *d + d->d_namlen;
    }
    qsort(ents, ne, sizeof *ents, cmp);
    for (int i = 0; i < ne; i++) { printf("  %s\n", ents[i]); free(ents[i]); }
    printf("  cookies:%s\n", nexts);
    T("readdir 30", __wasi_fd_readdir(dfd, rb, 30, 0, &used)); printf("  used=%lu\n", (unsigned long)used);
    T("readdir 10", __wasi_fd_readdir(dfd, rb, 10, 0, &used)); printf("  used=%lu\n", (unsigned long)used);
    T("readdir cookie 2", __wasi_fd_readdir(dfd, rb, sizeof rb, 2, &used)); printf("  used=%lu\n", (unsigned long)used);
    T("readdir cookie 99", __wasi_fd_readdir(dfd, rb, sizeof rb, 99, &used)); printf("  used=%lu\n", (unsigned long)used);
    close(dfd);

    // output files to compare
    fd = open("out/result.bin", O_CREAT | O_WRONLY, 0644);
    T("mkdir out", mkdir("out", 0755));
    fd = open("out/result.bin", O_CREAT | O_WRONLY, 0644);
    for (int i = 0; i < 256; i++) { unsigned char c = (unsigned char)i; write(fd, &c, 1); }
    close(fd);
    FILE *f = fopen("out/log.txt", "w"); for (int i = 0; i < 100; i++) fprintf(f, "line %d\n", i); fclose(f);
    f = fopen("out/log.txt", "a"); fprintf(f, "appended\n"); fclose(f);
    T("rmdir e/d2", rmdir("e/d2"));
    T("unlink sld", unlink("sld"));
    listdir(".");
    return 0;
}

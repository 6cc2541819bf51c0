/* The floor of `ls /iscsi` without an interpreter: target_ls_floor.py's "paths" walk in C
 * (the same files, directories and links, the same syscalls: open/read/close per file,
 * opendir/readdir/closedir per directory, readlink per link). target_ls_floor.py
 * compiles and runs it when a C compiler is there; argv[1]: which of the
 * portals' files to read too (1 iser, 2 cxgbit, 3 both). Prints the seconds and the counts as one JSON object. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ROOT "/sys/kernel/config/target"
static long files, dirs, links;
static int flags;

static void rd(const char *path) {
    char buf[4096];
    int fd = open(path, O_RDONLY);
    files++;
    if (fd < 0) return;
    if (read(fd, buf, sizeof buf) < 0) { /* counted all the same */ }
    close(fd);
}

/* the one symlink of a LUN or mapped-LUN directory */
static void link_of(const char *d, char *out, size_t n) {
    DIR *dir = opendir(d);
    struct dirent *e;
    char p[4096];
    dirs++;
    out[0] = 0;
    if (!dir) return;
    while ((e = readdir(dir))) {
        if (e->d_type == DT_LNK) {
            snprintf(p, sizeof p, "%s/%s", d, e->d_name);
            ssize_t k = readlink(p, out, n - 1);
            links++;
            out[k > 0 ? k : 0] = 0;
        }
    }
    closedir(dir);
}

static void tpg(const char *t) {
    char p[4096], q[4096], l[4096];
    DIR *dir;
    struct dirent *e;
    static const char *own[] = {"enable", "attrib/authentication", "attrib/generate_node_acls"};
    for (int i = 0; i < 3; i++) { snprintf(p, sizeof p, "%s/%s", t, own[i]); rd(p); }
    snprintf(p, sizeof p, "%s/lun", t);
    if ((dir = opendir(p))) {
        dirs++;
        while ((e = readdir(dir))) {
            if (strncmp(e->d_name, "lun_", 4)) continue;
            snprintf(q, sizeof q, "%s/lun/%s", t, e->d_name);
            link_of(q, l, sizeof l);
            snprintf(p, sizeof p, "%s/alua_tg_pt_gp", q); rd(p);
            /* ../../../../../../target/core/fileio_N/NAME -> its udev_path */
            char *name = strrchr(l, '/'), *hba;
            if (name) { *name = 0; hba = strrchr(l, '/');
                if (hba) { snprintf(p, sizeof p, ROOT "/core/%s/%s/udev_path", hba + 1, name + 1); rd(p); } }
        }
        closedir(dir);
    }
    snprintf(p, sizeof p, "%s/np", t);
    if ((dir = opendir(p))) {
        dirs++;
        while ((e = readdir(dir))) {
            if (e->d_type != DT_DIR || e->d_name[0] == '.') continue;
            if (flags & 1) { snprintf(q, sizeof q, "%s/np/%s/iser", t, e->d_name); rd(q); }
            if (flags & 2) { snprintf(q, sizeof q, "%s/np/%s/cxgbit", t, e->d_name); rd(q); }
        }
        closedir(dir);
    }
    snprintf(p, sizeof p, "%s/acls", t);
    if ((dir = opendir(p))) {
        dirs++;
        while ((e = readdir(dir))) {
            if (e->d_type != DT_DIR || e->d_name[0] == '.') continue;
            char a[4096];
            snprintf(a, sizeof a, "%s/acls/%s", t, e->d_name);
            snprintf(q, sizeof q, "%s/tag", a); rd(q);
            DIR *ad = opendir(a);
            struct dirent *m;
            dirs++;
            if (!ad) continue;
            while ((m = readdir(ad))) {
                if (strncmp(m->d_name, "lun_", 4)) continue;
                snprintf(q, sizeof q, "%s/%s", a, m->d_name);
                link_of(q, l, sizeof l);
                snprintf(p, sizeof p, "%s/write_protect", q); rd(p);
            }
            closedir(ad);
        }
        closedir(dir);
    }
}

int main(int argc, char **argv) {
    struct timespec t0, t1;
    char p[4096];
    flags = argc > 1 && atoi(argv[1]);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    DIR *top = opendir(ROOT "/iscsi");
    struct dirent *e;
    if (!top) return 1;
    dirs++;
    while ((e = readdir(top))) {
        if (e->d_type != DT_DIR || e->d_name[0] == '.' || !strcmp(e->d_name, "discovery_auth")) continue;
        snprintf(p, sizeof p, ROOT "/iscsi/%s", e->d_name);
        DIR *td = opendir(p);
        struct dirent *g;
        dirs++;
        if (!td) continue;
        while ((g = readdir(td))) {
            if (strncmp(g->d_name, "tpgt_", 5)) continue;
            char t[4096];
            snprintf(t, sizeof t, "%s/%s", p, g->d_name);
            tpg(t);
        }
        closedir(td);
    }
    closedir(top);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("{\"seconds\": %.3f, \"files\": %ld, \"dirs\": %ld, \"links\": %ld}\n",
           (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, files, dirs, links);
    return 0;
}

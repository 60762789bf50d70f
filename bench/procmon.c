/*
 * bench-procmon - memory and CPU of a process tree, for bench/run.sh.
 *
 *   bench-procmon PID --once              one sample now
 *   bench-procmon PID [--interval S]      sample every S seconds (0.25) until SIGTERM/SIGINT
 *                                         or until PID is gone, then print the summary
 *
 * The tree is PID and all its descendants (/proc/<pid>/task/<tid>/children).
 * A sample sums VmRSS (/proc/<pid>/status) and Pss (/proc/<pid>/smaps_rollup)
 * over the tree, and its CPU time: utime + stime of every process in the tree
 * plus cutime + cstime of PID itself (children it has already reaped), in
 * seconds (clock ticks / sysconf(_SC_CLK_TCK)).
 *
 * Output: one line
 *   procmon rss_kib=R pss_kib=P procs=K cpu_s=C                             (--once)
 *   procmon samples=S max_rss_kib=R max_pss_kib=P max_procs=K last_cpu_s=C  (sampling)
 * Exit status 1 if PID does not exist when the first sample is taken.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_amqp.h"

#define MAXPROCS 4096

typedef struct {
    long rss_kib, pss_kib;
    int procs;
    double cpu_s;
} sample;

static volatile sig_atomic_t stop_flag;

static void on_stop(int sig)
{
    (void)sig;
    stop_flag = 1;
}

/* Read "Key:   <n> kB" from a /proc text file; -1 when absent. */
static long proc_kib(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[256];
    size_t klen = strlen(key);
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, klen) && line[klen] == ':') {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* utime+stime (+ cutime+cstime when with_children) of pid, in ticks; -1 if gone. */
static long long proc_ticks(int pid, int with_children)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* The command name may contain spaces and parentheses: fields start after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    p += 2; /* field 3 (state) */
    unsigned long long v[17] = {0};
    /* fields 3..19; we need 14 utime, 15 stime, 16 cutime, 17 cstime */
    for (int field = 3; field <= 17 && *p; field++) {
        while (*p == ' ')
            p++;
        if (field >= 14)
            v[field - 14] = strtoull(p, NULL, 10);
        while (*p && *p != ' ')
            p++;
    }
    long long t = (long long)(v[0] + v[1]);
    if (with_children)
        t += (long long)(v[2] + v[3]);
    return t;
}

/* Append the children of pid (all its threads) to list; returns the new count. */
static int add_children(int pid, int *list, int n)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return n;
    struct dirent *e;
    while ((e = readdir(d)) && n < MAXPROCS) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        char cpath[300];
        snprintf(cpath, sizeof cpath, "/proc/%d/task/%s/children", pid, e->d_name);
        FILE *f = fopen(cpath, "r");
        if (!f)
            continue;
        int c;
        while (n < MAXPROCS && fscanf(f, "%d", &c) == 1)
            list[n++] = c;
        fclose(f);
    }
    closedir(d);
    return n;
}

/* One sample of the tree rooted at root; returns 0 if root is gone. */
static int take(int root, sample *s)
{
    static int list[MAXPROCS];
    int n = 0;
    list[n++] = root;
    for (int i = 0; i < n; i++)
        n = add_children(list[i], list, n);
    memset(s, 0, sizeof *s);
    long tck = sysconf(_SC_CLK_TCK);
    int root_alive = 0;
    for (int i = 0; i < n; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/status", list[i]);
        long rss = proc_kib(path, "VmRSS");
        long long t = proc_ticks(list[i], i == 0);
        if (rss < 0 || t < 0)
            continue;
        if (i == 0)
            root_alive = 1;
        snprintf(path, sizeof path, "/proc/%d/smaps_rollup", list[i]);
        long pss = proc_kib(path, "Pss");
        s->rss_kib += rss;
        s->pss_kib += pss > 0 ? pss : 0;
        s->procs++;
        s->cpu_s += (double)t / (double)(tck > 0 ? tck : 100);
    }
    return root_alive;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        bench_die("usage: bench-procmon PID [--once | --interval S]");
    int pid = (int)bench_parse_long(argv[1], "PID");
    int once = 0;
    double interval = 0.25;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--once"))
            once = 1;
        else if (!strcmp(argv[i], "--interval") && i + 1 < argc)
            interval = atof(argv[++i]);
        else
            bench_die("usage: bench-procmon PID [--once | --interval S]");
    }
    if (interval <= 0)
        interval = 0.25;
    sample s;
    if (once) {
        if (!take(pid, &s))
            bench_die("process %d is gone", pid);
        printf("procmon rss_kib=%ld pss_kib=%ld procs=%d cpu_s=%.2f\n", s.rss_kib, s.pss_kib, s.procs, s.cpu_s);
        return 0;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sample max = {0}, last = {0};
    long samples = 0;
    while (!stop_flag) {
        if (!take(pid, &s)) {
            if (!samples)
                bench_die("process %d is gone", pid);
            break;
        }
        samples++;
        last = s;
        if (s.rss_kib > max.rss_kib)
            max.rss_kib = s.rss_kib;
        if (s.pss_kib > max.pss_kib)
            max.pss_kib = s.pss_kib;
        if (s.procs > max.procs)
            max.procs = s.procs;
        struct timespec ts = {(time_t)interval, (long)((interval - (double)(time_t)interval) * 1e9)};
        nanosleep(&ts, NULL); /* a signal cuts it short */
    }
    printf("procmon samples=%ld max_rss_kib=%ld max_pss_kib=%ld max_procs=%d last_rss_kib=%ld last_cpu_s=%.2f\n",
           samples, max.rss_kib, max.pss_kib, max.procs, last.rss_kib, last.cpu_s);
    return 0;
}

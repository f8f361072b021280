/* An LD_PRELOAD shim for the benchmarks: every fsync() and fdatasync() of the process
 * sleeps HALL_BENCH_FSYNC_MS milliseconds (a whole or fractional number; 0 or unset: no
 * delay) before calling the real one, so a fast development disk answers like an SD card
 * (2-30 ms per fsync). Built by bench/_fsync.py with the system's cc; never installed.
 *
 *   cc -shared -fPIC -O2 -o fsync_delay.so fsync_delay.c -ldl
 *   HALL_BENCH_FSYNC_MS=20 LD_PRELOAD=$PWD/fsync_delay.so python ...
 *
 * HALL_BENCH_FSYNC_COUNT, when set to a file path, makes the process append one line
 * "<pid> <fsyncs> <fdatasyncs>" to it at exit, so a benchmark can count them. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long delay_ns = -1;
static unsigned long n_fsync, n_fdatasync;

static void pause_like_a_slow_disk(void)
{
    if (delay_ns < 0) {
        const char *ms = getenv("HALL_BENCH_FSYNC_MS");
        double value = ms ? atof(ms) : 0.0;
        delay_ns = value > 0 ? (long)(value * 1e6) : 0;
    }
    if (delay_ns > 0) {
        struct timespec left = {delay_ns / 1000000000L, delay_ns % 1000000000L};
        int saved = errno;
        while (nanosleep(&left, &left) != 0 && errno == EINTR) {
        }
        errno = saved;
    }
}

int fsync(int fd)
{
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    __atomic_add_fetch(&n_fsync, 1, __ATOMIC_RELAXED);
    pause_like_a_slow_disk();
    return real(fd);
}

int fdatasync(int fd)
{
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    __atomic_add_fetch(&n_fdatasync, 1, __ATOMIC_RELAXED);
    pause_like_a_slow_disk();
    return real(fd);
}

__attribute__((destructor)) static void report(void)
{
    const char *path = getenv("HALL_BENCH_FSYNC_COUNT");
    if (!path || !*path)
        return;
    FILE *out = fopen(path, "a");
    if (!out)
        return;
    fprintf(out, "%ld %lu %lu\n", (long)getpid(), n_fsync, n_fdatasync);
    fclose(out);
}

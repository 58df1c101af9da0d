/*
 * The ceiling for bench/proc.sh: what the bare C library does with no event loop, and the
 * writer child of the throughput runs. Built by bench/proc.sh with `cc -O2`.
 *
 *   proc_ceiling seq N PROGRAM          posix_spawn PROGRAM, waitpid it; N times
 *   proc_ceiling conc N K PROGRAM       the same with K children in flight (waitpid(-1))
 *   proc_ceiling read BYTES CHUNK       posix_spawn `proc_ceiling write BYTES CHUNK` (itself)
 *                                       with stdout a pipe, read() it into one reused
 *                                       CHUNK-byte buffer to end of file, waitpid
 *   proc_ceiling write BYTES CHUNK      write BYTES zero bytes to stdout, CHUNK per write()
 *
 * Spawned children get stdin, stdout and stderr on /dev/null (opened once, dup2'ed in by
 * posix_spawn_file_actions), as the loops under test do with DEVNULL; the reader's child
 * gets its stdout on the pipe. Every child must exit 0 and the reader must count exactly
 * BYTES bytes, else this exits 1: a fast wrong answer is not a figure.
 *
 * Prints one JSON object per figure on stdout: {"loop","name","value","unit"}; the spawn
 * modes also print the CPU time this process (not its children) spent per spawn.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU seconds (user + system) this process used so far; children not included. */
static double cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void die(const char *what, int err)
{
    fprintf(stderr, "proc_ceiling: %s: %s\n", what, strerror(err));
    exit(1);
}

static void emit(const char *name, double value, const char *unit)
{
    printf("{\"loop\": \"bare\", \"name\": \"%s\", \"value\": %.1f, \"unit\": \"%s\"}\n",
           name, value, unit);
    fflush(stdout);
}

static long number(const char *text)
{
    char *end;
    long n = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || n <= 0) {
        fprintf(stderr, "proc_ceiling: not a positive number: %s\n", text);
        exit(2);
    }
    return n;
}

/* Actions putting /dev/null on 0, 1 and 2 (and, if out >= 0, `out` on 1 instead). */
static void devnull_actions(posix_spawn_file_actions_t *fa, int out)
{
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0)
        die("open /dev/null", errno);
    posix_spawn_file_actions_init(fa);
    posix_spawn_file_actions_adddup2(fa, null, 0);
    posix_spawn_file_actions_adddup2(fa, out >= 0 ? out : null, 1);
    posix_spawn_file_actions_adddup2(fa, null, 2);
}

static pid_t spawn(posix_spawn_file_actions_t *fa, char **argv)
{
    pid_t pid;
    int err = posix_spawn(&pid, argv[0], fa, NULL, argv, environ);
    if (err)
        die(argv[0], err);
    return pid;
}

static void reap(pid_t pid)
{
    int status;
    pid_t got;
    while ((got = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
        ;
    if (got < 0)
        die("waitpid", errno);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "proc_ceiling: child %d failed (status %#x)\n", got, status);
        exit(1);
    }
}

static int seq(long n, char *program)
{
    posix_spawn_file_actions_t fa;
    char *argv[] = {program, NULL};
    devnull_actions(&fa, -1);
    double start = now(), cpu_start = cpu();
    for (long i = 0; i < n; i++)
        reap(spawn(&fa, argv));
    emit("spawn_seq", n / (now() - start), "spawns/s");
    emit("spawn_seq_cpu", (cpu() - cpu_start) / n * 1e6, "us");
    return 0;
}

static int conc(long n, long k, char *program)
{
    posix_spawn_file_actions_t fa;
    char *argv[] = {program, NULL};
    long started = 0, done = 0;
    devnull_actions(&fa, -1);
    double start = now(), cpu_start = cpu();
    for (; started < k && started < n; started++)
        spawn(&fa, argv);
    while (done < n) {
        reap(-1);
        done++;
        if (started < n) {
            spawn(&fa, argv);
            started++;
        }
    }
    emit("spawn_conc", n / (now() - start), "spawns/s");
    emit("spawn_conc_cpu", (cpu() - cpu_start) / n * 1e6, "us");
    return 0;
}

static int writer(long bytes, long chunk)
{
    char *buf = calloc(1, chunk);
    if (!buf)
        die("calloc", ENOMEM);
    while (bytes > 0) {
        ssize_t n = write(1, buf, bytes < chunk ? bytes : chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("write", errno);
        bytes -= n;
    }
    return 0;
}

static int reader(char *self, char *bytes_arg, char *chunk_arg)
{
    long bytes = number(bytes_arg), chunk = number(chunk_arg);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        die("pipe2", errno);
    posix_spawn_file_actions_t fa;
    devnull_actions(&fa, fds[1]);
    char *argv[] = {self, "write", bytes_arg, chunk_arg, NULL};
    char *buf = malloc(chunk);
    if (!buf)
        die("malloc", ENOMEM);
    double start = now();
    pid_t pid = spawn(&fa, argv);
    close(fds[1]);
    long total = 0;
    for (;;) {
        ssize_t n = read(fds[0], buf, chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("read", errno);
        if (n == 0)
            break;
        total += n;
    }
    reap(pid);
    double elapsed = now() - start;
    if (total != bytes) {
        fprintf(stderr, "proc_ceiling: read %ld bytes, expected %ld\n", total, bytes);
        return 1;
    }
    emit("read_throughput", bytes / elapsed / 1e6, "MB/s");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "seq") == 0)
        return seq(number(argv[2]), argv[3]);
    if (argc == 5 && strcmp(argv[1], "conc") == 0)
        return conc(number(argv[2]), number(argv[3]), argv[4]);
    if (argc == 4 && strcmp(argv[1], "read") == 0)
        return reader(argv[0], argv[2], argv[3]);
    if (argc == 4 && strcmp(argv[1], "write") == 0)
        return writer(number(argv[2]), number(argv[3]));
    fprintf(stderr, "usage: proc_ceiling seq N PROGRAM | conc N K PROGRAM |"
                    " read BYTES CHUNK | write BYTES CHUNK\n");
    return 2;
}

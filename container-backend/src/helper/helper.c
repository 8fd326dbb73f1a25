/*
 * nekton's container helper: the only program the container's processes run before the job's
 * own (see `container-backend/src/helper.rs`). Built by build.rs as a tiny freestanding static
 * executable (no libc, no loader, no relocations), embedded in the worker and executed from a
 * sealed memfd, so that neither the container's init nor the job's process at its `execve` is
 * backed by the worker's binary (CVE-2019-5736).
 *
 * Two modes, chosen by argv[0]; everything else it needs comes in argv (descriptor numbers,
 * the job's pid, the exec candidates), so the wire format is defined once, in
 * `container-backend/src/protocol.rs`:
 *
 *   nekton-init <job pid> <status fd> <ready fd>
 *       The container's init (PID 1), exec'd by P2 once the job's process (P3) has exec'd
 *       nekton-exec: non-dumpable, named, then writes LIFELINE_GO on <ready fd> (nekton-exec
 *       waits for it before it runs the job's program), reaps every child, forwards TERM INT HUP
 *       QUIT USR1 USR2 to the job, and when the job has exited writes the status record on
 *       <status fd> and exits.
 *
 *   nekton-exec <error fd> <ready fd> <n> <candidate 1> ... <candidate n> <argv 0> <argv 1> ...
 *       The job's launcher, exec'd by P3 as its last step (seccomp, credentials and rlimits are
 *       already the job's): waits for LIFELINE_GO on <ready fd> (EOF: the init failed, exit 127
 *       without a report — the init's error is the one reported), then `execve`s each candidate
 *       with the job's argv and environment, and reports a failure on <error fd> (close-on-exec:
 *       EOF means the job runs).
 *
 * Anything else (a job that runs this file on purpose, e.g. through `#!/proc/self/exe`) gets a
 * line on stderr and exit status 127. The process runs with the job's privileges then.
 */

#include <asm/unistd.h>

typedef unsigned long u64;
typedef long i64;

#define SIGHUP 1
#define SIGINT 2
#define SIGQUIT 3
#define SIGKILL 9
#define SIGUSR1 10
#define SIGUSR2 12
#define SIGTERM 15
#define SIGCHLD 17

#define EINTR 4
#define ENOENT 2
#define ENOTDIR 20
#define EACCES 13
#define EPERM 1
#define EISDIR 21

#define F_SETFD 2
#define FD_CLOEXEC 1
#define WNOHANG 1
#define SIG_BLOCK 0
#define RUSAGE_CHILDREN (-1)
#define PR_SET_PDEATHSIG 1
#define PR_SET_DUMPABLE 4
#define PR_SET_NAME 15
#define AT_FDCWD (-100)
#define O_PATH 010000000
#define O_NOFOLLOW 0400000
#define O_CLOEXEC 02000000

/* Must match protocol.rs: LIFELINE_GO, the status record and the exec error report. */
#define READY_BYTE 'g'
#define KIND_EXITED 1
#define KIND_SIGNALED 2
#define STATUS_LEN 40
#define REPORT_NOT_FOUND 'N'
#define REPORT_EXEC 'E'
#define EXEC_ERRNO 'e'
#define EXEC_NO_INTERPRETER 'i'
#define TEXT_MAX 2000

#if defined(__x86_64__)
__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  xor %rbp, %rbp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call helper_main\n"
        "  hlt\n");

static i64 sc(i64 n, i64 a, i64 b, i64 c, i64 d, i64 e, i64 f) {
    register i64 r10 __asm__("r10") = d;
    register i64 r8 __asm__("r8") = e;
    register i64 r9 __asm__("r9") = f;
    i64 ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#elif defined(__aarch64__)
__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  mov x29, #0\n"
        "  mov x30, #0\n"
        "  mov x0, sp\n"
        "  bl helper_main\n"
        "  brk #0\n");

static i64 sc(i64 n, i64 a, i64 b, i64 c, i64 d, i64 e, i64 f) {
    register i64 x8 __asm__("x8") = n;
    register i64 x0 __asm__("x0") = a;
    register i64 x1 __asm__("x1") = b;
    register i64 x2 __asm__("x2") = c;
    register i64 x3 __asm__("x3") = d;
    register i64 x4 __asm__("x4") = e;
    register i64 x5 __asm__("x5") = f;
    __asm__ volatile("svc 0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory");
    return x0;
}
#else
#error "nekton's container helper supports x86_64 and aarch64"
#endif

#define SC1(n, a) sc(n, (i64)(a), 0, 0, 0, 0, 0)
#define SC2(n, a, b) sc(n, (i64)(a), (i64)(b), 0, 0, 0, 0)
#define SC3(n, a, b, c) sc(n, (i64)(a), (i64)(b), (i64)(c), 0, 0, 0)
#define SC4(n, a, b, c, d) sc(n, (i64)(a), (i64)(b), (i64)(c), (i64)(d), 0, 0)

/* The compiler may emit calls to these for loops over bytes. */
void *memset(void *d, int c, unsigned long n) {
    unsigned char *p = d;
    while (n--)
        *p++ = (unsigned char)c;
    return d;
}

void *memcpy(void *d, const void *s, unsigned long n) {
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

static __attribute__((noreturn)) void die(int code) {
    for (;;)
        SC1(__NR_exit_group, code);
}

static int eq(const char *a, const char *b) {
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

/* A non-negative decimal that fits an int; -1 otherwise. */
static int parse_uint(const char *s) {
    i64 v = 0;
    if (!s || !*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
        if (v > 0x7fffffff)
            return -1;
    }
    return (int)v;
}

static void write_all(int fd, const char *buf, unsigned long n) {
    while (n > 0) {
        i64 r = SC3(__NR_write, fd, buf, n);
        if (r == -EINTR)
            continue;
        if (r <= 0)
            return;
        buf += r;
        n -= (unsigned long)r;
    }
}

static void put_u32(unsigned char *b, unsigned int v) {
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *b, u64 v) {
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

/* ------------------------------------------------------------------------------------------ */
/* nekton-init */

struct ktimeval {
    i64 sec;
    i64 usec;
};

struct krusage {
    struct ktimeval utime;
    struct ktimeval stime;
    i64 maxrss;
    i64 rest[13];
};

static u64 micros(struct ktimeval t) {
    u64 s = t.sec > 0 ? (u64)t.sec : 0;
    u64 us = t.usec > 0 ? (u64)t.usec : 0;
    return s * 1000000 + us;
}

static __attribute__((noreturn)) void report_and_exit(int status_fd, int status) {
    struct krusage ru;
    memset(&ru, 0, sizeof ru);
    SC2(__NR_getrusage, RUSAGE_CHILDREN, &ru);
    unsigned char rec[STATUS_LEN];
    int sig = status & 0x7f;
    /* WIFSIGNALED: a signal number that is neither 0 (exited) nor 0x7f (stopped). */
    if (sig != 0 && sig != 0x7f) {
        put_u32(rec, KIND_SIGNALED);
        put_u32(rec + 4, (unsigned int)sig);
    } else {
        put_u32(rec, KIND_EXITED);
        put_u32(rec + 4, (unsigned int)((status >> 8) & 0xff));
    }
    put_u64(rec + 8, micros(ru.utime));
    put_u64(rec + 16, micros(ru.stime));
    put_u64(rec + 24, ru.maxrss > 0 ? (u64)ru.maxrss : 0);
    /* The writable layer's bytes: statfs of "/" (the overlay) reports its upper filesystem, the
     * job's scratch tmpfs. The generic 64-bit struct statfs: f_type, f_bsize, f_blocks, f_bfree,
     * ... (words 1-3 are what this needs). 0 if the call fails. */
    i64 st[16];
    memset(st, 0, sizeof st);
    u64 used = 0;
    if (SC2(__NR_statfs, "/", st) == 0 && st[1] > 0 && (u64)st[2] >= (u64)st[3])
        used = ((u64)st[2] - (u64)st[3]) * (u64)st[1];
    put_u64(rec + 32, used);
    write_all(status_fd, (const char *)rec, STATUS_LEN);
    /* PID 1 exiting makes the kernel kill every remaining process of the namespace. */
    die(0);
}

static __attribute__((noreturn)) void init_main(char **argv) {
    int job = parse_uint(argv[1]);
    int status_fd = parse_uint(argv[2]);
    int ready_fd = parse_uint(argv[3]);
    if (job <= 0 || status_fd < 0 || ready_fd < 0)
        die(127);
    /* First: the job must never ptrace this process or open its memory or exe (it keeps every
     * capability, outside the job's seccomp filter). The job does not run yet. */
    if (SC2(__NR_prctl, PR_SET_DUMPABLE, 0) != 0)
        die(126);
    SC2(__NR_prctl, PR_SET_NAME, "nekton-init");
    /* Kept across execve already; set again so no exec rule can have cleared it. */
    SC2(__NR_prctl, PR_SET_PDEATHSIG, SIGKILL);
    u64 set = (1UL << (SIGCHLD - 1)) | (1UL << (SIGTERM - 1)) | (1UL << (SIGINT - 1)) |
              (1UL << (SIGHUP - 1)) | (1UL << (SIGQUIT - 1)) | (1UL << (SIGUSR1 - 1)) |
              (1UL << (SIGUSR2 - 1));
    /* Blocked by P2 before the fork and kept across execve; again, in case. */
    SC4(__NR_rt_sigprocmask, SIG_BLOCK, &set, 0, sizeof set);
    char go = READY_BYTE;
    write_all(ready_fd, &go, 1);
    SC1(__NR_close, ready_fd);
    for (;;) {
        for (;;) {
            int status = 0;
            i64 r = SC4(__NR_wait4, -1, &status, WNOHANG, 0);
            if (r <= 0)
                break;
            if (r == job)
                report_and_exit(status_fd, status);
        }
        i64 sig = SC4(__NR_rt_sigtimedwait, &set, 0, 0, sizeof set);
        if (sig > 0 && sig != SIGCHLD)
            SC2(__NR_kill, job, sig);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* nekton-exec */

static __attribute__((noreturn)) void report(int fd, const char *msg, unsigned long n) {
    write_all(fd, msg, n);
    die(127);
}

/* REPORT_EXEC message: kind, reason, errno (i32 LE), the candidate path. */
static __attribute__((noreturn)) void report_exec(int fd, char reason, int err, const char *path) {
    static char buf[TEXT_MAX + 1];
    unsigned long n = 0;
    buf[n++] = REPORT_EXEC;
    buf[n++] = reason;
    put_u32((unsigned char *)buf + n, (unsigned int)err);
    n += 4;
    for (const char *p = path; *p && n < sizeof buf; p++)
        buf[n++] = *p;
    report(fd, buf, n);
}

static int exists(const char *path) {
    i64 fd = SC4(__NR_openat, AT_FDCWD, path, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    SC1(__NR_close, fd);
    return 1;
}

static __attribute__((noreturn)) void exec_main(int argc, char **argv, char **envp) {
    int err_fd = parse_uint(argv[1]);
    int ready_fd = parse_uint(argv[2]);
    int n = argc > 3 ? parse_uint(argv[3]) : -1;
    if (err_fd < 0 || ready_fd < 0 || n < 1 || n > argc - 5)
        die(127);
    char **cands = argv + 4;
    char **job_argv = argv + 4 + n;
    /* The job's program runs only once the container's init is this helper too: until then the
     * init is a fork of the worker (see helper.rs). */
    for (;;) {
        char b = 0;
        i64 r = SC3(__NR_read, ready_fd, &b, 1);
        if (r == -EINTR)
            continue;
        if (r == 1 && b == READY_BYTE)
            break;
        die(127);
    }
    SC1(__NR_close, ready_fd);
    /* Open until the job's program runs: EOF on it is the worker's "started". */
    SC3(__NR_fcntl, err_fd, F_SETFD, FD_CLOEXEC);
    const char *denied = 0;
    int denied_err = 0;
    for (int i = 0; i < n; i++) {
        i64 e = -SC3(__NR_execve, cands[i], job_argv, envp);
        if (e == ENOENT || e == ENOTDIR) {
            /* A file that exists but "does not": its interpreter or loader is missing. */
            if (exists(cands[i]))
                report_exec(err_fd, EXEC_NO_INTERPRETER, (int)e, cands[i]);
        } else if (e == EACCES || e == EPERM || e == EISDIR) {
            if (!denied) {
                denied = cands[i];
                denied_err = (int)e;
            }
        } else {
            report_exec(err_fd, EXEC_ERRNO, (int)e, cands[i]);
        }
    }
    if (denied)
        report_exec(err_fd, EXEC_ERRNO, denied_err, denied);
    static char buf[TEXT_MAX + 1];
    unsigned long k = 0;
    buf[k++] = REPORT_NOT_FOUND;
    for (const char *p = job_argv[0]; *p && k < sizeof buf; p++)
        buf[k++] = *p;
    report(err_fd, buf, k);
}

/* ------------------------------------------------------------------------------------------ */

__attribute__((noreturn, used)) void helper_main(i64 *sp) {
    int argc = (int)sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    if (argc >= 4 && eq(argv[0], "nekton-init"))
        init_main(argv);
    if (argc >= 6 && eq(argv[0], "nekton-exec"))
        exec_main(argc, argv, envp);
    static const char usage[] =
        "nekton container helper: not a program to run (see container-backend/src/helper.rs)\n";
    write_all(2, usage, sizeof usage - 1);
    die(127);
}

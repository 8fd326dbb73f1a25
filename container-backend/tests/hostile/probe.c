/* The hostile-job probe: tries what a container job must not be able to do and prints what
 * happened, one `name=RESULT` line each (RESULT is OK or the errno name). Built with
 * `gcc -static` by the tests (runtime-core/tests/probe_support) and run inside test images.
 *
 * Where possible the arguments are chosen so that the call would NOT fail with EPERM if
 * seccomp let it through (bad pointers, bad flags, harmless no-ops that succeed), so an EPERM
 * here is the profile's doing, not only a missing capability. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

static void report(const char *name, long r, int err) {
    if (r >= 0)
        printf("%s=OK\n", name);
    else
        printf("%s=%s\n", name, strerrorname_np(err) ? strerrorname_np(err) : "E?");
    fflush(stdout);
}

/* Runs `call` in a forked child (so a call that succeeds changes nothing here) and reports
 * its result: the child exits with 0 for success, else with the errno. */
#define IN_CHILD(name, call)                                              \
    do {                                                                  \
        pid_t p_ = fork();                                                \
        if (p_ == 0) {                                                    \
            long r_ = (long)(call);                                       \
            _exit(r_ >= 0 ? 0 : (errno & 0xff));                          \
        }                                                                 \
        int st_ = 0;                                                      \
        waitpid(p_, &st_, 0);                                             \
        if (WIFSIGNALED(st_))                                             \
            printf("%s=SIG%d\n", name, WTERMSIG(st_));                     \
        else                                                              \
            report(name, WEXITSTATUS(st_) ? -1 : 0, WEXITSTATUS(st_));    \
        fflush(stdout);                                                   \
    } while (0)

#define DIRECT(name, call)              \
    do {                                \
        errno = 0;                      \
        long r_ = (long)(call);         \
        report(name, r_, errno);        \
    } while (0)

static long raw_clone(unsigned long flags) {
    long r = syscall(SYS_clone, flags, 0, 0, 0, 0);
    if (r == 0)
        _exit(0);
    if (r > 0)
        waitpid((pid_t)r, NULL, __WALL);
    return r;
}

static long raw_clone3(unsigned long flags) {
    struct clone_args a;
    memset(&a, 0, sizeof a);
    a.flags = flags;
    a.exit_signal = SIGCHLD;
    long r = syscall(SYS_clone3, &a, sizeof a);
    if (r == 0)
        _exit(0);
    if (r > 0)
        waitpid((pid_t)r, NULL, 0);
    return r;
}

static void *thread_main(void *arg) { return arg; }

static int syscalls(void) {
    struct timespec ts = {0, 0};
    struct timeval bad_tv = {0, 2000000};
    char buf[16];
    struct iovec local = {buf, sizeof buf}, remote = {buf, sizeof buf};

    /* Namespaces. */
    IN_CHILD("unshare_user", unshare(CLONE_NEWUSER));
    IN_CHILD("unshare_mount", unshare(CLONE_NEWNS));
    IN_CHILD("unshare_net", unshare(CLONE_NEWNET));
    IN_CHILD("unshare_pid", unshare(CLONE_NEWPID));
    IN_CHILD("unshare_time", unshare(CLONE_NEWTIME));
    IN_CHILD("unshare_files", unshare(CLONE_FILES));
    IN_CHILD("clone_user", raw_clone(CLONE_NEWUSER | SIGCHLD));
    IN_CHILD("clone_net", raw_clone(CLONE_NEWNET | SIGCHLD));
    IN_CHILD("clone_plain", raw_clone(SIGCHLD));
    IN_CHILD("clone3_plain", raw_clone3(0));
    IN_CHILD("clone3_user", raw_clone3(CLONE_NEWUSER));
    IN_CHILD("setns", syscall(SYS_setns, -1, 0));
    pthread_t t;
    int te = pthread_create(&t, NULL, thread_main, NULL);
    if (te == 0)
        pthread_join(t, NULL);
    report("pthread_create", te ? -1 : 0, te);

    /* Keys, bpf, perf, userfaultfd, io_uring. */
    IN_CHILD("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 1));
    IN_CHILD("add_key", syscall(SYS_add_key, "user", "nekton", "x", 1, -2 /* process */));
    IN_CHILD("request_key", syscall(SYS_request_key, "user", "nekton-none", NULL, 0));
    IN_CHILD("bpf", syscall(SYS_bpf, 5 /* PROG_LOAD */, NULL, 0));
    IN_CHILD("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    IN_CHILD("userfaultfd", syscall(SYS_userfaultfd, 1 /* UFFD_USER_MODE_ONLY */));
    IN_CHILD("io_uring_setup", syscall(SYS_io_uring_setup, 1, NULL));
    IN_CHILD("io_uring_enter", syscall(SYS_io_uring_enter, -1, 0, 0, 0, NULL, 0));
    IN_CHILD("io_uring_register", syscall(SYS_io_uring_register, -1, 0, NULL, 0));

    /* Mounts. */
    IN_CHILD("mount", syscall(SYS_mount, (void *)1, (void *)1, (void *)1, 0, (void *)1));
    IN_CHILD("umount2", syscall(SYS_umount2, "/", 0xffffffff));
    IN_CHILD("fsopen", syscall(SYS_fsopen, "tmpfs", 0));
    IN_CHILD("fsmount", syscall(SYS_fsmount, -1, 0, 0));
    IN_CHILD("move_mount", syscall(SYS_move_mount, -1, "", -1, "", 0));
    IN_CHILD("open_tree", syscall(SYS_open_tree, -1, "", 0xffffffff));
    IN_CHILD("pivot_root", syscall(SYS_pivot_root, ".", "."));
    IN_CHILD("open_by_handle_at", syscall(SYS_open_by_handle_at, -1, NULL, 0));

    /* The host: kexec, modules, power, swap, accounting, clock, log. */
    IN_CHILD("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    IN_CHILD("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0, "", 0));
    IN_CHILD("init_module", syscall(SYS_init_module, NULL, 0, ""));
    IN_CHILD("finit_module", syscall(SYS_finit_module, -1, "", 0));
    IN_CHILD("delete_module", syscall(SYS_delete_module, "nekton_none", 0));
    IN_CHILD("reboot", syscall(SYS_reboot, 0, 0, 0, NULL));
    IN_CHILD("swapon", syscall(SYS_swapon, "/nonexistent", 0));
    IN_CHILD("swapoff", syscall(SYS_swapoff, "/nonexistent"));
    IN_CHILD("acct", syscall(SYS_acct, NULL));
    IN_CHILD("clock_settime", syscall(SYS_clock_settime, -1, &ts));
    IN_CHILD("settimeofday", syscall(SYS_settimeofday, &bad_tv, NULL));
    IN_CHILD("syslog", syscall(SYS_syslog, 100, NULL, 0));

    /* Other processes. */
    IN_CHILD("ptrace_traceme", ptrace(PTRACE_TRACEME, 0, NULL, NULL));
    IN_CHILD("process_vm_readv", process_vm_readv(getpid(), &local, 1, &remote, 1, 0));
    IN_CHILD("kcmp", syscall(SYS_kcmp, getpid(), getpid(), 0 /* KCMP_FILE */, 0, 0));
    IN_CHILD("pidfd_getfd", syscall(SYS_pidfd_getfd, syscall(SYS_pidfd_open, getpid(), 0), 0, 0));

    /* Argument checks, newer syscalls, another ABI's numbers. */
    IN_CHILD("personality_query", personality(0xffffffff));
    IN_CHILD("personality_read_implies_exec", personality(0x0400000));
    IN_CHILD("socket_vsock", socket(40 /* AF_VSOCK */, SOCK_STREAM, 0));
    IN_CHILD("syscall_463", syscall(463, 0, 0, 0, 0));
#ifdef __x86_64__
    IN_CHILD("x32_getpid", syscall(0x40000000 | 39));
#endif

    /* Controls: ordinary things still work. */
    IN_CHILD("fork", ({ pid_t c = fork(); if (c == 0) _exit(0); waitpid(c, NULL, 0); (long)c; }));
    IN_CHILD("chroot", chroot("."));
    IN_CHILD("mmap", (long)(mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED ? -1 : 0));
    return 0;
}

static int ptrace_probe(void) {
    IN_CHILD("ptrace_attach_init", ptrace(PTRACE_ATTACH, 1, NULL, NULL));
    pid_t sib = fork();
    if (sib == 0) {
        pause();
        _exit(0);
    }
    IN_CHILD("ptrace_attach_sibling", ptrace(PTRACE_ATTACH, sib, NULL, NULL));
    IN_CHILD("ptrace_seize_sibling", ptrace(PTRACE_SEIZE, sib, NULL, NULL));
    int fd = open("/proc/1/mem", O_RDONLY);
    report("open_proc_1_mem", fd, errno);
    kill(sib, SIGKILL);
    waitpid(sib, NULL, 0);
    return 0;
}

static int sockets(void) {
    DIRECT("raw_inet", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    DIRECT("raw_inet6", socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6));
    DIRECT("packet", socket(AF_PACKET, SOCK_RAW, htons(0x0003)));
    DIRECT("vsock", socket(40, SOCK_STREAM, 0));
    DIRECT("tcp", socket(AF_INET, SOCK_STREAM, 0));
    DIRECT("udp", socket(AF_INET, SOCK_DGRAM, 0));
    DIRECT("unix", socket(AF_UNIX, SOCK_STREAM, 0));
    return 0;
}

static int nodes(void) {
    DIRECT("mknod_char", mknod("/tmp/mem", S_IFCHR | 0666, makedev(1, 1)));
    DIRECT("mknod_block", mknod("/tmp/sda", S_IFBLK | 0666, makedev(8, 0)));
    DIRECT("mknod_fifo", mknod("/tmp/fifo", S_IFIFO | 0666, 0));
    return 0;
}

static int ids(void) {
    printf("uid=%d euid=%d gid=%d egid=%d\n", getuid(), geteuid(), getgid(), getegid());
    return 0;
}

/* Open descriptors among 0..65535. */
static int fds(void) {
    int n = 0;
    for (int fd = 0; fd < 65536; fd++)
        if (fcntl(fd, F_GETFD) >= 0) {
            printf("%s%d", n ? " " : "", fd);
            n++;
        }
    printf("\n");
    return 0;
}

static int tcp_connect(const char *host, int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    DIRECT("connect", connect(s, (struct sockaddr *)&a, sizeof a));
    return 0;
}

static int abstract_connect(const char *name) {
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t n = strlen(name);
    if (n > sizeof a.sun_path - 1)
        n = sizeof a.sun_path - 1;
    memcpy(a.sun_path + 1, name, n);
    DIRECT("connect_abstract", connect(s, (struct sockaddr *)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)));
    return 0;
}

/* A 32-bit (int 0x80) getpid: another ABI, which the filters' arch check kills. */
static int int80(void) {
    printf("before\n");
    fflush(stdout);
#ifdef __x86_64__
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(20) : "memory");
    printf("after=%ld\n", r);
    return 0;
#else
    printf("int80: x86_64 only\n");
    return 2;
#endif
}

/* `threads N`: N threads, each sleeping a little (clone3 ENOSYS → clone fallback). */
static void *sleeper(void *arg) {
    usleep(100000);
    return arg;
}
static int threads(int n) {
    pthread_t *t = calloc((size_t)n, sizeof *t);
    int made = 0, err = 0;
    for (int i = 0; i < n; i++) {
        err = pthread_create(&t[i], NULL, sleeper, NULL);
        if (err)
            break;
        made++;
    }
    for (int i = 0; i < made; i++)
        pthread_join(t[i], NULL);
    printf("threads=%d%s%s\n", made, err ? " error=" : "", err ? strerrorname_np(err) : "");
    return 0;
}

/* `bomb`: forks and threads as fast as it can, forever (fork + thread bomb). */
static _Noreturn void bomb(void) {
    for (;;) {
        pthread_t t;
        if (fork() < 0)
            usleep(1000);
        pthread_create(&t, NULL, sleeper, NULL);
    }
}

/* `alloc|mmap|shmem N`: N MiB of heap, private anonymous or shared anonymous memory, touched
 * page by page. Under a smaller memory limit this never prints. */
static int memory(const char *kind, long mib) {
    size_t len = (size_t)mib << 20;
    char *p;
    if (!strcmp(kind, "alloc"))
        p = malloc(len);
    else
        p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                 (!strcmp(kind, "shmem") ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);
    if (!p || p == MAP_FAILED) {
        printf("%s=%s\n", kind, strerrorname_np(errno));
        return 1;
    }
    for (size_t i = 0; i < len; i += 4096)
        p[i] = 1;
    printf("%s=%ld MiB touched\n", kind, mib);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: probe syscalls|ptrace|sockets|nodes|ids|fds|connect H P|abstract N|int80|threads N|bomb|alloc N|mmap N|shmem N\n");
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "syscalls")) return syscalls();
    if (!strcmp(c, "ptrace")) return ptrace_probe();
    if (!strcmp(c, "sockets")) return sockets();
    if (!strcmp(c, "nodes")) return nodes();
    if (!strcmp(c, "ids")) return ids();
    if (!strcmp(c, "fds")) return fds();
    if (!strcmp(c, "connect") && argc == 4) return tcp_connect(argv[2], atoi(argv[3]));
    if (!strcmp(c, "abstract") && argc == 3) return abstract_connect(argv[2]);
    if (!strcmp(c, "int80")) return int80();
    if (!strcmp(c, "threads") && argc == 3) return threads(atoi(argv[2]));
    if (!strcmp(c, "bomb")) bomb();
    if ((!strcmp(c, "alloc") || !strcmp(c, "mmap") || !strcmp(c, "shmem")) && argc == 3)
        return memory(c, atol(argv[2]));
    fprintf(stderr, "probe: unknown command %s\n", c);
    return 2;
}

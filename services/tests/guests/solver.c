/* The container suites' program under test: solver.rs's commands in C, compiled in the test's
 * image by tcc. No headers (the image carries a compiler and libc, not libc's headers): the few
 * libc functions it calls are declared here. */
int printf(const char *, ...);
int sscanf(const char *, const char *, ...);
int strcmp(const char *, const char *);
long read(int, void *, unsigned long);
long write(int, const void *, unsigned long);
void *malloc(unsigned long);
void *memset(void *, int, unsigned long);
void abort(void);
void exit(int);
int access(const char *, int);
int open(const char *, int, ...);
int close(int);

static char in[65536];

int main(void) {
    long n = 0, r;
    while ((r = read(0, in + n, sizeof(in) - 1 - n)) > 0) n += r;
    in[n] = 0;
    char cmd[32] = {0};
    int used = 0;
    if (sscanf(in, "%31s%n", cmd, &used) != 1) { printf("no command\n"); return 2; }
    char *rest = in + used;
    if (!strcmp(cmd, "sum")) {
        long long s = 0, x; int k;
        while (sscanf(rest, "%lld%n", &x, &k) == 1) { s += x; rest += k; }
        printf("%lld\n", s);
    } else if (!strcmp(cmd, "div")) {
        double a, b; sscanf(rest, "%lf %lf", &a, &b); printf("%.9f\n", a / b);
    } else if (!strcmp(cmd, "perm")) {
        char tok[64][64]; int t = 0, k;
        while (t < 64 && sscanf(rest, "%63s%n", tok[t], &k) == 1) { rest += k; t++; }
        for (int i = t - 1; i >= 0; i--) printf(i ? "%s " : "%s\n", tok[i]);
    } else if (!strcmp(cmd, "loop")) {
        volatile unsigned long x = 1; for (;;) x = x * 6364136223846793005UL + 1;
    } else if (!strcmp(cmd, "alloc")) {
        for (;;) { char *p = malloc(1 << 20); if (!p) abort(); memset(p, 1, 1 << 20); }
    } else if (!strcmp(cmd, "crash")) {
        *(volatile int *)0 = 1;
    } else if (!strcmp(cmd, "exit")) {
        int c = 0; sscanf(rest, "%d", &c); exit(c);
    } else if (!strcmp(cmd, "flood")) {
        static char y[4096]; memset(y, 'y', sizeof y); for (;;) write(1, y, sizeof y);
    } else if (!strcmp(cmd, "write")) {
        char path[256]; sscanf(rest, "%255s", path);
        int existed = access(path, 0) == 0;
        int fd = open(path, 01 | 0100 | 01000, 0644); /* O_WRONLY|O_CREAT|O_TRUNC */
        if (fd < 0) { printf("cannot write %s\n", path); return 3; }
        write(fd, "mine", 4); close(fd);
        printf(existed ? "seen\n" : "fresh\n");
    } else {
        printf("unknown command %s\n", cmd); return 2;
    }
    return 0;
}

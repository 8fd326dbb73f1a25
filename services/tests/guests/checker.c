/* The container suites' checker (checker.rs in C): `checker INPUT EXPECTED ACTUAL` accepts
 * (exit 0) when ACTUAL's tokens are a permutation of EXPECTED's, else rejects (exit 1). */
int printf(const char *, ...);
int strcmp(const char *, const char *);
int sscanf(const char *, const char *, ...);
int open(const char *, int, ...);
long read(int, void *, unsigned long);
void qsort(void *, unsigned long, unsigned long, int (*)(const void *, const void *));

static int cmp(const void *a, const void *b) { return strcmp(a, b); }

static int tokens(const char *path, char tok[][64]) {
    static char buf[65536];
    int fd = open(path, 0), t = 0, k;
    long n = fd < 0 ? 0 : read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    const char *p = buf;
    while (t < 256 && sscanf(p, "%63s%n", tok[t], &k) == 1) { p += k; t++; }
    qsort(tok, t, 64, cmp);
    return t;
}

int main(int argc, char **argv) {
    static char e[256][64], a[256][64];
    if (argc < 4) { printf("usage: checker INPUT EXPECTED ACTUAL\n"); return 3; }
    int ne = tokens(argv[2], e), na = tokens(argv[3], a);
    if (ne == na) {
        int i = 0;
        while (i < ne && !strcmp(e[i], a[i])) i++;
        if (i == ne) { printf("ok: a permutation of the %d expected tokens\n", ne); return 0; }
    }
    printf("not a permutation of the expected tokens\n");
    return 1;
}

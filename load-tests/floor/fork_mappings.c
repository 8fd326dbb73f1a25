/* What a fork costs per mapping of the forking process (load-tests/README.md, "A Wasm pool the size
 * of the worker's slots"). Maps N "stacks" laid out as wasmtime's pooling allocator lays out its
 * async stacks (one region; each stack a 4 KiB PROT_NONE guard page, then 2 MiB read-write: two
 * mappings per stack), then times fork + _exit + waitpid, the copy and the teardown of the
 * address space that every container process forked from the worker pays.
 *   gcc -O2 -o /tmp/fork_mappings fork_mappings.c && for n in 0 32 128 256; do /tmp/fork_mappings $n; done
 * A second argument `touch` writes one byte at the top of each stack first (a stack that ran a
 * job has page tables of its own to copy). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 0;
    int touch = argc > 2 && strcmp(argv[2], "touch") == 0;
    size_t stack = 2u << 20, guard = 4096;
    if (n > 0) {
        char *base = mmap(NULL, (stack + guard) * n, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED) { perror("mmap"); return 1; }
        for (int i = 0; i < n; i++) {
            if (mprotect(base + i * (stack + guard), guard, PROT_NONE) != 0) { perror("mprotect"); return 1; }
            if (touch) base[i * (stack + guard) + guard + stack - 64] = 1;
        }
    }
    const int rounds = 300;
    double total = 0;
    for (int r = 0; r < rounds; r++) {
        double a = now_ms();
        pid_t p = fork();
        if (p < 0) { perror("fork"); return 1; }
        if (p == 0) _exit(0);
        waitpid(p, NULL, 0);
        total += now_ms() - a;
    }
    printf("%d stacks%s: fork + exit + wait %.3f ms (mean of %d)\n", n, touch ? " (touched)" : "",
           total / rounds, rounds);
    return 0;
}

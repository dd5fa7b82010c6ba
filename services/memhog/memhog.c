/*
 * memhog: the UMS benchmark service, after the paper's (Stoyanov & Kollingbaum). Allocates N MiB,
 * fills them with pseudo-random data (so no page is zero or compressible), optionally forks K idle
 * children (which release that memory: the process count varies, the image size does not), and beats: every --interval-ms it increments a counter, and with --heartbeat HOST:PORT
 * sends the counter as a UDP datagram there. The benchmark listens outside the service and
 * measures downtime as the largest gap between heartbeats, minus the interval.
 *
 *   memhog --mib 128 [--children K] [--interval-ms 10] [--heartbeat 198.18.0.254:9999] [--port P]
 *          [--compressible PERCENT]
 *
 * With --compressible PERCENT that share of every page is text-like instead (memory that
 * compresses, as real services' does; issue 17).
 *
 * With --port P it also answers `GET /count` (the counter) and `GET /checksum` (a sum over the
 * allocated memory, computed at start-up and on demand, to show the memory crossed intact).
 * With --line-port P it speaks a line protocol too: each `count` line is answered `count N`, on
 * connections that stay open (the Frontman's TCP tests). `GET /slow?ms=N` and `POST /slow?ms=N`
 * answer the count N ms later (a request in flight inside the service when it freezes).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t *memory;
static size_t words;

static uint64_t checksum(void) {
    uint64_t sum = 0;
    for (size_t i = 0; i < words; i++) sum = sum * 31 + memory[i];
    return sum;
}

/* Requests answered later (`/slow`): their connection and when. */
enum { MAXSLOW = 64 };
static struct { int fd; long long due; } slow[MAXSLOW];
static int nslow;

static void answer(int fd, int status, const char *body) {
    char resp[256];
    int len = snprintf(resp, sizeof resp, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                       status, status == 200 ? "OK" : "Not Found", strlen(body), body);
    if (write(fd, resp, len) < 0) { /* the client went away (or the connection did not survive a move) */ }
    close(fd);
}

static void serve(int fd, unsigned long long count, uint64_t initial) {
    char req[512];
    ssize_t n = read(fd, req, sizeof req - 1);
    if (n <= 0) { close(fd); return; }
    req[n] = 0;
    char body[96];
    int status = 200;
    if ((!strncmp(req, "GET /slow", 9) || !strncmp(req, "POST /slow", 10)) && nslow < MAXSLOW) {
        const char *ms = strstr(req, "ms=");
        slow[nslow].fd = fd;
        slow[nslow++].due = now_ms() + (ms ? atoi(ms + 3) : 1000);
        return;
    }
    if (!strncmp(req, "GET /count", 10)) snprintf(body, sizeof body, "%llu\n", count);
    else if (!strncmp(req, "GET /checksum", 13)) snprintf(body, sizeof body, "%llu %llu\n", (unsigned long long)checksum(), (unsigned long long)initial);
    else { status = 404; snprintf(body, sizeof body, "not found\n"); }
    answer(fd, status, body);
}

static int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY) };
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 64) < 0) return -1;
    return fd;
}

int main(int argc, char **argv) {
    long mib = 0;
    int children = 0, interval_ms = 10, port = 0, line_port = 0, compressible = 0;
    const char *heartbeat = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = atol(argv[++i]);
        else if (!strcmp(argv[i], "--children") && i + 1 < argc) children = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--interval-ms") && i + 1 < argc) interval_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--heartbeat") && i + 1 < argc) heartbeat = argv[++i];
        else if (!strcmp(argv[i], "--port") && i + 1 < argc) port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--line-port") && i + 1 < argc) line_port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--compressible") && i + 1 < argc) compressible = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: memhog --mib N [--children K] [--interval-ms MS] [--heartbeat HOST:PORT] [--port P] [--line-port P] [--compressible PERCENT]\n");
            return 2;
        }
    }
    if (mib < 0 || mib > 1024 || children < 0 || children > 64 || interval_ms < 1 || compressible < 0 || compressible > 100) {
        fprintf(stderr, "memhog: --mib 0-1024, --children 0-64, --interval-ms >= 1, --compressible 0-100\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    words = (size_t)mib * 1024 * 1024 / sizeof(uint64_t);
    if (words) {
        memory = mmap(NULL, words * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (memory == MAP_FAILED) { perror("memhog: mmap"); return 1; }
        uint64_t x = 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid() ^ (uint64_t)now_ms();
        for (size_t i = 0; i < words; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; memory[i] = x; }
        if (compressible > 0) {
            /* The last PERCENT of every 4 KiB page becomes text-like (a record repeated with a
             * changing number), the rest stays random: memory that compresses about that much. */
            const size_t page_words = 4096 / sizeof(uint64_t), text_words = page_words * compressible / 100;
            char record[64];
            for (size_t page = 0; page + page_words <= words; page += page_words) {
                int n = snprintf(record, sizeof record, "user:%08zu name=memhog state=active score=%06zu;\n", page / page_words, page % 997);
                char *text = (char *)&memory[page + page_words - text_words];
                for (size_t b = 0; b < text_words * sizeof(uint64_t); b++) text[b] = record[b % (size_t)n];
            }
        }
    }
    uint64_t initial = words ? checksum() : 0;

    for (int i = 0; i < children; i++) {
        pid_t pid = fork();
        /* Idle helpers of their own: they let go of the parent's buffer, so the image holds the
         * N MiB once and each child adds only its own small state (what Fig. 6 measures). */
        if (pid == 0) { if (words) munmap(memory, words * sizeof(uint64_t)); for (;;) pause(); }
    }

    int udp = -1;
    struct sockaddr_in to = { .sin_family = AF_INET };
    if (heartbeat) {
        char host[64];
        const char *colon = strrchr(heartbeat, ':');
        if (!colon || colon - heartbeat >= (long)sizeof host) { fprintf(stderr, "memhog: --heartbeat HOST:PORT\n"); return 2; }
        memcpy(host, heartbeat, colon - heartbeat);
        host[colon - heartbeat] = 0;
        to.sin_port = htons(atoi(colon + 1));
        if (inet_pton(AF_INET, host, &to.sin_addr) != 1) { fprintf(stderr, "memhog: bad heartbeat address\n"); return 2; }
        /* Unconnected on purpose: a connected UDP socket is bound to the container's address, and
         * CRIU can restore it only where the container has that address again; this one is
         * bound to 0.0.0.0 and moves to any system, whatever address its container gets there. */
        udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (udp < 0) { perror("memhog: heartbeat"); return 1; }
    }
    int lfd = port > 0 ? listen_on(port) : -1;
    int line_fd = line_port > 0 ? listen_on(line_port) : -1;
    if ((port > 0 && lfd < 0) || (line_port > 0 && line_fd < 0)) { perror("memhog: listen"); return 1; }

    /* pollfds: [0] HTTP listener, [1] line listener, [2..] open line connections. */
    enum { MAXLINE = 64 };
    struct pollfd p[2 + MAXLINE];
    int nlines = 0;
    unsigned long long count = 0;
    long long next = now_ms() + interval_ms, printed = now_ms();
    for (;;) {
        long long wait = next - now_ms();
        for (int i = 0; i < nslow; i++) if (slow[i].due - now_ms() < wait) wait = slow[i].due - now_ms();
        p[0] = (struct pollfd){ .fd = lfd, .events = POLLIN };
        p[1] = (struct pollfd){ .fd = line_fd, .events = POLLIN };
        for (int i = 0; i < 2 + nlines; i++) p[i].revents = 0;
        if (poll(p, 2 + nlines, wait < 0 ? 0 : (int)wait) > 0) {
            if (p[0].revents & POLLIN) {
                int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                if (c >= 0) serve(c, count, initial);
            }
            if ((p[1].revents & POLLIN) && nlines < MAXLINE) {
                int c = accept4(line_fd, NULL, NULL, SOCK_CLOEXEC);
                if (c >= 0) p[2 + nlines++] = (struct pollfd){ .fd = c, .events = POLLIN };
            }
            for (int i = 2; i < 2 + nlines; i++) {
                if (!p[i].revents) continue;
                char buf[256], out[64];
                ssize_t n = read(p[i].fd, buf, sizeof buf);
                int answered = 1;
                /* Every `count` line in what arrived gets an answer (lines are short; a line split
                   across reads is answered when its end comes). */
                for (ssize_t k = 0; n > 0 && k < n; k++) {
                    if (buf[k] != '\n') continue;
                    int len = snprintf(out, sizeof out, "count %llu\n", count);
                    if (write(p[i].fd, out, len) < 0) { answered = 0; break; }
                }
                if (n <= 0 || !answered) {
                    close(p[i].fd);
                    p[i] = p[2 + --nlines];
                    i--;
                }
            }
        }
        for (int i = 0; i < nslow; i++) {
            if (slow[i].due > now_ms()) continue;
            char body[32];
            snprintf(body, sizeof body, "%llu\n", count);
            answer(slow[i].fd, 200, body);
            slow[i--] = slow[--nslow];
        }
        if (now_ms() >= next) {
            count++;
            next = now_ms() + interval_ms;
            if (udp >= 0) {
                char beat[32];
                int len = snprintf(beat, sizeof beat, "%llu", count);
                /* A failed send (e.g. no route while frozen/moving) is not fatal: the next beat counts. */
                if (sendto(udp, beat, len, MSG_DONTWAIT, (struct sockaddr *)&to, sizeof to) < 0) { errno = 0; }
            }
            if (now_ms() - printed >= 1000) { printed = now_ms(); printf("count %llu\n", count); }
        }
    }
}

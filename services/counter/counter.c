#define _GNU_SOURCE
/*
 * counter: the UMS test service. Keeps a counter in memory, increments it every 100 ms, prints it
 * to stdout once a second, and (with --port P) answers `GET /count` over HTTP with its value.
 * --children K forks K idle children (a process tree to carry); --state-file PATH keeps PATH open
 * and appends the count to it once a second (an open file whose contents must cross too);
 * `GET /children` answers how many of its children are alive.
 * Its whole state is in memory, so a migration that loses state shows as a counter that restarts
 * from 0. Built statically so it runs in a busybox root filesystem.
 *
 * Single-threaded on purpose: one poll() loop serves HTTP and ticks, so without --children the
 * process tree is one process and CRIU has nothing but memory and a listening socket to carry.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static pid_t children[64];
static int nchildren;

static int children_alive(void) {
    int alive = 0;
    for (int i = 0; i < nchildren; i++)
        if (kill(children[i], 0) == 0) alive++;
    return alive;
}

static void serve(int fd, unsigned long long count) {
    char req[1024];
    ssize_t n = read(fd, req, sizeof req - 1);
    if (n <= 0) { close(fd); return; }
    req[n] = 0;
    char body[64], resp[256];
    int status = 200;
    const char *reason = "OK";
    if (strncmp(req, "GET /count", 10) == 0) {
        snprintf(body, sizeof body, "%llu\n", count);
    } else if (strncmp(req, "GET /children", 13) == 0) {
        snprintf(body, sizeof body, "%d\n", children_alive());
    } else {
        status = 404; reason = "Not Found";
        snprintf(body, sizeof body, "not found\n");
    }
    int len = snprintf(resp, sizeof resp,
        "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
        status, reason, strlen(body), body);
    ssize_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, resp + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += w;
    }
    close(fd);
}

int main(int argc, char **argv) {
    int port = 0;
    int interval_ms = 100;
    int want_children = 0;
    const char *state_file = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc) port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--interval-ms") && i + 1 < argc) interval_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--children") && i + 1 < argc) want_children = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--state-file") && i + 1 < argc) state_file = argv[++i];
        else {
            fprintf(stderr, "usage: counter [--port P] [--interval-ms MS] [--children K] [--state-file PATH]\n");
            return 2;
        }
    }
    if (want_children < 0 || want_children > 64) { fprintf(stderr, "counter: --children must be 0-64\n"); return 2; }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    for (int i = 0; i < want_children; i++) {
        pid_t pid = fork();
        if (pid == 0) { for (;;) pause(); }
        if (pid > 0) children[nchildren++] = pid;
    }
    FILE *state = NULL;
    if (state_file && !(state = fopen(state_file, "a"))) { perror("counter: state file"); return 1; }

    int lfd = -1;
    if (port > 0) {
        lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY) };
        if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 128) < 0) {
            perror("counter: listen");
            return 1;
        }
    }

    unsigned long long count = 0;
    long long next = now_ms() + interval_ms;
    int ticks = 0;
    for (;;) {
        long long wait = next - now_ms();
        if (wait < 0) wait = 0;
        struct pollfd p = { .fd = lfd, .events = POLLIN };
        int r = poll(&p, lfd >= 0 ? 1 : 0, (int)wait);
        if (r > 0 && (p.revents & POLLIN)) {
            int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0) serve(c, count);
        }
        /* Catch up by whole intervals: after a freeze the counter continues from its value, it
         * does not jump by the frozen time. */
        if (now_ms() >= next) {
            count++;
            next = now_ms() + interval_ms;
            if (++ticks * interval_ms >= 1000) {
                ticks = 0;
                printf("count %llu\n", count);
                if (state) { fprintf(state, "%llu\n", count); fflush(state); }
            }
        }
    }
}

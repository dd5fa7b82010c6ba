#define _GNU_SOURCE
/*
 * counter: the UMS test service. Keeps a counter in memory, increments it every 100 ms, prints it
 * to stdout once a second, and (with --port P) answers `GET /count` over HTTP with its value.
 * --children K forks K idle children (a process tree to carry); --state-file PATH keeps PATH open
 * and appends the count to it once a second (an open file whose contents must cross too);
 * `GET /children` answers how many of its children are alive.
 * With --keep-alive, HTTP/1.1 connections are kept (up to 64 at once, until the client closes or
 * sends `Connection: close`; without it every answer closes its connection, as before), and `GET /stream?n=N` streams the count N times, one chunk per tick
 * (chunked transfer encoding): connections whose state must survive a migration (issue 16).
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

#define MAX_CLIENTS 64
static struct client { int fd; int stream_left; int keep; } clients[MAX_CLIENTS];
static int keep_alive;

static int write_all(int fd, const char *data, size_t len) {
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        off += (size_t)w;
    }
    return 0;
}

static void drop(struct client *c) {
    close(c->fd);
    c->fd = -1;
    c->stream_left = 0;
}

/* One request (one read: the tests' requests are small); keeps the connection unless the client
 * asked to close it or spoke HTTP/1.0. */
static void serve(struct client *c, unsigned long long count) {
    char req[1024];
    ssize_t n = read(c->fd, req, sizeof req - 1);
    if (n <= 0) { drop(c); return; }
    req[n] = 0;
    int keep = keep_alive && strstr(req, "HTTP/1.1") != NULL && strstr(req, "Connection: close") == NULL && strstr(req, "connection: close") == NULL;
    if (strncmp(req, "GET /stream?n=", 14) == 0) {
        int lines = atoi(req + 14);
        if (lines < 1) lines = 1;
        if (lines > 100000) lines = 100000;
        const char *head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
        if (write_all(c->fd, head, strlen(head)) < 0) { drop(c); return; }
        c->stream_left = lines;
        c->keep = keep;
        return;
    }
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
        "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: %s\r\n\r\n%s",
        status, reason, strlen(body), keep ? "keep-alive" : "close", body);
    if (write_all(c->fd, resp, (size_t)len) < 0 || !keep) drop(c);
}

/* A tick: every streaming client gets the count as one chunk; the last one ends the response. */
static void stream_tick(unsigned long long count) {
    for (int i = 0; i < MAX_CLIENTS; i++) {
        struct client *c = &clients[i];
        if (c->fd < 0 || c->stream_left <= 0) continue;
        char line[32], chunk[64];
        int len = snprintf(line, sizeof line, "%llu\n", count);
        int total = snprintf(chunk, sizeof chunk, "%x\r\n%s\r\n%s", len, line, c->stream_left == 1 ? "0\r\n\r\n" : "");
        if (write_all(c->fd, chunk, (size_t)total) < 0) { drop(c); continue; }
        if (--c->stream_left == 0 && !c->keep) drop(c);
    }
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
        else if (!strcmp(argv[i], "--keep-alive")) keep_alive = 1;
        else {
            fprintf(stderr, "usage: counter [--port P] [--interval-ms MS] [--children K] [--state-file PATH] [--keep-alive]\n");
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

    for (int i = 0; i < MAX_CLIENTS; i++) clients[i].fd = -1;
    unsigned long long count = 0;
    long long next = now_ms() + interval_ms;
    int ticks = 0;
    for (;;) {
        long long wait = next - now_ms();
        if (wait < 0) wait = 0;
        struct pollfd p[1 + MAX_CLIENTS];
        int index[1 + MAX_CLIENTS];
        int np = 0;
        if (lfd >= 0) { p[np].fd = lfd; p[np].events = POLLIN; index[np++] = -1; }
        for (int i = 0; i < MAX_CLIENTS; i++)
            if (clients[i].fd >= 0) { p[np].fd = clients[i].fd; p[np].events = POLLIN; index[np++] = i; }
        int r = poll(p, (nfds_t)np, (int)wait);
        for (int k = 0; r > 0 && k < np; k++) {
            if (!(p[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            if (index[k] < 0) {
                int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0) continue;
                int slot = -1;
                for (int i = 0; i < MAX_CLIENTS && slot < 0; i++) if (clients[i].fd < 0) slot = i;
                if (slot < 0) { close(c); continue; }
                clients[slot].fd = c;
                clients[slot].stream_left = 0;
                serve(&clients[slot], count);
            } else {
                serve(&clients[index[k]], count);
            }
        }
        /* Catch up by whole intervals: after a freeze the counter continues from its value, it
         * does not jump by the frozen time. */
        if (now_ms() >= next) {
            count++;
            stream_tick(count);
            next = now_ms() + interval_ms;
            if (++ticks * interval_ms >= 1000) {
                ticks = 0;
                printf("count %llu\n", count);
                if (state) { fprintf(state, "%llu\n", count); fflush(state); }
            }
        }
    }
}

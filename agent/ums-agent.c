#define _GNU_SOURCE
/*
 * ums-agent: the UMS checkpoint agent of the service-level approach (paper §III-C-b).
 *
 * It is a migratable image's entrypoint and the container's first process:
 *
 *   ums-agent run [--port P] -- CMD ARGS...       start CMD as the service, then serve the Coordinator
 *   ums-agent restore [--port P] [--wait S] -- CMD ARGS...
 *                                                 wait for a checkpoint from a peer agent and restore it
 *   ums-agent host [--port P] -- CMD ARGS...      container-level: run CMD as a nested runc container
 *                                                 from the unchanged image at /.ums/nested/rootfs
 *   ums-agent host-restore [--port P] [--wait S] -- CMD ARGS...
 *                                                 container-level destination: restore a nested container
 *   ums-agent version
 *
 * The service runs as the agent's child in its own session, with stdout/stderr piped through the
 * agent (so the orchestrator's logs show them). On request of its Coordinator the agent
 * checkpoints only the service's process tree with CRIU (--unprivileged: the container needs
 * CAP_CHECKPOINT_RESTORE and no seccomp filter, nothing else) and streams the images, while CRIU
 * writes them, straight to the agent in the destination container; that agent restores the tree
 * into its fresh PID namespace with the PIDs it had (CRIU uses clone3's set_tid), so extra
 * processes cost a few milliseconds each, not a PID-cycling loop.
 *
 * In host mode (container-level approach, paper §III-C-c) the same agent is the outer container's
 * PID 1 and the service is a nested runc container; DUMP pauses it and streams `runc checkpoint`'s
 * images, RESTORE runs `runc restore`, RESUME `runc resume`. The protocol is the same.
 *
 * Written in C: it is PID 1 of every migratable container, must be small and static, and its work
 * is fork/exec, waitpid and file descriptors. Protocol and stream are documented in
 * docs/service-level.md; the Swift side is UMSMigration's AgentClient.
 *
 * Control (TCP, one command per connection, one line each way):
 *   "<token> STATUS"                       -> "OK mode=run pid=1001 processes=3 frozen=0 version=1"
 *   "<token> RECEIVE <secret>"             -> "OK"      (restore mode: accept one image stream)
 *   "<token> RESTORE [seconds] [lazy=<host>:<port>] [tcp=1]"
 *                                          -> "OK pid=N restore_ms=M" once the stream is in and CRIU restored;
 *                                             with lazy= (post-copy) CRIU restores without the pages and a
 *                                             `criu lazy-pages` daemon fetches them from <host>:<port>;
 *                                             with tcp=1 (host mode) established connections are restored
 *                                             and the service is left stopped (the commit continues it)
 *   "<token> PAGES [seconds]"              -> "OK bytes=N" once the lazy-pages daemon has every page (post-copy)
 *   "<token> PAUSE"                        -> "OK paused=1" (host mode: freeze the nested container now; the
 *                                             next DUMP dumps it as it is, RESUME thaws it)
 *   "<token> DUMP <host> <port> <secret> [compress=off|auto|zstd|lz4] [lazy=<port>] [tcp=1]"
 *                                          -> "OK bytes=N files=M dump_ms=D wire=W zeros=Z packed=P" (the tree
 *                                             stays frozen; with compress= the stream is version 2; with
 *                                             lazy= the pages stay behind and CRIU serves them on <port>
 *                                             until the destination's daemon has fetched them all; with
 *                                             tcp=1, host mode, established connections are dumped too)
 *   "<token> RESUME"                       -> "OK"      (rollback: the frozen tree runs again)
 *   "<token> START"                        -> "OK pid=N" (restore mode, nothing received: start the service
 *                                             afresh, as a restart would — a cluster replaced the task)
 * Errors: "ERR <message>". The token comes from UMS_AGENT_TOKEN; without one, control is refused.
 * Image stream (TCP, from the source agent): "IMAGES <secret>\n", then the UMSI frames of
 * UMSCheckpoint's ImageStream, plus kind 3 (a carried file's data, name = absolute path) and
 * kind 4 (metadata: name = key, payload = value). The receiver answers "OK <bytes>" or "ERR ...".
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <lz4.h>
#include <zstd.h>

#define AGENT_VERSION "5"  /* 2: DUMP ... compress=, the image stream's version 2; 3: post-copy (lazy=, PAGES); 4: tcp=1 (carried connections, host mode); 5: PAUSE (host mode) */
#define DEFAULT_PORT 7079
#define WORK "/.ums/work"
#define DUMP_DIR WORK "/dump"
#define RESTORE_DIR WORK "/restore"
#define RESTORED_MARK WORK "/restored"
#define NESTED_BUNDLE "/.ums/nested"
#define NESTED_ROOT NESTED_BUNDLE "/rootfs"
#define NESTED_ID "service"
#define RUNC_ROOT "/run/ums-nested"
#define CHUNK (1 << 20)
#define PID_FLOOR 1000

enum { K_END = 0, K_DATA = 1, K_TRUNCATE = 2, K_FILE = 3, K_META = 4, K_ZEROS = 5, K_ZSTD = 6, K_LZ4 = 7 };
#define PAGE 4096
#define SAMPLE (64 << 10)

/* Version 2 of the stream (docs/image-stream.md): zero pages announced, runs of other pages
 * compressed where that pays. The policy is the DUMP's (`compress=`); 0 = version 1. */
enum { C_PLAIN = 0, C_OFF, C_AUTO, C_ZSTD, C_LZ4 };
struct packer { int policy; ZSTD_CCtx *zstd; char *out; size_t cap; long long zeros, packed; };

static int policy_named(const char *name) {
    return !strcmp(name, "off") ? C_OFF : !strcmp(name, "auto") ? C_AUTO : !strcmp(name, "zstd") ? C_ZSTD : !strcmp(name, "lz4") ? C_LZ4 : -1;
}

static int packer_open(struct packer *pk, int policy) {
    memset(pk, 0, sizeof *pk);
    pk->policy = policy;
    if (policy == C_PLAIN) return 0;
    size_t zb = ZSTD_compressBound(CHUNK), lb = (size_t)LZ4_compressBound(CHUNK);
    pk->cap = zb > lb ? zb : lb;
    pk->out = malloc(pk->cap + 8);
    pk->zstd = ZSTD_createCCtx();
    return pk->out && pk->zstd ? 0 : -1;
}

static void packer_close(struct packer *pk) {
    free(pk->out);
    if (pk->zstd) ZSTD_freeCCtx(pk->zstd);
    pk->out = NULL;
    pk->zstd = NULL;
}

static struct {
    int port;
    const char *token;
    char **command;
    const char *criu_root;
    int wait_seconds;
} cfg = { DEFAULT_PORT, NULL, NULL, "/.ums/criu", 600 };

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
/* Control and stream connections being served, at most MAX_CONNECTIONS. */
#define MAX_CONNECTIONS 16
static int connections;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static const char *mode = "run";   /* run | restore | restored */
static int host_mode;              /* container-level: the service is a nested runc container */
static pid_t service_pid;          /* root of the service's process tree */
static int busy;                   /* a DUMP or RESTORE runs */
static int frozen;                 /* a dump left the tree stopped */
static int paused_ahead;           /* host mode: PAUSE froze the nested container for the next DUMP */
static unsigned long long pipe_ino[2];     /* the service's stdout/stderr pipes */
static char receive_secret[128];
static int receive_state;          /* 0 none, 1 armed, 2 receiving, 3 complete, -1 failed */
static char receive_error[512];
static long long receive_bytes;
static unsigned long long incoming_pipe_ino[2];
/* Post-copy. Source: the CRIU (or runc) that still serves the frozen tree's pages after DUMP
 * answered. Destination: the `criu lazy-pages` daemon fetching them after RESTORE answered. */
static int serving_slot = -1;
static pid_t serving_pid;
static int serving_port;
static int fetching_slot = -1;
static pid_t fetching_pid;
static long long fetched_bytes;     /* what PAGES answered: a repeated PAGES gets the same */
static char fetch_error[600];

/* Children whose exit a thread waits for; the reaper fills in their status. */
#define WATCHED 16
static struct { pid_t pid; int done; int status; } watched[WATCHED];

static sigset_t forwarded;

static void logmsg(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ums-agent: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------- small I/O helpers ---------- */

/* ---------- SHA-256 (FIPS 180-4), for the image stream's end-to-end check ---------- */

typedef struct { uint32_t h[8]; uint64_t length; unsigned char block[64]; size_t used; } sha256_ctx;

static const uint32_t SHA256_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_init(sha256_ctx *c) {
    static const uint32_t initial[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
    memcpy(c->h, initial, sizeof initial);
    c->length = 0;
    c->used = 0;
}

static void sha256_block(sha256_ctx *c, const unsigned char *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3], e = c->h[4], f = c->h[5], g = c->h[6], h = c->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + SHA256_K[i] + w[i];
        uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g; g = f; f = e; e = d + t1; d = cc; cc = b; b = a; a = t1 + t2;
    }
    c->h[0] += a; c->h[1] += b; c->h[2] += cc; c->h[3] += d; c->h[4] += e; c->h[5] += f; c->h[6] += g; c->h[7] += h;
}

static void sha256_update(sha256_ctx *c, const void *data, size_t len) {
    const unsigned char *p = data;
    c->length += len;
    while (len > 0) {
        size_t take = 64 - c->used < len ? 64 - c->used : len;
        memcpy(c->block + c->used, p, take);
        c->used += take; p += take; len -= take;
        if (c->used == 64) { sha256_block(c, c->block); c->used = 0; }
    }
}

/* "sha256:<64 hex>" into out (at least 72 bytes). */
static void sha256_final_hex(sha256_ctx *c, char *out) {
    uint64_t bits = c->length * 8;
    unsigned char pad = 0x80;
    sha256_update(c, &pad, 1);
    unsigned char zero = 0;
    while (c->used != 56) sha256_update(c, &zero, 1);
    unsigned char length[8];
    for (int i = 0; i < 8; i++) length[i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_update(c, length, 8);
    int n = snprintf(out, 8, "sha256:");
    for (int i = 0; i < 8; i++) n += snprintf(out + n, 9, "%08x", c->h[i]);
}

/* The stream being hashed on this thread: every byte written to or read from `hashed_fd`. */
static __thread sha256_ctx *hashed;
static __thread int hashed_fd = -1;
/* ... and how many bytes that stream has carried (what crossed the wire). */
static __thread long long hashed_bytes;

static int write_all(int fd, const void *buf, size_t len) {
    if (hashed && fd == hashed_fd) { sha256_update(hashed, buf, len); hashed_bytes += (long long)len; }
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t len) {
    char *p = buf;
    size_t wanted = len;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    if (hashed && fd == hashed_fd) sha256_update(hashed, buf, wanted);
    return 0;
}

static int read_line(int fd, char *buf, size_t cap) {
    size_t len = 0;
    while (len + 1 < cap) {
        char c;
        ssize_t n = read(fd, &c, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        if (c == '\n') break;
        buf[len++] = c;
    }
    buf[len] = 0;
    if (len > 0 && buf[len - 1] == '\r') buf[len - 1] = 0;
    return (int)len;
}

static void reply(int fd, const char *fmt, ...) {
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    /* One line: newlines inside a message (log excerpts) become " | ". */
    for (int i = 0; i < n; i++) if (line[i] == '\n') line[i] = '|';
    line[n++] = '\n';
    write_all(fd, line, (size_t)n);
}

/* Compares over the longer of the two, so neither a prefix nor the length ends it early. */
static int secret_equal(const char *given, const char *expected) {
    size_t a = strlen(given), b = strlen(expected), n = a > b ? a : b;
    unsigned char diff = (unsigned char)(a != b);
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)((i < a ? given[i] : 0) ^ (i < b ? expected[i] : 0));
    return diff == 0;
}

static void put_u16(unsigned char *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
static void put_u32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = v >> (24 - 8 * i); }
static void put_u64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = v >> (56 - 8 * i); }
static uint16_t get_u16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get_u32(const unsigned char *p) { uint32_t v = 0; for (int i = 0; i < 4; i++) v = v << 8 | p[i]; return v; }
static uint64_t get_u64(const unsigned char *p) { uint64_t v = 0; for (int i = 0; i < 8; i++) v = v << 8 | p[i]; return v; }

static int send_frame(int fd, int kind, const char *name, uint64_t offset, const void *data, uint32_t len, uint32_t length_field) {
    unsigned char head[15 + PATH_MAX];
    size_t nlen = strlen(name);
    if (nlen > PATH_MAX) return -1;
    head[0] = (unsigned char)kind;
    put_u16(head + 1, (uint16_t)nlen);
    memcpy(head + 3, name, nlen);
    put_u64(head + 3 + nlen, offset);
    put_u32(head + 11 + nlen, length_field);
    if (write_all(fd, head, 15 + nlen) < 0) return -1;
    if (len > 0 && write_all(fd, data, len) < 0) return -1;
    return 0;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

static void remove_tree(const char *path) { nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

static int make_dirs(const char *path, mode_t mode_bits) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, mode_bits) < 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, mode_bits) < 0 && errno != EEXIST) return -1;
    return 0;
}

static void tail_file(const char *path, char *out, size_t cap) {
    out[0] = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)cap - 1 ? size - (off_t)cap + 1 : 0;
    ssize_t n = pread(fd, out, cap - 1, from);
    close(fd);
    if (n < 0) n = 0;
    out[n] = 0;
    /* Keep the last few lines: CRIU's error is at the end. */
    int lines = 0;
    for (ssize_t i = n - 1; i > 0; i--) {
        if (out[i] == '\n' && ++lines == 4) { memmove(out, out + i + 1, (size_t)(n - i)); break; }
    }
}

/* CRIU's errors from a verbose log (its last lines are often not the cause): the first few
 * "Error (" lines, else the log's tail. */
static void errors_of(const char *path, char *out, size_t cap) {
    out[0] = 0;
    FILE *f = fopen(path, "re");
    if (f) {
        char line[512];
        size_t used = 0;
        int found = 0;
        while (fgets(line, sizeof line, f) && found < 4) {
            if (!strstr(line, "Error (")) continue;
            found++;
            int wrote = snprintf(out + used, cap - used, "%s", line);
            if (wrote < 0 || (size_t)wrote >= cap - used) break;
            used += (size_t)wrote;
        }
        fclose(f);
        if (found) return;
    }
    tail_file(path, out, cap);
}

/* ---------- children ---------- */

static int watch_slot(pid_t pid) {
    for (int i = 0; i < WATCHED; i++)
        if (watched[i].pid == 0) { watched[i].pid = pid; watched[i].done = 0; return i; }
    return -1;
}

/* Forks with `mu` held and registers the child before the reaper can see it exit. */
static pid_t fork_watched(int *slot) {
    pthread_mutex_lock(&mu);
    pid_t pid = fork();
    if (pid == 0) {
        pthread_sigmask(SIG_UNBLOCK, &forwarded, NULL);
        signal(SIGPIPE, SIG_DFL);
        return 0;  /* the child never touches mu again */
    }
    if (pid > 0) *slot = watch_slot(pid);
    pthread_mutex_unlock(&mu);
    return pid;
}

/* Non-blocking check (wait=0) or blocking wait for a watched child; returns 1 when it exited. */
static int child_done(int slot, int wait, int *status) {
    pthread_mutex_lock(&mu);
    while (wait && !watched[slot].done) pthread_cond_wait(&cv, &mu);
    int done = watched[slot].done;
    if (done) { *status = watched[slot].status; watched[slot].pid = 0; }
    pthread_mutex_unlock(&mu);
    return done;
}

/* PID 1 reaps everything: the service, CRIU, and orphans reparented to it. */
static void *reaper(void *arg) {
    (void)arg;
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, __WALL);
        if (pid < 0) {
            if (errno != EINTR) usleep(20000);
            continue;
        }
        pthread_mutex_lock(&mu);
        for (int i = 0; i < WATCHED; i++)
            if (watched[i].pid == pid) { watched[i].done = 1; watched[i].status = status; }
        if (pid == service_pid) {
            int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            logmsg("service (pid %d) ended with status %d", pid, code);
            fflush(stdout);
            exit(code);
        }
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

/* Forwards the orchestrator's stop signals to the service. */
static void *signals(void *arg) {
    (void)arg;
    for (;;) {
        int sig;
        if (sigwait(&forwarded, &sig) != 0) continue;
        pthread_mutex_lock(&mu);
        pid_t pid = service_pid;
        pthread_mutex_unlock(&mu);
        if (pid > 0) kill(pid, sig);
        else if (sig != SIGHUP) exit(128 + sig);  /* nothing to stop: stop the container */
    }
    return NULL;
}

struct relay { int from; int to; };

static void *relay_output(void *arg) {
    struct relay r = *(struct relay *)arg;
    free(arg);
    char buf[8192];
    for (;;) {
        ssize_t n = read(r.from, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        write_all(r.to, buf, (size_t)n);
    }
    close(r.from);
    return NULL;
}

static void start_relay(int from, int to) {
    struct relay *r = malloc(sizeof *r);
    r->from = from;
    r->to = to;
    pthread_t t;
    pthread_create(&t, NULL, relay_output, r);
    pthread_detach(t);
}

/* Low PIDs would collide at a restore with the destination agent's own helpers: start the
 * service's PIDs above PID_FLOOR (no privilege needed; FastFreeze does the same). A restore sets
 * the service's PIDs without moving the namespace's next PID, so this runs after every restore
 * too: up to PID_FLOOR children. vfork, not fork: the child only exits, and a fork copies the
 * agent's page tables — ~0.5 ms each here, 0.3–0.5 s of CPU right after a RESTORE's reply,
 * when the Frontmen release what they held; a vfork is ~0.04 ms. */
static void advance_pids(void) {
    for (int i = 0; i < 4 * PID_FLOOR; i++) {
        pid_t pid = vfork();
        if (pid == 0) _exit(0);
        if (pid < 0 || pid >= PID_FLOOR) break;
    }
}

static void start_service(void) {
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) { logmsg("pipe: %s", strerror(errno)); exit(125); }
    struct stat st;
    fstat(out[1], &st); pipe_ino[0] = st.st_ino;
    fstat(err[1], &st); pipe_ino[1] = st.st_ino;
    pthread_mutex_lock(&mu);
    pid_t pid = fork();
    if (pid == 0) {
        pthread_sigmask(SIG_UNBLOCK, &forwarded, NULL);
        signal(SIGPIPE, SIG_DFL);
        setsid();
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0) { dup2(null, 0); if (null != 0) close(null); }
        dup2(out[1], 1);
        dup2(err[1], 2);
        execvp(cfg.command[0], cfg.command);
        fprintf(stderr, "ums-agent: cannot run %s: %s\n", cfg.command[0], strerror(errno));
        _exit(127);
    }
    if (pid < 0) { logmsg("fork: %s", strerror(errno)); exit(125); }
    service_pid = pid;
    mode = "run";
    pthread_mutex_unlock(&mu);
    close(out[1]);
    close(err[1]);
    start_relay(out[0], 1);
    start_relay(err[0], 2);
    logmsg("service started (pid %d): %s", pid, cfg.command[0]);
}

/* ---------- host mode: the nested container ---------- */

static void json_string(FILE *f, const char *text) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

extern char **environ;

/* CRIU options for the nested container's checkpoints and restores, as for any UMS container
 * (runc reads them through the config's org.criu.config annotation); and the older mount engine
 * at a restore: engines give their outer containers different mount propagation (Docker's
 * differs from runc's), which the newer engine insists on reproducing. CARRY (issue 16, the
 * Coordinators share a migration network): established connections are dumped and restored with
 * their sequence numbers and queues (tcp-established); UMS, not CRIU, keeps packets from them
 * while they move (network-lock skip: the outer container's link is silenced from the host), and
 * the restored service is left stopped until the destination's commit continues it. */
static int write_criu_conf(int for_restore, int carry) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/criu.conf", NESTED_BUNDLE);
    FILE *f = fopen(path, "we");
    if (!f) return -1;
    fprintf(f, "%s\nskip-in-flight\n%s%s", carry ? "tcp-established\nnetwork-lock skip" : "tcp-close",
            for_restore ? "mntns-compat-mode\n" : "",  /* a restore-only option */
            carry && for_restore ? "leave-stopped\n" : "");
    return fclose(f);
}

/* The nested container's OCI config: runc's own defaults (`runc spec`) with the service's command
 * and environment, sharing the outer container's network namespace (so the outer's published
 * ports reach the service) and placed in a cgroup below the outer's (its limits apply). */
static int write_nested_config(int for_restore) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/config.json", NESTED_BUNDLE);
    FILE *f = fopen(path, "we");
    if (!f) return -1;
    fprintf(f, "{\"ociVersion\":\"1.0.2-dev\",\"process\":{\"terminal\":false,\"user\":{\"uid\":0,\"gid\":0},\"args\":[");
    for (int i = 0; cfg.command[i]; i++) { if (i) fputc(',', f); json_string(f, cfg.command[i]); }
    fprintf(f, "],\"env\":[");
    int first = 1;
    for (char **e = environ; *e; e++) {
        if (!strncmp(*e, "UMS_AGENT_", 10)) continue;
        if (!first) fputc(',', f);
        json_string(f, *e);
        first = 0;
    }
    fprintf(f, "],\"cwd\":\"/\",\"capabilities\":{"
        "\"bounding\":[\"CAP_AUDIT_WRITE\",\"CAP_KILL\",\"CAP_NET_BIND_SERVICE\"],"
        "\"effective\":[\"CAP_AUDIT_WRITE\",\"CAP_KILL\",\"CAP_NET_BIND_SERVICE\"],"
        "\"permitted\":[\"CAP_AUDIT_WRITE\",\"CAP_KILL\",\"CAP_NET_BIND_SERVICE\"],"
        "\"ambient\":[\"CAP_AUDIT_WRITE\",\"CAP_KILL\",\"CAP_NET_BIND_SERVICE\"]},"
        "\"rlimits\":[{\"type\":\"RLIMIT_NOFILE\",\"hard\":1024,\"soft\":1024}],\"noNewPrivileges\":true},"
        "\"root\":{\"path\":\"rootfs\",\"readonly\":false},\"hostname\":\"service\","
        "\"annotations\":{\"org.criu.config\":\"" NESTED_BUNDLE "/criu.conf\"},"
        "\"mounts\":[{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\"},"
        "{\"destination\":\"/dev\",\"type\":\"tmpfs\",\"source\":\"tmpfs\",\"options\":[\"nosuid\",\"strictatime\",\"mode=755\",\"size=65536k\"]},"
        "{\"destination\":\"/dev/pts\",\"type\":\"devpts\",\"source\":\"devpts\",\"options\":[\"nosuid\",\"noexec\",\"newinstance\",\"ptmxmode=0666\",\"mode=0620\",\"gid=5\"]},"
        "{\"destination\":\"/dev/shm\",\"type\":\"tmpfs\",\"source\":\"shm\",\"options\":[\"nosuid\",\"noexec\",\"nodev\",\"mode=1777\",\"size=65536k\"]},"
        "{\"destination\":\"/dev/mqueue\",\"type\":\"mqueue\",\"source\":\"mqueue\",\"options\":[\"nosuid\",\"noexec\",\"nodev\"]},"
        "{\"destination\":\"/sys\",\"type\":\"sysfs\",\"source\":\"sysfs\",\"options\":[\"nosuid\",\"noexec\",\"nodev\",\"ro\"]}],"
        "\"linux\":{\"cgroupsPath\":\"/ums-nested/" NESTED_ID "\",\"resources\":{\"devices\":[{\"allow\":false,\"access\":\"rwm\"}]},"
        "\"namespaces\":[{\"type\":\"pid\"},{\"type\":\"ipc\"},{\"type\":\"uts\"},{\"type\":\"mount\"}],"
        "\"maskedPaths\":[\"/proc/acpi\",\"/proc/asound\",\"/proc/kcore\",\"/proc/keys\",\"/proc/latency_stats\",\"/proc/timer_list\","
        "\"/proc/timer_stats\",\"/proc/sched_debug\",\"/sys/firmware\",\"/proc/scsi\"],"
        "\"readonlyPaths\":[\"/proc/bus\",\"/proc/fs\",\"/proc/irq\",\"/proc/sys\",\"/proc/sysrq-trigger\"]}}\n");
    if (fclose(f) != 0) return -1;
    return write_criu_conf(for_restore, 0);
}

/* Runs runc with ARGS (after --root), stdio on /dev/null; returns its wait status. Before the
 * reaper runs (start-up) it waits itself; after, through the reaper. */
static int run_runc(char **args, int reaper_running) {
    char *argv[40];
    int n = 0;
    argv[n++] = "runc";
    argv[n++] = "--root";
    argv[n++] = RUNC_ROOT;
    for (int i = 0; args[i] && n < 39; i++) argv[n++] = args[i];
    argv[n] = NULL;
    int slot = -1, status = -1;
    pid_t pid = reaper_running ? fork_watched(&slot) : fork();
    if (pid == 0) {
        signal(SIGPIPE, SIG_DFL);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) { dup2(null, 0); dup2(null, 1); dup2(null, 2); }
        execvp("runc", argv);
        _exit(127);
    }
    if (pid < 0) return -1;
    if (reaper_running) { if (slot >= 0) child_done(slot, 1, &status); }
    else while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    return status;
}

static int ok_status(int status) { return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0; }

static pid_t read_pid(const char *path) {
    pid_t pid = 0;
    FILE *f = fopen(path, "re");
    if (f) { if (fscanf(f, "%d", &pid) != 1) pid = 0; fclose(f); }
    return pid;
}

/* Engines that do not run the outer container privileged (Docker without --privileged) mount
 * its cgroup hierarchies read-only; the nested runtime must create cgroups there (below the
 * outer container's own, where they are accounted). With CAP_SYS_ADMIN they can be remounted. */
static void remount_cgroups_writable(void) {
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f) return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        char target[PATH_MAX], options[512];
        if (sscanf(line, "%*s %*s %*s %*s %4095s %511s", target, options) != 2) continue;
        if (strncmp(target, "/sys/fs/cgroup", 14) != 0) continue;
        if (strncmp(options, "ro", 2) != 0 || (options[2] != ',' && options[2] != 0)) continue;
        if (mount(NULL, target, NULL, MS_REMOUNT | MS_BIND, NULL) != 0 && mount(NULL, target, NULL, MS_REMOUNT, NULL) != 0)
            logmsg("cannot remount %s writable: %s", target, strerror(errno));
    }
    fclose(f);
}

static void start_nested(int reaper_running) {
    if (write_nested_config(0) < 0) { logmsg("cannot write the nested container's config: %s", strerror(errno)); exit(125); }
    make_dirs(RUNC_ROOT, 0700);
    unlink(WORK "/nested.pid");
    char *args[] = { "run", "--detach", "--pid-file", WORK "/nested.pid", "--bundle", NESTED_BUNDLE, NESTED_ID, NULL };
    int status = run_runc(args, reaper_running);
    pid_t pid = read_pid(WORK "/nested.pid");
    if (!ok_status(status) || pid <= 0) { logmsg("cannot start the nested container (runc status %d)", status); exit(125); }
    pthread_mutex_lock(&mu);
    service_pid = pid;
    mode = "run";
    pthread_mutex_unlock(&mu);
    logmsg("nested container started (pid %d): %s", pid, cfg.command[0]);
}

/* ---------- the service's process tree ---------- */

static int parent_of(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *close_paren = strrchr(buf, ')');
    if (!close_paren) return -1;
    char state;
    int ppid;
    if (sscanf(close_paren + 2, "%c %d", &state, &ppid) != 2) return -1;
    return ppid;
}

/* Every process of the tree rooted at `root` (root first); returns the count. */
static int tree(pid_t root, pid_t *out, int cap) {
    pid_t pids[8192], parents[8192];
    int n = 0;
    DIR *dir = opendir("/proc");
    if (!dir) return 0;
    struct dirent *e;
    while ((e = readdir(dir)) && n < 8192) {
        pid_t pid = atoi(e->d_name);
        if (pid <= 0) continue;
        pids[n] = pid;
        parents[n] = parent_of(pid);
        n++;
    }
    closedir(dir);
    int count = 0;
    out[count++] = root;
    for (int i = 0; i < count && count < cap; i++)
        for (int j = 0; j < n && count < cap; j++)
            if (parents[j] == out[i]) out[count++] = pids[j];
    return count;
}

/* Regular files the tree holds open outside the agent's own directory: they travel with it. */
static int open_files(pid_t root, char files[][PATH_MAX], int cap) {
    pid_t pids[1024];
    int np = tree(root, pids, 1024), nf = 0;
    for (int i = 0; i < np; i++) {
        char dirpath[64];
        snprintf(dirpath, sizeof dirpath, "/proc/%d/fd", pids[i]);
        DIR *dir = opendir(dirpath);
        if (!dir) continue;
        struct dirent *e;
        while ((e = readdir(dir)) && nf < cap) {
            if (e->d_name[0] == '.') continue;
            char link[128], target[PATH_MAX];
            snprintf(link, sizeof link, "%s/%s", dirpath, e->d_name);
            ssize_t n = readlink(link, target, sizeof target - 1);
            if (n <= 0) continue;
            target[n] = 0;
            struct stat st;
            if (target[0] != '/' || strstr(target, " (deleted)")) continue;
            if (!strncmp(target, "/proc/", 6) || !strncmp(target, "/dev/", 5) || !strncmp(target, "/sys/", 5)) continue;
            if (host_mode && strncmp(target, NESTED_ROOT "/", sizeof NESTED_ROOT)) {
                /* A nested process's path, as its own root sees it. */
                char inside[PATH_MAX];
                snprintf(inside, sizeof inside, "%s%s", NESTED_ROOT, target);
                snprintf(target, sizeof target, "%s", inside);
            } else if (!host_mode && !strncmp(target, "/.ums/", 6)) {
                continue;
            }
            if (stat(target, &st) < 0 || !S_ISREG(st.st_mode)) continue;
            int seen = 0;
            for (int k = 0; k < nf; k++) if (!strcmp(files[k], target)) { seen = 1; break; }
            if (!seen) snprintf(files[nf++], PATH_MAX, "%s", target);
        }
        closedir(dir);
    }
    return nf;
}

/* ---------- CRIU ---------- */

/* CRIU learns what the kernel can do (its "kerndat") on every run unless it finds a cache:
 * ~65 ms here before it even seizes the service — at the source while the Frontman already holds
 * clients, at the destination inside the downtime. Unprivileged, it keeps the cache only under
 * $XDG_RUNTIME_DIR and only on a tmpfs: the container's /dev/shm, in a directory of this agent's
 * own named after the boot (a cache restored or copied from another machine is never read).
 * Only CRIU's environment has it; the service's is left as it was. */
static char criu_cache_env[128];
static char *criu_envp[256];
static int criu_env_ready;

static void prepare_criu_cache(void) {
    char boot[64] = "";
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (f) { if (!fgets(boot, sizeof boot, f)) boot[0] = 0; fclose(f); }
    boot[strcspn(boot, "\n")] = 0;
    if (strlen(boot) != 36 || strspn(boot, "0123456789abcdef-") != 36) return;
    char dir[96];
    snprintf(dir, sizeof dir, "/dev/shm/.ums-criu-%s", boot);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) return;
    /* Only a directory of this agent's own, never followed through a link. */
    struct stat st;
    if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077)) return;
    snprintf(criu_cache_env, sizeof criu_cache_env, "XDG_RUNTIME_DIR=%s", dir);
    int n = 0;
    for (char **e = environ; *e && n < 254; e++)
        if (strncmp(*e, "XDG_RUNTIME_DIR=", 16)) criu_envp[n++] = *e;
    criu_envp[n++] = criu_cache_env;
    criu_envp[n] = NULL;
    criu_env_ready = 1;
}

static void exec_criu(char **args) {
    char loader[PATH_MAX], libs[2 * PATH_MAX], criu[PATH_MAX];
    snprintf(loader, sizeof loader, "%s/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", cfg.criu_root);
    snprintf(libs, sizeof libs, "%s/usr/lib/x86_64-linux-gnu:%s/lib/x86_64-linux-gnu", cfg.criu_root, cfg.criu_root);
    snprintf(criu, sizeof criu, "%s/usr/sbin/criu", cfg.criu_root);
    char *argv[64];
    int n = 0;
    argv[n++] = loader;
    argv[n++] = "--library-path";
    argv[n++] = libs;
    argv[n++] = criu;
    for (int i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
    argv[n] = NULL;
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) { dup2(null, 0); dup2(null, 1); dup2(null, 2); }
    execve(loader, argv, criu_env_ready ? criu_envp : environ);
    _exit(127);
}

/* Container-level: the CRIU that runc runs here is root's, which keeps the cache only at
 * /run/criu.kdat and only when /run is a tmpfs; the outer container's /run is its root
 * filesystem's. A tmpfs there (runc's state for the nested container lives in it too, which a
 * restarted container starts without anyway). */
static void mount_run_tmpfs(void) {
    struct statfs fs;
    if (statfs("/run", &fs) == 0 && fs.f_type == 0x01021994 /* TMPFS_MAGIC */) return;
    if (mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=16m") != 0)
        logmsg("cannot mount a tmpfs on /run (CRIU will not keep its kernel facts): %s", strerror(errno));
}

/* Runs `criu check` once in the background so that the first DUMP or RESTORE finds the cache
 * (the reaper collects it; its outcome does not matter). Container-level: the `criu` runc finds. */
static void warm_criu_cache(void) {
    if (!host_mode && !criu_env_ready) return;
    pid_t pid = fork();
    if (pid != 0) return;
    if (host_mode) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) { dup2(null, 0); dup2(null, 1); dup2(null, 2); }
        execlp("criu", "criu", "check", (char *)NULL);
        _exit(127);
    }
    char *args[] = { "check", "--unprivileged", NULL };
    exec_criu(args);
}

/* ---------- source: DUMP ---------- */

static int connect_peer(const char *host, const char *port, char *error, size_t cap) {
    struct sockaddr_in addr = { .sin_family = AF_INET };
    int number = atoi(port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1 || number <= 0 || number > 65535) {
        snprintf(error, cap, "invalid peer address %s:%s (an IPv4 address and a port expected)", host, port);
        return -1;
    }
    addr.sin_port = htons((uint16_t)number);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        snprintf(error, cap, "cannot reach the destination agent at %s:%s: %s", host, port, strerror(errno));
        close(fd);
        return -1;
    }
    struct timeval none = { 0, 0 };
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
    return fd;
}

struct tailed { char name[256]; uint64_t offset; };

/* One pass over `from`: sends every new range of every file. Returns bytes sent or -1. */
static int all_zero(const char *p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { uint64_t w; memcpy(&w, p + i, 8); if (w) return 0; }
    for (; i < n; i++) if (p[i]) return 0;
    return 1;
}

/* Compressed `in` into pk->out when that pays (90 % or less); returns its size or 0. */
static size_t pack(struct packer *pk, int codec, const char *in, size_t n) {
    size_t size = 0;
    if (codec == C_LZ4) {
        int got = LZ4_compress_default(in, pk->out, (int)n, (int)pk->cap);
        size = got > 0 ? (size_t)got : 0;
    } else {
        size_t got = ZSTD_compressCCtx(pk->zstd, pk->out, pk->cap, in, n, 1);
        size = ZSTD_isError(got) ? 0 : got;
    }
    return size > 0 && (double)size <= (double)n * 0.9 ? size : 0;
}

/* Sends `n` bytes read at `offset` of `name`: one data frame in version 1; in version 2 runs of
 * zero pages as kind 5, other runs compressed (kind 6/7) where that pays, as data otherwise. */
static int send_range(int fd, struct packer *pk, const char *name, uint64_t offset, const char *buf, size_t n) {
    if (!pk || pk->policy == C_PLAIN) return send_frame(fd, K_DATA, name, offset, buf, (uint32_t)n, (uint32_t)n);
    size_t start = 0;
    while (start < n) {
        size_t end = start + PAGE < n ? start + PAGE : n;
        int zero = all_zero(buf + start, end - start);
        while (end < n) {
            size_t next = end + PAGE < n ? end + PAGE : n;
            if (all_zero(buf + end, next - end) != zero) break;
            end = next;
        }
        size_t len = end - start;
        if (zero) {
            if (send_frame(fd, K_ZEROS, name, offset + start, NULL, 0, (uint32_t)len) < 0) return -1;
            pk->zeros += (long long)len;
        } else {
            int codec = pk->policy == C_LZ4 ? C_LZ4 : C_ZSTD;
            size_t size = 0;
            if (pk->policy != C_OFF && (pk->policy != C_AUTO || len <= 2 * SAMPLE || pack(pk, codec, buf + start, SAMPLE) > 0))
                size = pack(pk, codec, buf + start, len);
            if (size > 0) {
                /* u32(rawLength) then the compressed bytes, written in place before them. */
                memmove(pk->out + 4, pk->out, size);
                put_u32((unsigned char *)pk->out, (uint32_t)len);
                if (send_frame(fd, codec == C_LZ4 ? K_LZ4 : K_ZSTD, name, offset + start, pk->out, (uint32_t)size + 4, (uint32_t)size + 4) < 0) return -1;
                pk->packed += (long long)len;
            } else if (send_frame(fd, K_DATA, name, offset + start, buf + start, (uint32_t)len, (uint32_t)len) < 0) {
                return -1;
            }
        }
        start = end;
    }
    return 0;
}

static long long stream_pass(int fd, const char *from, struct tailed *files, int *nfiles, char *buf, struct packer *pk) {
    long long sent = 0;
    DIR *dir = opendir(from);
    if (!dir) return -1;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.') continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", from, e->d_name);
        struct stat st;
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode)) continue;
        struct tailed *t = NULL;
        for (int i = 0; i < *nfiles; i++) if (!strcmp(files[i].name, e->d_name)) { t = &files[i]; break; }
        if (!t) {
            if (*nfiles >= 4096) { closedir(dir); return -1; }
            t = &files[(*nfiles)++];
            snprintf(t->name, sizeof t->name, "%s", e->d_name);
            t->offset = 0;
        }
        uint64_t size = (uint64_t)st.st_size;
        if (size < t->offset) {
            if (send_frame(fd, K_TRUNCATE, t->name, 0, NULL, 0, 0) < 0) { closedir(dir); return -1; }
            t->offset = 0;
        }
        if (size == t->offset) continue;
        int in = open(path, O_RDONLY | O_CLOEXEC);
        if (in < 0) { closedir(dir); return -1; }
        while (t->offset < size) {
            size_t want = size - t->offset > CHUNK ? CHUNK : (size_t)(size - t->offset);
            ssize_t got = pread(in, buf, want, (off_t)t->offset);
            if (got <= 0) break;
            if (send_range(fd, pk, t->name, t->offset, buf, (size_t)got) < 0) { close(in); closedir(dir); return -1; }
            t->offset += (uint64_t)got;
            sent += got;
        }
        close(in);
    }
    closedir(dir);
    return sent;
}

static long long send_file(int fd, const char *path, char *buf) {
    int in = open(path, O_RDONLY | O_CLOEXEC);
    if (in < 0) return -1;
    struct stat st;
    fstat(in, &st);
    char meta[64];
    int mlen = snprintf(meta, sizeof meta, "%o %lld", (unsigned)(st.st_mode & 07777), (long long)st.st_size);
    char key[PATH_MAX + 8];
    snprintf(key, sizeof key, "file:%s", path);
    if (send_frame(fd, K_META, key, 0, meta, (uint32_t)mlen, (uint32_t)mlen) < 0) { close(in); return -1; }
    long long sent = 0;
    uint64_t offset = 0;
    for (;;) {
        ssize_t got = pread(in, buf, CHUNK, (off_t)offset);
        if (got < 0) { close(in); return -1; }
        if (got == 0) break;
        if (send_frame(fd, K_FILE, path, offset, buf, (uint32_t)got, (uint32_t)got) < 0) { close(in); return -1; }
        offset += (uint64_t)got;
        sent += got;
    }
    close(in);
    return sent;
}

/* Whether `needle` appeared in the log at `path` since `*offset` (which it advances). */
static int log_says(const char *path, const char *needle, off_t *offset) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[8192];
    size_t keep = strlen(needle) - 1;
    int found = 0;
    for (;;) {
        /* Re-read the needle's length minus one before the offset: a match across two reads. */
        off_t from = *offset > (off_t)keep ? *offset - (off_t)keep : 0;
        ssize_t n = pread(fd, buf, sizeof buf - 1, from);
        if (n <= 0) break;
        buf[n] = 0;
        if (memmem(buf, (size_t)n, needle, strlen(needle))) { found = 1; break; }
        *offset = from + n;
        if ((size_t)n < sizeof buf - 1) break;
    }
    close(fd);
    return found;
}

/* Post-copy, source: ends a CRIU that serves (or is about to serve) the pages on `port` before
 * the destination fetched them all (a rollback): a connection closed at once makes its page
 * server give up, and CRIU ends; killed after 10 s if it does not. */
static void stop_serving(int slot, pid_t pid, int port) {
    int status;
    for (int tries = 0; tries < 100; tries++) {
        if (child_done(slot, 0, &status)) return;
        struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) { connect(fd, (struct sockaddr *)&addr, sizeof addr); close(fd); }
        usleep(100000);
    }
    logmsg("CRIU (pid %d) still serves pages after 10 s: killing it", pid);
    kill(pid, SIGKILL);
    child_done(slot, 1, &status);
}

/* Stops every process of the tree (SIGSTOP): a CRIU that fails while serving the pages resumes
 * the tree it dumped, and after the destination restored it must not run here again until a
 * RESUME says so. */
static void stop_tree(pid_t root) {
    pid_t pids[1024];
    int n = tree(root, pids, 1024);
    for (int i = 0; i < n; i++) kill(pids[i], SIGSTOP);
}

static void do_dump(int client, const char *host, const char *port, const char *secret, int policy, int lazy_port, int carry) {
    char error[1024] = "";
    pthread_mutex_lock(&mu);
    pid_t root = service_pid;
    if (busy || frozen || root <= 0) {
        const char *why = busy ? "another checkpoint or restore is running" : frozen ? "the service is frozen by an earlier dump" : "no service is running";
        pthread_mutex_unlock(&mu);
        reply(client, "ERR cannot dump: %s", why);
        return;
    }
    busy = 1;
    pthread_mutex_unlock(&mu);

    long long started = now_ms();
    static char carried[256][PATH_MAX];
    int ncarried = open_files(root, carried, 256);
    int peer = connect_peer(host, port, error, sizeof error);
    char *buf = malloc(CHUNK);
    struct tailed *files = calloc(4096, sizeof *files);
    int nfiles = 0, dumped = 0, serving = 0;
    long long bytes = 0, wire = 0;
    struct packer pk;
    if (packer_open(&pk, policy) < 0) { snprintf(error, sizeof error, "cannot set up compression"); goto done; }
    if (peer < 0) goto done;
    char hello[256];
    int hlen = snprintf(hello, sizeof hello, "IMAGES %s\n", secret);
    const unsigned char magic[5] = { 'U', 'M', 'S', 'I', policy == C_PLAIN ? 1 : 2 };
    char ino[32];
    /* Everything after the hello line is hashed, as the receiver hashes what it reads: its
     * answer names its digest, which must be ours (end to end, like the Coordinators' stream). */
    sha256_ctx sent_hash;
    sha256_init(&sent_hash);
    if (write_all(peer, hello, (size_t)hlen) < 0) goto lost;
    hashed = &sent_hash;
    hashed_fd = peer;
    hashed_bytes = 0;
    if (write_all(peer, magic, 5) < 0) goto lost;
    snprintf(ino, sizeof ino, "%llu", pipe_ino[0]);
    if (send_frame(peer, K_META, "pipe:stdout", 0, ino, (uint32_t)strlen(ino), (uint32_t)strlen(ino)) < 0) goto lost;
    snprintf(ino, sizeof ino, "%llu", pipe_ino[1]);
    if (send_frame(peer, K_META, "pipe:stderr", 0, ino, (uint32_t)strlen(ino), (uint32_t)strlen(ino)) < 0) goto lost;

    remove_tree(DUMP_DIR);
    if (make_dirs(DUMP_DIR, 0700) < 0) { snprintf(error, sizeof error, "cannot create %s: %s", DUMP_DIR, strerror(errno)); goto done; }
    char pidarg[16];
    snprintf(pidarg, sizeof pidarg, "%d", root);
    char *args[24] = { "dump", "--unprivileged", "-t", pidarg, "-D", DUMP_DIR, "-W", WORK, "-o", "dump.log",
                       "--leave-stopped", "--tcp-close", "--skip-in-flight", "--ghost-limit", "64M", NULL };
    /* Host mode: the runtime's own checkpoint of the nested container, frozen first (the cgroup
     * freezer) and left frozen, so that a rollback can thaw it. */
    char *runc_args[16] = { "runc", "--root", RUNC_ROOT, "checkpoint", "--image-path", DUMP_DIR, "--work-path", WORK,
                            "--leave-running", NESTED_ID, NULL };
    /* Post-copy: all but the pages are dumped, then CRIU serves the pages from here (its page
     * server on lazy_port, reached through this system's relay) until the destination has them.
     * -v4: its log says when it serves. */
    char lazy_text[16], page_server[32];
    snprintf(lazy_text, sizeof lazy_text, "%d", lazy_port);
    snprintf(page_server, sizeof page_server, "0.0.0.0:%d", lazy_port);
    if (lazy_port) {
        int k = 15;
        args[k++] = "--lazy-pages"; args[k++] = "--address"; args[k++] = "0.0.0.0"; args[k++] = "--port"; args[k++] = lazy_text;
        args[k++] = "-v4"; args[k] = NULL;
        k = 9;
        runc_args[k++] = "--lazy-pages"; runc_args[k++] = "--page-server"; runc_args[k++] = page_server;
        runc_args[k++] = NESTED_ID; runc_args[k] = NULL;
    }
    if (host_mode && write_criu_conf(0, carry) < 0) { snprintf(error, sizeof error, "cannot write the nested container's CRIU options: %s", strerror(errno)); goto done; }
    if (host_mode) {
        pthread_mutex_lock(&mu);
        int already = paused_ahead;
        paused_ahead = 0;
        pthread_mutex_unlock(&mu);
        char *pause_args[] = { "pause", NESTED_ID, NULL };
        if (!already && !ok_status(run_runc(pause_args, 1))) { snprintf(error, sizeof error, "cannot freeze the nested container (runc pause)"); goto done; }
        dumped = 1;  /* frozen from here on: a failure leaves it for RESUME */
    }
    unlink(WORK "/dump.log");  /* an earlier dump's log would say "serving" at once */
    int slot;
    pid_t criu = fork_watched(&slot);
    if (criu == 0) {
        if (!host_mode) exec_criu(args);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) { dup2(null, 0); dup2(null, 1); dup2(null, 2); }
        execvp("runc", runc_args);
        _exit(127);
    }
    if (criu < 0 || slot < 0) { snprintf(error, sizeof error, "cannot start CRIU: %s", strerror(errno)); goto done; }
    int status = 0;
    off_t log_offset = 0;
    for (;;) {
        int finished = child_done(slot, 0, &status);  /* read before the pass: a pass after the end sees every byte */
        /* Post-copy: once CRIU serves the pages it has written every other image. */
        int ready = lazy_port && !finished && log_says(WORK "/dump.log", "Running status-ready scripts", &log_offset);
        long long n = stream_pass(peer, DUMP_DIR, files, &nfiles, buf, &pk);
        if (n < 0) {
            if (!finished && lazy_port) { stop_serving(slot, criu, lazy_port); status = -1; finished = 1; }
            if (!finished) { child_done(slot, 1, &status); finished = 1; }
            /* The tree may be frozen now; the Coordinator resumes it on rollback. */
            dumped = WIFEXITED(status) && WEXITSTATUS(status) == 0;
            goto lost;
        }
        bytes += n;
        if (finished) break;
        if (ready) { serving = 1; break; }
        if (n == 0) usleep(2000);
    }
    if (serving) {
        pthread_mutex_lock(&mu);
        serving_slot = slot;
        serving_pid = criu;
        serving_port = lazy_port;
        pthread_mutex_unlock(&mu);
        if (!host_mode) stop_tree(root);
    } else if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        char log[1024];
        tail_file(WORK "/dump.log", log, sizeof log);
        snprintf(error, sizeof error, "%s failed (status %d): %s", host_mode ? "runc checkpoint" : "CRIU dump", status, log);
        goto done;
    }
    dumped = 1;
    /* The tree is stopped now: its open files are what it will find at the destination. */
    for (int i = 0; i < ncarried; i++) {
        long long n = send_file(peer, carried[i], buf);
        if (n < 0) goto lost;
        bytes += n;
    }
    if (send_frame(peer, K_END, "", (uint64_t)bytes, NULL, 0, (uint32_t)nfiles) < 0) goto lost;
    /* (With post-copy a failure from here on leaves CRIU serving: RESUME ends it.) */
    hashed = NULL;
    wire = hashed_bytes;
    char sent_digest[80];
    sha256_final_hex(&sent_hash, sent_digest);
    char answer[512];
    struct timeval tv = { 60, 0 };
    setsockopt(peer, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (read_line(peer, answer, sizeof answer) < 0) goto lost;
    if (strncmp(answer, "OK", 2) != 0) { snprintf(error, sizeof error, "the destination agent refused the images: %s", answer); goto done; }
    {
        const char *digest = strstr(answer, "sha256:");
        if (!digest || strncmp(digest, sent_digest, strlen(sent_digest)) != 0) {
            snprintf(error, sizeof error, "the destination agent received other bytes than were sent (it saw %s, we sent %s)", digest ? digest : "no digest", sent_digest);
            goto done;
        }
    }
    goto done;
lost:
    if (!error[0]) snprintf(error, sizeof error, "lost the connection to the destination agent at %s:%s: %s", host, port, strerror(errno));
done:
    hashed = NULL;
    hashed_fd = -1;
    if (peer >= 0) close(peer);
    free(buf);
    free(files);
    packer_close(&pk);
    pthread_mutex_lock(&mu);
    busy = 0;
    if (dumped) frozen = 1;
    pthread_mutex_unlock(&mu);
    if (error[0]) {
        reply(client, "ERR %s", error);
    } else {
        reply(client, "OK bytes=%lld files=%d carried=%d dump_ms=%lld wire=%lld zeros=%lld packed=%lld lazy=%d", bytes, nfiles, ncarried, now_ms() - started,
              wire, pk.zeros, pk.packed, serving);
        /* The images are at the destination; a rollback only needs the stopped tree. Deleting
         * them now (while the destination restores) drops their unwritten pages, which would
         * otherwise be flushed to disk when the orchestrator unmounts this container (~0.1 s).
         * A CRIU that still serves the pages keeps its directory. */
        if (!serving) remove_tree(DUMP_DIR);
    }
}

/* Host mode: freezes the nested container ahead of a DUMP (which then dumps it as it is). The
 * Coordinator silences the link only after this: an answer the service wrote before the freeze
 * has left, instead of waiting in a dumped send queue for the restored socket's first
 * retransmission (1 s). RESUME thaws it again if no DUMP follows. */
static void do_pause(int client) {
    pthread_mutex_lock(&mu);
    int refused = !host_mode || busy || frozen || paused_ahead || service_pid <= 0;
    const char *why = !host_mode ? "PAUSE is for a nested service (host mode)" : busy ? "another checkpoint or restore is running"
        : frozen || paused_ahead ? "the service is frozen already" : "no service is running";
    if (!refused) busy = 1;
    pthread_mutex_unlock(&mu);
    if (refused) { reply(client, "ERR cannot pause: %s", why); return; }
    char *args[] = { "pause", NESTED_ID, NULL };
    int ok = ok_status(run_runc(args, 1));
    pthread_mutex_lock(&mu);
    busy = 0;
    if (ok) paused_ahead = 1;
    pthread_mutex_unlock(&mu);
    if (ok) reply(client, "OK paused=1");
    else reply(client, "ERR cannot pause: runc pause failed");
}

static void do_resume(int client) {
    pthread_mutex_lock(&mu);
    int slot = serving_slot;
    pid_t serving = serving_pid;
    int lazy_port = serving_port;
    serving_slot = -1;
    pthread_mutex_unlock(&mu);
    /* Post-copy rolled back: the CRIU that serves the pages ends first (the tree stays stopped). */
    if (slot >= 0) stop_serving(slot, serving, lazy_port);
    pthread_mutex_lock(&mu);
    pid_t root = service_pid;
    int was_frozen = frozen || paused_ahead;
    frozen = 0;
    paused_ahead = 0;
    pthread_mutex_unlock(&mu);
    if (host_mode) {
        char *args[] = { "resume", NESTED_ID, NULL };
        run_runc(args, 1);  /* fails harmlessly if it is not paused */
    } else if (root > 0) {
        pid_t pids[1024];
        int n = tree(root, pids, 1024);
        for (int i = 0; i < n; i++) kill(pids[i], SIGCONT);
    }
    remove_tree(DUMP_DIR);
    reply(client, "OK resumed=%d", was_frozen);
}

/* ---------- destination: IMAGES stream and RESTORE ---------- */

static int safe_name(const char *name) {
    return name[0] && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
}

static int safe_path(const char *path) {
    if (path[0] != '/' || strstr(path, "/../") || strstr(path, "/./")) return 0;
    size_t n = strlen(path);
    if (n >= 3 && !strcmp(path + n - 3, "/..")) return 0;
    if (host_mode && !strncmp(path, NESTED_ROOT "/", sizeof NESTED_ROOT)) return 1;
    return strncmp(path, "/.ums/", 6) && strncmp(path, "/proc/", 6) && strncmp(path, "/sys/", 5) && strncmp(path, "/dev/", 5);
}

struct openfile { char name[PATH_MAX]; int fd; };

static int open_target(struct openfile *open_files, int *n, const char *path, int flags, mode_t mode_bits) {
    for (int i = 0; i < *n; i++) if (!strcmp(open_files[i].name, path)) return open_files[i].fd;
    if (*n >= 512) return -1;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) { *slash = 0; make_dirs(dir, 0755); }
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | flags, mode_bits);
    if (fd < 0) return -1;
    snprintf(open_files[*n].name, PATH_MAX, "%s", path);
    open_files[(*n)++].fd = fd;
    return fd;
}

static void fail_receive(const char *fmt, ...) {
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&mu);
    receive_state = -1;
    snprintf(receive_error, sizeof receive_error, "failed to receive the checkpoint: %s", text);
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* Reads a UMSI stream (docs/image-stream.md) from `in` into `into`: image files there, carried
 * files at their absolute paths, pipe inodes into incoming_pipe_ino. Returns the data bytes
 * received, or -1 with the reason in `err`. */
static long long read_stream(int in, const char *into, struct openfile *targets, int *ntargets, unsigned char *buf, char *err, size_t errcap) {
    unsigned char magic[5];
    long long received = 0;
    char name[PATH_MAX + 1], path[PATH_MAX + 64];
    if (read_all(in, magic, 5) < 0 || (memcmp(magic, "UMSI\1", 5) != 0 && memcmp(magic, "UMSI\2", 5) != 0)) {
        snprintf(err, errcap, "not a UMS image stream");
        return -1;
    }
    int version = magic[4];
    /* Version 2's compressed frames expand here, never beyond one chunk. */
    static __thread unsigned char *expanded;
    static __thread ZSTD_DCtx *unzstd;
    if (version == 2 && !expanded) expanded = malloc(CHUNK);
    if (version == 2 && !unzstd) unzstd = ZSTD_createDCtx();
    if (version == 2 && (!expanded || !unzstd)) { snprintf(err, errcap, "out of memory"); return -1; }
    for (;;) {
        unsigned char head[3], tail[12];
        if (read_all(in, head, 3) < 0) { snprintf(err, errcap, "the stream ended before its end frame (source lost?)"); return -1; }
        int kind = head[0];
        uint16_t nlen = get_u16(head + 1);
        if (nlen > PATH_MAX || read_all(in, name, nlen) < 0 || read_all(in, tail, 12) < 0) { snprintf(err, errcap, "truncated frame"); return -1; }
        name[nlen] = 0;
        uint64_t offset = get_u64(tail);
        uint32_t length = get_u32(tail + 8);
        if (kind == K_END) {
            if ((long long)offset != received) { snprintf(err, errcap, "the source sent %llu bytes, %lld arrived", (unsigned long long)offset, received); return -1; }
            break;
        }
        /* No image or carried file is a tebibyte: an offset beyond that is damage, not data. */
        if (offset > (1ULL << 40)) { snprintf(err, errcap, "a frame at offset %llu is beyond %llu", (unsigned long long)offset, 1ULL << 40); return -1; }
        if (kind >= K_ZEROS && version < 2) { snprintf(err, errcap, "unknown frame kind %d in a version 1 stream", kind); return -1; }
        if (kind == K_ZEROS) {
            /* Zero pages: a hole beyond the file's end, written zeros below it. */
            if (!safe_name(name)) { snprintf(err, errcap, "invalid image name"); return -1; }
            if (length == 0 || length > CHUNK) { snprintf(err, errcap, "a run of %u zero bytes (1 to %d)", length, CHUNK); return -1; }
            snprintf(path, sizeof path, "%s/%s", into, name);
            int fd = open_target(targets, ntargets, path, 0, 0600);
            struct stat st;
            if (fd < 0 || fstat(fd, &st) < 0) { snprintf(err, errcap, "cannot write %s: %s", name, strerror(errno)); return -1; }
            uint64_t end = offset + length, size = (uint64_t)st.st_size;
            if (offset < size) {
                memset(buf, 0, CHUNK);
                uint64_t below = (end < size ? end : size) - offset;
                if (pwrite(fd, buf, below, (off_t)offset) != (ssize_t)below) { snprintf(err, errcap, "cannot write %s: %s", name, strerror(errno)); return -1; }
            }
            if (end > size && ftruncate(fd, (off_t)end) < 0) { snprintf(err, errcap, "cannot extend %s: %s", name, strerror(errno)); return -1; }
            received += length;
            continue;
        }
        if (kind == K_TRUNCATE) {
            if (!safe_name(name)) { snprintf(err, errcap, "invalid image name"); return -1; }
            snprintf(path, sizeof path, "%s/%s", into, name);
            int fd = open_target(targets, ntargets, path, 0, 0600);
            if (fd < 0 || ftruncate(fd, (off_t)offset) < 0) { snprintf(err, errcap, "cannot truncate %s", name); return -1; }
            continue;
        }
        if (length > CHUNK) { snprintf(err, errcap, "frame of %u bytes is too large", length); return -1; }
        if (read_all(in, buf, length) < 0) { snprintf(err, errcap, "truncated frame data"); return -1; }
        buf[length] = 0;
        if (kind == K_META) {
            if (!strcmp(name, "pipe:stdout")) incoming_pipe_ino[0] = strtoull((char *)buf, NULL, 10);
            else if (!strcmp(name, "pipe:stderr")) incoming_pipe_ino[1] = strtoull((char *)buf, NULL, 10);
            else if (!strncmp(name, "file:", 5)) {
                unsigned perm = 0644;
                long long size = 0;
                sscanf((char *)buf, "%o %lld", &perm, &size);
                if (!safe_path(name + 5)) { snprintf(err, errcap, "refusing to write %s", name + 5); return -1; }
                int fd = open_target(targets, ntargets, name + 5, O_TRUNC, perm);
                if (fd < 0 || fchmod(fd, perm) < 0 || ftruncate(fd, size) < 0) { snprintf(err, errcap, "cannot create %s: %s", name + 5, strerror(errno)); return -1; }
            }
            continue;
        }
        int fd;
        const unsigned char *data = buf;
        if (kind == K_ZSTD || kind == K_LZ4) {
            if (length <= 4) { snprintf(err, errcap, "a compressed frame without its data"); return -1; }
            uint32_t raw = get_u32(buf);
            if (raw == 0 || raw > CHUNK) { snprintf(err, errcap, "a compressed frame that expands to %u bytes (at most %d)", raw, CHUNK); return -1; }
            int ok;
            if (kind == K_ZSTD) {
                size_t got = ZSTD_decompressDCtx(unzstd, expanded, raw, buf + 4, length - 4);
                ok = !ZSTD_isError(got) && got == raw;
            } else {
                ok = LZ4_decompress_safe((const char *)buf + 4, (char *)expanded, (int)(length - 4), (int)raw) == (int)raw;
            }
            if (!ok) { snprintf(err, errcap, "a compressed frame that does not expand to the %u bytes it announced", raw); return -1; }
            data = expanded;
            length = raw;
            kind = K_DATA;
        }
        if (kind == K_DATA) {
            if (!safe_name(name)) { snprintf(err, errcap, "invalid image name"); return -1; }
            snprintf(path, sizeof path, "%s/%s", into, name);
            fd = open_target(targets, ntargets, path, 0, 0600);
        } else if (kind == K_FILE) {
            if (!safe_path(name)) { snprintf(err, errcap, "refusing to write %s", name); return -1; }
            fd = open_target(targets, ntargets, name, 0, 0644);
        } else {
            snprintf(err, errcap, "unknown frame kind %d", kind);
            return -1;
        }
        if (fd < 0) { snprintf(err, errcap, "cannot write %s: %s", name, strerror(errno)); return -1; }
        uint32_t done = 0;
        while (done < length) {
            ssize_t n = pwrite(fd, data + done, length - done, (off_t)(offset + done));
            if (n <= 0) { snprintf(err, errcap, "cannot write %s: %s", name, strerror(errno)); return -1; }
            done += (uint32_t)n;
        }
        received += length;
    }
    return received;
}

static void do_receive(int client, const char *secret) {
    pthread_mutex_lock(&mu);
    int ok = receive_state == 1 && secret_equal(secret, receive_secret);
    if (ok) receive_state = 2;
    pthread_mutex_unlock(&mu);
    if (!ok) { reply(client, "ERR no checkpoint is expected with that secret"); return; }

    struct timeval tv = { 60, 0 };
    setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    remove_tree(RESTORE_DIR);
    make_dirs(RESTORE_DIR, 0700);
    static struct openfile targets[512];
    int ntargets = 0;
    unsigned char *buf = malloc(CHUNK + 16);
    char why[512] = "", digest[80];
    sha256_ctx received_hash;
    sha256_init(&received_hash);
    hashed = &received_hash;
    hashed_fd = client;
    long long received = read_stream(client, RESTORE_DIR, targets, &ntargets, buf, why, sizeof why);
    hashed = NULL;
    hashed_fd = -1;
    sha256_final_hex(&received_hash, digest);
    if (received < 0) { fail_receive("%s", why); goto out; }
    pthread_mutex_lock(&mu);
    receive_state = 3;
    receive_bytes = received;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    reply(client, "OK %lld %s", received, digest);
out:
    for (int i = 0; i < ntargets; i++) close(targets[i].fd);
    free(buf);
    pthread_mutex_lock(&mu);
    if (receive_state == -1) {
        char copy[512];
        snprintf(copy, sizeof copy, "%s", receive_error);
        pthread_mutex_unlock(&mu);
        reply(client, "ERR %s", copy);
    } else {
        pthread_mutex_unlock(&mu);
    }
}

/* Post-copy, destination: starts `criu lazy-pages`, which the restored tree's page faults go to
 * and which fetches every page from the source's CRIU at host:port (a relay of this system's);
 * returns its slot once it listens for the restore, -1 with `error` otherwise. */
static int start_fetching(const char *host, const char *port, char *error, size_t cap) {
    unlink(WORK "/lazy-pages.socket");
    unlink(WORK "/lazy-pages.log");
    char *args[] = { "lazy-pages", "--page-server", "--address", (char *)host, "--port", (char *)port, "--images-dir", RESTORE_DIR,
                     "-W", WORK, "-o", "lazy-pages.log", "-v4", host_mode ? NULL : "--unprivileged", NULL };
    int slot;
    pid_t pid = fork_watched(&slot);
    if (pid == 0) exec_criu(args);
    if (pid < 0 || slot < 0) { snprintf(error, cap, "cannot start criu lazy-pages: %s", strerror(errno)); return -1; }
    struct stat st;
    for (int tries = 0; tries < 1000; tries++) {
        if (stat(WORK "/lazy-pages.socket", &st) == 0) {
            pthread_mutex_lock(&mu);
            fetching_pid = pid;
            pthread_mutex_unlock(&mu);
            return slot;
        }
        int status;
        if (child_done(slot, 0, &status)) {
            char log[700];
            errors_of(WORK "/lazy-pages.log", log, sizeof log);
            snprintf(error, cap, "criu lazy-pages ended at once (status %d): %s", status, log);
            return -1;
        }
        usleep(10000);
    }
    kill(pid, SIGKILL);
    int status;
    child_done(slot, 1, &status);
    snprintf(error, cap, "criu lazy-pages did not get ready in 10 s");
    return -1;
}

static void stop_fetching(int slot) {
    if (slot < 0) return;
    int status;
    pthread_mutex_lock(&mu);
    pid_t pid = fetching_pid;
    pthread_mutex_unlock(&mu);
    kill(pid, SIGKILL);
    child_done(slot, 1, &status);
}

/* Bytes of pages the lazy-pages daemon moved: its log's last "UFFD transferred pages: (N/M)" for
 * each process (as UMSCheckpoint's LazyPagesOptions reads the orchestrator-level daemon's). */
static long long transferred_bytes(const char *path) {
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    struct { long pid; long long pages; } seen[64];
    int nseen = 0;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char *marker = strstr(line, "UFFD transferred pages: (");
        char *uffd = strstr(line, "uffd: ");
        if (!marker || !uffd || uffd > marker) continue;
        long pid = strtol(uffd + 6, NULL, 10);
        long long pages = strtoll(marker + strlen("UFFD transferred pages: ("), NULL, 10);
        int i = 0;
        while (i < nseen && seen[i].pid != pid) i++;
        if (i == nseen) { if (nseen == 64) continue; seen[nseen++].pid = pid; }
        seen[i].pages = pages;
    }
    fclose(f);
    long long total = 0;
    for (int i = 0; i < nseen; i++) total += seen[i].pages;
    return total * PAGE;
}

/* PAGES: waits until the lazy-pages daemon has fetched every page and ended. */
static void do_pages(int client, int seconds) {
    pthread_mutex_lock(&mu);
    int slot = fetching_slot;
    pthread_mutex_unlock(&mu);
    if (slot < 0) {
        if (fetch_error[0]) reply(client, "ERR %s", fetch_error);
        else reply(client, "OK bytes=%lld", fetched_bytes);
        return;
    }
    long long deadline = now_ms() + (long long)seconds * 1000;
    int status = 0, done = 0;
    while (!(done = child_done(slot, 0, &status)) && now_ms() < deadline) usleep(10000);
    if (!done) { reply(client, "ERR the pages did not all arrive in %d s", seconds); return; }
    pthread_mutex_lock(&mu);
    fetching_slot = -1;
    pthread_mutex_unlock(&mu);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        char log[500];
        errors_of(WORK "/lazy-pages.log", log, sizeof log);
        snprintf(fetch_error, sizeof fetch_error, "criu lazy-pages failed (status %d): %s", status, log);
        reply(client, "ERR %s", fetch_error);
        return;
    }
    fetched_bytes = transferred_bytes(WORK "/lazy-pages.log");
    reply(client, "OK bytes=%lld", fetched_bytes);
    remove_tree(RESTORE_DIR);
}

static void do_restore(int client, int seconds, const char *lazy_host, const char *lazy_port, int carry) {
    pthread_mutex_lock(&mu);
    if (strcmp(mode, "restore") != 0 || busy) {
        pthread_mutex_unlock(&mu);
        reply(client, "ERR cannot restore: this agent is not waiting for a checkpoint (mode %s)", mode);
        return;
    }
    busy = 1;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += seconds;
    while (receive_state == 1 || receive_state == 2) {
        if (pthread_cond_timedwait(&cv, &mu, &deadline) == ETIMEDOUT) break;
    }
    int state = receive_state;
    char error[1024];
    snprintf(error, sizeof error, "%s", receive_state == -1 ? receive_error : "the checkpoint did not arrive in time");
    pthread_mutex_unlock(&mu);
    if (state != 3) {
        pthread_mutex_lock(&mu); busy = 0; pthread_mutex_unlock(&mu);
        reply(client, "ERR %s", error);
        return;
    }

    if (getenv("UMS_AGENT_FAIL_RESTORE_FOR_TESTING")) {
        /* Test hook: damage the received process tree so that CRIU's real restore fails. */
        int bad = open(RESTORE_DIR "/pstree.img", O_WRONLY | O_TRUNC | O_CLOEXEC);
        if (bad >= 0) { write_all(bad, "corrupt", 7); close(bad); }
    }
    long long started = now_ms();
    int fetching = -1;
    if (lazy_host) {
        fetching = start_fetching(lazy_host, lazy_port, error, sizeof error);
        if (fetching < 0) {
            pthread_mutex_lock(&mu); busy = 0; pthread_mutex_unlock(&mu);
            reply(client, "ERR %s", error);
            return;
        }
    }
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) { stop_fetching(fetching); reply(client, "ERR pipe: %s", strerror(errno)); return; }
    char inherit_out[64], inherit_err[64];
    snprintf(inherit_out, sizeof inherit_out, "fd[3]:pipe:[%llu]", incoming_pipe_ino[0]);
    snprintf(inherit_err, sizeof inherit_err, "fd[4]:pipe:[%llu]", incoming_pipe_ino[1]);
    if (host_mode) {
        close(out[0]); close(out[1]); close(err[0]); close(err[1]);
        unlink(WORK "/nested.pid");
        if (write_criu_conf(1, carry) < 0) {
            stop_fetching(fetching);
            pthread_mutex_lock(&mu); busy = 0; pthread_mutex_unlock(&mu);
            reply(client, "ERR cannot write the nested container's CRIU options: %s", strerror(errno));
            return;
        }
        char *runc_args[] = { "restore", "--detach", "--image-path", RESTORE_DIR, "--work-path", WORK, "--bundle", NESTED_BUNDLE,
                              "--pid-file", WORK "/nested.pid", lazy_host ? "--lazy-pages" : NESTED_ID, lazy_host ? NESTED_ID : NULL, NULL };
        int status = run_runc(runc_args, 1);
        pid_t restored = read_pid(WORK "/nested.pid");
        if (!ok_status(status) || restored <= 0) {
            char log[1024];
            tail_file(WORK "/restore.log", log, sizeof log);
            stop_fetching(fetching);
            pthread_mutex_lock(&mu); busy = 0; pthread_mutex_unlock(&mu);
            reply(client, "ERR runc restore failed (status %d): %s", status, log);
            return;
        }
        pthread_mutex_lock(&mu);
        service_pid = restored;
        mode = "restored";
        busy = 0;
        fetching_slot = fetching;
        pthread_mutex_unlock(&mu);
        if (kill(restored, 0) < 0 && errno == ESRCH) { logmsg("restored nested container exited at once"); exit(1); }
        int mark = open(RESTORED_MARK, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (mark >= 0) close(mark);
        reply(client, "OK pid=%d restore_ms=%lld bytes=%lld", restored, now_ms() - started, receive_bytes);
        if (fetching < 0) remove_tree(RESTORE_DIR);  /* the lazy-pages daemon reads it until PAGES */
        write_nested_config(0);  /* ready for the next dump */
        logmsg("nested container restored (pid %d)", restored);
        return;
    }
    unlink(WORK "/restore.pid");
    char *args[] = { "restore", "--unprivileged", "--restore-sibling", "--restore-detached", "-D", RESTORE_DIR, "-W", WORK,
                     "-o", "restore.log", "--tcp-close", "--pidfile", WORK "/restore.pid",
                     /* Engines prepare a container's root directory with different modes (Podman
                      * 0555, Docker 0755); the tree's files are the same. */
                     "--skip-file-rwx-check",
                     "--inherit-fd", inherit_out, "--inherit-fd", inherit_err, lazy_host ? "--lazy-pages" : NULL, NULL };
    int slot;
    pid_t criu = fork_watched(&slot);
    if (criu == 0) {
        dup2(out[1], 3);
        dup2(err[1], 4);
        exec_criu(args);
    }
    close(out[1]);
    close(err[1]);
    int status = -1;
    if (criu > 0 && slot >= 0) child_done(slot, 1, &status);
    pid_t restored = 0;
    FILE *pf = fopen(WORK "/restore.pid", "re");
    if (pf) { if (fscanf(pf, "%d", &restored) != 1) restored = 0; fclose(pf); }
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0) || restored <= 0) {
        char log[1024];
        tail_file(WORK "/restore.log", log, sizeof log);
        close(out[0]);
        close(err[0]);
        stop_fetching(fetching);
        pthread_mutex_lock(&mu); busy = 0; pthread_mutex_unlock(&mu);
        reply(client, "ERR CRIU restore failed (status %d): %s", status, log);
        return;
    }
    pthread_mutex_lock(&mu);
    service_pid = restored;
    mode = "restored";
    busy = 0;
    fetching_slot = fetching;
    pipe_ino[0] = incoming_pipe_ino[0];
    pipe_ino[1] = incoming_pipe_ino[1];
    pthread_mutex_unlock(&mu);
    /* The reaper may have reaped the restored root before service_pid named it. */
    if (kill(restored, 0) < 0 && errno == ESRCH) { logmsg("restored service exited at once"); exit(1); }
    start_relay(out[0], 1);
    start_relay(err[0], 2);
    /* Later children of the restored tree get their own pipe inode in the next dump's metadata. */
    struct stat st;
    char fdpath[64];
    snprintf(fdpath, sizeof fdpath, "/proc/%d/fd/1", restored);
    if (stat(fdpath, &st) == 0) pipe_ino[0] = st.st_ino;
    snprintf(fdpath, sizeof fdpath, "/proc/%d/fd/2", restored);
    if (stat(fdpath, &st) == 0) pipe_ino[1] = st.st_ino;
    int mark = open(RESTORED_MARK, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (mark >= 0) close(mark);
    reply(client, "OK pid=%d restore_ms=%lld bytes=%lld", restored, now_ms() - started, receive_bytes);
    if (fetching < 0) remove_tree(RESTORE_DIR);  /* the lazy-pages daemon reads it until PAGES */
    advance_pids();
    logmsg("service restored (pid %d)", restored);
}

/* START: a restore-mode agent that was never sent a checkpoint starts the service afresh from its
 * image. A cluster orchestrator that replaced a restored service's task with a new container
 * (from the service's restore-mode specification) makes one: its Coordinator sends START, and the
 * service starts as any restart would start it. Refused once a checkpoint is on its way. */
static void do_start(int client) {
    pthread_mutex_lock(&mu);
    int ok = !strcmp(mode, "restore") && receive_state == 0 && !busy;
    if (ok) mode = "starting";
    const char *was = mode;
    pthread_mutex_unlock(&mu);
    if (!ok) {
        reply(client, "ERR cannot start: this agent is not a restore-mode agent that no checkpoint was sent to (mode %s)", was);
        return;
    }
    if (host_mode) {
        start_nested(1);
    } else {
        advance_pids();
        start_service();
    }
    reply(client, "OK pid=%d", service_pid);
}

/* ---------- control ---------- */

/* A decimal number within [low, high], nothing else. */
static int number_in(const char *text, long low, long high) {
    if (!text[0] || strlen(text) > 9) return 0;
    for (const char *c = text; *c; c++) if (*c < '0' || *c > '9') return 0;
    long value = strtol(text, NULL, 10);
    return value >= low && value <= high;
}

static int token_ok(const char *given) {
    if (!cfg.token || !cfg.token[0]) return 0;
    return secret_equal(given, cfg.token);
}

static void serve_connection(int client) {
    struct timeval tv = { 10, 0 };
    setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char line[1024];
    if (read_line(client, line, sizeof line) < 0) { close(client); return; }
    char *words[8];
    int n = 0;
    for (char *save = NULL, *w = strtok_r(line, " ", &save); w && n < 8; w = strtok_r(NULL, " ", &save)) words[n++] = w;
    if (n == 2 && !strcmp(words[0], "IMAGES")) {
        do_receive(client, words[1]);
    } else if (n < 2 || !token_ok(words[0])) {
        reply(client, "ERR unauthenticated: the agent's token (UMS_AGENT_TOKEN) is required");
    } else if (!strcmp(words[1], "STATUS")) {
        pthread_mutex_lock(&mu);
        pid_t root = service_pid;
        const char *m = mode;
        int f = frozen;
        pthread_mutex_unlock(&mu);
        pid_t pids[1024];
        int count = root > 0 ? tree(root, pids, 1024) : 0;
        reply(client, "OK mode=%s pid=%d processes=%d frozen=%d version=%s", m, root, count, f, AGENT_VERSION);
    } else if (!strcmp(words[1], "RECEIVE") && n == 3) {
        pthread_mutex_lock(&mu);
        int ok = !strcmp(mode, "restore") && receive_state <= 1 && strlen(words[2]) < sizeof receive_secret;
        if (ok) { snprintf(receive_secret, sizeof receive_secret, "%s", words[2]); receive_state = 1; }
        pthread_mutex_unlock(&mu);
        if (ok) reply(client, "OK");
        else reply(client, "ERR cannot receive: this agent is not waiting for a checkpoint (mode %s)", mode);
    } else if (!strcmp(words[1], "RESTORE") && n <= 5) {
        /* RESTORE [seconds] [lazy=<IPv4>:<port>] [tcp=1] */
        char host[64] = "", port[16] = "";
        int lazy = 0, seconds = 120, ok = 1, carry = 0;
        for (int i = 2; i < n && ok; i++) {
            if (i == 2 && number_in(words[i], 1, 3600)) { seconds = atoi(words[i]); continue; }
            if (!strcmp(words[i], "tcp=1") && !carry) { carry = 1; ok = host_mode; continue; }
            char *colon = strrchr(words[i], ':');
            struct in_addr address;
            ok = !lazy && !strncmp(words[i], "lazy=", 5) && colon && (size_t)(colon - words[i] - 5) < sizeof host;
            if (ok) {
                memcpy(host, words[i] + 5, (size_t)(colon - words[i] - 5));
                host[colon - words[i] - 5] = 0;
                snprintf(port, sizeof port, "%.15s", colon + 1);
                ok = inet_pton(AF_INET, host, &address) == 1 && number_in(port, 1, 65535);
                lazy = 1;
            }
        }
        if (!ok) reply(client, "ERR invalid RESTORE: expected RESTORE [seconds] [lazy=<IPv4 address>:<port>] [tcp=1] (tcp=1 in host mode only, without lazy=)");
        else if (carry && lazy) reply(client, "ERR invalid RESTORE: tcp=1 (carried connections) and lazy= (post-copy) do not go together");
        else do_restore(client, seconds, lazy ? host : NULL, lazy ? port : NULL, carry);
    } else if (!strcmp(words[1], "PAGES") && (n == 2 || (n == 3 && number_in(words[2], 1, 3600)))) {
        do_pages(client, n == 3 ? atoi(words[2]) : 600);
    } else if (!strcmp(words[1], "DUMP") && n >= 5 && n <= 8) {
        /* DUMP <host> <port> <secret> [compress=POLICY] [lazy=PORT] [tcp=1], the options in any order */
        int policy = C_PLAIN, lazy_port = 0, carry = 0, ok = 1, bad = n - 1;
        for (int i = 5; i < n && ok; i++) {
            if (!strncmp(words[i], "compress=", 9) && policy == C_PLAIN && policy_named(words[i] + 9) >= 0) policy = policy_named(words[i] + 9);
            else if (!strncmp(words[i], "lazy=", 5) && !lazy_port && number_in(words[i] + 5, 1, 65535)) lazy_port = atoi(words[i] + 5);
            else if (!strcmp(words[i], "tcp=1") && !carry && host_mode) carry = 1;
            else { ok = 0; bad = i; }
        }
        if (!ok) reply(client, "ERR invalid DUMP option '%s' (compress=off|auto|zstd|lz4, lazy=PORT, tcp=1 in host mode)", words[bad]);
        else if (carry && lazy_port) reply(client, "ERR invalid DUMP: tcp=1 (carried connections) and lazy= (post-copy) do not go together");
        else do_dump(client, words[2], words[3], words[4], policy, lazy_port, carry);
    } else if (!strcmp(words[1], "PAUSE") && n == 2) {
        do_pause(client);
    } else if (!strcmp(words[1], "RESUME")) {
        do_resume(client);
    } else if (!strcmp(words[1], "START") && n == 2) {
        do_start(client);
    } else {
        reply(client, "ERR unknown command '%s' or its arguments (STATUS, RECEIVE, RESTORE, PAGES, PAUSE, DUMP, RESUME, START)", words[1]);
    }
    close(client);
    return;
}

static void *handle(void *arg) {
    serve_connection((int)(intptr_t)arg);
    pthread_mutex_lock(&mu);
    connections--;
    pthread_mutex_unlock(&mu);
    return NULL;
}

static void *expire(void *arg) {
    (void)arg;
    sleep((unsigned)cfg.wait_seconds);
    pthread_mutex_lock(&mu);
    int waiting = !strcmp(mode, "restore") && !busy && receive_state != 3;
    pthread_mutex_unlock(&mu);
    if (waiting) {
        logmsg("no checkpoint arrived within %d s; exiting", cfg.wait_seconds);
        exit(3);
    }
    return NULL;
}

static void usage(void) {
    fprintf(stderr,
        "usage: ums-agent run [--port P] -- CMD [ARGS...]\n"
        "       ums-agent restore [--port P] [--wait SECONDS] -- CMD [ARGS...]\n"
        "       ums-agent host [--port P] -- CMD [ARGS...]\n"
        "       ums-agent host-restore [--port P] [--wait SECONDS] -- CMD [ARGS...]\n"
        "       ums-agent version\n"
        "       ums-agent stream-pack DIR [off|auto|zstd|lz4]  (writes DIR's files as a UMSI stream to stdout;\n"
        "                                      with a policy, version 2: zero pages elided, compressed where it pays)\n"
        "       ums-agent stream-unpack DIR    (reads a UMSI stream from stdin into DIR)\n"
        "The UMS checkpoint agent: the entrypoint of a migratable image (docs/service-level.md), or of\n"
        "an outer container whose service runs nested in it (host modes; docs/container-level.md).\n"
        "Environment: UMS_AGENT_TOKEN (required for control), UMS_AGENT_PORT (default %d),\n"
        "UMS_AGENT_CRIU (CRIU's root, default /.ums/criu).\n", DEFAULT_PORT);
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(); return 2; }
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) { printf("ums-agent %s\n", AGENT_VERSION); return 0; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) { usage(); return 0; }
    /* The stream format's two ends on their own, for the Swift side's interoperability test. */
    if (!strcmp(argv[1], "stream-pack") && (argc == 3 || (argc == 4 && policy_named(argv[3]) >= 0))) {
        static struct tailed files[4096];
        int nfiles = 0;
        char *buf = malloc(CHUNK);
        struct packer pk;
        if (packer_open(&pk, argc == 4 ? policy_named(argv[3]) : C_PLAIN) < 0) return 1;
        static sha256_ctx hash;
        sha256_init(&hash);
        hashed = &hash;
        hashed_fd = 1;
        if (!buf || write_all(1, pk.policy == C_PLAIN ? "UMSI\1" : "UMSI\2", 5) < 0) return 1;
        long long sent = stream_pass(1, argv[2], files, &nfiles, buf, &pk);
        if (sent < 0 || send_frame(1, K_END, "", (uint64_t)sent, NULL, 0, (uint32_t)nfiles) < 0) return 1;
        hashed = NULL;
        char digest[80];
        sha256_final_hex(&hash, digest);
        fprintf(stderr, "OK %lld %s\n", sent, digest);
        return 0;
    }
    if (!strcmp(argv[1], "stream-unpack") && argc == 3) {
        static struct openfile targets[512];
        int ntargets = 0;
        unsigned char *buf = malloc(CHUNK + 16);
        char why[512] = "", digest[80];
        if (!buf || make_dirs(argv[2], 0700) < 0) return 1;
        static sha256_ctx hash;
        sha256_init(&hash);
        hashed = &hash;
        hashed_fd = 0;
        long long received = read_stream(0, argv[2], targets, &ntargets, buf, why, sizeof why);
        hashed = NULL;
        sha256_final_hex(&hash, digest);
        for (int i = 0; i < ntargets; i++) close(targets[i].fd);
        if (received < 0) { fprintf(stderr, "ERR %s\n", why); return 1; }
        printf("OK %lld %s\n", received, digest);
        return 0;
    }
    int restore = !strcmp(argv[1], "restore") || !strcmp(argv[1], "host-restore");
    host_mode = !strcmp(argv[1], "host") || !strcmp(argv[1], "host-restore");
    if (!restore && !host_mode && strcmp(argv[1], "run") != 0) { usage(); return 2; }
    if (getenv("UMS_AGENT_PORT")) cfg.port = atoi(getenv("UMS_AGENT_PORT"));
    if (getenv("UMS_AGENT_CRIU")) cfg.criu_root = getenv("UMS_AGENT_CRIU");
    /* The agent keeps its token; the service it starts does not inherit it. */
    cfg.token = getenv("UMS_AGENT_TOKEN") ? strdup(getenv("UMS_AGENT_TOKEN")) : NULL;
    unsetenv("UMS_AGENT_TOKEN");
    int i = 2;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--")) { i++; break; }
        if (!strcmp(argv[i], "--port") && i + 1 < argc) cfg.port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--wait") && i + 1 < argc) cfg.wait_seconds = atoi(argv[++i]);
        else { usage(); return 2; }
    }
    if (i >= argc) { fprintf(stderr, "ums-agent: give the service's command after --\n"); return 2; }
    if (cfg.port <= 0 || cfg.port > 65535) { fprintf(stderr, "ums-agent: invalid port %d\n", cfg.port); return 2; }
    cfg.command = argv + i;
    if (!cfg.token || !cfg.token[0]) logmsg("UMS_AGENT_TOKEN is not set: the Coordinator cannot control this agent");
    setvbuf(stdout, NULL, _IONBF, 0);

    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)cfg.port), .sin_addr.s_addr = htonl(INADDR_ANY) };
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 16) < 0) {
        fprintf(stderr, "ums-agent: cannot listen on port %d: %s\n", cfg.port, strerror(errno));
        return 1;
    }
    make_dirs(WORK, 0700);

    /* A restarted container whose service was restored here starts it afresh, as any restart would. */
    if (restore && access(RESTORED_MARK, F_OK) == 0) restore = 0;
    if (!restore && !host_mode) advance_pids();  /* before the reaper runs: these children are reaped below */
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
    if (host_mode) remount_cgroups_writable();
    if (host_mode) mount_run_tmpfs();
    if (host_mode && write_nested_config(restore) < 0) { logmsg("cannot write the nested container's config: %s", strerror(errno)); return 125; }

    sigemptyset(&forwarded);
    sigaddset(&forwarded, SIGTERM);
    sigaddset(&forwarded, SIGINT);
    sigaddset(&forwarded, SIGHUP);
    sigaddset(&forwarded, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &forwarded, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_t t;
    pthread_create(&t, NULL, signals, NULL);
    if (restore) {
        mode = "restore";
        pthread_create(&t, NULL, expire, NULL);
        logmsg("waiting for a checkpoint on port %d", cfg.port);
    } else if (host_mode) {
        start_nested(0);
    } else {
        start_service();
    }
    pthread_create(&t, NULL, reaper, NULL);
    /* CRIU's kernel facts learnt now, not while the service is held or frozen. */
    if (!host_mode) prepare_criu_cache();
    warm_criu_cache();

    for (;;) {
        int client = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (client < 0) { if (errno == EINTR || errno == ECONNABORTED) continue; usleep(10000); continue; }
        /* A bounded number of connections at once: beyond it, closed at once. */
        pthread_mutex_lock(&mu);
        int full = connections >= MAX_CONNECTIONS;
        if (!full) connections++;
        pthread_mutex_unlock(&mu);
        if (full) { close(client); continue; }
        pthread_t h;
        if (pthread_create(&h, NULL, handle, (void *)(intptr_t)client) != 0) {
            pthread_mutex_lock(&mu);
            connections--;
            pthread_mutex_unlock(&mu);
            close(client);
            continue;
        }
        pthread_detach(h);
    }
}

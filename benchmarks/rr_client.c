/*
 * rr_client: request/response load (the paper's msg_test shape): connect, then send SIZE
 * bytes and read SIZE bytes back PER_CONN times, close. PER_CONN 1 (the default) is one
 * connection per transaction; 0 keeps each connection for the whole run (persistent).
 * CONC connections in flight on one epoll loop, for SECONDS, then report JSON with
 * transactions/s and this process's own CPU (so one can see it is not the bottleneck).
 *
 * WORKLOAD usr is the Facebook USR key-value workload in Redis's protocol (the same as
 * `acceltcp load kv`): 1,000 keys of 16 B ("key:%012d", redis-benchmark -r's names),
 * all written first with one MSET; then 99.8 % GET and 0.2 % SET of 2 B values. Every
 * reply is checked ("$2\r\nvv\r\n" or "+OK\r\n"); anything else counts in bad_replies
 * and ends that connection. SIZE is unused.
 *
 *   cc -O2 -o rr_client rr_client.c
 *   ./rr_client HOST PORT [CONC=64] [SECONDS=5] [SIZE=64] [PER_CONN=1] [WORKLOAD=echo|usr]
 *
 * Bounded: stops issuing after SECONDS (or 10,000,000 transactions); the transactions in
 * flight then get up to DRAIN_S to finish (so that no connection is closed on an answer
 * still coming: that would be a reset), the rest are closed, and it exits. The rate,
 * latency and CPU are those up to the deadline; "drained" counts what finished after.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONC 4096
#define MAX_TXN 10000000L
#define USR_KEYS 1000
#define DRAIN_S 2.0

/* One transaction in flight on a connection: the request and the reply's length. */
struct conn { int fd; int sent; int got; long done; const char *req; int req_len; int want;
              char head[8]; };

static struct sockaddr_in dst;
static int epfd, size, usr;
static long per_conn;
static char echo_req[65536];
static char usr_get[USR_KEYS][40], usr_set[USR_KEYS][48];
static int usr_get_len[USR_KEYS], usr_set_len[USR_KEYS];
static unsigned long long rng = 88172645463325252ULL;
static long txns, errors, connects, bad_replies, sets, open_conns;
static double lat_sum;
static struct timespec t_start_conn[MAX_CONC];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static unsigned long long next_rand(void) {   /* xorshift64: reproducible, seed fixed */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return rng;
}

/* The next transaction's request: SIZE echo bytes, or a USR GET (99.8 %) or SET. */
static void next_request(struct conn *c) {
    c->sent = 0; c->got = 0;
    if (!usr) { c->req = echo_req; c->req_len = c->want = size; return; }
    unsigned long long r = next_rand();
    int k = (int)((r >> 16) % USR_KEYS);
    if (r % 1000 < 2) {
        c->req = usr_set[k]; c->req_len = usr_set_len[k]; c->want = 5; sets++;
    } else {
        c->req = usr_get[k]; c->req_len = usr_get_len[k]; c->want = 8;
    }
}

/* A complete USR reply is exactly "+OK\r\n" (SET) or "$2\r\n??\r\n" (GET); a short or
 * error reply ("$-1\r\n", "-ERR ...") shows in its first bytes. */
static int usr_reply_bad(const struct conn *c) {
    int n = c->got < 8 ? c->got : 8;
    const char *want = c->want == 5 ? "+OK\r\n" : "$2\r\n";
    for (int i = 0; i < n && i < 4; i++) if (c->head[i] != want[i]) return 1;
    return c->got >= c->want && memcmp(c->head + c->want - 2, "\r\n", 2) != 0;
}

static int open_conn(struct conn *c, int idx) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0) { perror("socket"); return -1; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r = connect(fd, (struct sockaddr *)&dst, sizeof dst);
    if (r < 0 && errno != EINPROGRESS) { errors++; close(fd); return -1; }
    c->fd = fd; c->done = 0;
    open_conns++;
    next_request(c);
    clock_gettime(CLOCK_MONOTONIC, &t_start_conn[idx]);
    struct epoll_event ev = { .events = EPOLLOUT | EPOLLIN, .data.u32 = (unsigned)idx };
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    connects++;
    return 0;
}

static void finish(struct conn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    open_conns--;
}

/* Every USR key written with one MSET over a blocking connection: each GET hits. */
static int usr_populate(void) {
    static char cmd[USR_KEYS * 40 + 64];
    int n = sprintf(cmd, "*%d\r\n$4\r\nMSET\r\n", 1 + 2 * USR_KEYS);
    for (int k = 0; k < USR_KEYS; k++)
        n += sprintf(cmd + n, "$16\r\nkey:%012d\r\n$2\r\nvv\r\n", k);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char reply[5];
    int got = 0;
    if (fd < 0 || connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 ||
        send(fd, cmd, (size_t)n, MSG_NOSIGNAL) != n) goto fail;
    while (got < 5) {
        ssize_t r = recv(fd, reply + got, (size_t)(5 - got), 0);
        if (r <= 0) goto fail;
        got += (int)r;
    }
    if (memcmp(reply, "+OK\r\n", 5) != 0) goto fail;
    close(fd);
    return 0;
fail:
    perror("MSET before the run");
    if (fd >= 0) close(fd);
    return -1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s HOST PORT [CONC] [SECONDS] [SIZE] [PER_CONN] "
                "[WORKLOAD=echo|usr]\n", argv[0]);
        return 2;
    }
    int conc = argc > 3 ? atoi(argv[3]) : 64;
    double seconds = argc > 4 ? atof(argv[4]) : 5.0;
    size = argc > 5 ? atoi(argv[5]) : 64;
    per_conn = argc > 6 ? atol(argv[6]) : 1;
    usr = argc > 7 && strcmp(argv[7], "usr") == 0;
    if (conc < 1 || conc > MAX_CONC || size < 1 || size > (int)sizeof echo_req ||
        seconds <= 0 || per_conn < 0 || (argc > 7 && !usr && strcmp(argv[7], "echo") != 0)) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    for (int i = 0; i < size; i++) echo_req[i] = (char)i;
    for (int k = 0; k < USR_KEYS; k++) {
        usr_get_len[k] = sprintf(usr_get[k], "*2\r\n$3\r\nGET\r\n$16\r\nkey:%012d\r\n", k);
        usr_set_len[k] = sprintf(usr_set[k], "*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$2\r\nvv\r\n",
                                 k);
    }
    memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET;
    dst.sin_port = htons((unsigned short)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 2; }
    if (usr && usr_populate() < 0) return 1;
    epfd = epoll_create1(EPOLL_CLOEXEC);
    static struct conn conns[MAX_CONC];
    for (int i = 0; i < conc; i++) { conns[i].fd = -1; open_conn(&conns[i], i); }
    struct epoll_event evs[256];
    char buf[65536];
    double t0 = now(), deadline = t0 + seconds;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    int running = 1;
    long txns_run = 0;
    double elapsed = 0, lat_run = 0;
    while (running || open_conns > 0) {
        int n = epoll_wait(epfd, evs, 256, 100);
        double t = now();
        if (running && (t >= deadline || txns >= MAX_TXN)) {
            running = 0;
            elapsed = t - t0; txns_run = txns; lat_run = lat_sum;
            getrusage(RUSAGE_SELF, &ru1);
        }
        if (!running && t >= deadline + DRAIN_S) break;
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            struct conn *c = &conns[i];
            if (c->fd < 0) continue;
            if (evs[k].events & (EPOLLERR | EPOLLHUP) && c->got < c->want) {
                errors++; finish(c);
                if (running) open_conn(c, i);
                continue;
            }
            if (c->sent < c->req_len && (evs[k].events & EPOLLOUT)) {
                ssize_t w = send(c->fd, c->req + c->sent, (size_t)(c->req_len - c->sent),
                                 MSG_NOSIGNAL);
                if (w < 0) {
                    if (errno == EAGAIN) continue;
                    errors++; finish(c);
                    if (running) open_conn(c, i);
                    continue;
                }
                c->sent += (int)w;
                if (c->sent == c->req_len) {
                    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (unsigned)i };
                    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (evs[k].events & EPOLLIN) {
                ssize_t r = recv(c->fd, buf, sizeof buf, 0);
                if (r < 0 && errno == EAGAIN) continue;
                if (r <= 0) { errors++; finish(c); if (running) open_conn(c, i); continue; }
                if (usr) {
                    for (int j = 0; j < r && c->got + j < 8; j++) c->head[c->got + j] = buf[j];
                    c->got += (int)r;
                    if (c->got > c->want || usr_reply_bad(c)) {
                        bad_replies++; finish(c);
                        if (running) open_conn(c, i);
                        continue;
                    }
                } else {
                    c->got += (int)r;
                }
                if (c->got >= c->want) {
                    struct timespec t;
                    clock_gettime(CLOCK_MONOTONIC, &t);
                    lat_sum += (t.tv_sec - t_start_conn[i].tv_sec) +
                               (t.tv_nsec - t_start_conn[i].tv_nsec) / 1e9;
                    txns++;
                    if (++c->done != per_conn && running) {
                        /* the next transaction on the same connection */
                        next_request(c);
                        t_start_conn[i] = t;
                        struct epoll_event ev = { .events = EPOLLOUT | EPOLLIN,
                                                  .data.u32 = (unsigned)i };
                        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
                        continue;
                    }
                    finish(c);
                    if (running) open_conn(c, i);
                }
            }
        }
    }
    for (int i = 0; i < conc; i++) if (conns[i].fd >= 0) finish(&conns[i]);
    double cpu = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                 (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                 (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    printf("{\"transactions\": %ld, \"elapsed_s\": %.4f, \"tps\": %.1f, \"errors\": %ld, "
           "\"connects\": %ld, \"concurrency\": %d, \"size\": %d, \"client_cpu_s\": %.4f, "
           "\"client_cpu_pct\": %.1f, \"mean_latency_us\": %.1f, \"per_conn\": %ld, "
           "\"workload\": \"%s\", \"bad_replies\": %ld, \"sets\": %ld, \"drained\": %ld}\n",
           txns_run, elapsed, txns_run / elapsed, errors, connects, conc, usr ? 0 : size, cpu,
           100.0 * cpu / elapsed, txns_run ? 1e6 * lat_run / txns_run : 0.0, per_conn,
           usr ? "usr" : "echo", bad_replies, sets, txns - txns_run);
    return 0;
}

/*
 * http_client: HTTP/1.1 GET load with a fixed number of transactions per connection
 * (the AccelTCP paper's proxy sweeps, Figures 12 and 13). CONC connections in flight on
 * one epoll loop, for SECONDS; each sends GET PATH, reads the response (status line,
 * Content-Length, body), sends the next request, and after TXNS responses closes the
 * connection itself and opens a new one (the TXNS-th request carries
 * "Connection: close"). TXNS = 0: persistent, the connection is kept for the whole run.
 * Then one line of JSON: requests/s, connections, errors, body bytes, latency, and this
 * process's own CPU (so one can see whether the client is the bottleneck).
 *
 *   cc -O2 -o http_client http_client.c
 *   ./http_client HOST PORT PATH [CONC=32] [SECONDS=5] [TXNS=0]
 *
 * A response without Content-Length, with a status other than 200, a head over 8 KiB,
 * or a connection that ends before its response is complete counts as an error (the
 * connection is closed and a new one opened). Bounded: stops after SECONDS (or
 * 100,000,000 requests), closes everything, exits.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONC 4096
#define MAX_REQ 100000000L
#define HEAD_MAX 8192

struct conn {
    int fd;
    int sent;           /* bytes of the current request sent */
    int len;            /* its length */
    int done;           /* responses completed on this connection */
    int hlen;           /* head bytes collected */
    long body_left;     /* -1: reading the head */
    double t_req;       /* when the current request was started */
    char head[HEAD_MAX];
};

static struct sockaddr_in dst;
static int epfd, txns;
static char req_keep[1024], req_close[1024];
static int len_keep, len_close;
static long requests, errors, connects, bad_status, body_bytes;
static double lat_sum;
static struct conn conns[MAX_CONC];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void start_request(struct conn *c) {
    c->sent = 0;
    c->len = (txns > 0 && c->done + 1 == txns) ? len_close : len_keep;
    c->hlen = 0;
    c->body_left = -1;
    c->t_req = now();
}

static void open_conn(struct conn *c, int idx) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0) { perror("socket"); c->fd = -1; return; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r = connect(fd, (struct sockaddr *)&dst, sizeof dst);
    if (r < 0 && errno != EINPROGRESS) { errors++; close(fd); c->fd = -1; return; }
    c->fd = fd;
    c->done = 0;
    start_request(c);
    struct epoll_event ev = { .events = EPOLLOUT | EPOLLIN, .data.u32 = (unsigned)idx };
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    connects++;
}

static void finish(struct conn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

static void want(struct conn *c, int idx, unsigned events) {
    struct epoll_event ev = { .events = events, .data.u32 = (unsigned)idx };
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Send what is left of the current request: 0 done or waiting, -1 failed. */
static int send_some(struct conn *c, int idx) {
    const char *req = c->len == len_close ? req_close : req_keep;
    while (c->sent < c->len) {
        ssize_t w = send(c->fd, req + c->sent, (size_t)(c->len - c->sent), MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) { want(c, idx, EPOLLOUT | EPOLLIN); return 0; }
            return -1;
        }
        c->sent += (int)w;
    }
    want(c, idx, EPOLLIN);
    return 0;
}

/* The head is complete in c->head[0..end): status 200 and Content-Length, or -1. */
static long parse_head(struct conn *c, int end) {
    c->head[end - 1] = '\0';
    if (strncmp(c->head, "HTTP/1.", 7) != 0 || strncmp(c->head + 8, " 200", 4) != 0) {
        bad_status++;
        return -1;
    }
    for (char *p = strstr(c->head, "\r\n"); p && p < c->head + end; p = strstr(p + 2, "\r\n"))
        if (strncasecmp(p + 2, "content-length:", 15) == 0)
            return strtol(p + 17, NULL, 10);
    return -1;
}

/* Bytes of a response arrived: -1 error, 1 response complete, 0 more to come. */
static int got(struct conn *c, const char *buf, long n) {
    if (c->body_left < 0) {
        long take = n < HEAD_MAX - c->hlen ? n : HEAD_MAX - c->hlen;
        memcpy(c->head + c->hlen, buf, (size_t)take);
        int old = c->hlen;
        c->hlen += (int)take;
        int from = old > 3 ? old - 3 : 0;
        char *e = memmem(c->head + from, (size_t)(c->hlen - from), "\r\n\r\n", 4);
        if (!e) return c->hlen >= HEAD_MAX ? -1 : 0;
        int end = (int)(e - c->head) + 4;
        long clen = parse_head(c, end);
        if (clen < 0) return -1;
        long rest = (old + n) - end;        /* body bytes in this read */
        c->body_left = clen - rest;
        body_bytes += rest;
    } else {
        c->body_left -= n;
        body_bytes += n;
    }
    if (c->body_left < 0) return -1;        /* more than the body: nothing was asked */
    return c->body_left == 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT PATH [CONC] [SECONDS] [TXNS]\n", argv[0]);
        return 2;
    }
    int conc = argc > 4 ? atoi(argv[4]) : 32;
    double seconds = argc > 5 ? atof(argv[5]) : 5.0;
    txns = argc > 6 ? atoi(argv[6]) : 0;
    if (conc < 1 || conc > MAX_CONC || seconds <= 0 || txns < 0 || strlen(argv[3]) > 512
        || argv[3][0] != '/') {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    len_keep = snprintf(req_keep, sizeof req_keep, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n",
                        argv[3], argv[1]);
    len_close = snprintf(req_close, sizeof req_close,
                         "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                         argv[3], argv[1]);
    memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET;
    dst.sin_port = htons((unsigned short)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 2; }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < conc; i++) { conns[i].fd = -1; open_conn(&conns[i], i); }
    struct epoll_event evs[256];
    static char buf[1 << 16];
    double t0 = now(), deadline = t0 + seconds;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    int running = 1;
    while (running) {
        int n = epoll_wait(epfd, evs, 256, 100);
        if (now() >= deadline || requests >= MAX_REQ) running = 0;
        for (int k = 0; k < n && running; k++) {
            int i = (int)evs[k].data.u32;
            struct conn *c = &conns[i];
            if (c->fd < 0) continue;
            if ((evs[k].events & EPOLLOUT) && c->sent < c->len) {
                if (send_some(c, i) < 0) { errors++; finish(c); open_conn(c, i); continue; }
            }
            if (!(evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue;
            int r = 0;
            for (;;) {
                ssize_t m = recv(c->fd, buf, sizeof buf, 0);
                if (m < 0 && errno == EAGAIN) break;
                if (m <= 0) { r = -1; break; }
                r = got(c, buf, m);
                if (r != 0) break;
            }
            if (r < 0) { errors++; finish(c); open_conn(c, i); continue; }
            if (r == 1) {
                requests++;
                lat_sum += now() - c->t_req;
                c->done++;
                if (txns > 0 && c->done >= txns) { finish(c); open_conn(c, i); continue; }
                start_request(c);
                if (send_some(c, i) < 0) { errors++; finish(c); open_conn(c, i); }
            }
        }
    }
    double elapsed = now() - t0;
    getrusage(RUSAGE_SELF, &ru1);
    for (int i = 0; i < conc; i++) if (conns[i].fd >= 0) finish(&conns[i]);
    double cpu = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                 (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                 (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    printf("{\"requests\": %ld, \"elapsed_s\": %.4f, \"rps\": %.1f, \"errors\": %ld, "
           "\"bad_status\": %ld, \"connects\": %ld, \"concurrency\": %d, \"txns\": %d, "
           "\"body_bytes\": %ld, \"client_cpu_s\": %.4f, \"client_cpu_pct\": %.1f, "
           "\"latency_mean_us\": %.1f}\n",
           requests, elapsed, requests / elapsed, errors, bad_status, connects, conc, txns,
           body_bytes, cpu, 100.0 * cpu / elapsed,
           requests ? 1e6 * lat_sum / requests : 0.0);
    return 0;
}

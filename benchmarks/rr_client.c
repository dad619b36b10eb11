/*
 * rr_client: request/response load (the paper's msg_test shape): connect, then send SIZE
 * bytes and read SIZE bytes back PER_CONN times, close. PER_CONN 1 (the default) is one
 * connection per transaction; 0 keeps each connection for the whole run (persistent).
 * CONC connections in flight on one epoll loop, for SECONDS, then report JSON with
 * transactions/s and this process's own CPU (so one can see it is not the bottleneck).
 *
 *   cc -O2 -o rr_client rr_client.c
 *   ./rr_client HOST PORT [CONC=64] [SECONDS=5] [SIZE=64] [PER_CONN=1]
 *
 * Bounded: stops after SECONDS (or 10,000,000 transactions), closes everything, exits.
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

struct conn { int fd; int sent; int got; long done; };

static struct sockaddr_in dst;
static int epfd, size;
static long per_conn;
static char req[65536];
static long txns, errors, connects;
static double lat_sum;
static struct timespec t_start_conn[MAX_CONC];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int open_conn(struct conn *c, int idx) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0) { perror("socket"); return -1; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r = connect(fd, (struct sockaddr *)&dst, sizeof dst);
    if (r < 0 && errno != EINPROGRESS) { errors++; close(fd); return -1; }
    c->fd = fd; c->sent = 0; c->got = 0; c->done = 0;
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
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s HOST PORT [CONC] [SECONDS] [SIZE] [PER_CONN]\n", argv[0]);
        return 2;
    }
    int conc = argc > 3 ? atoi(argv[3]) : 64;
    double seconds = argc > 4 ? atof(argv[4]) : 5.0;
    size = argc > 5 ? atoi(argv[5]) : 64;
    per_conn = argc > 6 ? atol(argv[6]) : 1;
    if (conc < 1 || conc > MAX_CONC || size < 1 || size > (int)sizeof req || seconds <= 0 ||
        per_conn < 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    for (int i = 0; i < size; i++) req[i] = (char)i;
    memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET;
    dst.sin_port = htons((unsigned short)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 2; }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    static struct conn conns[MAX_CONC];
    for (int i = 0; i < conc; i++) { conns[i].fd = -1; open_conn(&conns[i], i); }
    struct epoll_event evs[256];
    char buf[65536];
    double t0 = now(), deadline = t0 + seconds;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    int running = 1;
    while (running) {
        int n = epoll_wait(epfd, evs, 256, 100);
        if (now() >= deadline || txns >= MAX_TXN) running = 0;
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            struct conn *c = &conns[i];
            if (c->fd < 0) continue;
            if (evs[k].events & (EPOLLERR | EPOLLHUP) && c->got < size) {
                errors++; finish(c);
                if (running) open_conn(c, i);
                continue;
            }
            if (c->sent < size && (evs[k].events & EPOLLOUT)) {
                ssize_t w = send(c->fd, req + c->sent, (size_t)(size - c->sent), MSG_NOSIGNAL);
                if (w < 0) {
                    if (errno == EAGAIN) continue;
                    errors++; finish(c);
                    if (running) open_conn(c, i);
                    continue;
                }
                c->sent += (int)w;
                if (c->sent == size) {
                    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (unsigned)i };
                    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (evs[k].events & EPOLLIN) {
                ssize_t r = recv(c->fd, buf, sizeof buf, 0);
                if (r < 0 && errno == EAGAIN) continue;
                if (r <= 0) { errors++; finish(c); if (running) open_conn(c, i); continue; }
                c->got += (int)r;
                if (c->got >= size) {
                    struct timespec t;
                    clock_gettime(CLOCK_MONOTONIC, &t);
                    lat_sum += (t.tv_sec - t_start_conn[i].tv_sec) +
                               (t.tv_nsec - t_start_conn[i].tv_nsec) / 1e9;
                    txns++;
                    if (++c->done != per_conn && running) {
                        /* the next transaction on the same connection */
                        c->sent = 0; c->got = 0;
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
    double elapsed = now() - t0;
    getrusage(RUSAGE_SELF, &ru1);
    for (int i = 0; i < conc; i++) if (conns[i].fd >= 0) finish(&conns[i]);
    double cpu = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                 (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                 (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    printf("{\"transactions\": %ld, \"elapsed_s\": %.4f, \"tps\": %.1f, \"errors\": %ld, "
           "\"connects\": %ld, \"concurrency\": %d, \"size\": %d, \"client_cpu_s\": %.4f, "
           "\"client_cpu_pct\": %.1f, \"mean_latency_us\": %.1f, \"per_conn\": %ld}\n",
           txns, elapsed, txns / elapsed, errors, connects, conc, size, cpu,
           100.0 * cpu / elapsed, txns ? 1e6 * lat_sum / txns : 0.0, per_conn);
    return 0;
}

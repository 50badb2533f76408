/*
 * A WebSocket echo and HTTP/1.1 load generator in C: one thread, epoll, no WebSocket or HTTP
 * library.
 *
 * Why C: the Python generator (bench/wsload.py, raw uvloop protocols) saturates its own core
 * at about 130,000 echoes/s, so it could not tell plezi and picows apart. This one spends a
 * fraction of that per message, so the server's core is what limits the figure.
 *
 * Each of --conns connections keeps exactly one message in flight: it sends a pre-built masked
 * frame, counts bytes until the whole echo frame is back, then sends the next. Prints one JSON
 * line, as wsload.py does: {"msgs_per_s": ..., "client_cpu": ...} over --seconds after
 * --warmup seconds. Exits non-zero with a message on any error (refused handshake, a reset,
 * more bytes than one echo, a server that closes).
 *
 * --tls speaks wss:// (OpenSSL, TLS 1.2 or 1.3, the server's certificate not checked: the
 * bench makes its own): each connection's TLS and WebSocket handshakes are done before the
 * clock starts, so the figure is the echo over TLS records.
 *
 * The next messages of the connections whose echoes came back in one epoll_wait are sent
 * together, in one io_uring_enter (plain TCP, where the kernel has io_uring; else a write()
 * each): a server that batches its replies so (plezi, 2026-12-05) otherwise out-ran this
 * generator's core at 32 bytes (95-97% of it busy). --no-uring writes one at a time.
 *
 * --http: each connection sends `GET /` (keep-alive), --depth N of them in one write (default 1;
 * more is pipelining), and counts the responses; when all N are back it sends the next N.
 * Prints {"req_per_s": ..., "client_cpu": ...}. Why: wrk -t1 -c50 ran its core at 90-99% against
 * the hello servers (2026-12-05), so it measured itself against the bare uvloop+httptools one
 * (111k req/s; 147k from this, at 90% of its core). Responses are framed by Content-Length only:
 * a status other than 200, no Content-Length or a Transfer-Encoding is an error, as are bytes
 * past the last response of a batch or a connection the server closes.
 *
 * Build: gcc -O2 -o bench/.build/wsload bench/wsload.c -lssl -lcrypto  (bench/run.py does it)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <linux/io_uring.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    SSL *ssl;          /* --tls: the connection's TLS state; NULL for plain TCP */
    int handshaking;
    size_t head_len;   /* bytes of the handshake reply (--http: of a split response head) read */
    char head[1024];
    size_t got;        /* bytes of the current echo received (--http: responses of the batch) */
    size_t sent;       /* bytes of the current frame written (partial writes) */
    size_t body;       /* --http: bytes of the current response's body still to skip */
} conn_t;

/* What each connection sends: the masked echo frame, or --http's batch of requests. */
static unsigned char *frame;
static size_t frame_len, expect;
static long long count; /* echoes, or --http responses */
static int http, depth = 1;
static int ep;
static SSL_CTX *tls; /* --tls */

/* The batched sends: connections whose next frame waits for the end of this epoll pass. */
static conn_t **queued;
static int queued_len, use_uring = 1;
static struct {
    int fd;
    unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
} ring = {.fd = -1};

static int ring_setup(unsigned entries) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    if (fd < 0) return -1;
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) { close(fd); return -1; }
    size_t sq = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    char *m = mmap(NULL, sq > cq ? sq : cq, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                   IORING_OFF_SQ_RING);
    void *sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (m == MAP_FAILED || sqes == MAP_FAILED) { close(fd); return -1; }
    ring.sq_tail = (unsigned *)(m + p.sq_off.tail);
    ring.sq_mask = (unsigned *)(m + p.sq_off.ring_mask);
    ring.sq_array = (unsigned *)(m + p.sq_off.array);
    ring.cq_head = (unsigned *)(m + p.cq_off.head);
    ring.cq_tail = (unsigned *)(m + p.cq_off.tail);
    ring.cq_mask = (unsigned *)(m + p.cq_off.ring_mask);
    ring.cqes = (struct io_uring_cqe *)(m + p.cq_off.cqes);
    ring.sqes = sqes;
    ring.fd = fd;
    return 0;
}

static void die(const char *what) {
    fprintf(stderr, "wsload: %s: %s\n", what, errno ? strerror(errno) : "error");
    exit(1);
}

static double now(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* read() and write(), through TLS for a --tls connection: -1 with EAGAIN when TLS needs the
 * socket to be readable or writable first, 0 at the end of the stream. */
static ssize_t tls_result(conn_t *c, int r) {
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) { errno = EAGAIN; return -1; }
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0)) return 0;
    ERR_print_errors_fp(stderr);
    if (errno == 0 || errno == EAGAIN) errno = EIO;
    return -1;
}

static ssize_t io_read(conn_t *c, void *buf, size_t n) {
    if (!c->ssl) return read(c->fd, buf, n);
    errno = 0;
    return tls_result(c, SSL_read(c->ssl, buf, (int)n));
}

static ssize_t io_write(conn_t *c, const void *buf, size_t n) {
    if (!c->ssl) return write(c->fd, buf, n);
    errno = 0;
    return tls_result(c, SSL_write(c->ssl, buf, (int)n));
}

/* Write what is left of the frame; wait for EPOLLOUT if the socket is full. */
static void send_frame(conn_t *c) {
    while (c->sent < frame_len) {
        ssize_t n = io_write(c, frame + c->sent, frame_len - c->sent);
        if (n < 0) {
            if (errno == EAGAIN) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
                return;
            }
            die("write");
        }
        c->sent += (size_t)n;
    }
}

/* Send the queued connections' next frames: one io_uring_enter for them all; what a socket
 * does not take (a short send, EAGAIN) goes on through send_frame. */
static void send_queued(void) {
    int n = queued_len;
    queued_len = 0;
    if (n < 2 || ring.fd < 0) {
        for (int i = 0; i < n; i++) send_frame(queued[i]);
        return;
    }
    unsigned tail = *ring.sq_tail;
    for (int i = 0; i < n; i++) {
        unsigned index = tail & *ring.sq_mask;
        struct io_uring_sqe *sqe = &ring.sqes[index];
        memset(sqe, 0, sizeof *sqe);
        sqe->opcode = IORING_OP_SEND;
        sqe->fd = queued[i]->fd;
        sqe->addr = (uint64_t)(uintptr_t)frame;
        sqe->len = (uint32_t)frame_len;
        sqe->msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL;
        sqe->user_data = (uint64_t)i;
        ring.sq_array[index] = index;
        tail++;
    }
    __atomic_store_n(ring.sq_tail, tail, __ATOMIC_RELEASE);
    int done = 0;
    while (done < n) {
        int rc = (int)syscall(__NR_io_uring_enter, ring.fd, done ? 0 : n, n - done,
                              IORING_ENTER_GETEVENTS, NULL, 0);
        if (rc < 0 && errno != EINTR) die("io_uring_enter");
        unsigned head = *ring.cq_head, end = __atomic_load_n(ring.cq_tail, __ATOMIC_ACQUIRE);
        for (; head != end; head++, done++) {
            struct io_uring_cqe *cqe = &ring.cqes[head & *ring.cq_mask];
            conn_t *c = queued[cqe->user_data];
            if (cqe->res < 0 && cqe->res != -EAGAIN) { errno = -cqe->res; die("send"); }
            c->sent = cqe->res > 0 ? (size_t)cqe->res : 0;
            if (c->sent < frame_len) send_frame(c);
        }
        __atomic_store_n(ring.cq_head, head, __ATOMIC_RELEASE);
    }
}

/* Start the connection's next frame: queued for this epoll pass's io_uring_enter, or written. */
static void send_next(conn_t *c) {
    c->sent = 0;
    if (queued && !c->ssl)
        queued[queued_len++] = c;
    else
        send_frame(c);
}

/* Count received echo bytes; one whole echo starts the next message. */
static void received(conn_t *c, size_t n) {
    c->got += n;
    if (c->got > expect) {
        fprintf(stderr, "wsload: %zu bytes received for one echo of %zu\n", c->got, expect);
        exit(1);
    }
    if (c->got == expect) {
        c->got = 0;
        count++;
        send_next(c);
    }
}

static void bad_response(const char *why, const char *head, size_t len) {
    const char *eol = memchr(head, '\r', len);
    fprintf(stderr, "wsload: %s: %.*s\n", why, (int)(eol ? (size_t)(eol - head) : len), head);
    exit(1);
}

/* The Content-Length of a response head (``len`` bytes, through its last line's CRLF); exits
 * unless it is a 200 framed by Content-Length. Header names are matched case-insensitively. */
static size_t content_length(const char *head, size_t len) {
    const char *end = head + len, *eol = memchr(head, '\n', len);
    if (len < 13 || memcmp(head, "HTTP/1.", 7) || memcmp(head + 8, " 200", 4) ||
        (head[12] != ' ' && head[12] != '\r'))
        bad_response("not a 200 response", head, len);
    long long length = -1;
    for (const char *line = eol + 1; line < end; line = eol + 1) {
        eol = memchr(line, '\n', (size_t)(end - line));
        size_t n = (size_t)(eol - line);
        if (n > 18 && !strncasecmp(line, "transfer-encoding:", 18))
            bad_response("a Transfer-Encoding (only Content-Length bodies are counted)", line, n);
        if (n <= 15 || strncasecmp(line, "content-length:", 15)) continue;
        const char *v = line + 15;
        while (*v == ' ' || *v == '\t') v++;
        if (*v < '0' || *v > '9') bad_response("a bad Content-Length", line, n);
        for (length = 0; *v >= '0' && *v <= '9'; v++) length = length * 10 + (*v - '0');
        while (*v == ' ' || *v == '\t') v++;
        if (*v != '\r' && *v != '\n') bad_response("a bad Content-Length", line, n);
    }
    if (length < 0) bad_response("a response without Content-Length", head, len);
    return (size_t)length;
}

/* --http: one whole response; the batch's last starts the next batch. ``left``: bytes read
 * after it, which the server cannot have sent before that batch. */
static void responded(conn_t *c, size_t left) {
    count++;
    if (++c->got < (size_t)depth) return;
    if (left) {
        fprintf(stderr, "wsload: %zu bytes past the %d responses of a batch\n", left, depth);
        exit(1);
    }
    c->got = 0;
    send_next(c);
}

/* --http: walk the responses in ``buf``: a head up to its blank line, found in place when the
 * read holds it whole (the usual case, no copy) or gathered in c->head across reads, then its
 * Content-Length of body skipped, however the reads split it. */
static void http_received(conn_t *c, const char *buf, size_t n) {
    while (n) {
        if (c->body) {
            size_t skip = n < c->body ? n : c->body;
            c->body -= skip;
            buf += skip;
            n -= skip;
            if (!c->body) responded(c, n);
            continue;
        }
        const char *head = buf, *end = c->head_len ? NULL : memmem(buf, n, "\r\n\r\n", 4);
        size_t used;
        if (end) {
            used = (size_t)(end + 4 - buf);
        } else {
            /* the terminator may straddle the reads: search from 3 bytes before the new ones */
            size_t from = c->head_len < 3 ? 0 : c->head_len - 3;
            size_t room = sizeof c->head - c->head_len, take = n < room ? n : room;
            memcpy(c->head + c->head_len, buf, take);
            c->head_len += take;
            end = memmem(c->head + from, c->head_len - from, "\r\n\r\n", 4);
            if (!end) {
                if (c->head_len == sizeof c->head)
                    bad_response("a response head too long", c->head, 80);
                return;
            }
            head = c->head;
            used = (size_t)(end + 4 - c->head) - (c->head_len - take);
            c->head_len = 0;
        }
        c->body = content_length(head, (size_t)(end + 2 - head));
        buf += used;
        n -= used;
        if (!c->body) responded(c, n);
    }
}

static void on_readable(conn_t *c) {
    static char buf[1 << 16];
    for (;;) {
        ssize_t n = io_read(c, buf, sizeof buf);
        if (n == 0) {
            fprintf(stderr, "wsload: the server closed a connection\n");
            exit(1);
        }
        if (n < 0) {
            if (errno == EAGAIN) return;
            die("read");
        }
        if (!c->handshaking) {
            if (http)
                http_received(c, buf, (size_t)n);
            else
                received(c, (size_t)n);
            /* drained: skip the EAGAIN read (unless TLS holds decrypted bytes epoll cannot see) */
            if ((size_t)n < sizeof buf && !(c->ssl && SSL_pending(c->ssl))) return;
            continue;
        }
        size_t room = sizeof c->head - 1 - c->head_len;
        size_t take = (size_t)n < room ? (size_t)n : room;
        memcpy(c->head + c->head_len, buf, take);
        c->head_len += take;
        c->head[c->head_len] = 0;
        char *end = strstr(c->head, "\r\n\r\n");
        if (!end) {
            if (c->head_len == sizeof c->head - 1) {
                fprintf(stderr, "wsload: handshake reply too long\n");
                exit(1);
            }
            continue;
        }
        if (strncmp(c->head, "HTTP/1.1 101", 12) != 0) {
            fprintf(stderr, "wsload: handshake failed: %.80s\n", c->head);
            exit(1);
        }
        c->handshaking = 0;
        size_t used = (size_t)(end + 4 - c->head) - (c->head_len - take);
        send_frame(c);
        if ((size_t)n > used) received(c, (size_t)n - used);
    }
}

/* --http: ``depth`` keep-alive requests for / in one buffer, written at once. */
static void build_requests(const char *host, int port) {
    char req[128];
    int len = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: %s:%d\r\n\r\n", host, port);
    frame_len = (size_t)len * (size_t)depth;
    frame = malloc(frame_len);
    if (!frame) die("malloc");
    for (int i = 0; i < depth; i++) memcpy(frame + (size_t)i * (size_t)len, req, (size_t)len);
}

/* The WebSocket upgrade request, written blocking (the socket is not yet non-blocking). */
static void send_handshake(conn_t *c, const char *host, int port) {
    char req[256];
    unsigned char key[16];
    for (int k = 0; k < 16; k++) key[k] = (unsigned char)rand();
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char k64[25];
    for (int k = 0, o = 0; k < 16; k += 3) {
        uint32_t v = (uint32_t)key[k] << 16 | (k + 1 < 16 ? (uint32_t)key[k + 1] << 8 : 0) |
                     (k + 2 < 16 ? key[k + 2] : 0);
        k64[o++] = b64[v >> 18 & 63];
        k64[o++] = b64[v >> 12 & 63];
        k64[o++] = k + 1 < 16 ? b64[v >> 6 & 63] : '=';
        k64[o++] = k + 2 < 16 ? b64[v & 63] : '=';
    }
    k64[24] = 0;
    int len = snprintf(req, sizeof req,
                       "GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n",
                       host, port, k64);
    if (io_write(c, req, (size_t)len) != len) die("write handshake");
}

static void build_frame(size_t size, int binary) {
    size_t head = size < 126 ? 2 : size < 65536 ? 4 : 10;
    frame_len = head + 4 + size;
    expect = (size < 126 ? 2 : size < 65536 ? 4 : 10) + size;
    frame = malloc(frame_len);
    if (!frame) die("malloc");
    frame[0] = 0x80 | (binary ? 2 : 1);
    if (size < 126) {
        frame[1] = 0x80 | (unsigned char)size;
    } else if (size < 65536) {
        frame[1] = 0x80 | 126;
        frame[2] = (unsigned char)(size >> 8);
        frame[3] = (unsigned char)size;
    } else {
        frame[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) frame[2 + i] = (unsigned char)((uint64_t)size >> (56 - 8 * i));
    }
    unsigned char mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    memcpy(frame + head, mask, 4);
    unsigned char fill = binary ? 'x' : 'a';
    for (size_t i = 0; i < size; i++) frame[head + 4 + i] = fill ^ mask[i % 4];
}

/* Run the event loop until ``deadline`` (CLOCK_MONOTONIC seconds). */
static void run_until(double deadline) {
    struct epoll_event events[256];
    for (;;) {
        double left = deadline - now(CLOCK_MONOTONIC);
        if (left <= 0) return;
        int n = epoll_wait(ep, events, 256, (int)(left * 1000) + 1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            if (events[i].events & EPOLLOUT) {
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
                send_frame(c);
            }
            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
        }
        send_queued();
    }
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 0, conns = 50, binary = 0;
    size_t size = 32;
    double seconds = 5, warmup = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--binary")) { binary = 1; continue; }
        if (!strcmp(a, "--no-uring")) { use_uring = 0; continue; }
        if (!strcmp(a, "--http")) { http = 1; continue; }
        if (!strcmp(a, "--tls")) {
            tls = SSL_CTX_new(TLS_client_method());
            if (!tls) die("SSL_CTX_new");
            SSL_CTX_set_verify(tls, SSL_VERIFY_NONE, NULL);
            continue;
        }
        if (!v) { fprintf(stderr, "wsload: %s needs a value\n", a); return 2; }
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--conns")) conns = atoi(v);
        else if (!strcmp(a, "--size")) size = (size_t)atol(v);
        else if (!strcmp(a, "--seconds")) seconds = atof(v);
        else if (!strcmp(a, "--warmup")) warmup = atof(v);
        else if (!strcmp(a, "--depth")) depth = atoi(v);
        else { fprintf(stderr, "wsload: unknown option %s\n", a); return 2; }
        i++;
    }
    if (port <= 0 || conns <= 0) { fprintf(stderr, "wsload: --port and --conns are required\n"); return 2; }
    if (depth <= 0 || (depth > 1 && !http)) {
        fprintf(stderr, "wsload: --depth N (N > 0) needs --http\n");
        return 2;
    }
    if (http && tls) {
        fprintf(stderr, "wsload: --http does not speak TLS (wrk measures https)\n");
        return 2;
    }
    if (http)
        build_requests(host, port);
    else
        build_frame(size, binary);
    /* Each connection queues at most one frame per epoll pass. */
    if (use_uring && !tls && ring_setup((unsigned)conns) == 0) {
        queued = calloc((size_t)conns, sizeof *queued);
        if (!queued) die("calloc");
    }
    ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) { fprintf(stderr, "wsload: bad host\n"); return 2; }
    conn_t *all = calloc((size_t)conns, sizeof *all);
    if (!all) die("calloc");
    for (int i = 0; i < conns; i++) {
        conn_t *c = &all[i];
        c->handshaking = !http;
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0) die("socket");
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
        if (tls) { /* the TLS handshake, blocking, before the WebSocket one */
            c->ssl = SSL_new(tls);
            if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) die("SSL_new");
            SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
            if (SSL_connect(c->ssl) != 1) { ERR_print_errors_fp(stderr); die("TLS handshake"); }
        }
        if (!http) send_handshake(c, host, port);
        if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) < 0) die("fcntl");
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
        if (http) send_frame(c);
    }
    run_until(now(CLOCK_MONOTONIC) + warmup);
    for (int i = 0; i < conns; i++)
        if (all[i].handshaking) { fprintf(stderr, "wsload: a handshake did not finish\n"); return 1; }
    long long start_count = count;
    double t0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
    run_until(t0 + seconds);
    double elapsed = now(CLOCK_MONOTONIC) - t0;
    double cpu = (now(CLOCK_PROCESS_CPUTIME_ID) - c0) / elapsed;
    printf("{\"%s\": %.1f, \"client_cpu\": %.3f}\n", http ? "req_per_s" : "msgs_per_s",
           (double)(count - start_count) / elapsed, cpu);
    return 0;
}

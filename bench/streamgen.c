/*
 * streamgen: the stream client of bench/loadgen.py (_stream) in C, and the two
 * ends of the plain TCP stream that run.py measures as the loopback limit.
 *
 *     streamgen read|write HOST PORT FH_HEX SIZE IO DEPTH
 *     streamgen loopback-send HOST PORT SIZE IO [FILE]
 *     streamgen loopback HOST PORT SIZE IO
 *
 * read/write: FH_HEX is the file's handle (loadgen.py --engine c did the MNT,
 * FSINFO and LOOKUP, and capped IO by rtmax or wtmax).  One TCP connection,
 * DEPTH calls outstanding: READs of IO bytes at increasing offsets, or WRITEs
 * UNSTABLE of IO bytes (the last ones shorter) and then one COMMIT (offset 0,
 * count 0), the calls of loadgen.py's Python client in the same order.  Each
 * reply is read whole, a READ's data straight into one buffer (no copy but
 * the kernel's).  Prints one JSON line with the keys of loadgen.py's _stream.
 *
 * loopback-send: listen on HOST:PORT, print "listening", accept one
 * connection, wait for its 4-byte go, send SIZE bytes in IO-sized send()s
 * from one buffer (with FILE: IO-sized sendfile()s of FILE's first SIZE
 * bytes, as a READ is answered from the page cache), close.  loopback: connect, send go, recv() into an IO-sized
 * buffer until SIZE bytes came; timed from the go to the last byte.  The same
 * program as the NFS client, so that READ's share of the loopback compares
 * two clients of equal efficiency.
 *
 * Any RPC-level failure is fatal (message on stderr, exit 1).
 * Build: cc -O2 -o streamgen streamgen.c   (only libc; client.h beside it)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/sendfile.h>
#include <sys/uio.h>

#include "client.h"

#define LAST_FRAG 0x80000000u
#define NFS_PROG 100003u
#define NFS_VERS 3u
#define FH_MAX 64                       /* NFS3_FHSIZE (RFC 1813 section 2.4) */
#define IO_MAX (16u << 20)
#define MAX_DEPTH 256
#define SMALL 4096                      /* what is read at a record's start */
#define UNSTABLE 0
enum { P_READ, P_WRITE, P_COMMIT, NPROC };
static const uint32_t proc_num[NPROC] = {6, 7, 21};
static const char *const proc_name[NPROC] = {"READ", "WRITE", "COMMIT"};

static void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("streamgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static inline void be64(uint8_t *p, uint64_t v)
{
    be32(p, (uint32_t)(v >> 32));
    be32(p + 4, (uint32_t)v);
}

static unsigned long long number(const char *s, const char *what)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || end == s)
        fatal("bad %s %s", what, s);
    return v;
}

static void send_iov(int fd, struct iovec *iov, int n)
{
    while (n) {
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t k = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            fatal("send: %s", strerror(errno));
        }
        while (n && (size_t)k >= iov->iov_len) {
            k -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n) {
            iov->iov_base = (uint8_t *)iov->iov_base + k;
            iov->iov_len -= (size_t)k;
        }
    }
}

/* recv() up to n bytes (at least one); fatal at the end of the stream */
static size_t recv_some(int fd, uint8_t *p, size_t n)
{
    ssize_t k;
    do
        k = recv(fd, p, n, 0);
    while (k < 0 && errno == EINTR);
    if (k < 0)
        fatal("recv: %s", strerror(errno));
    if (k == 0)
        fatal("the server closed the connection");
    return (size_t)k;
}

/* ------------------------------------------------------------ the NFS stream */
struct conn {
    int fd;
    uint8_t small[SMALL];           /* the stream at record boundaries: small[spos..have) */
    size_t spos, have;
    uint8_t *rec;                   /* the record being reassembled, reclen bytes */
    size_t reclen, reccap;
};

/* One reply record (RFC 5531 section 11, record marking) into c->rec.  Marks
 * and small records come through c->small; the rest of a big fragment is read
 * straight into place with recv()s of exactly what is missing, so the stream
 * is never read past the end of the record being reassembled but for what
 * followed a mark in the small buffer. */
static void recv_record(struct conn *c)
{
    c->reclen = 0;
    for (;;) {
        if (c->have - c->spos < 4) {
            memmove(c->small, c->small + c->spos, c->have - c->spos);
            c->have -= c->spos;
            c->spos = 0;
            while (c->have < 4)
                c->have += recv_some(c->fd, c->small + c->have, SMALL - c->have);
        }
        uint32_t mark = get32(c->small + c->spos);
        size_t flen = mark & ~LAST_FRAG;
        c->spos += 4;
        if (flen > c->reccap - c->reclen)
            fatal("reply record larger than %zu bytes", c->reccap);
        size_t k = c->have - c->spos < flen ? c->have - c->spos : flen;
        memcpy(c->rec + c->reclen, c->small + c->spos, k);
        c->spos += k;
        size_t got = k;
        while (got < flen)
            got += recv_some(c->fd, c->rec + c->reclen + got, flen - got);
        c->reclen += flen;
        if (mark & LAST_FRAG)
            return;
    }
}

/* The call header after the xid (RFC 5531 section 9): CALL, rpcvers 2, prog,
 * vers, proc, AUTH_SYS (stamp 0, machine "streamgen", uid 0, gid 0, no gids),
 * AUTH_NONE verifier: what loadgen.py sends but for the machine name. */
#define HDR_LEN 64
static void call_header(uint8_t *h, int proc)
{
    static const char machine[] = "streamgn";            /* 8 bytes, no padding */
    memset(h, 0, HDR_LEN);
    be32(h + 4, 2);
    be32(h + 8, NFS_PROG);
    be32(h + 12, NFS_VERS);
    be32(h + 16, proc_num[proc]);
    be32(h + 20, 1);
    be32(h + 24, 28);
    be32(h + 32, 8);
    memcpy(h + 36, machine, 8);
}

struct slot {
    uint32_t xid;
    int busy;
    int64_t start;
    uint32_t count;
};

struct stream {
    struct conn c;
    int mode;                       /* P_READ or P_WRITE */
    uint8_t fh[FH_MAX];
    uint32_t fhlen;
    uint64_t size, next;            /* the file's size, the next offset to ask for */
    uint32_t io;
    uint32_t xid;
    uint8_t *data;                  /* WRITE's data */
    struct slot slot[MAX_DEPTH];
    int depth, outstanding;
    uint64_t calls[NPROC], done_bytes, errors;
    int64_t *lat;
    size_t nlat, latcap;
};

/* Send one call: the record mark, xid, header, the handle and args (and data). */
static void send_call(struct stream *s, int proc, uint64_t off, uint32_t count, struct slot *sl)
{
    uint8_t b[8 + HDR_LEN + 4 + FH_MAX + 24];
    size_t n = 8;
    call_header(b + 8, proc);
    n += HDR_LEN;
    be32(b + n, s->fhlen);
    memcpy(b + n + 4, s->fh, s->fhlen);
    memset(b + n + 4 + s->fhlen, 0, -s->fhlen & 3);
    n += 4 + ((s->fhlen + 3) & ~3u);
    be64(b + n, off);
    be32(b + n + 8, count);                  /* READ3args / COMMIT3args count */
    n += 12;
    size_t datalen = 0;
    if (proc == P_WRITE) {                  /* WRITE3args: stable, data<> */
        be32(b + n, UNSTABLE);
        be32(b + n + 4, count);
        n += 8;
        datalen = ((size_t)count + 3) & ~(size_t)3;
    }
    s->xid++;
    be32(b, LAST_FRAG | (uint32_t)(n - 4 + datalen));
    be32(b + 4, s->xid);
    struct iovec iov[2] = {{b, n}, {s->data, datalen}};
    if (sl) {
        sl->xid = s->xid;
        sl->busy = 1;
        sl->count = count;
        sl->start = now_ns();
    }
    send_iov(s->c.fd, iov, datalen ? 2 : 1);
    s->calls[proc]++;
}

/* The reply's results after accept_stat (RFC 5531 section 9); its xid in *xid. */
static const uint8_t *reply_results(struct stream *s, uint32_t *xid, const uint8_t **end)
{
    const uint8_t *p = s->c.rec, *e = p + s->c.reclen;
    if (s->c.reclen < 24)
        fatal("short reply (%zu bytes)", s->c.reclen);
    *xid = get32(p);
    if (get32(p + 4) != 1 || get32(p + 8) != 0)
        fatal("call denied");
    uint32_t vl = get32(p + 16);
    if (vl > 400 || 24 + ((vl + 3) & ~3u) + 4 > s->c.reclen)
        fatal("bad verifier");
    p += 20 + ((vl + 3) & ~3u);
    if (get32(p) != 0)
        fatal("accept_stat %u", get32(p));
    *end = e;
    return p + 4;
}

static void stream_run(struct stream *s)
{
    int proc = s->mode;
    /* fill the pipe: DEPTH calls, then one more for every reply */
    for (int i = 0; i < s->depth && s->next < s->size; i++) {
        uint32_t n = s->size - s->next < s->io ? (uint32_t)(s->size - s->next) : s->io;
        send_call(s, proc, s->next, n, &s->slot[i]);
        s->next += n;
        s->outstanding++;
    }
    while (s->outstanding) {
        recv_record(&s->c);
        int64_t t = now_ns();
        uint32_t xid;
        const uint8_t *end, *r = reply_results(s, &xid, &end);
        struct slot *sl = NULL;
        for (int i = 0; i < s->depth; i++)
            if (s->slot[i].busy && s->slot[i].xid == xid)
                sl = &s->slot[i];
        if (!sl)
            continue;                       /* not ours (as loadgen.py: ignored) */
        sl->busy = 0;
        s->outstanding--;
        if (end - r < 4)
            fatal("short %s reply", proc_name[proc]);
        if (get32(r)) {
            s->errors++;
        } else if (proc == P_READ) {
            /* READ3resok: post_op_attr, count, eof, data<> */
            const uint8_t *q = r + 4;
            if (end - q < 4 || (get32(q) && end - q < 88 + 12) || end - q < 12)
                fatal("short READ reply");
            q += get32(q) ? 88 : 4;
            s->done_bytes += get32(q);
            s->lat[s->nlat++] = t - sl->start;
        } else {
            s->done_bytes += sl->count;
            s->lat[s->nlat++] = t - sl->start;
        }
        if (s->next < s->size) {
            uint32_t n = s->size - s->next < s->io ? (uint32_t)(s->size - s->next) : s->io;
            send_call(s, proc, s->next, n, sl);
            s->next += n;
            s->outstanding++;
        }
    }
}

static int nfs_stream(int argc, char **argv)
{
    if (argc != 8)
        fatal("usage: streamgen read|write HOST PORT FH_HEX SIZE IO DEPTH");
    static struct stream st;
    struct stream *s = &st;
    s->mode = strcmp(argv[1], "read") == 0 ? P_READ : P_WRITE;
    size_t hl = strlen(argv[4]);
    if (hl == 0 || hl % 2 || hl / 2 > FH_MAX || unhex((uint8_t *)argv[4], (uint32_t)hl, s->fh) < 0)
        fatal("bad file handle %s", argv[4]);
    s->fhlen = (uint32_t)(hl / 2);
    s->size = number(argv[5], "SIZE");
    unsigned long long io = number(argv[6], "IO");
    unsigned long long depth = number(argv[7], "DEPTH");
    if (io == 0 || io > IO_MAX)
        fatal("IO must be 1..%u", IO_MAX);
    if (depth == 0 || depth > MAX_DEPTH)
        fatal("DEPTH must be 1..%d", MAX_DEPTH);
    s->io = (uint32_t)io;
    s->depth = (int)depth;
    s->c.reccap = (size_t)io + 65536;
    s->c.rec = xmalloc(s->c.reccap);
    s->latcap = s->size / s->io + 2;
    s->lat = xmalloc(s->latcap * sizeof *s->lat);
    if (s->mode == P_WRITE) {
        s->data = xmalloc((size_t)io + 4);
        uint32_t x = (uint32_t)now_ns() | 1;
        for (size_t i = 0; i < io + 4; i++) {        /* not compressible, like os.urandom */
            x ^= x << 13; x ^= x >> 17; x ^= x << 5;
            s->data[i] = (uint8_t)x;
        }
    }
    s->c.fd = connect_to(argv[2], argv[3]);
    s->xid = ((uint32_t)now_ns() ^ (uint32_t)getpid() << 16) & 0x3FFFFFFF;

    double cpu0 = cpu_seconds();
    int64_t t0 = now_ns();
    stream_run(s);
    int64_t t1 = now_ns();
    double commit_s = 0;
    if (s->mode == P_WRITE) {
        struct slot sl = {0};
        send_call(s, P_COMMIT, 0, 0, &sl);
        uint32_t xid;
        const uint8_t *end;
        do {
            recv_record(&s->c);
            reply_results(s, &xid, &end);
        } while (xid != sl.xid);
        commit_s = (now_ns() - t1) / 1e9;
    }
    double cpu = cpu_seconds() - cpu0;
    close(s->c.fd);
    double wall = (t1 - t0) / 1e9;
    size_t ops = s->nlat;
    qsort(s->lat, ops, sizeof *s->lat, cmp_i64);
    double p50 = 0, p99 = 0;
    if (ops) {
        size_t i99 = (size_t)(ops * 0.99);
        p50 = s->lat[ops / 2] / 1000.0;
        p99 = s->lat[i99 < ops - 1 ? i99 : ops - 1] / 1000.0;
    }
    printf("{\"workload\": \"stream\", \"mode\": \"%s\", \"io_size\": %u, \"depth\": %d, "
           "\"bytes\": %llu, \"seconds\": %.9g, \"mb_per_s\": %.9g, \"commit_s\": %.9g, "
           "\"errors\": %llu, \"ops\": %zu, \"gen_cpu_s\": %.9g, \"gen_cpu_us_per_op\": %.9g, "
           "\"calls\": {",
           argv[1], s->io, s->depth, (unsigned long long)s->done_bytes, wall,
           wall > 0 ? s->done_bytes / wall / 1e6 : 0.0, commit_s,
           (unsigned long long)s->errors, ops, cpu, cpu / (double)(ops ? ops : 1) * 1e6);
    const char *sep = "";
    for (int p = 0; p < NPROC; p++) {
        if (s->calls[p]) {
            printf("%s\"%s\": %llu", sep, proc_name[p], (unsigned long long)s->calls[p]);
            sep = ", ";
        }
    }
    printf("}, \"p50_us\": %.9g, \"p99_us\": %.9g}\n", p50, p99);
    if (fflush(stdout) != 0)
        fatal("cannot write the result");
    return 0;
}

/* ------------------------------------------------------------ the loopback limit */
static void loopback_args(int argc, char **argv, uint64_t *size, size_t *io)
{
    if (argc != 6 && (argc != 7 || strcmp(argv[1], "loopback-send")))
        fatal("usage: streamgen %s HOST PORT SIZE IO%s", argv[1],
              strcmp(argv[1], "loopback") ? " [FILE]" : "");
    *size = number(argv[4], "SIZE");
    *io = number(argv[5], "IO");
    if (*io == 0 || *io > IO_MAX)
        fatal("IO must be 1..%u", IO_MAX);
}

static int loopback_send(int argc, char **argv)
{
    uint64_t size;
    size_t io;
    loopback_args(argc, argv, &size, &io);
    struct addrinfo hints = {0}, *res;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int e = getaddrinfo(argv[2], argv[3], &hints, &res);
    if (e)
        fatal("%s:%s: %s", argv[2], argv[3], gai_strerror(e));
    int ls = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (ls < 0)
        fatal("socket: %s", strerror(errno));
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, res->ai_addr, res->ai_addrlen) < 0 || listen(ls, 1) < 0)
        fatal("%s:%s: %s", argv[2], argv[3], strerror(errno));
    freeaddrinfo(res);
    printf("listening\n");
    fflush(stdout);
    int fd = accept(ls, NULL, NULL);
    if (fd < 0)
        fatal("accept: %s", strerror(errno));
    close(ls);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);   /* as the NFS connections */
    int file = -1;
    uint8_t *data = NULL;
    if (argc == 7) {
        file = open(argv[6], O_RDONLY | O_CLOEXEC);
        if (file < 0)
            fatal("%s: %s", argv[6], strerror(errno));
    } else {
        data = xmalloc(io);
        memset(data, 0xa5, io);
    }
    uint8_t go[4];
    size_t got = 0;
    while (got < 4)
        got += recv_some(fd, go + got, 4 - got);
    double cpu0 = cpu_seconds();
    for (uint64_t left = size; left > 0 && file < 0;) {
        struct iovec iov = {data, left < io ? (size_t)left : io};
        left -= iov.iov_len;
        send_iov(fd, &iov, 1);
    }
    for (off_t off = 0; file >= 0 && (uint64_t)off < size;) {   /* as a READ's sendfile */
        size_t n = size - (uint64_t)off < io ? (size_t)(size - (uint64_t)off) : io;
        while (n) {
            ssize_t k = sendfile(fd, file, &off, n);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                fatal("sendfile %s: %s", argv[6], k ? strerror(errno) : "the file ended");
            n -= (size_t)k;
        }
    }
    double cpu = cpu_seconds() - cpu0;
    close(fd);
    printf("{\"workload\": \"loopback-send\", \"bytes\": %llu, \"io_size\": %zu, "
           "\"send_cpu_s\": %.9g}\n", (unsigned long long)size, io, cpu);
    return fflush(stdout) != 0;
}

static int loopback_recv(int argc, char **argv)
{
    uint64_t size;
    size_t io;
    loopback_args(argc, argv, &size, &io);
    int fd = connect_to(argv[2], argv[3]);
    uint8_t *buf = xmalloc(io);
    uint64_t got = 0;
    double cpu0 = cpu_seconds();
    int64_t t0 = now_ns();
    struct iovec go = {(void *)"go!\n", 4};
    send_iov(fd, &go, 1);
    while (got < size) {
        ssize_t k = recv(fd, buf, io, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        got += (uint64_t)k;
    }
    double wall = (now_ns() - t0) / 1e9;
    double cpu = cpu_seconds() - cpu0;
    close(fd);
    printf("{\"workload\": \"loopback\", \"io_size\": %zu, \"bytes\": %llu, \"seconds\": %.9g, "
           "\"mb_per_s\": %.9g, \"gen_cpu_s\": %.9g}\n", io, (unsigned long long)got, wall,
           wall > 0 ? got / wall / 1e6 : 0.0, cpu);
    return fflush(stdout) != 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "read") || !strcmp(argv[1], "write")))
        return nfs_stream(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "loopback-send"))
        return loopback_send(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "loopback"))
        return loopback_recv(argc, argv);
    fprintf(stderr, "usage: %s read|write HOST PORT FH_HEX SIZE IO DEPTH\n"
                    "       %s loopback-send HOST PORT SIZE IO [FILE]\n"
                    "       %s loopback HOST PORT SIZE IO\n", argv[0], argv[0], argv[0]);
    return 2;
}

/*
 * bootgen: the bootstorm client of bench/loadgen.py (class BootClient) in C.
 *
 *     bootgen HOST PORT WORKFILE RSIZE START_AT LATFILE
 *
 * WORKFILE (written by loadgen.py --engine c, which did the MNT and FSINFO):
 *     line 1:  the root filehandle in hex
 *     then, per client, a line "C <n>" or "C <n> <root handle in hex>" (the
 *     client's own export, a board's for run.py boards) followed by n paths,
 *     one per line, relative to the export, bytes as-is.
 * RSIZE is the READ size (already capped by rtmax), START_AT an epoch time
 * (float seconds) to wait for before starting, 0 for none, LATFILE where to
 * write every call's latency as native int64 ns, or "-" for none.
 *
 * One thread per client, each with its own blocking TCP connection and one
 * call outstanding.  Every path is walked as BootClient.visit() does: a LOOKUP
 * chain from the root, GETATTR, ACCESS, then READLINK, READs until eof, or
 * READDIRPLUS (READDIR and a LOOKUP per entry once the server answered
 * NFS3ERR_NOTSUPP).  Prints one JSON line with the keys of loadgen.py's
 * _bootstorm.  Any RPC-level failure is fatal (message on stderr, exit 1).
 *
 * Build: cc -O2 -pthread -o bootgen bootgen.c   (only libc and pthreads)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

#define LAST_FRAG 0x80000000u
#define NFS_PROG 100003u
#define NFS_VERS 3u
#define MAX_REC (2u << 20)              /* largest reply record accepted */
#define RX_CAP (4 + MAX_REC + 65536)    /* record at rx+4, plus room for the stream */
#define TX_CAP 4096
#define FH_MAX 64                       /* NFS3_FHSIZE (RFC 1813 section 2.4) */
#define NAME_MAX_LEN 1024               /* longest name we send in a LOOKUP */

#define NF3REG 1
#define NF3DIR 2
#define NF3LNK 5
#define NFS3ERR_NOTSUPP 10004
#define ACCESS_ALL 0x3Fu
#define DIRCOUNT 8192u
#define MAXCOUNT 32768u

enum { P_LOOKUP, P_GETATTR, P_ACCESS, P_READLINK, P_READ, P_READDIRPLUS, P_READDIR, NPROC };
static const uint32_t proc_num[NPROC] = {3, 1, 4, 5, 6, 17, 16};
static const char *const proc_name[NPROC] = {"LOOKUP", "GETATTR", "ACCESS", "READLINK",
                                             "READ", "READDIRPLUS", "READDIR"};

/* The call header after the xid (RFC 5531 section 9): msg_type CALL, rpcvers 2,
 * prog, vers, proc, AUTH_SYS credential (RFC 5531 appendix A: stamp,
 * machinename, uid, gid, gids<>), AUTH_NONE verifier.  Same for every call
 * but the procedure number. */
#define HDR_LEN 64
static uint8_t hdr[NPROC][HDR_LEN];

struct name { uint32_t off, len; };

struct client {
    int fd;
    uint32_t xid;
    const uint8_t *root;
    uint32_t rootlen;
    const uint8_t **paths;          /* into the work file buffer */
    uint32_t *pathlen;
    size_t npaths;
    uint32_t rsize;
    int plus;                       /* READDIRPLUS until the server says NOTSUPP */
    int notsupp;
    uint64_t calls[NPROC], walks, errors, bytes;
    int bytes_seen;                 /* a READ succeeded: "bytes" is in the stats */
    int64_t *lat;
    size_t nlat, latcap;
    uint8_t *rx;                    /* the reply record is at rx+4, rlen bytes */
    size_t rlen;
    uint8_t tx[TX_CAP];
    size_t txlen;
    int txproc;
    char *names;                    /* names of the last READDIR reply */
    size_t names_len, names_cap;
    struct name *ents;
    size_t nents, ents_cap;
    double end_s;                   /* when this client finished, from t0 */
};

static struct timespec t0_mono;

/* Print the message and end the process.  Several threads may fail at once (a
 * server that dies closes every connection): the first one reports, the others
 * wait on the lock until the process is gone. */
static void fatal(const char *fmt, ...)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    va_list ap;
    pthread_mutex_lock(&lock);
    va_start(ap, fmt);
    fputs("bootgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
    _exit(1);
}

static double since_t0(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)(ts.tv_sec - t0_mono.tv_sec) + (ts.tv_nsec - t0_mono.tv_nsec) / 1e9;
}

/* ------------------------------------------------------------ reply reader */
/* XDR (RFC 4506): big-endian, every item padded to 4 bytes.  All reads are
 * bounds-checked; a reply shorter than its contents is fatal. */
struct xdr {
    const uint8_t *p;
    size_t len, off;
    int proc;
};

static void short_reply(const struct xdr *x)
{
    fatal("malformed %s reply (%zu bytes)", proc_name[x->proc], x->len);
}

static uint32_t x_u32(struct xdr *x)
{
    if (x->len - x->off < 4)
        short_reply(x);
    uint32_t v = get32(x->p + x->off);
    x->off += 4;
    return v;
}

static uint64_t x_u64(struct xdr *x)
{
    uint64_t hi = x_u32(x);
    return hi << 32 | x_u32(x);
}

static void x_skip(struct xdr *x, size_t n)
{
    if (x->len - x->off < n)
        short_reply(x);
    x->off += n;
}

/* opaque<> / string<>: length, data, zero padding; returns the data */
static const uint8_t *x_opaque(struct xdr *x, uint32_t *n, uint32_t max)
{
    uint32_t k = x_u32(x);
    if (k > max)
        fatal("%s reply: opaque of %u bytes (at most %u expected)", proc_name[x->proc], k, max);
    const uint8_t *d = x->p + x->off;
    x_skip(x, ((size_t)k + 3) & ~(size_t)3);
    *n = k;
    return d;
}

/* post_op_attr: bool attributes_follow, then a fattr3 of 84 bytes */
static void x_skip_post_op_attr(struct xdr *x)
{
    if (x_u32(x))
        x_skip(x, 84);
}

/* ------------------------------------------------------------ requests */
static void put32(struct client *c, uint32_t v)
{
    if (TX_CAP - c->txlen < 4)
        fatal("request too large");
    be32(c->tx + c->txlen, v);
    c->txlen += 4;
}

static void put64(struct client *c, uint64_t v)
{
    put32(c, (uint32_t)(v >> 32));
    put32(c, (uint32_t)v);
}

static void put_bytes(struct client *c, const void *d, size_t n)
{
    if (TX_CAP - c->txlen < n)
        fatal("request too large");
    memcpy(c->tx + c->txlen, d, n);
    c->txlen += n;
}

static void put_opaque(struct client *c, const uint8_t *d, uint32_t n)
{
    static const uint8_t zero[4];
    put32(c, n);
    put_bytes(c, d, n);
    put_bytes(c, zero, -n & 3);
}

/* start a call: record mark and xid are filled in by call() */
static void begin(struct client *c, int proc)
{
    memcpy(c->tx + 8, hdr[proc], HDR_LEN);
    c->txlen = 8 + HDR_LEN;
    c->txproc = proc;
}

static void send_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            fatal("send: %s", strerror(errno));
        }
        p += k;
        n -= (size_t)k;
    }
}

/* Read more of the stream into rx[*have..]; when the buffer is full, first move
 * the unparsed bytes rx[*spos..*have) down to rx[floor..), just after the
 * record reassembled so far. */
static void fill(struct client *c, size_t *have, size_t *spos, size_t floor)
{
    if (*have == RX_CAP) {
        memmove(c->rx + floor, c->rx + *spos, *have - *spos);
        *have -= *spos - floor;
        *spos = floor;
    }
    ssize_t k;
    do
        k = recv(c->fd, c->rx + *have, RX_CAP - *have, 0);
    while (k < 0 && errno == EINTR);
    if (k < 0)
        fatal("recv: %s", strerror(errno));
    if (k == 0)
        fatal("the server closed the connection");
    *have += (size_t)k;
}

/* One reply record (RFC 5531 section 11, record marking): fragments of a
 * 4-byte [last-fragment bit | length] mark and data, reassembled at rx+4.  The
 * first fragment's data is already in place (its mark is rx[0..4)); later
 * fragments are moved down over their marks.  With one call outstanding,
 * nothing may follow the last fragment. */
static void recv_record(struct client *c)
{
    size_t have = 0, spos = 0;  /* stream bytes rx[spos..have) not parsed yet */
    size_t reclen = 0;          /* record so far: rx[4..4+reclen) */
    size_t floor = 0;           /* lowest place for unparsed bytes (4+reclen after a fragment) */
    for (;;) {
        while (have - spos < 4)
            fill(c, &have, &spos, floor);
        uint32_t mark = get32(c->rx + spos);
        uint32_t flen = mark & ~LAST_FRAG;
        if (flen > MAX_REC - reclen)
            fatal("reply record larger than %u bytes", MAX_REC);
        while (have - spos - 4 < flen)
            fill(c, &have, &spos, floor);
        if (spos != reclen)
            memmove(c->rx + 4 + reclen, c->rx + spos + 4, flen);
        reclen += flen;
        spos += 4 + flen;
        floor = 4 + reclen;
        if (mark & LAST_FRAG)
            break;
    }
    if (spos != have)
        fatal("unexpected data after a reply");
    c->rlen = reclen;
}

/* Send the request built in c->tx, wait for its reply, record the latency and
 * count the call; returns a reader positioned at the procedure's results. */
static struct xdr call(struct client *c)
{
    int proc = c->txproc;
    c->xid++;
    be32(c->tx, LAST_FRAG | (uint32_t)(c->txlen - 4));
    be32(c->tx + 4, c->xid);
    int64_t s = now_ns();
    send_all(c->fd, c->tx, c->txlen);
    recv_record(c);
    int64_t d = now_ns() - s;
    if (c->nlat == c->latcap) {
        c->latcap *= 2;
        c->lat = xrealloc(c->lat, c->latcap * sizeof *c->lat);
    }
    c->lat[c->nlat++] = d;
    c->calls[proc]++;

    /* reply: xid, REPLY(1), MSG_ACCEPTED(0), verifier, accept_stat SUCCESS(0)
     * (RFC 5531 section 9) */
    struct xdr x = {c->rx + 4, c->rlen, 0, proc};
    uint32_t xid = x_u32(&x);
    if (xid != c->xid)
        fatal("%s: reply xid %u, expected %u", proc_name[proc], xid, c->xid);
    if (x_u32(&x) != 1)
        fatal("%s: not a reply", proc_name[proc]);
    uint32_t rs = x_u32(&x);
    if (rs != 0)
        fatal("%s: call denied (reply_stat %u)", proc_name[proc], rs);
    uint32_t vlen;
    x_u32(&x);                              /* verifier flavor */
    x_opaque(&x, &vlen, 400);               /* verifier body (MAX_AUTH_BYTES) */
    uint32_t as = x_u32(&x);
    if (as != 0)
        fatal("%s: accept_stat %u", proc_name[proc], as);
    return x;
}

/* ------------------------------------------------------------ the walk */
static void lookup_only(struct client *c, const uint8_t *dir, uint32_t dirlen,
                        const uint8_t *name, uint32_t n)
{
    if (n > NAME_MAX_LEN)
        fatal("name of %u bytes", n);
    begin(c, P_LOOKUP);
    put_opaque(c, dir, dirlen);
    put_opaque(c, name, n);
    call(c);
}

/* Parse READDIR3res or READDIRPLUS3res (RFC 1813 sections 3.3.16, 3.3.17).
 * Returns the status; fills the count of entries, the last entry's cookie, eof
 * and the cookie verifier (zero on an error, like loadgen.py).  For READDIR the
 * names are kept in c->names/c->ents for the LOOKUPs that follow. */
static uint32_t parse_dir(struct client *c, struct xdr *x, int plus, uint8_t verf[8],
                          size_t *nents, uint64_t *last_cookie, int *eof)
{
    *nents = 0;
    c->nents = 0;
    c->names_len = 0;
    uint32_t st = x_u32(x);
    if (st) {
        memset(verf, 0, 8);
        *eof = 1;
        return st;
    }
    x_skip_post_op_attr(x);                   /* dir_attributes */
    if (x->len - x->off < 8)
        short_reply(x);
    memcpy(verf, x->p + x->off, 8);
    x->off += 8;
    while (x_u32(x)) {                        /* value_follows */
        x_u64(x);                             /* fileid */
        uint32_t n;
        const uint8_t *name = x_opaque(x, &n, NAME_MAX_LEN);
        *last_cookie = x_u64(x);
        if (plus) {
            uint32_t fhn;
            x_skip_post_op_attr(x);           /* name_attributes */
            if (x_u32(x))                     /* post_op_fh3 handle_follows */
                x_opaque(x, &fhn, FH_MAX);
        } else {
            if (c->names_cap - c->names_len < n) {
                c->names_cap = (c->names_cap + n) * 2;
                c->names = xrealloc(c->names, c->names_cap);
            }
            if (c->nents == c->ents_cap) {
                c->ents_cap = c->ents_cap ? c->ents_cap * 2 : 64;
                c->ents = xrealloc(c->ents, c->ents_cap * sizeof *c->ents);
            }
            memcpy(c->names + c->names_len, name, n);
            c->ents[c->nents].off = (uint32_t)c->names_len;
            c->ents[c->nents].len = n;
            c->nents++;
            c->names_len += n;
        }
        (*nents)++;
    }
    *eof = x_u32(x) != 0;
    return 0;
}

static void listdir(struct client *c, const uint8_t *fh, uint32_t fhlen)
{
    uint64_t cookie = 0, last = 0;
    uint8_t verf[8] = {0};
    for (;;) {
        uint32_t st;
        size_t n;
        int eof;
        if (c->plus) {
            begin(c, P_READDIRPLUS);
            put_opaque(c, fh, fhlen);
            put64(c, cookie);
            put_bytes(c, verf, 8);
            put32(c, DIRCOUNT);
            put32(c, MAXCOUNT);
            struct xdr x = call(c);
            st = parse_dir(c, &x, 1, verf, &n, &last, &eof);
            if (st == NFS3ERR_NOTSUPP) {   /* from now on READDIR, for this client */
                c->plus = 0;
                c->notsupp = 1;
                continue;
            }
        } else {
            begin(c, P_READDIR);
            put_opaque(c, fh, fhlen);
            put64(c, cookie);
            put_bytes(c, verf, 8);
            put32(c, DIRCOUNT);
            struct xdr x = call(c);
            st = parse_dir(c, &x, 0, verf, &n, &last, &eof);
            /* what READDIRPLUS would have given: a LOOKUP per entry */
            for (size_t i = 0; i < c->nents; i++) {
                const uint8_t *nm = (const uint8_t *)c->names + c->ents[i].off;
                uint32_t k = c->ents[i].len;
                if ((k == 1 && nm[0] == '.') || (k == 2 && nm[0] == '.' && nm[1] == '.'))
                    continue;
                lookup_only(c, fh, fhlen, nm, k);
            }
        }
        if (st) {
            c->errors++;
            return;
        }
        if (n)
            cookie = last;
        if (eof || !n)
            return;
    }
}

/* Everything a booting client does for one path (BootClient._visit). */
static void walk(struct client *c, const uint8_t *path, uint32_t plen)
{
    uint8_t fh[FH_MAX];
    uint32_t fhlen = c->rootlen;
    uint32_t ftype = NF3DIR;
    memcpy(fh, c->root, fhlen);
    /* path.split(b"/"): every component, empty ones included */
    uint32_t start = 0;
    for (uint32_t i = 0; i <= plen; i++) {
        if (i < plen && path[i] != '/')
            continue;
        uint32_t n = i - start;
        if (n > NAME_MAX_LEN)
            fatal("path component of %u bytes", n);
        begin(c, P_LOOKUP);
        put_opaque(c, fh, fhlen);
        put_opaque(c, path + start, n);
        struct xdr x = call(c);
        start = i + 1;
        if (x_u32(&x)) {                        /* LOOKUP3res status */
            c->errors++;
            return;
        }
        const uint8_t *nfh = x_opaque(&x, &fhlen, FH_MAX);
        memcpy(fh, nfh, fhlen);
        if (x_u32(&x)) {                        /* obj_attributes: fattr3, type first */
            if (x.len - x.off < 84)
                short_reply(&x);
            ftype = get32(x.p + x.off);
        } else {
            ftype = 0;
        }
    }
    begin(c, P_GETATTR);
    put_opaque(c, fh, fhlen);
    call(c);
    begin(c, P_ACCESS);
    put_opaque(c, fh, fhlen);
    put32(c, ACCESS_ALL);
    call(c);
    if (ftype == NF3LNK) {
        begin(c, P_READLINK);
        put_opaque(c, fh, fhlen);
        call(c);
    } else if (ftype == NF3REG) {
        uint64_t off = 0;
        for (;;) {
            begin(c, P_READ);
            put_opaque(c, fh, fhlen);
            put64(c, off);
            put32(c, c->rsize);
            struct xdr x = call(c);
            if (x_u32(&x)) {                    /* READ3res status */
                c->errors++;
                return;
            }
            x_skip_post_op_attr(&x);            /* file_attributes */
            uint32_t n = x_u32(&x), dlen;
            int eof = x_u32(&x) != 0;
            x_opaque(&x, &dlen, MAX_REC);       /* data */
            off += n;
            c->bytes += n;
            c->bytes_seen = 1;
            if (eof || n == 0)
                break;
        }
    } else if (ftype == NF3DIR) {
        listdir(c, fh, fhlen);
    }
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    for (size_t i = 0; i < c->npaths; i++) {
        walk(c, c->paths[i], c->pathlen[i]);
        c->walks++;                             /* one per path, even on an error */
    }
    c->end_s = since_t0();
    return NULL;
}

/* ------------------------------------------------------------ setup */
static void build_headers(void)
{
    static const char machine[] = "bootgen";           /* 7 bytes, padded to 8 */
    for (int p = 0; p < NPROC; p++) {
        uint8_t *h = hdr[p];
        memset(h, 0, HDR_LEN);
        be32(h + 0, 0);                 /* msg_type CALL */
        be32(h + 4, 2);                 /* rpcvers */
        be32(h + 8, NFS_PROG);
        be32(h + 12, NFS_VERS);
        be32(h + 16, proc_num[p]);
        be32(h + 20, 1);                /* AUTH_SYS */
        be32(h + 24, 28);               /* credential body length */
        be32(h + 28, 0);                /* stamp */
        be32(h + 32, 7);
        memcpy(h + 36, machine, 7);     /* + one byte of zero padding */
        be32(h + 44, 0);                /* uid */
        be32(h + 48, 0);                /* gid */
        be32(h + 52, 0);                /* no gids */
        /* h + 56: AUTH_NONE verifier, flavor 0 and length 0: left zero */
    }
}

/* The next line of buf[*pos..len): returns it and its length, NUL-terminated
 * in place (the newline is overwritten); NULL at the end. */
static uint8_t *next_line(uint8_t *buf, size_t len, size_t *pos, uint32_t *n)
{
    if (*pos >= len)
        return NULL;
    uint8_t *s = buf + *pos;
    uint8_t *e = memchr(s, '\n', len - *pos);
    size_t k = e ? (size_t)(e - s) : len - *pos;
    s[k] = 0;   /* the buffer has one spare byte at the end for a last line without \n */
    *pos += k + 1;
    *n = (uint32_t)k;
    return s;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s HOST PORT WORKFILE RSIZE START_AT LATFILE\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *port = argv[2], *workfile = argv[3], *latfile = argv[6];
    char *end;
    unsigned long rsize = strtoul(argv[4], &end, 10);
    if (*end || rsize == 0 || rsize > MAX_REC - 4096)
        fatal("bad RSIZE %s", argv[4]);
    double start_at = strtod(argv[5], &end);
    if (*end)
        fatal("bad START_AT %s", argv[5]);

    /* the work file, read whole; paths point into it */
    FILE *f = fopen(workfile, "rb");
    if (!f)
        fatal("%s: %s", workfile, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0)
        fatal("%s: %s", workfile, strerror(errno));
    long fsz = ftell(f);
    if (fsz < 0)
        fatal("%s: %s", workfile, strerror(errno));
    rewind(f);
    uint8_t *wbuf = xmalloc((size_t)fsz + 1);
    if (fread(wbuf, 1, (size_t)fsz, f) != (size_t)fsz)
        fatal("%s: short read", workfile);
    fclose(f);
    size_t pos = 0, wlen = (size_t)fsz;
    uint32_t n;
    uint8_t *line = next_line(wbuf, wlen, &pos, &n);
    if (!line || n == 0 || n % 2 || n / 2 > FH_MAX)
        fatal("%s: first line must be the root handle in hex", workfile);
    uint32_t rootlen = n / 2;
    uint8_t root[FH_MAX];
    if (unhex(line, n, root) < 0)
        fatal("%s: bad hex in the root handle", workfile);

    struct client *cl = NULL;
    size_t ncl = 0;
    while ((line = next_line(wbuf, wlen, &pos, &n))) {
        unsigned long cnt;
        if (n < 3 || line[0] != 'C' || line[1] != ' ')
            fatal("%s: expected \"C <n>\", got \"%s\"", workfile, (char *)line);
        cnt = strtoul((char *)line + 2, &end, 10);
        uint8_t *own = NULL;
        uint32_t ownlen = 0;
        if (*end == ' ') {   /* the client's own root handle */
            uint32_t hn = (uint32_t)(n - ((uint8_t *)end + 1 - line));
            own = xmalloc(FH_MAX);
            if (hn == 0 || hn % 2 || hn / 2 > FH_MAX || unhex((uint8_t *)end + 1, hn, own) < 0)
                fatal("%s: bad root handle in \"%s\"", workfile, (char *)line);
            ownlen = hn / 2;
        } else if (*end)
            fatal("%s: bad count line \"%s\"", workfile, (char *)line);
        cl = xrealloc(cl, (ncl + 1) * sizeof *cl);
        struct client *c = &cl[ncl++];
        memset(c, 0, sizeof *c);
        c->root = own ? own : root;
        c->rootlen = own ? ownlen : rootlen;
        c->rsize = (uint32_t)rsize;
        c->plus = 1;
        c->npaths = cnt;
        c->paths = xmalloc(cnt * sizeof *c->paths);
        c->pathlen = xmalloc(cnt * sizeof *c->pathlen);
        for (size_t i = 0; i < cnt; i++) {
            line = next_line(wbuf, wlen, &pos, &n);
            if (!line)
                fatal("%s: client %zu: %lu paths announced, %zu found", workfile, ncl - 1,
                      cnt, i);
            c->paths[i] = line;
            c->pathlen[i] = n;
        }
    }
    if (ncl == 0)
        fatal("%s: no clients", workfile);

    build_headers();
    uint32_t seed = (uint32_t)now_ns() ^ ((uint32_t)getpid() << 16);
    for (size_t i = 0; i < ncl; i++) {
        struct client *c = &cl[i];
        c->fd = connect_to(host, port);
        seed = seed * 1103515245u + 12345u;
        c->xid = seed & 0x3FFFFFFF;
        c->latcap = 16 * (c->npaths + 1);
        c->lat = xmalloc(c->latcap * sizeof *c->lat);
        c->rx = xmalloc(RX_CAP);
    }

    if (start_at > 0) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        double wait = start_at - (now.tv_sec + now.tv_nsec / 1e9);
        if (wait > 0) {
            struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
                ;
        }
    }

    double cpu0 = cpu_seconds();
    struct timespec t0_wall;
    clock_gettime(CLOCK_MONOTONIC, &t0_mono);
    clock_gettime(CLOCK_REALTIME, &t0_wall);
    pthread_t *th = xmalloc(ncl * sizeof *th);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 << 10);
    for (size_t i = 0; i < ncl; i++) {
        int e = pthread_create(&th[i], &attr, client_main, &cl[i]);
        if (e)
            fatal("pthread_create: %s", strerror(e));
    }
    for (size_t i = 0; i < ncl; i++)
        pthread_join(th[i], NULL);
    double wall = since_t0();
    double cpu = cpu_seconds() - cpu0;
    pthread_attr_destroy(&attr);

    /* merge the clients' counters and latencies */
    uint64_t calls[NPROC] = {0}, walks = 0, errors = 0, bytes = 0;
    int bytes_seen = 0, notsupp = 0;
    size_t ops = 0;
    double slowest = 0;
    for (size_t i = 0; i < ncl; i++) {
        struct client *c = &cl[i];
        close(c->fd);
        for (int p = 0; p < NPROC; p++)
            calls[p] += c->calls[p];
        walks += c->walks;
        errors += c->errors;
        bytes += c->bytes;
        bytes_seen |= c->bytes_seen;
        notsupp |= c->notsupp;
        ops += c->nlat;
        if (c->end_s > slowest)
            slowest = c->end_s;
    }
    int64_t *lat = xmalloc(ops * sizeof *lat);
    size_t k = 0;
    for (size_t i = 0; i < ncl; i++) {
        memcpy(lat + k, cl[i].lat, cl[i].nlat * sizeof *lat);
        k += cl[i].nlat;
    }
    if (strcmp(latfile, "-") != 0) {
        FILE *lf = fopen(latfile, "wb");
        if (!lf || fwrite(lat, sizeof *lat, ops, lf) != ops || fclose(lf) != 0)
            fatal("%s: cannot write the latencies", latfile);
    }
    qsort(lat, ops, sizeof *lat, cmp_i64);
    double p50 = 0, p99 = 0;
    if (ops) {
        size_t i99 = (size_t)(ops * 0.99);
        p50 = lat[ops / 2] / 1000.0;
        p99 = lat[i99 < ops - 1 ? i99 : ops - 1] / 1000.0;
    }

    /* one JSON line, the keys of loadgen.py's _bootstorm; a stats key is there
     * only when the Python client would have set it */
    double start = t0_wall.tv_sec + t0_wall.tv_nsec / 1e9;
    printf("{\"workload\": \"bootstorm\", \"clients\": %zu, \"ops\": %zu, \"seconds\": %.9g, "
           "\"start\": %.6f, \"end\": %.6f, \"ops_per_s\": %.9g, \"gen_cpu_s\": %.9g, "
           "\"gen_cpu_us_per_op\": %.9g, \"rsize\": %lu, \"stats\": {",
           ncl, ops, wall, start, start + wall, wall > 0 ? ops / wall : 0.0, cpu,
           cpu / (double)(ops ? ops : 1) * 1e6, rsize);
    const char *sep = "";
    for (int p = 0; p < NPROC; p++) {
        if (calls[p]) {
            printf("%s\"%s\": %llu", sep, proc_name[p], (unsigned long long)calls[p]);
            sep = ", ";
        }
    }
    if (notsupp) {
        printf("%s\"readdirplus_notsupp\": 1", sep);
        sep = ", ";
    }
    if (errors) {
        printf("%s\"errors\": %llu", sep, (unsigned long long)errors);
        sep = ", ";
    }
    if (bytes_seen) {
        printf("%s\"bytes\": %llu", sep, (unsigned long long)bytes);
        sep = ", ";
    }
    if (walks)
        printf("%s\"walks\": %llu", sep, (unsigned long long)walks);
    printf("}, \"slowest_client_s\": %.9g, \"p50_us\": %.9g, \"p99_us\": %.9g}\n",
           slowest, p50, p99);
    if (fflush(stdout) != 0)
        fatal("cannot write the result");

    for (size_t i = 0; i < ncl; i++) {
        struct client *c = &cl[i];
        free(c->paths);
        free(c->pathlen);
        free(c->lat);
        free(c->rx);
        free(c->names);
        free(c->ents);
    }
    free(cl);
    free(th);
    free(lat);
    free(wbuf);
    return 0;
}

/*
 * sse_load: an epoll load generator for Server-Sent Events push servers.
 *
 * One process, one thread, one epoll loop:
 *   - N subscribers (GET /sub/<prefix><k>, k = i % C) spread over source addresses
 *     127.0.0.1 .. 127.0.0.<S> (bind() before connect(), IP_BIND_ADDRESS_NO_PORT);
 *   - P publisher connections (keep-alive POST /pub/<prefix><k>), each channel always on the
 *     same publisher connection so per-channel order is the send order;
 *   - the response is parsed as HTTP/1.1 (chunked, Content-Length or close-delimited) and the
 *     body with the full WHATWG event-stream grammar (CR / LF / CRLF line ends, comments,
 *     id / event / data / retry fields, multi-line data);
 *   - every payload carries "s=<seq per channel> t=<CLOCK_MONOTONIC ns at send> c=<channel>".
 *
 * With --reconnect S a subscriber whose stream ends (or whose server dies) reconnects after the
 * stream's retry time (a random 0..S s without one) with Last-Event-ID (the last id
 * dispatched, as a browser does), and a
 * lost publisher connection is opened again; the report then counts reconnects and resumes and
 * gives the time of the first disconnect and of the last resume (CLOCK_MONOTONIC s).
 *
 * Reports one JSON object on stdout: latency (p50/p90/p99/p99.9/max), loss, duplicates and
 * out-of-order (totals and per connection), delivered events/s, connection errors, own CPU.
 * Progress and "# ready" lines go to stderr. Every run is bounded by --timeout.
 * Only addresses in 127.0.0.0/8 are accepted as targets.
 *
 * WebSocket (RFC 6455), for bench/ws_bench.py:
 *   --ws    subscribers open GET /ws/<prefix><k> with an opening handshake (a random
 *           Sec-WebSocket-Key; the 101, Upgrade, Connection and Sec-WebSocket-Accept are
 *           checked) and read server frames: every length form, fragmented messages, control
 *           frames between fragments, ping -> masked pong, close -> close. Each message carries
 *           the publish payload: inside the "data" string of a JSON object {"id","event","data"}
 *           (--ws-format json, clos_web) or as the whole frame payload (--ws-format raw, Nchan).
 *           Loss, duplicates and latency are counted exactly as for SSE; --reconnect resumes
 *           with ?lastEventId=<the last JSON id>.
 *   --echo  N connections to a WebSocket echo path, each keeping D masked messages of S bytes
 *           in flight; every echo is checked byte for byte against what was sent (content is a
 *           function of connection, sequence and offset, so nothing is kept per message but its
 *           sequence and send time). Reports round trips/s and latency over --duration after
 *           --warmup, then drains and closes every connection with a close handshake.
 *
 * Build: gcc -O2 -o sse_load sse_load.c     Self-test of the parsers: sse_load --selftest
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* ------------------------------------------------------------------------------------------ */
/* options                                                                                    */

static struct {
    char host[64];
    int port;
    int subs, channels, src_addrs, connect_window;
    char prefix[64], sub_path[64], pub_path[64];
    double rate;          /* publishes/s in total; < 0: as fast as the server accepts */
    long publishes;       /* stop after this many publishes (0: no count limit) */
    double duration;      /* stop publishing after this many seconds (0: no time limit) */
    int payload;          /* payload bytes (at least what the header needs) */
    int pub_conns, pub_depth;
    double settle, drain, hold, connect_timeout, timeout;
    int http10, multiline, per_conn_top;
    char per_conn_csv[256];
    double reconnect;     /* > 0: reconnect after a random 0..reconnect s delay */
    int pub_port;         /* publish to this port (0: --port) */
    /* WebSocket (defaults set in main) */
    int ws;               /* --ws: subscribers are WebSocket clients */
    int ws_raw;           /* --ws-format raw: the frame payload is the message (else JSON) */
    int sub_path_set;     /* --sub-path given (else /ws/ with --ws) */
    int echo;             /* --echo: WebSocket echo load instead of push */
    int echo_conns, echo_depth, echo_binary;
    long echo_size;
    double warmup;
    char echo_path[64];
} opt = {
    "127.0.0.1", 0, 1, 1, 8, 1000, "ch", "/sub/", "/pub/",
    0, 0, 0, 64, 1, 64, 0.5, 10.0, 0.0, 60.0, 300.0, 0, 0, 10, "",
};

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sse_load: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}
static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q && n) die("out of memory");
    return q;
}

/* ------------------------------------------------------------------------------------------ */
/* latency histogram: 128 linear sub-buckets per power of two (< 1% error)                    */

#define HSUB 128
#define HBUCKETS (58 * HSUB)
static uint64_t hist[HBUCKETS];
static uint64_t hist_count, hist_max, hist_sum_us;

static int hidx(uint64_t v) {
    if (v < HSUB) return (int)v;
    int e = 63 - __builtin_clzll(v); /* >= 7 */
    return (e - 6) * HSUB + (int)((v >> (e - 7)) & (HSUB - 1));
}
static uint64_t hval(int i) { /* upper-ish representative value of a bucket */
    if (i < HSUB) return (uint64_t)i;
    int e = i / HSUB + 6, sub = i % HSUB;
    return ((uint64_t)(HSUB + sub) << (e - 7)) + ((1ull << (e - 7)) >> 1);
}
static void hrecord(int64_t v) {
    if (v < 0) v = 0;
    hist[hidx((uint64_t)v)]++;
    hist_count++;
    hist_sum_us += (uint64_t)v / 1000;
    if ((uint64_t)v > hist_max) hist_max = (uint64_t)v;
}
static double hpct(double p) {
    if (!hist_count) return 0;
    uint64_t want = (uint64_t)(p / 100.0 * hist_count);
    if (want >= hist_count) want = hist_count - 1;
    uint64_t acc = 0;
    for (int i = 0; i < HBUCKETS; i++) {
        acc += hist[i];
        if (acc > want) return hval(i) / 1e6;
    }
    return hist_max / 1e6;
}

/* ------------------------------------------------------------------------------------------ */
/* connections                                                                                */

enum { SUB = 1, PUB = 2, ECHO = 3 };
enum { C_IDLE, C_CONNECTING, C_HEAD, C_BODY, C_CLOSED };
enum { B_CLOSE, B_LENGTH, B_CHUNKED, B_WS };
enum { CH_SIZE, CH_EXT, CH_DATA, CH_DATA_END, CH_TRAILER, CH_TRAILER_LINE };

typedef struct conn {
    int fd, kind, state, idx, chan;
    int status, body_mode, ready, closed_by_peer, error;
    int64_t body_left; /* Content-Length left, or bytes left in the current chunk */
    int ch_state, ch_line_len;
    int64_t ch_size;
    /* header bytes (until the blank line) */
    char *head;
    int head_len, head_cap;
    /* SSE parser */
    char *line;
    int line_len, line_cap, skip_lf;
    char *data;
    int data_len, data_cap;
    char event[32];
    int event_len;
    char last_id[64];     /* the last event ID string: set when an event is dispatched */
    char id_buf[64];      /* the last event ID buffer: set by an id field */
    /* reconnecting (--reconnect) */
    int down;             /* disconnected, not yet resumed */
    int retry_ms;         /* the stream's last retry field (0: none) */
    double down_since, reconnect_due, attempt_at;
    /* subscriber statistics */
    uint64_t *seen;
    uint32_t seen_words;
    int64_t max_seq;
    uint32_t received, dups, ooo, wrong_chan, other_events, comments, bad_payload;
    /* publisher */
    char *out;
    int out_len, out_off, out_cap;
    uint32_t *fifo_chan, *fifo_seq;
    int fifo_head, fifo_n;
    uint64_t next_due_ns;
    /* WebSocket (--ws subscribers, --echo connections) */
    int is_ws, ws_ok;     /* a WebSocket client; its 101 head passed every check */
    int want_out;         /* registered for EPOLLOUT (output pending) */
    char ws_key[32];      /* the Sec-WebSocket-Key sent (base64 of 16 random bytes) */
    uint8_t wh[14];       /* the frame header read so far */
    int wh_len, w_in_payload, w_opcode, w_fin;
    uint64_t w_left;      /* payload bytes left in the current frame */
    int w_msg_opcode;     /* opcode of the message being assembled (0: between messages) */
    uint64_t w_msg_len;   /* its bytes so far */
    char w_ctrl[128];     /* a control frame's payload (at most 125 bytes) */
    int w_ctrl_len, closing, close_code;
    uint32_t pings, frames;
    /* echo (--echo): sequences and send times of the messages in flight, oldest first */
    uint32_t *e_seq;
    uint64_t *e_sent_ns;
    int e_head, e_n, e_bad;
    uint32_t e_next_seq;
} conn;

static int ep;
static conn *subs_c, *pubs_c;
static int n_connecting, next_sub, subs_ready, subs_failed;
static long connect_errors, http_errors, sub_disconnects, pub_errors, pub_conn_errors;
static long published, acked, pub_non2xx, unique_delivered, events_total, comments_total;
static long other_events_total, bad_payload_total;
static double t_first_connect, t_all_ready, t_pub_start, t_pub_end, t_last_delivery;
static double t_first_delivery;
static uint64_t **acked_bitmaps; /* per channel bitmap of acked seqs */
static uint32_t *acked_words;     /* words allocated per channel */
static uint32_t *acked_count, *next_seq, *subs_on_chan;
static char selftest_mode;
/* --reconnect */
static int *pending;  /* subscribers waiting to reconnect */
static int n_pending, n_down;
static long reconnect_attempts, resumes, pub_reconnects;
static double t_first_down, t_last_resume, max_outage, max_attempt_s, t_pub_start_abs;

/* self-test capture */
static char st_log[1 << 16];
static int st_log_len;

static void buf_append(char **buf, int *len, int *cap, const char *p, int n) {
    if (*len + n > *cap) {
        int c = *cap ? *cap : 64;
        while (c < *len + n) c *= 2;
        *buf = xrealloc(*buf, c);
        *cap = c;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
}

static void bit_set(uint64_t **bits, uint32_t *words, uint64_t i) {
    uint32_t w = (uint32_t)(i >> 6);
    if (w >= *words) {
        uint32_t nw = *words ? *words : 4;
        while (nw <= w) nw *= 2;
        *bits = xrealloc(*bits, nw * sizeof(uint64_t));
        memset(*bits + *words, 0, (nw - *words) * sizeof(uint64_t));
        *words = nw;
    }
    (*bits)[w] |= 1ull << (i & 63);
}
static int bit_get(const uint64_t *bits, uint32_t words, uint64_t i) {
    uint32_t w = (uint32_t)(i >> 6);
    return w < words && ((bits[w] >> (i & 63)) & 1);
}

/* ------------------------------------------------------------------------------------------ */
/* payload                                                                                    */

static int make_payload(char *dst, int cap, uint32_t seq, uint64_t ts, uint32_t chan) {
    char sep = opt.multiline ? '\n' : ' ';
    int n = snprintf(dst, cap, "s=%u%ct=%" PRIu64 "%cc=%u%c", seq, sep, ts, sep, chan, sep);
    while (n < opt.payload && n < cap) dst[n++] = 'x';
    return n;
}

static int parse_u64(const char *p, const char *end, const char *key, uint64_t *out) {
    /* find "key" at the start or after whitespace/newline, then digits */
    int klen = (int)strlen(key);
    for (const char *q = p; q + klen <= end; q++) {
        if ((q == p || q[-1] == ' ' || q[-1] == '\n') && memcmp(q, key, klen) == 0) {
            q += klen;
            uint64_t v = 0;
            int nd = 0;
            while (q < end && *q >= '0' && *q <= '9') v = v * 10 + (*q++ - '0'), nd++;
            if (!nd) return 0;
            *out = v;
            return 1;
        }
    }
    return 0;
}

static void on_message(conn *c, const char *data, int len, uint64_t now_ns) {
    if (selftest_mode) return;
    uint64_t seq, ts, ch;
    if (!parse_u64(data, data + len, "s=", &seq) || !parse_u64(data, data + len, "t=", &ts) ||
        !parse_u64(data, data + len, "c=", &ch)) {
        c->bad_payload++;
        bad_payload_total++;
        return;
    }
    events_total++;
    if ((int)ch != c->chan) {
        c->wrong_chan++;
        return;
    }
    if (bit_get(c->seen, c->seen_words, seq)) {
        c->dups++;
        return;
    }
    bit_set(&c->seen, &c->seen_words, seq);
    if ((int64_t)seq < c->max_seq) c->ooo++;
    else c->max_seq = (int64_t)seq;
    c->received++;
    unique_delivered++;
    hrecord((int64_t)(now_ns - ts));
    double now = now_ns * 1e-9;
    if (t_first_delivery == 0) t_first_delivery = now;
    t_last_delivery = now;
}

/* ------------------------------------------------------------------------------------------ */
/* SSE parser (WHATWG "event stream interpretation")                                          */

static void sse_dispatch(conn *c, uint64_t now_ns) {
    memcpy(c->last_id, c->id_buf, sizeof c->last_id); /* WHATWG: step 1 of dispatching */
    if (c->data_len == 0) { /* no data: nothing to dispatch */
        c->event_len = 0;
        return;
    }
    int len = c->data_len - 1; /* drop the trailing LF */
    int is_message = c->event_len == 0 || (c->event_len == 7 && !memcmp(c->event, "message", 7));
    if (selftest_mode) {
        st_log_len += snprintf(st_log + st_log_len, sizeof st_log - st_log_len, "[%.*s|%s|%.*s]",
                               is_message ? 7 : c->event_len, is_message ? "message" : c->event,
                               c->last_id, len, c->data);
    } else if (is_message) {
        on_message(c, c->data, len, now_ns);
    } else {
        c->other_events++;
        other_events_total++;
    }
    c->data_len = 0;
    c->event_len = 0;
}

static void sse_line(conn *c, const char *l, int n, uint64_t now_ns) {
    if (n == 0) {
        sse_dispatch(c, now_ns);
        return;
    }
    if (l[0] == ':') {
        c->comments++;
        comments_total++;
        if (selftest_mode)
            st_log_len += snprintf(st_log + st_log_len, sizeof st_log - st_log_len, "(:)");
        return;
    }
    const char *colon = memchr(l, ':', n);
    int nlen = colon ? (int)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    int vlen = (int)(l + n - v);
    if (vlen > 0 && v[0] == ' ') v++, vlen--;
    if (nlen == 4 && !memcmp(l, "data", 4)) {
        buf_append(&c->data, &c->data_len, &c->data_cap, v, vlen);
        buf_append(&c->data, &c->data_len, &c->data_cap, "\n", 1);
    } else if (nlen == 5 && !memcmp(l, "event", 5)) {
        c->event_len = vlen < (int)sizeof c->event - 1 ? vlen : (int)sizeof c->event - 1;
        memcpy(c->event, v, c->event_len);
        c->event[c->event_len] = 0;
    } else if (nlen == 2 && !memcmp(l, "id", 2)) {
        if (!memchr(v, 0, vlen)) {
            int k = vlen < (int)sizeof c->id_buf - 1 ? vlen : (int)sizeof c->id_buf - 1;
            memcpy(c->id_buf, v, k);
            c->id_buf[k] = 0;
        }
    } else if (nlen == 5 && !memcmp(l, "retry", 5) && vlen > 0 && vlen < 9) {
        int ms = 0, ok = 1;
        for (int i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9') ok = 0;
            else ms = ms * 10 + (v[i] - '0');
        }
        if (ok) c->retry_ms = ms; /* the reconnection time (--reconnect) */
    } /* unknown fields: ignored */
}

static void sse_feed(conn *c, const char *p, int n, uint64_t now_ns) {
    int i = 0;
    if (c->skip_lf && n > 0) {
        c->skip_lf = 0;
        if (p[0] == '\n') i = 1;
    }
    while (i < n) {
        int j = i;
        while (j < n && p[j] != '\n' && p[j] != '\r') j++;
        if (j == n) {
            if (c->line_len + (n - i) > (1 << 20)) {
                c->error = 1; /* an absurd line: give up on this stream */
                return;
            }
            buf_append(&c->line, &c->line_len, &c->line_cap, p + i, n - i);
            return;
        }
        if (c->line_len) {
            buf_append(&c->line, &c->line_len, &c->line_cap, p + i, j - i);
            sse_line(c, c->line, c->line_len, now_ns);
            c->line_len = 0;
        } else {
            sse_line(c, p + i, j - i, now_ns);
        }
        if (p[j] == '\r') {
            if (j + 1 < n) {
                if (p[j + 1] == '\n') j++;
            } else {
                c->skip_lf = 1;
            }
        }
        i = j + 1;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* WebSocket (RFC 6455): handshake key and accept, client frames out, server frames in         */

static long ws_handshake_errors, ws_protocol_errors, ws_pings, ws_pongs_sent, ws_closes;
static long ws_json_errors, ws_text_msgs, ws_binary_msgs;
/* --echo */
static long echo_sent, echo_received, echo_ok, echo_mismatch, echo_wrong_len, echo_wrong_type;
static long echo_unexpected, echo_round_trips;
static int echo_sending, echo_measuring;

static uint64_t rng_state[2];
static uint64_t rng_next(void) { /* xorshift128+: mask keys and handshake keys */
    uint64_t s1 = rng_state[0];
    const uint64_t s0 = rng_state[1];
    rng_state[0] = s0;
    s1 ^= s1 << 23;
    rng_state[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return rng_state[1] + s0;
}
static void rng_seed(void) {
    uint64_t seed[2] = {0, 0};
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, seed, sizeof seed) != (ssize_t)sizeof seed) seed[0] = seed[1] = 0;
        close(fd);
    }
    seed[0] ^= mono_ns();
    seed[1] ^= ((uint64_t)getpid() << 32) | 0x9e3779b9u;
    rng_state[0] = seed[0];
    rng_state[1] = seed[1] ? seed[1] : 1;
}

static void sha1(const uint8_t *msg, size_t len, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    uint64_t bits = (uint64_t)len * 8;
    size_t total = ((len + 8) / 64 + 1) * 64; /* message, 0x80, zeros, 64-bit length */
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 64; i++) {
            size_t k = off + i;
            uint8_t b = k < len ? msg[k] : k == len ? 0x80
                      : k >= total - 8 ? (uint8_t)(bits >> (8 * (total - 1 - k))) : 0;
            if (i % 4 == 0) w[i / 4] = 0;
            w[i / 4] |= (uint32_t)b << (24 - 8 * (i % 4));
        }
        for (int i = 16; i < 80; i++) {
            uint32_t x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16];
            w[i] = x << 1 | x >> 31;
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999u;
            else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1u;
            else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDCu;
            else f = b ^ c ^ d, k = 0xCA62C1D6u;
            uint32_t t = (a << 5 | a >> 27) + f + e + k + w[i];
            e = d, d = c, c = b << 30 | b >> 2, b = a, a = t;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
    }
    for (int i = 0; i < 20; i++) out[i] = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
}

static int base64(const uint8_t *in, int n, char *out) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    int o = 0;
    for (int i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = 0;
    return o;
}

/* Sec-WebSocket-Accept for a key: base64(SHA-1(key + the RFC 6455 GUID)) */
static void ws_accept_for(const char *key, char out[32]) {
    char buf[128];
    int n = snprintf(buf, sizeof buf, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    uint8_t d[20];
    sha1((const uint8_t *)buf, (size_t)n, d);
    base64(d, 20, out);
}

static void ws_new_key(conn *c) {
    uint64_t k[2] = {rng_next(), rng_next()};
    base64((const uint8_t *)k, 16, c->ws_key);
}

/* Is "token" one of the comma-separated tokens of v (case-insensitive)? */
static int has_token(const char *v, const char *token) {
    int tl = (int)strlen(token);
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',') v++;
        const char *e = v;
        while (*e && *e != ',') e++;
        const char *t = e;
        while (t > v && (t[-1] == ' ' || t[-1] == '\t' || t[-1] == '\r')) t--;
        if (t - v == tl && !strncasecmp(v, token, tl)) return 1;
        v = e;
    }
    return 0;
}

/* The checks of RFC 6455 4.1 on a 101 head (c->head, NUL-terminated): Upgrade: websocket,
   Connection: upgrade, the right Sec-WebSocket-Accept, and no extension or subprotocol (none
   was offered). */
static int ws_head_ok(conn *c) {
    int upgrade = 0, connection = 0, accept = 0, other = 0;
    char want[32];
    ws_accept_for(c->ws_key, want);
    char *line = strchr(c->head, '\n');
    while (line && *++line) {
        char *eol = strchr(line, '\n');
        char save = eol ? *eol : 0;
        if (eol) *eol = 0;
        char *colon = strchr(line, ':');
        if (colon) {
            char *v = colon + 1;
            while (*v == ' ' || *v == '\t') v++;
            char *e = v + strlen(v);
            while (e > v && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) e--;
            int vl = (int)(e - v), nl = (int)(colon - line);
            if (nl == 7 && !strncasecmp(line, "upgrade", 7))
                upgrade |= vl == 9 && !strncasecmp(v, "websocket", 9);
            else if (nl == 10 && !strncasecmp(line, "connection", 10))
                connection |= has_token(v, "upgrade");
            else if (nl == 20 && !strncasecmp(line, "sec-websocket-accept", 20))
                accept = vl == (int)strlen(want) && !memcmp(v, want, vl);
            else if ((nl == 24 && !strncasecmp(line, "sec-websocket-extensions", 24)) ||
                     (nl == 22 && !strncasecmp(line, "sec-websocket-protocol", 22)))
                other = 1;
        }
        if (eol) *eol = save;
        line = eol;
    }
    return upgrade && connection && accept && !other;
}

static void buf_reserve(char **buf, int *len, int *cap, int n) {
    if (*len + n > *cap) {
        int c = *cap ? *cap : 64;
        while (c < *len + n) c *= 2;
        *buf = xrealloc(*buf, c);
        *cap = c;
    }
}

/* Echo content: the byte at offset i of message seq on connection ci (8 hex digits of seq, 8 of
   ci, then a filler; text stays ASCII, binary covers every byte value). */
static inline uint8_t echo_byte(uint32_t ci, uint32_t seq, uint64_t i) {
    static const char hexd[] = "0123456789abcdef";
    if (i < 8) return (uint8_t)hexd[(seq >> (28 - 4 * i)) & 15];
    if (i < 16) return (uint8_t)hexd[(ci >> (28 - 4 * (i - 8))) & 15];
    if (opt.echo_binary) return (uint8_t)(i * 131 + seq * 7 + ci);
    return (uint8_t)('a' + (i + seq) % 26);
}

/* Queue one masked client frame with FIN set: payload p, or (p NULL) echo message seq. */
static void ws_put_frame(conn *c, int opcode, const uint8_t *p, uint64_t n, uint32_t seq) {
    uint8_t h[14];
    int hl = 0;
    h[hl++] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        h[hl++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        h[hl++] = 0x80 | 126;
        h[hl++] = (uint8_t)(n >> 8), h[hl++] = (uint8_t)n;
    } else {
        h[hl++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) h[hl++] = (uint8_t)(n >> (8 * i));
    }
    uint32_t key = (uint32_t)rng_next();
    uint8_t m[4];
    memcpy(m, &key, 4);
    memcpy(h + hl, m, 4);
    hl += 4;
    buf_append(&c->out, &c->out_len, &c->out_cap, (const char *)h, hl);
    buf_reserve(&c->out, &c->out_len, &c->out_cap, (int)n);
    uint8_t *dst = (uint8_t *)c->out + c->out_len;
    if (p)
        for (uint64_t i = 0; i < n; i++) dst[i] = p[i] ^ m[i & 3];
    else
        for (uint64_t i = 0; i < n; i++) dst[i] = echo_byte((uint32_t)c->idx, seq, i) ^ m[i & 3];
    c->out_len += (int)n;
}

static void ws_want_write(conn *c, int on) {
    if (c->fd < 0 || c->want_out == on) return;
    c->want_out = on;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Send what c->out holds; -1 on a send error (c->error set). */
static int ws_flush(conn *c) {
    if (c->fd < 0) return 0; /* self-test: the frames stay in c->out */
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                ws_want_write(c, 1);
                return 0;
            }
            c->error = 1;
            return -1;
        }
        c->out_off += (int)w;
    }
    c->out_len = c->out_off = 0;
    ws_want_write(c, 0);
    return 0;
}

static void st_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int room = (int)sizeof st_log - st_log_len;
    int n = room > 0 ? vsnprintf(st_log + st_log_len, room, fmt, ap) : 0;
    if (n > 0) st_log_len += n < room ? n : room - 1;
    va_end(ap);
}

static void ws_protocol_error(conn *c, const char *why) {
    ws_protocol_errors++;
    c->error = 1;
    if (selftest_mode) st_printf("(protocol error: %s)", why);
    else if (ws_protocol_errors <= 5)
        fprintf(stderr, "sse_load: websocket protocol error: %s\n", why);
}

/* JSON: the string starting after the opening quote at *pp, unescaped into out (if not NULL);
   *pp is left after the closing quote. Returns 0 on malformed input. */
static int json_string(const char **pp, const char *end, char **out, int *len, int *cap) {
    const char *p = *pp;
    while (p < end) {
        const char *q = p;
        while (q < end && *q != '"' && *q != '\\' && (uint8_t)*q >= 0x20) q++;
        if (out && q > p) buf_append(out, len, cap, p, (int)(q - p));
        p = q;
        if (p >= end || (uint8_t)*p < 0x20) return 0;
        if (*p == '"') {
            *pp = p + 1;
            return 1;
        }
        if (++p >= end) return 0; /* backslash */
        char e = *p++, ch[4];
        int k = 1;
        switch (e) {
        case '"': case '\\': case '/': ch[0] = e; break;
        case 'b': ch[0] = '\b'; break;
        case 'f': ch[0] = '\f'; break;
        case 'n': ch[0] = '\n'; break;
        case 'r': ch[0] = '\r'; break;
        case 't': ch[0] = '\t'; break;
        case 'u': {
            uint32_t u = 0;
            for (int pass = 0; pass < 2; pass++) {
                uint32_t v = 0;
                if (end - p < 4) return 0;
                for (int i = 0; i < 4; i++) {
                    char x = p[i];
                    int d = (x >= '0' && x <= '9') ? x - '0' : (x >= 'a' && x <= 'f') ? x - 'a' + 10
                          : (x >= 'A' && x <= 'F') ? x - 'A' + 10 : -1;
                    if (d < 0) return 0;
                    v = v * 16 + (uint32_t)d;
                }
                p += 4;
                if (pass == 0) {
                    u = v;
                    if (u < 0xD800 || u > 0xDBFF) break; /* not a high surrogate */
                    if (end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                        p += 2;
                        continue;
                    }
                    u = 0xFFFD; /* lone high surrogate */
                    break;
                }
                if (v >= 0xDC00 && v <= 0xDFFF) u = 0x10000 + ((u - 0xD800) << 10) + (v - 0xDC00);
                else u = 0xFFFD; /* (the second escape is dropped: good enough here) */
            }
            if (u >= 0xDC00 && u <= 0xDFFF) u = 0xFFFD;
            if (u < 0x80) ch[0] = (char)u;
            else if (u < 0x800)
                ch[0] = (char)(0xC0 | u >> 6), ch[1] = (char)(0x80 | (u & 63)), k = 2;
            else if (u < 0x10000)
                ch[0] = (char)(0xE0 | u >> 12), ch[1] = (char)(0x80 | (u >> 6 & 63)),
                ch[2] = (char)(0x80 | (u & 63)), k = 3;
            else
                ch[0] = (char)(0xF0 | u >> 18), ch[1] = (char)(0x80 | (u >> 12 & 63)),
                ch[2] = (char)(0x80 | (u >> 6 & 63)), ch[3] = (char)(0x80 | (u & 63)), k = 4;
            break;
        }
        default: return 0;
        }
        if (out) buf_append(out, len, cap, ch, k);
    }
    return 0;
}

static const char *json_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* Skip one JSON value (object, array, string or scalar); NULL on malformed input. Nesting is
   bounded by the 1 MiB message bound and walked with a counter, not recursion. */
static const char *json_skip(const char *p, const char *end) {
    if (p >= end) return NULL;
    if (*p == '"') {
        p++;
        return json_string(&p, end, NULL, NULL, NULL) ? p : NULL;
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            char ch = *p;
            if (ch == '"') {
                p++;
                if (!json_string(&p, end, NULL, NULL, NULL)) return NULL;
                continue;
            }
            if (ch == '{' || ch == '[') depth++;
            else if (ch == '}' || ch == ']') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    const char *q = p;
    while (q < end && *q != ',' && *q != '}' && *q != ']' && *q != ' ' && *q != '\t' &&
           *q != '\n' && *q != '\r')
        q++;
    return q > p ? q : NULL;
}

/* A clos_web WebSocket event: the object {"id": ..., "event": ..., "data": "..."}. The data
   string is unescaped into c->line; id (a string or a number) and event (a string; null or
   absent: "") are copied, truncated. Returns 1 for an object with a string "data", 0 for an
   object without "data" (an event of another kind, e.g. a heartbeat), -1 for anything else. */
static int json_event(conn *c, const char *p, int n, char *id, int idcap, char *ev, int evcap) {
    const char *end = p + n;
    int have_data = 0;
    id[0] = ev[0] = 0;
    c->line_len = 0;
    p = json_ws(p, end);
    if (p >= end || *p++ != '{') return -1;
    p = json_ws(p, end);
    if (p < end && *p == '}') return json_ws(p + 1, end) == end ? 0 : -1;
    for (;;) {
        p = json_ws(p, end);
        if (p >= end || *p++ != '"') return -1;
        const char *k0 = p;
        if (!json_string(&p, end, NULL, NULL, NULL)) return -1;
        int kl = (int)(p - 1 - k0); /* raw key: the three we want have no escapes */
        p = json_ws(p, end);
        if (p >= end || *p++ != ':') return -1;
        p = json_ws(p, end);
        if (p >= end) return -1;
        int is_data = kl == 4 && !memcmp(k0, "data", 4);
        int is_id = kl == 2 && !memcmp(k0, "id", 2);
        int is_ev = kl == 5 && !memcmp(k0, "event", 5);
        if (*p == '"' && (is_data || is_id || is_ev)) {
            p++;
            if (is_data) {
                c->line_len = 0;
                if (!json_string(&p, end, &c->line, &c->line_len, &c->line_cap)) return -1;
                have_data = 1;
            } else {
                char *tmp = NULL;
                int tl = 0, tc = 0;
                if (!json_string(&p, end, &tmp, &tl, &tc)) {
                    free(tmp);
                    return -1;
                }
                char *dst = is_id ? id : ev;
                int cap = is_id ? idcap : evcap;
                int k = tl < cap - 1 ? tl : cap - 1;
                if (k > 0) memcpy(dst, tmp, k);
                dst[k] = 0;
                free(tmp);
            }
        } else {
            const char *v = p;
            p = json_skip(p, end);
            if (!p) return -1;
            if (is_id && *v != '{' && *v != '[' && !(p - v == 4 && !memcmp(v, "null", 4))) {
                int k = (int)(p - v) < idcap - 1 ? (int)(p - v) : idcap - 1;
                memcpy(id, v, k);
                id[k] = 0;
            }
            if (is_data) return -1; /* data must be a string */
        }
        p = json_ws(p, end);
        if (p >= end) return -1;
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p++ != '}') return -1;
        break;
    }
    return json_ws(p, end) == end ? have_data : -1;
}

/* A complete message on a subscriber: the publish payload, raw or in a JSON event. */
static void ws_sub_message(conn *c, int opcode, uint64_t now_ns) {
    const char *d = c->data;
    int len = c->data_len;
    char ev[32] = "";
    if (!opt.ws_raw) {
        char id[64];
        int r = json_event(c, c->data, c->data_len, id, sizeof id, ev, sizeof ev);
        if (r < 0) {
            ws_json_errors++;
            c->bad_payload++;
            bad_payload_total++;
            if (selftest_mode) st_printf("[json error]");
            c->data_len = 0;
            return;
        }
        if (id[0]) memcpy(c->last_id, id, sizeof c->last_id);
        if (r == 0) { /* no data: not a published event */
            c->other_events++;
            other_events_total++;
            if (selftest_mode) st_printf("[%s|%s|(no data)]", ev, c->last_id);
            c->data_len = 0;
            return;
        }
        d = c->line;
        len = c->line_len;
    }
    int is_message = ev[0] == 0 || !strcmp(ev, "message") ||
                     (len >= 2 && d[0] == 's' && d[1] == '='); /* our payload, whatever the name */
    if (selftest_mode) {
        const char *kind = opt.ws_raw ? (opcode == 1 ? "text" : "binary") : ev[0] ? ev : "message";
        if (len <= 64) st_printf("[%s|%s|%.*s]", kind, c->last_id, len, d);
        else st_printf("[%s|%s|%dB %.8s]", kind, c->last_id, len, d);
    } else if (is_message) {
        on_message(c, d, len, now_ns);
    } else {
        c->other_events++;
        other_events_total++;
    }
    c->data_len = 0;
}

static void echo_send(conn *c);

/* A complete echo: is it the oldest message in flight, byte for byte? */
static void echo_done(conn *c, int opcode, uint64_t now_ns) {
    echo_received++;
    if (c->e_n == 0) {
        echo_unexpected++;
        c->e_bad = 0;
        return;
    }
    uint64_t sent = c->e_sent_ns[c->e_head];
    c->e_head = (c->e_head + 1) % opt.echo_depth;
    c->e_n--;
    if (c->w_msg_len != (uint64_t)opt.echo_size) echo_wrong_len++;
    else if (opcode != (opt.echo_binary ? 2 : 1)) echo_wrong_type++;
    else if (c->e_bad) echo_mismatch++;
    else {
        echo_ok++;
        if (echo_measuring) {
            echo_round_trips++;
            hrecord((int64_t)(now_ns - sent));
            double now = now_ns * 1e-9;
            if (t_first_delivery == 0) t_first_delivery = now;
            t_last_delivery = now;
        }
    }
    c->e_bad = 0;
    if (echo_sending && !selftest_mode) echo_send(c);
}

/* Payload bytes of a data frame: kept (subscriber, bounded) or checked (echo). */
static void ws_data(conn *c, const char *p, int n) {
    if (c->kind == ECHO) {
        if (c->e_n == 0 || c->e_bad) {
            c->e_bad = 1;
        } else {
            uint32_t seq = c->e_seq[c->e_head], ci = (uint32_t)c->idx;
            uint64_t off = c->w_msg_len;
            for (int j = 0; j < n; j++)
                if ((uint8_t)p[j] != echo_byte(ci, seq, off + j)) {
                    c->e_bad = 1;
                    break;
                }
        }
    } else {
        if (c->data_len + n > (1 << 20)) {
            ws_protocol_error(c, "message over 1 MiB");
            return;
        }
        buf_append(&c->data, &c->data_len, &c->data_cap, p, n);
    }
    c->w_msg_len += (uint64_t)n;
}

static int ws_frame_done(conn *c, uint64_t now_ns) {
    c->w_in_payload = 0;
    switch (c->w_opcode) {
    case 9: /* ping: answer with a masked pong carrying the same payload */
        ws_pings++;
        c->pings++;
        if (selftest_mode) st_printf("(ping %.*s)", c->w_ctrl_len, c->w_ctrl);
        if (!c->closing) {
            ws_put_frame(c, 10, (const uint8_t *)c->w_ctrl, (uint64_t)c->w_ctrl_len, 0);
            ws_pongs_sent++;
            ws_flush(c);
        }
        break;
    case 10: /* unsolicited pong: ignored */
        if (selftest_mode) st_printf("(pong)");
        break;
    case 8: { /* close: answer it (unless we started it), then the connection is over */
        if (c->w_ctrl_len == 1) {
            ws_protocol_error(c, "close frame with a 1-byte payload");
            return -1;
        }
        int code = c->w_ctrl_len >= 2 ? ((uint8_t)c->w_ctrl[0] << 8 | (uint8_t)c->w_ctrl[1]) : 1005;
        ws_closes++;
        c->close_code = code;
        if (selftest_mode) st_printf("(close %d)", code);
        if (!c->closing) {
            uint8_t body[2] = {(uint8_t)(code >> 8), (uint8_t)code};
            ws_put_frame(c, 8, body, code == 1005 ? 0 : 2, 0);
            c->closing = 1;
            ws_flush(c);
        }
        c->state = C_CLOSED;
        c->closed_by_peer = 1;
        break;
    }
    default: /* data */
        if (c->w_fin) {
            int op = c->w_msg_opcode;
            c->w_msg_opcode = 0;
            if (op == 1) ws_text_msgs++;
            else ws_binary_msgs++;
            if (c->kind == ECHO) echo_done(c, op, now_ns);
            else ws_sub_message(c, op, now_ns);
        }
    }
    return c->error ? -1 : 0;
}

/* Server frames after the 101; -1 when the connection must be closed. */
static int ws_feed(conn *c, const char *p, int n, uint64_t now_ns) {
    while (n > 0 && c->state == C_BODY) {
        if (!c->w_in_payload) {
            int need = 2;
            for (;;) {
                if (c->wh_len >= 2) {
                    int l7 = c->wh[1] & 0x7f;
                    need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((c->wh[1] & 0x80) ? 4 : 0);
                }
                if (c->wh_len >= need || n == 0) break;
                c->wh[c->wh_len++] = (uint8_t)*p++;
                n--;
            }
            if (c->wh_len < need) return 0;
            uint8_t b0 = c->wh[0], b1 = c->wh[1];
            int op = b0 & 15, fin = b0 >> 7, l7 = b1 & 0x7f;
            uint64_t len = (uint64_t)l7;
            if (l7 == 126) len = (uint64_t)c->wh[2] << 8 | c->wh[3];
            if (l7 == 127) {
                len = 0;
                for (int i = 2; i < 10; i++) len = len << 8 | c->wh[i];
            }
            c->wh_len = 0;
            const char *why = NULL;
            if (b0 & 0x70) why = "reserved bits set (no extension was negotiated)";
            else if (b1 & 0x80) why = "masked frame from the server";
            else if ((l7 == 126 && len < 126) || (l7 == 127 && len < 65536))
                why = "length not in its minimal form";
            else if (l7 == 127 && (len >> 63)) why = "64-bit length with the top bit set";
            else if (op >= 8) {
                if (op > 10) why = "unknown control opcode";
                else if (!fin) why = "fragmented control frame";
                else if (len > 125) why = "control frame over 125 bytes";
            } else if (op == 0) {
                if (!c->w_msg_opcode) why = "continuation frame outside a message";
            } else if (op == 1 || op == 2) {
                if (c->w_msg_opcode) why = "new message inside a fragmented one";
                else c->w_msg_opcode = op, c->w_msg_len = 0;
            } else {
                why = "unknown data opcode";
            }
            if (why) {
                ws_protocol_error(c, why);
                return -1;
            }
            c->w_opcode = op, c->w_fin = fin, c->w_left = len;
            c->w_in_payload = 1, c->w_ctrl_len = 0;
            c->frames++;
            if (len == 0 && ws_frame_done(c, now_ns) < 0) return -1;
            continue;
        }
        int k = c->w_left < (uint64_t)n ? (int)c->w_left : n;
        if (c->w_opcode >= 8) {
            memcpy(c->w_ctrl + c->w_ctrl_len, p, k);
            c->w_ctrl_len += k;
        } else {
            ws_data(c, p, k);
        }
        c->w_left -= (uint64_t)k;
        p += k, n -= k;
        if (c->error) return -1;
        if (c->w_left == 0 && ws_frame_done(c, now_ns) < 0) return -1;
    }
    return c->error ? -1 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* HTTP response framing                                                                      */

static void pub_response_done(conn *c);
static void body_end(conn *c);
static void echo_up(conn *c);

static void body_bytes(conn *c, const char *p, int n, uint64_t now_ns) {
    if (c->kind == SUB && c->status == 200) sse_feed(c, p, n, now_ns);
}

/* Parse the status line and the framing headers of c->head (complete). */
static void parse_head(conn *c) {
    c->head[c->head_len] = 0; /* head_cap always has room: see http_feed */
    c->status = 0;
    if (strncmp(c->head, "HTTP/1.", 7) == 0 && c->head_len > 12) c->status = atoi(c->head + 9);
    c->body_mode = B_CLOSE;
    c->body_left = 0;
    char *line = strchr(c->head, '\n');
    while (line && *++line) {
        char *eol = strchr(line, '\n');
        if (!strncasecmp(line, "transfer-encoding:", 18)) {
            char *v = line + 18;
            char save = eol ? *eol : 0;
            if (eol) *eol = 0;
            if (strcasestr(v, "chunked")) c->body_mode = B_CHUNKED;
            if (eol) *eol = save;
        } else if (!strncasecmp(line, "content-length:", 15) && c->body_mode != B_CHUNKED) {
            c->body_mode = B_LENGTH;
            c->body_left = atoll(line + 15);
        }
        line = eol;
    }
    if (c->status == 204 || c->status == 304 || (c->status >= 100 && c->status < 200)) {
        c->body_mode = B_LENGTH;
        c->body_left = 0;
    }
    if (c->is_ws && c->status == 101) { /* the connection now carries WebSocket frames */
        c->ws_ok = ws_head_ok(c);
        c->body_mode = B_WS;
        c->wh_len = c->w_in_payload = c->w_msg_opcode = 0;
    }
    c->ch_state = CH_SIZE;
    c->ch_size = 0;
    c->head_len = 0;
}

/* Feed received bytes; returns -1 when the connection must be closed. */
static int http_feed(conn *c, const char *p, int n, uint64_t now_ns) {
    while (n > 0) {
        if (c->state == C_HEAD) {
            /* accumulate until the blank line (CRLFCRLF or LFLF) */
            int take = 0, found = 0;
            for (; take < n; take++) {
                char ch = p[take];
                int hl = c->head_len;
                if (ch == '\n' && ((hl >= 1 && c->head[hl - 1] == '\n') ||
                                   (hl >= 3 && c->head[hl - 1] == '\r' && c->head[hl - 2] == '\n'))) {
                    buf_append(&c->head, &c->head_len, &c->head_cap, p + take, 1);
                    take++;
                    found = 1;
                    break;
                }
                buf_append(&c->head, &c->head_len, &c->head_cap, p + take, 1);
                if (c->head_len > 65536) return -1;
            }
            p += take, n -= take;
            if (!found) return 0;
            buf_append(&c->head, &c->head_len, &c->head_cap, "", 1);
            c->head_len--;
            parse_head(c);
            c->state = C_BODY;
            if (c->is_ws && !(c->status == 101 && c->ws_ok)) {
                if (c->status == 101) ws_handshake_errors++; /* a 101 failing RFC 6455 4.1 */
                else http_errors++;                          /* refused, e.g. 404 */
                if (selftest_mode) st_printf("(handshake failed: %d)", c->status);
                else if (ws_handshake_errors + http_errors <= 5)
                    fprintf(stderr, "sse_load: websocket handshake answered %d%s\n", c->status,
                            c->status == 101 ? " with wrong headers" : "");
                c->error = 1;
                return -1;
            }
            if (c->kind == ECHO) {
                echo_up(c);
                continue;
            }
            if (c->kind == SUB) {
                if (c->status != (c->is_ws ? 101 : 200)) {
                    http_errors++;
                    c->error = 1;
                    return -1;
                }
                if (!c->ready) {
                    c->ready = 1;
                    subs_ready++;
                    n_connecting--;
                    if (subs_ready + subs_failed == opt.subs) t_all_ready = mono_s();
                } else if (c->down) { /* resumed after a reconnect */
                    double t = mono_s();
                    c->down = 0;
                    n_down--;
                    resumes++;
                    if (t - c->down_since > max_outage) max_outage = t - c->down_since;
                    if (t - c->attempt_at > max_attempt_s) max_attempt_s = t - c->attempt_at;
                    t_last_resume = t;
                }
            }
            if (c->body_mode == B_LENGTH && c->body_left == 0) body_end(c);
            continue;
        }
        if (c->state != C_BODY) return -1;
        if (c->body_mode == B_WS) return ws_feed(c, p, n, now_ns);
        if (c->body_mode == B_CLOSE) {
            body_bytes(c, p, n, now_ns);
            return c->error ? -1 : 0;
        }
        if (c->body_mode == B_LENGTH) {
            int k = c->body_left < n ? (int)c->body_left : n;
            body_bytes(c, p, k, now_ns);
            c->body_left -= k;
            p += k, n -= k;
            if (c->body_left == 0) body_end(c);
            if (c->error) return -1;
            continue;
        }
        /* chunked */
        switch (c->ch_state) {
        case CH_SIZE: {
            char ch = *p++;
            n--;
            int d = (ch >= '0' && ch <= '9') ? ch - '0'
                    : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10
                    : (ch >= 'A' && ch <= 'F') ? ch - 'A' + 10 : -1;
            if (d >= 0) {
                c->ch_size = c->ch_size * 16 + d;
                if (c->ch_size > (1ll << 40)) return -1;
            } else if (ch == '\n') {
                goto size_done;
            } else {
                c->ch_state = CH_EXT; /* ';' extension, '\r', spaces: skip to LF */
            }
            break;
        }
        case CH_EXT: {
            char ch = *p++;
            n--;
            if (ch == '\n') goto size_done;
            break;
        }
        size_done:
            if (c->ch_size == 0) {
                c->ch_state = CH_TRAILER;
                c->ch_line_len = 0;
            } else {
                c->ch_state = CH_DATA;
                c->body_left = c->ch_size;
            }
            break;
        case CH_DATA: {
            int k = c->body_left < n ? (int)c->body_left : n;
            body_bytes(c, p, k, now_ns);
            if (c->error) return -1;
            c->body_left -= k;
            p += k, n -= k;
            if (c->body_left == 0) c->ch_state = CH_DATA_END;
            break;
        }
        case CH_DATA_END: { /* CRLF after the data */
            char ch = *p++;
            n--;
            if (ch == '\n') {
                c->ch_state = CH_SIZE;
                c->ch_size = 0;
            } else if (ch != '\r') {
                return -1;
            }
            break;
        }
        case CH_TRAILER: { /* trailer lines until an empty one */
            char ch = *p++;
            n--;
            if (ch == '\n') {
                if (c->ch_line_len == 0) {
                    body_end(c);
                    if (c->state == C_CLOSED) return -1;
                } else {
                    c->ch_line_len = 0;
                }
            } else if (ch != '\r') {
                c->ch_line_len++;
            }
            break;
        }
        }
    }
    return c->error ? -1 : 0;
}

static void body_end(conn *c) {
    if (c->kind == PUB) {
        pub_response_done(c);
        c->state = C_HEAD;
    } else {
        /* the server ended the stream */
        c->state = C_CLOSED;
        c->closed_by_peer = 1;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* sockets                                                                                    */

static struct sockaddr_in target, pub_target;

static int open_socket(int src_index, int nodelay, const struct sockaddr_in *to) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (nodelay) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(src_index % opt.src_addrs));
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
        close(fd);
        return -1;
    }
    if (connect(fd, (const struct sockaddr *)to, sizeof *to) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static void conn_close(conn *c) {
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    c->state = C_CLOSED;
}

static void schedule_reconnect(conn *c) {
    double now = mono_s();
    conn_close(c);
    if (!c->down) {
        c->down = 1;
        c->down_since = now;
        n_down++;
        if (t_first_down == 0) t_first_down = now;
    }
    /* as a browser: wait the stream's retry time (the server jitters it per client); without
       one, a random 0..--reconnect s */
    c->reconnect_due = now + (c->retry_ms > 0 ? c->retry_ms / 1000.0 : drand48() * opt.reconnect);
    pending[n_pending++] = c->idx;
}

static void sub_failed(conn *c, int counted_as) {
    (void)counted_as;
    if (opt.reconnect > 0 && c->ready) {
        if (!c->down) sub_disconnects++; /* a failed reconnect attempt is not counted again */
        schedule_reconnect(c);
        return;
    }
    if (!c->ready) {
        subs_failed++;
        n_connecting--;
        if (subs_ready + subs_failed == opt.subs) t_all_ready = mono_s();
    } else {
        sub_disconnects++;
    }
    conn_close(c);
}

static void start_sub(int i) {
    conn *c = &subs_c[i];
    c->kind = SUB;
    c->idx = i;
    c->chan = i % opt.channels;
    c->max_seq = -1;
    c->is_ws = opt.ws;
    c->fd = open_socket(i, 0, &target);
    if (t_first_connect == 0) t_first_connect = mono_s();
    n_connecting++;
    if (c->fd < 0) {
        connect_errors++;
        sub_failed(c, 0);
        return;
    }
    c->state = C_CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* Open subscriber c again (--reconnect), resuming with Last-Event-ID. */
static void restart_sub(conn *c) {
    reconnect_attempts++;
    c->attempt_at = mono_s();
    c->head_len = c->line_len = c->data_len = c->event_len = c->skip_lf = 0;
    c->error = c->closed_by_peer = 0;
    c->wh_len = c->w_in_payload = c->w_msg_opcode = c->closing = c->want_out = c->ws_ok = 0;
    c->out_len = c->out_off = 0;
    memcpy(c->id_buf, c->last_id, sizeof c->id_buf); /* an id not yet dispatched is dropped */
    c->fd = open_socket(c->idx, 0, &target);
    if (c->fd < 0) {
        connect_errors++;
        schedule_reconnect(c);
        return;
    }
    c->state = C_CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* The opening handshake of a WebSocket client on c (a fresh key each time). */
static int ws_request(conn *c, char *req, int cap, const char *path, const char *query) {
    ws_new_key(c);
    return snprintf(req, cap,
                    "GET %s%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n",
                    path, query, opt.host, opt.port, c->ws_key);
}

static void send_sub_request(conn *c) {
    char req[512], resume[96] = "";
    if (c->is_ws) { /* GET /ws/<prefix><k>[?lastEventId=<id, percent-encoded>] */
        char path[160], q[200] = "";
        snprintf(path, sizeof path, "%s%s%d", opt.sub_path, opt.prefix, c->chan);
        if (c->last_id[0]) {
            int k = snprintf(q, sizeof q, "?lastEventId=");
            for (const char *s = c->last_id; *s && k < (int)sizeof q - 4; s++) {
                uint8_t ch = (uint8_t)*s;
                if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
                    (ch >= 'A' && ch <= 'Z') || ch == '-' || ch == '.' || ch == '_' || ch == '~')
                    q[k++] = (char)ch;
                else
                    k += snprintf(q + k, sizeof q - k, "%%%02X", ch);
            }
            q[k] = 0;
        }
        int n = ws_request(c, req, sizeof req, path, q);
        ssize_t w = send(c->fd, req, n, MSG_NOSIGNAL);
        if (w != n) {
            connect_errors++;
            sub_failed(c, 0);
            return;
        }
        c->state = C_HEAD;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        return;
    }
    if (c->last_id[0]) snprintf(resume, sizeof resume, "Last-Event-ID: %s\r\n", c->last_id);
    int n = snprintf(req, sizeof req,
                     "GET %s%s%d HTTP/1.%d\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n"
                     "Cache-Control: no-cache\r\n%s\r\n",
                     opt.sub_path, opt.prefix, c->chan, opt.http10 ? 0 : 1, opt.host, opt.port,
                     resume);
    ssize_t w = send(c->fd, req, n, MSG_NOSIGNAL);
    if (w != n) { /* a fresh socket always takes a few hundred bytes */
        connect_errors++;
        sub_failed(c, 0);
        return;
    }
    c->state = C_HEAD;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void pub_want_write(conn *c, int on) {
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void start_pub(int i) {
    conn *c = &pubs_c[i];
    c->kind = PUB;
    c->idx = i;
    c->fd = open_socket(opt.subs + i, 1, &pub_target);
    if (c->fd < 0) {
        pub_conn_errors++;
        c->state = C_CLOSED;
        return;
    }
    c->state = C_CONNECTING;
    c->fifo_head = c->fifo_n = 0;
    c->out_len = c->out_off = 0;
    c->head_len = 0;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void pub_flush(conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) {
                pub_want_write(c, 1);
                return;
            }
            pub_conn_errors++;
            pub_errors += c->fifo_n;
            c->fifo_n = 0;
            conn_close(c);
            return;
        }
        c->out_off += (int)w;
    }
    c->out_len = c->out_off = 0;
    pub_want_write(c, 0);
}

static void pub_send(conn *c, uint32_t chan) {
    char payload[4096], head[256];
    uint32_t seq = next_seq[chan]++;
    int pl = make_payload(payload, sizeof payload, seq, mono_ns(), chan);
    int hl = snprintf(head, sizeof head,
                      "POST %s%s%u HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: text/plain\r\n"
                      "Content-Length: %d\r\n\r\n",
                      opt.pub_path, opt.prefix, chan, opt.host, opt.port, pl);
    buf_append(&c->out, &c->out_len, &c->out_cap, head, hl);
    buf_append(&c->out, &c->out_len, &c->out_cap, payload, pl);
    int slot = (c->fifo_head + c->fifo_n) % opt.pub_depth;
    c->fifo_chan[slot] = chan;
    c->fifo_seq[slot] = seq;
    c->fifo_n++;
    published++;
    pub_flush(c);
}

static void pub_response_done(conn *c) {
    if (c->fifo_n == 0) {
        pub_errors++; /* an answer nobody asked for */
        return;
    }
    uint32_t chan = c->fifo_chan[c->fifo_head], seq = c->fifo_seq[c->fifo_head];
    c->fifo_head = (c->fifo_head + 1) % opt.pub_depth;
    c->fifo_n--;
    if (c->status >= 200 && c->status < 300) {
        acked++;
        acked_count[chan]++;
        bit_set(&acked_bitmaps[chan], &acked_words[chan], seq);
    } else {
        pub_non2xx++;
        pub_errors++;
        if (pub_non2xx <= 5) fprintf(stderr, "sse_load: publish answered %d\n", c->status);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* echo (--echo)                                                                              */

static conn *echo_c;
static int echo_ready, echo_failed;
static long echo_conns_lost, echo_closes_clean, echo_closes_unclean;

static void echo_down(conn *c);
static void on_event(conn *c, uint32_t events);

static void send_echo_request(conn *c) {
    char req[512];
    int n = ws_request(c, req, sizeof req, opt.echo_path, "");
    ssize_t w = send(c->fd, req, n, MSG_NOSIGNAL);
    if (w != n) {
        connect_errors++;
        echo_down(c);
        return;
    }
    c->state = C_HEAD;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void echo_start(int i) {
    conn *c = &echo_c[i];
    c->kind = ECHO;
    c->idx = i;
    c->is_ws = 1;
    c->fd = open_socket(i, 1, &target);
    if (t_first_connect == 0) t_first_connect = mono_s();
    n_connecting++;
    if (c->fd < 0) {
        connect_errors++;
        echo_down(c);
        return;
    }
    c->state = C_CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* The 101 arrived: c is up; it sends once the run does. */
static void echo_up(conn *c) {
    c->ready = 1;
    echo_ready++;
    n_connecting--;
    if (echo_ready + echo_failed == opt.echo_conns) t_all_ready = mono_s();
    if (echo_sending) echo_send(c);
}

/* Keep --depth messages in flight on c (the send time is taken when a message is queued). */
static void echo_send(conn *c) {
    if (c->fd < 0 || c->closing || c->state != C_BODY || c->e_n >= opt.echo_depth) return;
    uint64_t now = mono_ns();
    while (c->e_n < opt.echo_depth) {
        uint32_t seq = c->e_next_seq++;
        int slot = (c->e_head + c->e_n) % opt.echo_depth;
        c->e_seq[slot] = seq;
        c->e_sent_ns[slot] = now;
        c->e_n++;
        ws_put_frame(c, opt.echo_binary ? 2 : 1, NULL, (uint64_t)opt.echo_size, seq);
        echo_sent++;
    }
    ws_flush(c); /* a send error sets c->error: the caller closes c */
}

static void echo_down(conn *c) {
    if (c->down) return;
    c->down = 1;
    if (!c->ready) {
        echo_failed++;
        n_connecting--;
        if (echo_ready + echo_failed == opt.echo_conns) t_all_ready = mono_s();
    } else if (!c->closing) {
        echo_conns_lost++; /* the server or the network ended it during the run */
    } else if (c->closed_by_peer) {
        echo_closes_clean++; /* our close was answered with a close */
    } else {
        echo_closes_unclean++;
    }
    conn_close(c);
}

static int echo_main(void) {
    int N = opt.echo_conns;
    echo_c = calloc(N, sizeof(conn));
    for (int i = 0; i < N; i++) {
        echo_c[i].fd = -1;
        echo_c[i].e_seq = calloc(opt.echo_depth, sizeof(uint32_t));
        echo_c[i].e_sent_ns = calloc(opt.echo_depth, sizeof(uint64_t));
    }
    enum { E_CONNECT, E_WARMUP, E_MEASURE, E_DRAIN, E_CLOSE, E_DONE } phase = E_CONNECT;
    const char *end_reason = "done";
    double t0 = mono_s(), t_warm = 0, t_m0 = 0, t_m1 = 0, phase_end = 0, next_progress = t0 + 2;
    struct rusage ru0 = {0}, ru1 = {0};
    long unanswered = 0;
    int next = 0;
    struct epoll_event evs[1024];
    while (phase != E_DONE) {
        double now = mono_s();
        if (now - t0 > opt.timeout) {
            end_reason = "timeout";
            break;
        }
        while (next < N && n_connecting < opt.connect_window) echo_start(next++);
        if (phase == E_CONNECT) {
            if (echo_ready + echo_failed == N) {
                fprintf(stderr, "# ready conns=%d failed=%d connect_s=%.3f\n", echo_ready,
                        echo_failed, t_all_ready - t_first_connect);
                fflush(stderr);
                if (echo_ready == 0) {
                    end_reason = "no-connection";
                    break;
                }
                phase = E_WARMUP;
                t_warm = now;
                echo_sending = 1;
                for (int i = 0; i < N; i++) {
                    conn *c = &echo_c[i];
                    if (c->fd < 0 || !c->ready) continue;
                    echo_send(c);
                    if (c->error) echo_down(c);
                }
            } else if (now - t0 > opt.connect_timeout) {
                end_reason = "connect-timeout";
                break;
            }
        }
        if (phase == E_WARMUP && now >= t_warm + opt.warmup) {
            phase = E_MEASURE;
            t_m0 = now;
            echo_measuring = 1;
            getrusage(RUSAGE_SELF, &ru0);
            fprintf(stderr, "# measuring t_mono=%.6f\n", now);
            fflush(stderr);
        }
        if (phase == E_MEASURE && now >= t_m0 + opt.duration) {
            t_m1 = now;
            echo_measuring = echo_sending = 0;
            getrusage(RUSAGE_SELF, &ru1);
            fprintf(stderr, "# measured t_mono=%.6f round_trips=%ld\n", now, echo_round_trips);
            fflush(stderr);
            phase = E_DRAIN;
            phase_end = now + opt.drain;
        }
        if (phase == E_DRAIN) {
            long outstanding = 0;
            for (int i = 0; i < N; i++)
                if (echo_c[i].fd >= 0) outstanding += echo_c[i].e_n;
            if (outstanding == 0 || now >= phase_end) {
                unanswered = outstanding;
                if (outstanding) end_reason = "drain-timeout";
                static const uint8_t normal[2] = {0x03, 0xe8}; /* 1000: normal closure */
                for (int i = 0; i < N; i++) {
                    conn *c = &echo_c[i];
                    if (c->fd < 0 || !c->ready) continue;
                    c->closing = 1;
                    ws_put_frame(c, 8, normal, 2, 0);
                    if (ws_flush(c) < 0) echo_down(c);
                }
                phase = E_CLOSE;
                phase_end = now + 2.0;
            }
        }
        if (phase == E_CLOSE) {
            int open = 0;
            for (int i = 0; i < N; i++) open += echo_c[i].fd >= 0;
            if (open == 0 || now >= phase_end) break;
        }
        if (now >= next_progress) {
            fprintf(stderr, "# t=%.1f phase=%d ready=%d failed=%d sent=%ld echoes=%ld\n", now - t0,
                    (int)phase, echo_ready, echo_failed, echo_sent, echo_received);
            next_progress = now + 2;
        }
        int n = epoll_wait(ep, evs, 1024, phase == E_CONNECT ? 10 : 2);
        if (n < 0) n = 0;
        for (int k = 0; k < n; k++) on_event(evs[k].data.ptr, evs[k].events);
    }
    double t_end = mono_s();
    if (t_m0 > 0 && t_m1 == 0) { /* ended early (timeout): measure up to now */
        t_m1 = t_end;
        getrusage(RUSAGE_SELF, &ru1);
    }
    for (int i = 0; i < N; i++) /* still open after the close wait */
        if (echo_c[i].fd >= 0) echo_down(&echo_c[i]);
    struct rusage ru_all;
    getrusage(RUSAGE_SELF, &ru_all);
    double window = t_m1 - t_m0;
    double cpu_m = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                   (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) * 1e-6 +
                   (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                   (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) * 1e-6;
    double cpu_all = ru_all.ru_utime.tv_sec + ru_all.ru_utime.tv_usec * 1e-6 +
                     ru_all.ru_stime.tv_sec + ru_all.ru_stime.tv_usec * 1e-6;
    double connect_s = t_all_ready > 0 ? t_all_ready - t_first_connect : t_end - t_first_connect;
    printf("{\n");
    printf("  \"mode\": \"echo\", \"end_reason\": \"%s\",\n", end_reason);
    printf("  \"config\": {\"port\": %d, \"path\": \"%s\", \"conns\": %d, \"depth\": %d, "
           "\"size\": %ld, \"binary\": %d, \"warmup\": %g, \"duration\": %g, \"src_addrs\": %d},\n",
           opt.port, opt.echo_path, N, opt.echo_depth, opt.echo_size, opt.echo_binary, opt.warmup,
           opt.duration, opt.src_addrs);
    printf("  \"conns_ready\": %d, \"conns_failed\": %d, \"connect_errors\": %ld, "
           "\"http_errors\": %ld, \"handshake_errors\": %ld, \"connect_s\": %.4f, "
           "\"connects_per_s\": %.1f,\n",
           echo_ready, echo_failed, connect_errors, http_errors, ws_handshake_errors, connect_s,
           connect_s > 0 ? echo_ready / connect_s : 0);
    printf("  \"measured_s\": %.4f, \"round_trips\": %ld, \"round_trips_per_s\": %.1f, "
           "\"payload_bytes_per_s\": %.1f,\n",
           window > 0 ? window : 0, echo_round_trips, window > 0 ? echo_round_trips / window : 0,
           window > 0 ? (double)echo_round_trips * opt.echo_size / window : 0);
    printf("  \"sent\": %ld, \"echoes\": %ld, \"echoes_ok\": %ld, \"mismatches\": %ld, "
           "\"wrong_length\": %ld, \"wrong_type\": %ld, \"unexpected\": %ld, \"unanswered\": %ld,\n",
           echo_sent, echo_received, echo_ok, echo_mismatch, echo_wrong_len, echo_wrong_type,
           echo_unexpected, unanswered);
    printf("  \"conns_lost\": %ld, \"closes_clean\": %ld, \"closes_unclean\": %ld, "
           "\"protocol_errors\": %ld, \"pings\": %ld, \"pongs_sent\": %ld, \"closes_received\": %ld,\n",
           echo_conns_lost, echo_closes_clean, echo_closes_unclean, ws_protocol_errors, ws_pings,
           ws_pongs_sent, ws_closes);
    printf("  \"latency_ms\": {\"count\": %" PRIu64 ", \"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, "
           "\"p999\": %.3f, \"max\": %.3f, \"mean\": %.3f},\n",
           hist_count, hpct(50), hpct(90), hpct(99), hpct(99.9), hist_max / 1e6,
           hist_count ? (double)hist_sum_us / hist_count / 1e3 : 0);
    printf("  \"loadgen_cpu_s\": %.3f, \"loadgen_cpu_measured_s\": %.3f, \"loadgen_cpu_pct\": %.1f, "
           "\"wall_s\": %.3f\n}\n",
           cpu_all, cpu_m, window > 0 ? 100.0 * cpu_m / window : 0, t_end - t0);
    fflush(stdout);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* event handling                                                                             */

static char rbuf[1 << 16];

static void on_event(conn *c, uint32_t events) {
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            if (c->kind == ECHO) {
                connect_errors++;
                echo_down(c);
            } else if (c->kind == SUB) {
                connect_errors++;
                sub_failed(c, 0);
            } else {
                pub_conn_errors++;
                conn_close(c);
            }
            return;
        }
        if (c->kind == ECHO) {
            send_echo_request(c);
        } else if (c->kind == SUB) {
            send_sub_request(c);
        } else {
            c->state = C_HEAD;
            pub_want_write(c, 0);
        }
        return;
    }
    if (c->kind == PUB && (events & EPOLLOUT)) {
        pub_flush(c);
        if (c->fd < 0) return;
    } else if (c->is_ws && (events & EPOLLOUT)) { /* WebSocket frames waiting to go */
        if (ws_flush(c) < 0) {
            if (c->kind == ECHO) echo_down(c);
            else sub_failed(c, 0);
            return;
        }
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
        if (r > 0) {
            if (http_feed(c, rbuf, (int)r, mono_ns()) < 0 || c->state == C_CLOSED) {
                if (c->kind == ECHO) echo_down(c);
                else if (c->kind == SUB) sub_failed(c, 0);
                else {
                    pub_conn_errors++;
                    pub_errors += c->fifo_n;
                    c->fifo_n = 0;
                    conn_close(c);
                }
            }
            return;
        }
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        /* EOF or error */
        if (c->kind == ECHO) {
            if (r < 0) c->error = 1;
            echo_down(c);
        } else if (c->kind == SUB) {
            if (c->state == C_BODY && c->body_mode == B_CLOSE) c->closed_by_peer = 1;
            if (r < 0) c->error = 1;
            if (c->state == C_HEAD && !c->ready) connect_errors++;
            sub_failed(c, 0);
        } else {
            pub_conn_errors++;
            pub_errors += c->fifo_n;
            c->fifo_n = 0;
            conn_close(c);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* self-test: fixed streams fed whole and in random splits                                    */

static int selftest_case(const char *name, int http_chunked, const char *body, int body_len,
                         const char *expect) {
    static char wire[1 << 15];
    int wl = 0;
    if (http_chunked) {
        wl = snprintf(wire, sizeof wire,
                      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n");
        /* frame body in chunks of 1..9 bytes, with an extension on some */
        int off = 0, k = 0;
        while (off < body_len) {
            int sz = 1 + (k * 7 + 3) % 9;
            if (sz > body_len - off) sz = body_len - off;
            wl += snprintf(wire + wl, sizeof wire - wl, (k % 3) ? "%x\r\n" : "%X;ext=1\r\n", sz);
            memcpy(wire + wl, body + off, sz);
            wl += sz;
            wire[wl++] = '\r', wire[wl++] = '\n';
            off += sz, k++;
        }
        wl += snprintf(wire + wl, sizeof wire - wl, "0\r\n\r\n");
    } else {
        wl = snprintf(wire, sizeof wire, "HTTP/1.0 200 OK\nContent-Type: text/event-stream\n\n");
        memcpy(wire + wl, body, body_len);
        wl += body_len;
    }
    int fails = 0;
    for (int split = 0; split < 12; split++) {
        conn c;
        memset(&c, 0, sizeof c);
        c.kind = SUB;
        c.state = C_HEAD;
        c.ready = 1; /* not counted */
        st_log_len = 0;
        st_log[0] = 0;
        unsigned seed = 12345u + split;
        int off = 0;
        while (off < wl && c.state != C_CLOSED) {
            int sz = split == 0 ? wl : 1 + (int)(rand_r(&seed) % (split * 3));
            if (sz > wl - off) sz = wl - off;
            if (http_feed(&c, wire + off, sz, 0) < 0) break;
            off += sz;
        }
        if (strcmp(st_log, expect) != 0) {
            fprintf(stderr, "selftest %s split %d:\n  got    %s\n  expect %s\n", name, split,
                    st_log, expect);
            fails++;
        }
        if (http_chunked && c.state != C_CLOSED) {
            fprintf(stderr, "selftest %s split %d: last chunk not seen\n", name, split);
            fails++;
        }
        free(c.head), free(c.line), free(c.data);
    }
    return fails;
}

/* WebSocket self-test: server frames built here, fed whole and in random splits */

static int st_frame(char *w, int fin, int op, const char *p, int n, int masked) {
    int k = 0;
    uint8_t mb = masked ? 0x80 : 0;
    w[k++] = (char)((fin ? 0x80 : 0) | op);
    if (n < 126) {
        w[k++] = (char)(mb | n);
    } else if (n < 65536) {
        w[k++] = (char)(mb | 126);
        w[k++] = (char)(n >> 8), w[k++] = (char)n;
    } else {
        w[k++] = (char)(mb | 127);
        for (int i = 7; i >= 0; i--) w[k++] = (char)((uint64_t)n >> (8 * i));
    }
    static const uint8_t m[4] = {1, 2, 3, 4};
    if (masked) memcpy(w + k, m, 4), k += 4;
    for (int i = 0; i < n; i++) w[k + i] = masked ? (char)(p[i] ^ m[i & 3]) : p[i];
    return k + n;
}

/* The client frames the connection queued (pongs, closes): each must be masked. */
static void st_client_frames(const char *out, int len, char *log, int cap) {
    int o = 0, k = 0;
    log[0] = 0;
    while (k + 2 <= len && o < cap - 64) {
        uint8_t b0 = (uint8_t)out[k], b1 = (uint8_t)out[k + 1];
        int n = b1 & 0x7f, hl = 2;
        if (n >= 126) { /* never for control frames */
            o += snprintf(log + o, cap - o, "<long>");
            break;
        }
        if (!(b1 & 0x80)) {
            o += snprintf(log + o, cap - o, "<UNMASKED>");
            break;
        }
        const uint8_t *m = (const uint8_t *)out + k + hl;
        char pl[128];
        for (int i = 0; i < n; i++) pl[i] = (char)(out[k + hl + 4 + i] ^ m[i & 3]);
        int op = b0 & 15;
        if (op == 10) o += snprintf(log + o, cap - o, "<pong %.*s>", n, pl);
        else if (op == 8 && n >= 2)
            o += snprintf(log + o, cap - o, "<close %d>", (uint8_t)pl[0] << 8 | (uint8_t)pl[1]);
        else if (op == 8) o += snprintf(log + o, cap - o, "<close>");
        else o += snprintf(log + o, cap - o, "<op %d %d>", op, n);
        k += hl + 4 + n;
    }
}

static const char st_key[] = "dGhlIHNhbXBsZSBub25jZQ=="; /* RFC 6455 1.3's example */

static int ws_selftest_case(const char *name, int raw, const char *wire, int wl, const char *expect,
                            const char *expect_out) {
    int fails = 0;
    opt.ws_raw = raw;
    for (int split = 0; split < 12; split++) {
        conn c;
        memset(&c, 0, sizeof c);
        c.kind = SUB, c.state = C_HEAD, c.ready = 1, c.is_ws = 1, c.fd = -1;
        strcpy(c.ws_key, st_key);
        st_log_len = 0;
        st_log[0] = 0;
        unsigned seed = 777u + split;
        int off = 0;
        while (off < wl && c.state != C_CLOSED) {
            int sz = split == 0 ? wl : 1 + (int)(rand_r(&seed) % (split * split * 3));
            if (sz > wl - off) sz = wl - off;
            if (http_feed(&c, wire + off, sz, 0) < 0) break;
            off += sz;
        }
        char out[512];
        st_client_frames(c.out, c.out_len, out, sizeof out);
        if (strcmp(st_log, expect) != 0 || strcmp(out, expect_out) != 0) {
            fprintf(stderr, "selftest ws %s split %d:\n  got    %s %s\n  expect %s %s\n", name,
                    split, st_log, out, expect, expect_out);
            fails++;
        }
        free(c.head), free(c.line), free(c.data), free(c.out);
    }
    opt.ws_raw = 0;
    return fails;
}

static int ws_selftest(void) {
    static char w[1 << 18], big[70000];
    static const char head[] =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    int f = 0, n;
    char acc[32];
    ws_accept_for(st_key, acc); /* SHA-1 and base64 against the RFC's example */
    if (strcmp(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")) {
        fprintf(stderr, "selftest ws accept: %s\n", acc);
        f++;
    }
    /* raw: every length form, fragments with control frames between them, empty message */
    n = sprintf(w, "%s", head);
    n += st_frame(w + n, 1, 1, "hello", 5, 0);
    n += st_frame(w + n, 1, 9, "hi", 2, 0);
    memset(big, 'a', 200);
    n += st_frame(w + n, 1, 1, big, 200, 0);
    memset(big, 'b', sizeof big);
    n += st_frame(w + n, 1, 2, big, (int)sizeof big, 0);
    n += st_frame(w + n, 0, 1, "fra", 3, 0);
    n += st_frame(w + n, 1, 9, "p2", 2, 0);
    n += st_frame(w + n, 0, 0, "gme", 3, 0);
    n += st_frame(w + n, 1, 10, "", 0, 0);
    n += st_frame(w + n, 1, 0, "nted", 4, 0);
    n += st_frame(w + n, 1, 1, "", 0, 0);
    n += st_frame(w + n, 1, 8, "\x03\xe8" "bye", 5, 0);
    n += st_frame(w + n, 1, 1, "after close", 11, 0);
    f += ws_selftest_case("raw", 1, w, n,
                          "[text||hello](ping hi)[text||200B aaaaaaaa][binary||70000B bbbbbbbb]"
                          "(ping p2)(pong)[text||fragmented][text||](close 1000)",
                          "<pong hi><pong p2><close 1000>");
    /* json: clos_web's events; header names and values in other cases, a token list */
    n = sprintf(w, "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\n"
                   "connection: keep-alive, Upgrade\r\nsec-websocket-accept: %s\r\n\r\n", acc);
    static const char *js[] = {
        "{\"id\": \"e-1\", \"event\": \"message\", \"data\": \"s=1 t=2 c=0\"}",
        "{\"event\":null,\"data\":\"a\\\"b\\nc\\u00e9\\ud83d\\ude00\\/\",\"id\":7}",
        " {\"meta\": {\"a\": [1, \"}\"]}, \"data\": \"y\", \"id\": \"z\", \"n\": -1.5e3, \"t\": true} ",
        "{\"id\":\"9\",\"event\":\"reset\",\"data\":\"gap\"}",
        "{\"data\": 5}", "[1,2]", "{\"data\":\"unterminated}", "{\"data\":\"x\"} trailing",
        "{\"event\": \"heartbeat\"}", "{}",
    };
    for (int i = 0; i < (int)(sizeof js / sizeof *js); i++)
        n += st_frame(w + n, 1, 1, js[i], (int)strlen(js[i]), 0);
    n += st_frame(w + n, 0, 1, "{\"id\":\"f\",\"data\":\"", 18, 0);
    n += st_frame(w + n, 0, 0, "s=2 t=3 c=0", 11, 0);
    n += st_frame(w + n, 1, 0, "\"}", 2, 0);
    n += st_frame(w + n, 1, 8, "", 0, 0);
    f += ws_selftest_case("json", 0, w, n,
                          "[message|e-1|s=1 t=2 c=0][message|7|a\"b\nc\xc3\xa9\xf0\x9f\x98\x80/]"
                          "[message|z|y][reset|9|gap][json error][json error][json error]"
                          "[json error][heartbeat|9|(no data)][|9|(no data)]"
                          "[message|f|s=2 t=3 c=0](close 1005)",
                          "<close>");
    /* protocol errors: each stops the connection at once */
    static const struct { const char *name, *why; int fin, op, masked, raw_len; } bad[] = {
        {"masked", "masked frame from the server", 1, 1, 1, 0},
        {"rsv", "reserved bits set (no extension was negotiated)", 1, 0x41, 0, 0},
        {"opcode", "unknown data opcode", 1, 3, 0, 0},
        {"ctl-fragment", "fragmented control frame", 0, 9, 0, 0},
        {"continuation", "continuation frame outside a message", 1, 0, 0, 0},
        {"short-126", "length not in its minimal form", 1, 1, 0, 1},
    };
    for (int i = 0; i < (int)(sizeof bad / sizeof *bad); i++) {
        char expect[128];
        n = sprintf(w, "%s", head);
        n += st_frame(w + n, 1, 1, "ok", 2, 0);
        if (bad[i].raw_len) { /* 5 bytes announced in the 16-bit form */
            memcpy(w + n, "\x81\x7e\x00\x05hello", 9);
            n += 9;
        } else {
            n += st_frame(w + n, bad[i].fin, bad[i].op, "x", 1, bad[i].masked);
        }
        n += st_frame(w + n, 1, 1, "never", 5, 0);
        snprintf(expect, sizeof expect, "[text||ok](protocol error: %s)", bad[i].why);
        f += ws_selftest_case(bad[i].name, 1, w, n, expect, "");
    }
    /* handshakes that must fail */
    n = sprintf(w, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n");
    n += st_frame(w + n, 1, 1, "hello", 5, 0);
    f += ws_selftest_case("bad-accept", 1, w, n, "(handshake failed: 101)", "");
    n = sprintf(w, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                acc);
    f += ws_selftest_case("extension", 1, w, n, "(handshake failed: 101)", "");
    n = sprintf(w, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    f += ws_selftest_case("404", 1, w, n, "(handshake failed: 404)", "");

    /* echo: a message checked across fragments, then a corrupted one, then a short one */
    opt.echo_depth = 4, opt.echo_size = 300, opt.echo_binary = 0;
    conn c;
    memset(&c, 0, sizeof c);
    c.kind = ECHO, c.idx = 3, c.is_ws = 1, c.fd = -1, c.state = C_BODY, c.body_mode = B_WS;
    c.ready = 1;
    uint32_t seqs[4];
    uint64_t sent_ns[4];
    c.e_seq = seqs, c.e_sent_ns = sent_ns;
    for (uint32_t s = 5; s < 8; s++) {
        c.e_seq[c.e_n] = s, c.e_sent_ns[c.e_n] = 0, c.e_n++;
        ws_put_frame(&c, 1, NULL, (uint64_t)opt.echo_size, s);
    }
    /* what the server gets, unmasked: the echoes it sends back */
    char msg[3][300];
    for (int i = 0, k = 0; i < 3; i++) {
        const uint8_t *m = (const uint8_t *)c.out + k + 4; /* 300 bytes: 2 + 2 length bytes */
        for (int j = 0; j < 300; j++) msg[i][j] = (char)(c.out[k + 8 + j] ^ m[j & 3]);
        k += 8 + 300;
    }
    if (memcmp(msg[0], "0000000500000003", 16) || msg[0][16] != 'a' + (16 + 5) % 26) {
        fprintf(stderr, "selftest ws echo: content %.20s\n", msg[0]);
        f++;
    }
    msg[1][123] ^= 1;
    n = st_frame(w, 0, 1, msg[0], 100, 0);
    n += st_frame(w + n, 1, 9, "p", 1, 0);
    n += st_frame(w + n, 1, 0, msg[0] + 100, 200, 0);
    n += st_frame(w + n, 1, 1, msg[1], 300, 0);
    n += st_frame(w + n, 1, 1, msg[2], 299, 0);
    c.out_len = 0;
    st_log_len = 0;
    for (int off = 0, sz; off < n; off += sz) { /* 7-byte pieces */
        sz = n - off < 7 ? n - off : 7;
        if (ws_feed(&c, w + off, sz, 0) < 0) break;
    }
    if (echo_ok != 1 || echo_mismatch != 1 || echo_wrong_len != 1 || echo_received != 3 || c.e_n) {
        fprintf(stderr, "selftest ws echo: ok %ld mismatch %ld wrong_len %ld received %ld left %d\n",
                echo_ok, echo_mismatch, echo_wrong_len, echo_received, c.e_n);
        f++;
    }
    free(c.out), free(c.line), free(c.data);
    echo_ok = echo_mismatch = echo_wrong_len = echo_received = 0;
    ws_pings = ws_pongs_sent = ws_closes = ws_text_msgs = ws_binary_msgs = 0;
    return f;
}

static int selftest(void) {
    selftest_mode = 1;
    static const char b1[] =
        ": ok\nretry: 3000\n\nid: a-1\ndata: hello\n\n"
        "id: a-2\r\nevent: move\r\ndata: l1\r\ndata: l2\r\n\r\n"
        "id: a-3\revent: message\rdata:nospace\rdata\r\r"
        ":ping\r\n"
        "data:  two spaces\n\n"
        "event: ignored-no-data\n\n"
        "id\ndata: empty id\n\n"
        "unknown: field\nretry: x\ndata: last\n\n"
        "data: unterminated-never-dispatched";
    static const char e1[] =
        "(:)[message|a-1|hello][move|a-2|l1\nl2][message|a-3|nospace\n](:)"
        "[message|a-3| two spaces][message||empty id][message||last]";
    int f = 0;
    f += selftest_case("chunked", 1, b1, (int)sizeof b1 - 1, e1);
    f += selftest_case("close-delimited", 0, b1, (int)sizeof b1 - 1, e1);
    static const char b2[] = "data: a\r\n\r\ndata: b\r\r\ndata: c\n\r\n";
    static const char e2[] = "[message||a][message||b][message||c]";
    f += selftest_case("crlf-mix", 1, b2, (int)sizeof b2 - 1, e2);
    /* payload parser */
    char pl[256];
    opt.payload = 64;
    for (int ml = 0; ml < 2; ml++) {
        opt.multiline = ml;
        int n = make_payload(pl, sizeof pl, 42, 123456789012ull, 7);
        uint64_t s, t, ch;
        if (n != 64 || !parse_u64(pl, pl + n, "s=", &s) || !parse_u64(pl, pl + n, "t=", &t) ||
            !parse_u64(pl, pl + n, "c=", &ch) || s != 42 || t != 123456789012ull || ch != 7) {
            fprintf(stderr, "selftest payload (multiline=%d) failed\n", ml);
            f++;
        }
    }
    /* histogram */
    for (int64_t v = 1; v < 4000000000ll; v = v * 3 + 1) {
        uint64_t r = hval(hidx((uint64_t)v));
        if (r < (uint64_t)v * 0.99 || r > (uint64_t)v * 1.01 + 1) {
            fprintf(stderr, "selftest hist %" PRId64 " -> %" PRIu64 "\n", v, r);
            f++;
        }
    }
    f += ws_selftest();
    printf("{\"selftest\": \"%s\", \"failures\": %d}\n", f ? "FAILED" : "ok", f);
    return f ? 1 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* main                                                                                       */

static void usage(void) {
    fprintf(stderr,
            "usage: sse_load --port N [options]\n"
            "  --host A          target (127.0.0.0/8 only; default 127.0.0.1)\n"
            "  --subs N          subscribers (1)          --channels C   channels (1)\n"
            "  --src-addrs S     source addresses 127.0.0.1..127.0.0.S (8)\n"
            "  --connect-window W  connects in flight at once (1000)\n"
            "  --prefix P        channel name prefix (ch) --sub-path /sub/ --pub-path /pub/\n"
            "  --rate R          publishes/s in total (0: none; 'max': as fast as accepted)\n"
            "  --publishes N     stop after N publishes   --duration S   stop after S s\n"
            "  --payload B       payload bytes (64)       --multiline    payload over 4 lines\n"
            "  --pub-conns P     publisher connections (1) --pub-depth D requests in flight (64)\n"
            "  --settle S (0.5)  --drain S (10)  --hold S (idle: keep the streams S s)\n"
            "  --connect-timeout S (60)  --timeout S (300, hard bound)  --http10\n"
            "  --per-conn-csv F  write per-connection statistics  --top K (10)\n"
            "  --pub-port N      publish to port N (another server sharing a broker)\n"
            "  --reconnect S     reopen a lost stream with Last-Event-ID after the stream's\n"
            "                    retry time (else a random 0..S s); reopen a lost publisher\n"
            "                    connection (0: off)\n"
            "  --selftest        check the parsers and exit\n"
            "WebSocket:\n"
            "  --ws              subscribers are WebSocket clients of GET <sub-path><prefix><k>\n"
            "                    (--sub-path defaults to /ws/); --reconnect resumes with\n"
            "                    ?lastEventId=<the last JSON id>\n"
            "  --ws-format F     json: each message is {\"id\",\"event\",\"data\"} and the payload\n"
            "                    is its data string (default); raw: the message is the payload\n"
            "  --echo            echo load instead: --conns N (100) connections to --path P\n"
            "                    (/ws-echo), each with --depth D (1) messages of --size B (64)\n"
            "                    in flight, text (or --binary), checked byte for byte; measured\n"
            "                    for --duration S after --warmup S (1), then drained (--drain)\n"
            "                    and closed with a close handshake\n");
    exit(2);
}

int main(int argc, char **argv) {
    static struct option lo[] = {
        {"host", 1, 0, 'H'},          {"port", 1, 0, 'p'},        {"subs", 1, 0, 'n'},
        {"channels", 1, 0, 'c'},      {"src-addrs", 1, 0, 'S'},   {"connect-window", 1, 0, 'W'},
        {"prefix", 1, 0, 'x'},        {"sub-path", 1, 0, 'u'},    {"pub-path", 1, 0, 'v'},
        {"rate", 1, 0, 'r'},          {"publishes", 1, 0, 'N'},   {"duration", 1, 0, 'd'},
        {"payload", 1, 0, 'b'},       {"pub-conns", 1, 0, 'P'},   {"pub-depth", 1, 0, 'D'},
        {"settle", 1, 0, 's'},        {"drain", 1, 0, 'R'},       {"hold", 1, 0, 'h'},
        {"connect-timeout", 1, 0, 'C'}, {"timeout", 1, 0, 'T'},   {"http10", 0, 0, '0'},
        {"multiline", 0, 0, 'm'},     {"per-conn-csv", 1, 0, 'o'}, {"top", 1, 0, 'k'},
        {"selftest", 0, 0, 'z'},      {"reconnect", 1, 0, 'a'},   {"pub-port", 1, 0, 'q'},
        {"ws", 0, 0, 256},            {"ws-format", 1, 0, 257},   {"echo", 0, 0, 258},
        {"path", 1, 0, 259},          {"conns", 1, 0, 260},       {"depth", 1, 0, 261},
        {"size", 1, 0, 262},          {"binary", 0, 0, 263},      {"warmup", 1, 0, 264},
        {0, 0, 0, 0}};
    opt.echo_conns = 100, opt.echo_depth = 1, opt.echo_size = 64, opt.warmup = 1.0;
    snprintf(opt.echo_path, sizeof opt.echo_path, "/ws-echo");
    rng_seed();
    int o;
    while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (o) {
        case 'H': snprintf(opt.host, sizeof opt.host, "%s", optarg); break;
        case 'p': opt.port = atoi(optarg); break;
        case 'n': opt.subs = atoi(optarg); break;
        case 'c': opt.channels = atoi(optarg); break;
        case 'S': opt.src_addrs = atoi(optarg); break;
        case 'W': opt.connect_window = atoi(optarg); break;
        case 'x': snprintf(opt.prefix, sizeof opt.prefix, "%s", optarg); break;
        case 'u':
            snprintf(opt.sub_path, sizeof opt.sub_path, "%s", optarg);
            opt.sub_path_set = 1;
            break;
        case 'v': snprintf(opt.pub_path, sizeof opt.pub_path, "%s", optarg); break;
        case 'r': opt.rate = strcmp(optarg, "max") ? atof(optarg) : -1; break;
        case 'N': opt.publishes = atol(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'b': opt.payload = atoi(optarg); break;
        case 'P': opt.pub_conns = atoi(optarg); break;
        case 'D': opt.pub_depth = atoi(optarg); break;
        case 's': opt.settle = atof(optarg); break;
        case 'R': opt.drain = atof(optarg); break;
        case 'h': opt.hold = atof(optarg); break;
        case 'C': opt.connect_timeout = atof(optarg); break;
        case 'T': opt.timeout = atof(optarg); break;
        case '0': opt.http10 = 1; break;
        case 'm': opt.multiline = 1; break;
        case 'o': snprintf(opt.per_conn_csv, sizeof opt.per_conn_csv, "%s", optarg); break;
        case 'k': opt.per_conn_top = atoi(optarg); break;
        case 'a': opt.reconnect = atof(optarg); break;
        case 'q': opt.pub_port = atoi(optarg); break;
        case 'z': return selftest();
        case 256: opt.ws = 1; break;
        case 257:
            if (!strcmp(optarg, "raw")) opt.ws_raw = 1;
            else if (!strcmp(optarg, "json")) opt.ws_raw = 0;
            else die("--ws-format is json or raw");
            break;
        case 258: opt.echo = 1; break;
        case 259: snprintf(opt.echo_path, sizeof opt.echo_path, "%s", optarg); break;
        case 260: opt.echo_conns = atoi(optarg); break;
        case 261: opt.echo_depth = atoi(optarg); break;
        case 262: opt.echo_size = atol(optarg); break;
        case 263: opt.echo_binary = 1; break;
        case 264: opt.warmup = atof(optarg); break;
        default: usage();
        }
    }
    if (opt.ws && !opt.sub_path_set) snprintf(opt.sub_path, sizeof opt.sub_path, "/ws/");
    if ((opt.ws || opt.echo) && opt.http10) die("WebSocket needs HTTP/1.1: no --http10");
    if (opt.echo) {
        if (opt.port <= 0 || opt.echo_conns < 1 || opt.echo_depth < 1 || opt.echo_depth > 65536 ||
            opt.echo_size < 0 || opt.echo_size > (16l << 20) || opt.src_addrs < 1 ||
            opt.src_addrs > 254 || opt.timeout <= 0 || opt.warmup < 0)
            usage();
        if (opt.duration <= 0) die("--echo needs --duration (every run is bounded)");
        if (inet_pton(AF_INET, opt.host, &target.sin_addr) != 1) die("bad --host %s", opt.host);
        if ((ntohl(target.sin_addr.s_addr) >> 24) != 127) die("only 127.0.0.0/8 targets are allowed");
        target.sin_family = AF_INET;
        target.sin_port = htons(opt.port);
        signal(SIGPIPE, SIG_IGN);
        ep = epoll_create1(EPOLL_CLOEXEC);
        return echo_main();
    }
    if (opt.port <= 0 || opt.subs < 0 || opt.channels < 1 || opt.src_addrs < 1 ||
        opt.src_addrs > 254 || opt.pub_conns < 1 || opt.pub_depth < 1 || opt.pub_depth > 65536 ||
        opt.payload > 4000 || opt.timeout <= 0)
        usage();
    if (opt.rate != 0 && opt.publishes <= 0 && opt.duration <= 0)
        die("publishing needs --publishes or --duration (every run is bounded)");
    if (inet_pton(AF_INET, opt.host, &target.sin_addr) != 1) die("bad --host %s", opt.host);
    if ((ntohl(target.sin_addr.s_addr) >> 24) != 127) die("only 127.0.0.0/8 targets are allowed");
    target.sin_family = AF_INET;
    target.sin_port = htons(opt.port);
    pub_target = target;
    if (opt.pub_port > 0) pub_target.sin_port = htons(opt.pub_port);
    signal(SIGPIPE, SIG_IGN);

    ep = epoll_create1(EPOLL_CLOEXEC);
    subs_c = calloc(opt.subs ? opt.subs : 1, sizeof(conn));
    pubs_c = calloc(opt.pub_conns, sizeof(conn));
    for (int i = 0; i < opt.pub_conns; i++) {
        pubs_c[i].fd = -1;
        pubs_c[i].fifo_chan = calloc(opt.pub_depth, sizeof(uint32_t));
        pubs_c[i].fifo_seq = calloc(opt.pub_depth, sizeof(uint32_t));
    }
    for (int i = 0; i < opt.subs; i++) subs_c[i].fd = -1;
    pending = calloc(opt.subs ? opt.subs : 1, sizeof(int));
    srand48((long)mono_ns());
    acked_count = calloc(opt.channels, sizeof(uint32_t));
    next_seq = calloc(opt.channels, sizeof(uint32_t));
    subs_on_chan = calloc(opt.channels, sizeof(uint32_t));
    acked_words = calloc(opt.channels, sizeof(uint32_t));
    acked_bitmaps = calloc(opt.channels, sizeof(uint64_t *));
    for (int i = 0; i < opt.subs; i++) subs_on_chan[i % opt.channels]++;

    enum { P_CONNECT, P_SETTLE, P_PUBLISH, P_ACKWAIT, P_DRAIN, P_HOLD, P_DONE } phase = P_CONNECT;
    const char *end_reason = "done";
    double t0 = mono_s(), settle_end = 0, phase_end = 0, t_ready_print = 0;
    struct rusage ru_pub0 = {0}, ru_pub1 = {0};
    double ru_wall0 = 0, ru_wall1 = 0;
    long expected = 0;
    double next_progress = t0 + 2;
    struct epoll_event evs[1024];
    if (opt.subs == 0) t_all_ready = t0;

    while (phase != P_DONE) {
        double now = mono_s();
        if (now - t0 > opt.timeout) {
            end_reason = "timeout";
            break;
        }
        /* reopen lost subscribers whose delay is over (--reconnect) */
        for (int k = 0; k < n_pending;) {
            conn *c = &subs_c[pending[k]];
            if (now < c->reconnect_due) {
                k++;
                continue;
            }
            pending[k] = pending[--n_pending];
            restart_sub(c);
        }
        /* open subscribers, at most connect_window in flight */
        while (next_sub < opt.subs && n_connecting < opt.connect_window) start_sub(next_sub++);

        if (phase == P_CONNECT) {
            if (subs_ready + subs_failed == opt.subs) {
                if (t_all_ready == 0) t_all_ready = now;
                if (opt.rate == 0) {
                    fprintf(stderr, "# ready subs=%d failed=%d connect_s=%.3f\n", subs_ready,
                            subs_failed, t_all_ready - t_first_connect);
                    fflush(stderr);
                    t_ready_print = now;
                    phase = P_HOLD;
                    phase_end = now + opt.hold;
                } else {
                    phase = P_SETTLE;
                    settle_end = now + opt.settle;
                    for (int i = 0; i < opt.pub_conns; i++) start_pub(i);
                }
            } else if (now - t0 > opt.connect_timeout) {
                end_reason = "connect-timeout";
                break;
            }
        }
        if (phase == P_SETTLE && now >= settle_end) {
            int up = 0, dead = 0;
            for (int i = 0; i < opt.pub_conns; i++) {
                if (pubs_c[i].state == C_HEAD) up++;
                if (pubs_c[i].state == C_CLOSED) dead++;
            }
            if (dead) {
                end_reason = "publisher-connect-failed";
                break;
            }
            if (up == opt.pub_conns) {
                phase = P_PUBLISH;
                t_pub_start = now;
                t_pub_start_abs = now;
                fprintf(stderr, "# publishing t_mono=%.6f\n", now);
                fflush(stderr);
                getrusage(RUSAGE_SELF, &ru_pub0);
                ru_wall0 = now;
            }
        }
        if (phase == P_PUBLISH) {
            int stop = (opt.publishes > 0 && published >= opt.publishes) ||
                       (opt.duration > 0 && now - t_pub_start >= opt.duration);
            if (!stop) {
                if (opt.rate < 0) {
                    /* closed loop: keep pub_depth requests in flight on every connection */
                    int progress = 1;
                    while (progress && !(opt.publishes > 0 && published >= opt.publishes)) {
                        progress = 0;
                        for (int i = 0; i < opt.pub_conns; i++) {
                            conn *pc = &pubs_c[i];
                            if (pc->fd < 0 || pc->fifo_n >= opt.pub_depth) continue;
                            /* strict round-robin over channels; channel k on conn k % P */
                            uint32_t chan = (uint32_t)(published % opt.channels);
                            if ((int)(chan % opt.pub_conns) != i) continue;
                            pub_send(pc, chan);
                            progress = 1;
                            if (opt.publishes > 0 && published >= opt.publishes) break;
                        }
                    }
                } else {
                    long due = (long)((now - t_pub_start) * opt.rate) + 1;
                    if (opt.publishes > 0 && due > opt.publishes) due = opt.publishes;
                    while (published < due) {
                        uint32_t chan = (uint32_t)(published % opt.channels);
                        conn *pc = &pubs_c[chan % opt.pub_conns];
                        if (pc->fd < 0 && opt.reconnect > 0) { /* open it again */
                            start_pub(pc->idx);
                            pub_reconnects++;
                            break;
                        }
                        if (pc->fd < 0) {
                            end_reason = "publisher-connection-lost";
                            goto out;
                        }
                        if (pc->state == C_CONNECTING) break; /* opened again, not yet up */
                        if (pc->fifo_n >= opt.pub_depth) break; /* behind: server not answering */
                        pub_send(pc, chan);
                    }
                }
            } else {
                t_pub_end = now;
                phase = P_ACKWAIT;
                phase_end = now + opt.drain;
            }
        }
        if (phase == P_ACKWAIT) {
            int outstanding = 0;
            for (int i = 0; i < opt.pub_conns; i++)
                if (pubs_c[i].fd >= 0) outstanding += pubs_c[i].fifo_n;
            if (outstanding == 0 || now >= phase_end) {
                expected = 0;
                for (int ch = 0; ch < opt.channels; ch++)
                    expected += (long)acked_count[ch] * subs_on_chan[ch];
                phase = P_DRAIN;
                phase_end = now + opt.drain;
            }
        }
        if (phase == P_DRAIN) {
            if (unique_delivered >= expected && n_down == 0) {
                phase = P_DONE;
                end_reason = "all-delivered";
            } else if (now >= phase_end) {
                phase = P_DONE;
                end_reason = "drain-timeout";
            }
            if (phase == P_DONE) {
                getrusage(RUSAGE_SELF, &ru_pub1);
                ru_wall1 = now;
                break;
            }
        }
        if (phase == P_HOLD && now >= phase_end) {
            end_reason = "hold-done";
            break;
        }
        if (now >= next_progress) {
            fprintf(stderr,
                    "# t=%.1f phase=%d ready=%d failed=%d published=%ld acked=%ld delivered=%ld\n",
                    now - t0, (int)phase, subs_ready, subs_failed, published, acked,
                    unique_delivered);
            next_progress = now + 2;
        }
        /* sleep until the next publish is due (sub-millisecond: never busy-poll) */
        double wait = 0.010;
        if (phase == P_PUBLISH) {
            if (opt.rate > 0) {
                double next_due = t_pub_start + (published) / opt.rate;
                wait = next_due - mono_s();
                if (wait < 0) wait = 0;
                if (wait > 0.010) wait = 0.010;
            } else {
                wait = 0.001; /* closed loop: answers wake us up anyway */
            }
        }
        int n;
#ifdef SYS_epoll_pwait2
        struct timespec tw = {0, (long)(wait * 1e9)};
        n = (int)syscall(SYS_epoll_pwait2, ep, evs, 1024, &tw, NULL, 0);
        if (n < 0 && errno == ENOSYS)
#endif
            n = epoll_wait(ep, evs, 1024, wait > 0 ? (int)(wait * 1000) + 1 : 0);
        if (n < 0) n = 0;
        for (int k = 0; k < n; k++) on_event(evs[k].data.ptr, evs[k].events);
    }
out:;
    double t_end = mono_s();
    if (ru_wall1 == 0 && ru_wall0 != 0) {
        getrusage(RUSAGE_SELF, &ru_pub1);
        ru_wall1 = t_end;
    }
    struct rusage ru_all;
    getrusage(RUSAGE_SELF, &ru_all);
    if (expected == 0 && published)
        for (int ch = 0; ch < opt.channels; ch++) expected += (long)acked_count[ch] * subs_on_chan[ch];

    /* per-connection accounting against the acked seqs of its channel */
    long lost = 0, dups = 0, ooo = 0, wrong = 0, unacked_deliv = 0, conns_loss = 0, conns_dup = 0,
         conns_ooo = 0, max_lost = 0, streams_ended = 0, still_open = 0;
    FILE *csv = opt.per_conn_csv[0] ? fopen(opt.per_conn_csv, "w") : NULL;
    if (csv) fprintf(csv, "idx,chan,ready,open,closed_by_peer,received,expected,lost,dups,ooo,wrong_chan,other_events,comments\n");
    int top_n = 0;
    static int top_idx[64];
    static long top_lost[64];
    for (int i = 0; i < opt.subs; i++) {
        conn *c = &subs_c[i];
        long exp_c = acked_count[c->chan];
        long got_acked = 0;
        uint32_t words = c->seen_words < acked_words[c->chan] ? c->seen_words : acked_words[c->chan];
        for (uint32_t w = 0; w < words; w++)
            got_acked += __builtin_popcountll(c->seen[w] & acked_bitmaps[c->chan][w]);
        long l = exp_c - got_acked;
        if (!c->ready) l = exp_c; /* never subscribed */
        lost += l;
        unacked_deliv += (long)c->received - got_acked;
        dups += c->dups, ooo += c->ooo, wrong += c->wrong_chan;
        conns_loss += l > 0, conns_dup += c->dups > 0, conns_ooo += c->ooo > 0;
        if (l > max_lost) max_lost = l;
        streams_ended += c->closed_by_peer;
        still_open += c->fd >= 0;
        if (csv)
            fprintf(csv, "%d,%d,%d,%d,%d,%u,%ld,%ld,%u,%u,%u,%u,%u\n", i, c->chan, c->ready,
                    c->fd >= 0, c->closed_by_peer, c->received, exp_c, l, c->dups, c->ooo,
                    c->wrong_chan, c->other_events, c->comments);
        if ((l > 0 || c->dups || c->ooo) && opt.per_conn_top > 0) {
            int k = opt.per_conn_top > 64 ? 64 : opt.per_conn_top;
            if (top_n < k) top_idx[top_n] = i, top_lost[top_n++] = l;
            else {
                int m = 0;
                for (int j = 1; j < top_n; j++) if (top_lost[j] < top_lost[m]) m = j;
                if (l > top_lost[m]) top_idx[m] = i, top_lost[m] = l;
            }
        }
    }
    if (csv) fclose(csv);

    double window = (t_last_delivery > 0 && t_pub_start > 0) ? t_last_delivery - t_pub_start : 0;
    double pub_window = (t_pub_end > 0 ? t_pub_end : t_end) - t_pub_start;
    double cpu_pub = (ru_pub1.ru_utime.tv_sec - ru_pub0.ru_utime.tv_sec) +
                     (ru_pub1.ru_utime.tv_usec - ru_pub0.ru_utime.tv_usec) * 1e-6 +
                     (ru_pub1.ru_stime.tv_sec - ru_pub0.ru_stime.tv_sec) +
                     (ru_pub1.ru_stime.tv_usec - ru_pub0.ru_stime.tv_usec) * 1e-6;
    double cpu_all = ru_all.ru_utime.tv_sec + ru_all.ru_utime.tv_usec * 1e-6 +
                     ru_all.ru_stime.tv_sec + ru_all.ru_stime.tv_usec * 1e-6;
    double connect_s = t_all_ready > 0 ? t_all_ready - t_first_connect : t_end - t_first_connect;

    printf("{\n");
    printf("  \"end_reason\": \"%s\",\n", end_reason);
    printf("  \"config\": {\"port\": %d, \"subs\": %d, \"channels\": %d, \"src_addrs\": %d, "
           "\"rate\": %g, \"publishes\": %ld, \"duration\": %g, \"payload\": %d, \"pub_conns\": %d, "
           "\"pub_depth\": %d, \"http10\": %d, \"multiline\": %d},\n",
           opt.port, opt.subs, opt.channels, opt.src_addrs, opt.rate, opt.publishes, opt.duration,
           opt.payload, opt.pub_conns, opt.pub_depth, opt.http10, opt.multiline);
    printf("  \"subs_ready\": %d, \"subs_failed\": %d, \"connect_errors\": %ld, \"http_errors\": %ld,\n",
           subs_ready, subs_failed, connect_errors, http_errors);
    printf("  \"connect_s\": %.4f, \"connects_per_s\": %.1f,\n", connect_s,
           connect_s > 0 ? subs_ready / connect_s : 0);
    printf("  \"sub_disconnects\": %ld, \"streams_ended_by_server\": %ld, \"subs_open_at_end\": %ld,\n",
           sub_disconnects, streams_ended, still_open);
    printf("  \"published\": %ld, \"acked\": %ld, \"pub_errors\": %ld, \"pub_non2xx\": %ld, "
           "\"pub_conn_errors\": %ld, \"pub_window_s\": %.4f, \"pub_per_s\": %.1f,\n",
           published, acked, pub_errors, pub_non2xx, pub_conn_errors, pub_window,
           pub_window > 0 ? acked / pub_window : 0);
    printf("  \"expected\": %ld, \"delivered\": %ld, \"lost\": %ld, \"duplicates\": %ld, "
           "\"out_of_order\": %ld, \"wrong_channel\": %ld, \"delivered_unacked\": %ld,\n",
           expected, unique_delivered, lost, dups, ooo, wrong, unacked_deliv);
    printf("  \"conns_with_loss\": %ld, \"conns_with_duplicates\": %ld, \"conns_with_out_of_order\": %ld, "
           "\"max_lost_per_conn\": %ld,\n", conns_loss, conns_dup, conns_ooo, max_lost);
    printf("  \"events_parsed\": %ld, \"other_events\": %ld, \"bad_payloads\": %ld, \"comments\": %ld,\n",
           events_total, other_events_total, bad_payload_total, comments_total);
    printf("  \"latency_ms\": {\"count\": %" PRIu64 ", \"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, "
           "\"p999\": %.3f, \"max\": %.3f, \"mean\": %.3f},\n",
           hist_count, hpct(50), hpct(90), hpct(99), hpct(99.9), hist_max / 1e6,
           hist_count ? (double)hist_sum_us / hist_count / 1e3 : 0);
    printf("  \"delivery_window_s\": %.4f, \"delivered_per_s\": %.1f,\n", window,
           window > 0 ? unique_delivered / window : 0);
    printf("  \"loadgen_cpu_s\": %.3f, \"loadgen_cpu_measured_s\": %.3f, \"loadgen_cpu_pct\": %.1f, "
           "\"wall_s\": %.3f, \"hold_s\": %.3f,\n",
           cpu_all, cpu_pub, (ru_wall1 > ru_wall0) ? 100.0 * cpu_pub / (ru_wall1 - ru_wall0) : 0,
           t_end - t0, t_ready_print > 0 ? t_end - t_ready_print : 0);
    printf("  \"reconnect\": {\"max_delay_s\": %g, \"disconnects\": %ld, \"attempts\": %ld, "
           "\"resumes\": %ld, \"down_at_end\": %d, \"pub_reconnects\": %ld, "
           "\"t_first_down_mono\": %.6f, \"t_last_resume_mono\": %.6f, \"max_outage_s\": %.4f, \"max_connect_to_resume_s\": %.4f},\n",
           opt.reconnect, sub_disconnects, reconnect_attempts, resumes, n_down, pub_reconnects,
           t_first_down, t_last_resume, max_outage, max_attempt_s);
    printf("  \"t_pub_start_mono\": %.6f, \"t_end_mono\": %.6f,\n", t_pub_start_abs, t_end);
    if (opt.ws)
        printf("  \"ws\": {\"format\": \"%s\", \"handshake_errors\": %ld, \"protocol_errors\": %ld, "
               "\"json_errors\": %ld, \"text_messages\": %ld, \"binary_messages\": %ld, "
               "\"pings\": %ld, \"pongs_sent\": %ld, \"closes_received\": %ld},\n",
               opt.ws_raw ? "raw" : "json", ws_handshake_errors, ws_protocol_errors, ws_json_errors,
               ws_text_msgs, ws_binary_msgs, ws_pings, ws_pongs_sent, ws_closes);
    printf("  \"worst_conns\": [");
    for (int j = 0; j < top_n; j++) {
        conn *c = &subs_c[top_idx[j]];
        printf("%s{\"idx\": %d, \"chan\": %d, \"received\": %u, \"expected\": %u, \"lost\": %ld, "
               "\"dups\": %u, \"ooo\": %u, \"open\": %d, \"closed_by_peer\": %d, \"error\": %d, \"last_id\": \"%s\"}",
               j ? ", " : "", top_idx[j], c->chan, c->received, acked_count[c->chan], top_lost[j],
               c->dups, c->ooo, c->fd >= 0, c->closed_by_peer, c->error, c->last_id);
    }
    printf("]\n}\n");
    fflush(stdout);
    return 0;
}

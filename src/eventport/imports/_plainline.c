/*
 * The plain lines of an NDJSON import, scanned into Arrow column buffers.
 *
 * eventport.imports.records defines what a line means, in Python, a line at a time (a few
 * microseconds each). Most lines of a real import are plain: one JSON object whose values are
 * strings, integers, booleans or null, with nothing that needs a log entry. This scanner decodes
 * exactly those, to the values records.decode_ndjson would give, without creating a Python
 * object per line or per value; every other line is handed back to be decoded by Python. It
 * never guesses: anything outside the plain subset below goes back.
 *
 * A line is plain when:
 *   - it is a JSON object (JSON whitespace around it and between tokens) whose values are
 *     strings, integers (-?(0|[1-9][0-9]*), at most 18 digits, not -0), true, false or null;
 *   - its keys contain no backslash, and no key appears twice;
 *   - every key starting with '$' is one eventport knows ($headers only as null);
 *   - strings are valid UTF-8 without raw control characters; escapes are the JSON ones, and
 *     \u escapes are neither U+0000 (Python replaces it) nor surrogates (orjson refuses lone
 *     ones, pairs are left to Python);
 *   - $time is a string YYYY-MM-DD(T| )HH:MM:SS[.f{1,6}][Z|z|+HH:MM|-HH:MM] naming a real
 *     date-time (without a zone: UTC, and a naive-time warning), or an integer of at most 15
 *     digits (seconds, or milliseconds from 1e11 on), and lies in 0001-01-01 to 9999-12-30 in UTC;
 *   - the known text fields are strings or null; $unique_id has 1 to 512 characters;
 *   - no known text field, nor the custom variables as stored, is over 32 KiB (UTF-8).
 * Custom variables (keys not starting with '$') become quote_plus(key)=quote_plus(text) joined
 * by '&' in the line's key order, null values skipped, booleans as true/false, integers as
 * their digits: what records.py writes.
 *
 * scan(buffer, max_line_bytes) reads the lines of buffer (split at '\n'; a last line without
 * one counts) and returns
 *   (line_count, fast_count, index, time, columns, slow, naive)
 * index: int32 line index of each plain line; time: int64 microseconds since the epoch (UTC);
 * columns: 10 tuples (validity bitmap, int32 offsets, data) of Arrow string arrays, in the
 * order unique_id, package, pixel, version, type, remote_address, user_agent, domain, referer,
 * variables; slow: int64 triples (line index, start, end) of the other lines' bytes.
 * The GIL is released while scanning.
 *
 * A thread's scans write into the same buffers, kept from one scan to the next (and freed when
 * the thread ends): each scan's buffers were fresh allocations before, grown by doubling, whose
 * pages the kernel faulted in and zeroed, and whose growth copied them. 1M events of
 * bench/ingest.py in chunks of 20,480 lines: 0.33 s against 0.445 s. The results are copies.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define KEEP_BUFFERS 1
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ---- growable byte buffers ---------------------------------------------------------------- */

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} Buf;

static int buf_grow(Buf *b, size_t more) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more) cap *= 2;
    char *data = PyMem_RawRealloc(b->data, cap);
    if (!data) return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

static inline int buf_reserve(Buf *b, size_t more) {
    return b->len + more <= b->cap ? 0 : buf_grow(b, more);
}

static inline int buf_put(Buf *b, const void *src, size_t n) {
    if (buf_reserve(b, n)) return -1;
    memcpy(b->data + b->len, src, n);
    b->len += n;
    return 0;
}

static void buf_free(Buf *b) {
    PyMem_RawFree(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- the fields ----------------------------------------------------------------------------- */

enum {
    F_TIME, F_UNIQUE_ID, F_PACKAGE, F_TRACKING_PIXEL, F_PIXEL, F_VERSION, F_TYPE,
    F_REMOTE_ADDRESS, F_USER_AGENT, F_DOMAIN, F_REFERRER, F_REFERER, F_HEADERS, F_KNOWN
};
static const char KNOWN[F_KNOWN][16] = {
    "$time", "$unique_id", "$package", "$tracking_pixel", "$pixel", "$version", "$type",
    "$remote_address", "$user_agent", "$domain", "$referrer", "$referer", "$headers",
};

enum {
    C_UNIQUE_ID, C_PACKAGE, C_PIXEL, C_VERSION, C_TYPE, C_REMOTE_ADDRESS, C_USER_AGENT,
    C_DOMAIN, C_REFERER, C_VARIABLES, C_COLUMNS
};

#define MAX_VARIABLES 64
#define MAX_UNIQUE_ID_CHARS 512
/* records.MAX_TEXT_BYTES: a line with a longer text (a field, or its custom variables as
 * stored) goes back to Python, which fails it */
#define MAX_TEXT_BYTES 32768
#define MS_THRESHOLD 100000000000LL
/* 0001-01-01 to 9999-12-30 in UTC, as records.MIN_TIME_US and MAX_TIME_US (the last day of
 * 9999 is left out: an export's exclusive end date cannot be after it) */
#define MIN_TIME_US (-62135596800000000LL)
#define MAX_TIME_US 253402214399999999LL

enum { V_ABSENT = 0, V_NULL, V_STRING, V_INT, V_TRUE, V_FALSE };

typedef struct {
    int kind;
    const char *text; /* string: unescaped UTF-8; int: digits as written */
    size_t len;
} Value;

typedef struct {
    const char *key;
    size_t key_len;
    Value value;
} Variable;

typedef struct {
    Value known[F_KNOWN];
    Variable vars[MAX_VARIABLES];
    int var_count;
} Line;

typedef struct {
    Buf validity, offsets, data;
    int64_t count; /* values appended */
} Column;

/* ---- scanning ------------------------------------------------------------------------------- */

typedef struct {
    const unsigned char *p, *end;
    Buf *scratch; /* unescaped strings of the current line */
} Cursor;

static inline void skip_ws(Cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r' || *c->p == '\n'))
        c->p++;
}

static inline int hexval(unsigned char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Length of the valid UTF-8 sequence starting at p (p < end, *p >= 0x80), or 0. */
static inline int utf8_len(const unsigned char *p, const unsigned char *end) {
    unsigned char b = p[0];
    int n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) n = 2;
    else if (b == 0xE0) { n = 3; lo = 0xA0; }
    else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) n = 3;
    else if (b == 0xED) { n = 3; hi = 0x9F; }
    else if (b == 0xF0) { n = 4; lo = 0x90; }
    else if (b >= 0xF1 && b <= 0xF3) n = 4;
    else if (b == 0xF4) { n = 4; hi = 0x8F; }
    else return 0;
    if (end - p < n) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (int i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return n;
}

/*
 * A string token at c->p (which is '"'). On success (*text, *len) is its unescaped UTF-8: a slice
 * of the line when it has no escapes, else a copy in the scratch buffer. allow_escapes = 0
 * refuses any backslash (keys). Returns 0, or -1 when the line is not plain.
 */
/* Bytes a string scan must stop at: the quote, a backslash, control characters, non-ASCII. */
static unsigned char SPECIAL[256];

static void init_special(void) {
    for (int b = 0; b < 256; b++) SPECIAL[b] = b < 0x20 || b >= 0x80 || b == '"' || b == '\\';
}

/* The first byte from p on that SPECIAL marks, or end: 16 bytes at a time where SSE2 is. */
static inline const unsigned char *skip_plain(const unsigned char *p, const unsigned char *end) {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    const __m128i control = _mm_set1_epi8(0x1F);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        __m128i stop = _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash));
        stop = _mm_or_si128(stop, _mm_cmpeq_epi8(_mm_min_epu8(v, control), v)); /* <= 0x1F */
        int mask = _mm_movemask_epi8(stop) | _mm_movemask_epi8(v); /* high bit: non-ASCII */
        if (mask) return p + __builtin_ctz((unsigned)mask);
        p += 16;
    }
#endif
    while (p < end && !SPECIAL[*p]) p++;
    return p;
}

static int scan_string(Cursor *c, int allow_escapes, const char **text, size_t *len) {
    const unsigned char *start = ++c->p;
    const unsigned char *p = start, *end = c->end;
    while (p < end) {
        p = skip_plain(p, end);
        if (p >= end) break;
        unsigned char ch = *p;
        if (ch == '"') {
            *text = (const char *)start;
            *len = (size_t)(p - start);
            c->p = p + 1;
            return 0;
        }
        if (ch == '\\') break;
        if (ch < 0x20) return -1;
        if (ch < 0x80) { p++; continue; }
        int n = utf8_len(p, end);
        if (!n) return -1;
        p += n;
    }
    if (p >= end || !allow_escapes) return -1;
    /* Escapes: copy into scratch, unescaping. The copy is never longer than its source, and
     * scratch holds a whole line, so it never moves (earlier strings of the line point into it). */
    Buf *s = c->scratch;
    size_t at = s->len;
    if (s->len + (size_t)(end - start) > s->cap) return -1;
    char *out = s->data + at;
    memcpy(out, start, (size_t)(p - start));
    out += p - start;
    while (p < end) {
        const unsigned char *plain = skip_plain(p, end); /* copy runs, not bytes */
        memcpy(out, p, (size_t)(plain - p));
        out += plain - p;
        p = plain;
        if (p >= end) break;
        unsigned char ch = *p;
        if (ch == '"') {
            *text = s->data + at;
            *len = (size_t)(out - (s->data + at));
            s->len = at + *len;
            c->p = p + 1;
            return 0;
        }
        if (ch == '\\') {
            if (p + 1 >= end) return -1;
            unsigned char e = p[1];
            p += 2;
            switch (e) {
            case '"': *out++ = '"'; break;
            case '\\': *out++ = '\\'; break;
            case '/': *out++ = '/'; break;
            case 'b': *out++ = '\b'; break;
            case 'f': *out++ = '\f'; break;
            case 'n': *out++ = '\n'; break;
            case 'r': *out++ = '\r'; break;
            case 't': *out++ = '\t'; break;
            case 'u': {
                if (end - p < 4) return -1;
                int cp = 0;
                for (int i = 0; i < 4; i++) {
                    int h = hexval(p[i]);
                    if (h < 0) return -1;
                    cp = cp * 16 + h;
                }
                p += 4;
                if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
                /* 6 source bytes give at most 3: the copy never outgrows the source */
                if (cp < 0x80) *out++ = (char)cp;
                else if (cp < 0x800) {
                    *out++ = (char)(0xC0 | (cp >> 6));
                    *out++ = (char)(0x80 | (cp & 0x3F));
                } else {
                    *out++ = (char)(0xE0 | (cp >> 12));
                    *out++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                    *out++ = (char)(0x80 | (cp & 0x3F));
                }
                break;
            }
            default: return -1;
            }
            continue;
        }
        if (ch < 0x20) return -1;
        if (ch < 0x80) { *out++ = (char)ch; p++; continue; }
        int n = utf8_len(p, end);
        if (!n) return -1;
        memcpy(out, p, (size_t)n);
        out += n;
        p += n;
    }
    return -1;
}

/* A value token: string, integer, true, false or null. -1: not plain. */
static int scan_value(Cursor *c, Value *v) {
    const unsigned char *p = c->p, *end = c->end;
    if (p >= end) return -1;
    unsigned char ch = *p;
    if (ch == '"') {
        v->kind = V_STRING;
        return scan_string(c, 1, &v->text, &v->len);
    }
    if (ch == '-' || (ch >= '0' && ch <= '9')) {
        const unsigned char *q = p;
        if (*q == '-') q++;
        if (q >= end || *q < '0' || *q > '9') return -1;
        const unsigned char *digits = q;
        if (*q == '0') q++;
        else while (q < end && *q >= '0' && *q <= '9') q++;
        if (q < end && ((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E'))
            return -1; /* a leading zero, a fraction or an exponent: Python's */
        if (q - digits > 18) return -1;
        if (*p == '-' && q - digits == 1 && *digits == '0') return -1; /* -0 */
        v->kind = V_INT;
        v->text = (const char *)p;
        v->len = (size_t)(q - p);
        c->p = q;
        return 0;
    }
    if (end - p >= 4 && memcmp(p, "true", 4) == 0) { v->kind = V_TRUE; c->p = p + 4; return 0; }
    if (end - p >= 5 && memcmp(p, "false", 5) == 0) { v->kind = V_FALSE; c->p = p + 5; return 0; }
    if (end - p >= 4 && memcmp(p, "null", 4) == 0) { v->kind = V_NULL; c->p = p + 4; return 0; }
    return -1;
}

/* Which KNOWN field a key is, or -1: by its length first, then its bytes (memcmp of a fixed
 * length, which the compiler inlines; one libc call per candidate cost the scan ~4%). */
#define IS(f, n) (memcmp(key, KNOWN[f], n) == 0)
static int known_field(const char *key, size_t len) {
    switch (len) {
    case 5: return IS(F_TIME, 5) ? F_TIME : IS(F_TYPE, 5) ? F_TYPE : -1;
    case 6: return IS(F_PIXEL, 6) ? F_PIXEL : -1;
    case 7: return IS(F_DOMAIN, 7) ? F_DOMAIN : -1;
    case 8:
        return IS(F_PACKAGE, 8)   ? F_PACKAGE
               : IS(F_VERSION, 8) ? F_VERSION
               : IS(F_REFERER, 8) ? F_REFERER
               : IS(F_HEADERS, 8) ? F_HEADERS
                                  : -1;
    case 9: return IS(F_REFERRER, 9) ? F_REFERRER : -1;
    case 10: return IS(F_UNIQUE_ID, 10) ? F_UNIQUE_ID : -1;
    case 11: return IS(F_USER_AGENT, 11) ? F_USER_AGENT : -1;
    case 15:
        return IS(F_TRACKING_PIXEL, 15) ? F_TRACKING_PIXEL
               : IS(F_REMOTE_ADDRESS, 15) ? F_REMOTE_ADDRESS
                                          : -1;
    default: return -1;
    }
}
#undef IS

/* The object of one line into *line. -1: not plain. */
static int scan_object(Cursor *c, Line *line) {
    memset(line->known, 0, sizeof line->known); /* V_ABSENT */
    line->var_count = 0;
    skip_ws(c);
    if (c->p >= c->end || *c->p != '{') return -1;
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == '}') return -1; /* {}: no $time, an error */
    for (;;) {
        if (c->p >= c->end || *c->p != '"') return -1;
        const char *key;
        size_t key_len;
        if (scan_string(c, 0, &key, &key_len)) return -1;
        skip_ws(c);
        if (c->p >= c->end || *c->p != ':') return -1;
        c->p++;
        skip_ws(c);
        Value value;
        if (scan_value(c, &value)) return -1;
        if (key_len > 0 && key[0] == '$') {
            int f = known_field(key, key_len);
            if (f < 0 || line->known[f].kind != V_ABSENT) return -1; /* unknown, or twice */
            line->known[f] = value;
        } else {
            for (int i = 0; i < line->var_count; i++)
                if (line->vars[i].key_len == key_len && memcmp(line->vars[i].key, key, key_len) == 0)
                    return -1; /* twice */
            if (line->var_count >= MAX_VARIABLES) return -1;
            Variable *var = &line->vars[line->var_count++];
            var->key = key;
            var->key_len = key_len;
            var->value = value;
        }
        skip_ws(c);
        if (c->p >= c->end) return -1;
        if (*c->p == ',') {
            c->p++;
            skip_ws(c);
            continue;
        }
        if (*c->p != '}') return -1;
        c->p++;
        skip_ws(c);
        return c->p == c->end ? 0 : -1;
    }
}

/* ---- time ----------------------------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int digits(const char *s, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* YYYY-MM-DD(T| )HH:MM:SS[.f{1,6}][Z|z|±HH:MM] -> microseconds, and whether the zone was
   missing (naive: taken as UTC, a warning); -1: not this form. */
static int iso_time(const char *s, size_t len, int64_t *us, int *naive) {
    int year, month, day, hour, minute, second, micro = 0;
    *naive = 0;
    if (len < 19) return -1;
    if (digits(s, 4, &year) || s[4] != '-' || digits(s + 5, 2, &month) || s[7] != '-' ||
        digits(s + 8, 2, &day) || (s[10] != 'T' && s[10] != ' ') || digits(s + 11, 2, &hour) ||
        s[13] != ':' || digits(s + 14, 2, &minute) || s[16] != ':' || digits(s + 17, 2, &second))
        return -1;
    size_t i = 19;
    if (i < len && s[i] == '.') {
        size_t start = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9' && i - start < 7) i++;
        size_t n = i - start;
        if (n < 1 || n > 6) return -1;
        for (size_t k = 0; k < 6; k++) micro = micro * 10 + (k < n ? s[start + k] - '0' : 0);
    }
    int64_t offset = 0;
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < len && (s[i] == '+' || s[i] == '-')) {
        int oh, om;
        if (len - i < 6 || digits(s + i + 1, 2, &oh) || s[i + 3] != ':' || digits(s + i + 4, 2, &om))
            return -1;
        if (oh > 23 || om > 59) return -1;
        offset = (int64_t)(oh * 60 + om) * 60 * 1000000;
        if (s[i] == '-') offset = -offset;
        i += 6;
    } else {
        *naive = 1; /* no zone: UTC, and a warning (see scan) */
    }
    if (i != len) return -1;
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (year < 1 || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59)
        return -1;
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day > mdays[month - 1] + (month == 2 && leap)) return -1;
    int64_t t = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
    *us = t * 1000000 + micro - offset;
    return 0;
}

static int time_value(const Value *v, int64_t *us, int *naive) {
    *naive = 0;
    if (v->kind == V_STRING) {
        if (iso_time(v->text, v->len, us, naive)) return -1;
    } else if (v->kind == V_INT) {
        size_t n = v->len - (v->text[0] == '-');
        if (n > 15) return -1;
        int64_t x = 0;
        for (size_t i = v->len - n; i < v->len; i++) x = x * 10 + (v->text[i] - '0');
        if (v->text[0] == '-') x = -x;
        *us = (x > -MS_THRESHOLD && x < MS_THRESHOLD) ? x * 1000000 : x * 1000;
    } else {
        return -1;
    }
    return (*us < MIN_TIME_US || *us > MAX_TIME_US) ? -1 : 0;
}

/* ---- output --------------------------------------------------------------------------------- */

static inline int column_put(Column *col, const char *text, size_t len, int valid) {
    int64_t i = col->count;
    if ((i & 7) == 0) {
        unsigned char zero = 0;
        if (buf_put(&col->validity, &zero, 1)) return -1;
    }
    if (valid) {
        ((unsigned char *)col->validity.data)[i >> 3] |= (unsigned char)(1u << (i & 7));
        if (buf_put(&col->data, text, len)) return -1;
    }
    if (col->data.len > INT32_MAX) return -1;
    int32_t end = (int32_t)col->data.len;
    if (buf_put(&col->offsets, &end, sizeof end)) return -1;
    col->count++;
    return 0;
}

static const Value *text_of(const Value *first, const Value *alias) {
    /* $tracking_pixel (or $referrer) unless it is absent or null, then its alias */
    if (first->kind == V_STRING) return first;
    if (alias->kind == V_STRING) return alias;
    return NULL;
}

static inline int put_value(Column *col, const Value *v) {
    if (v && v->kind == V_STRING) return column_put(col, v->text, v->len, 1);
    return column_put(col, NULL, 0, 0);
}

static const char HEX[] = "0123456789ABCDEF";

/* quote_plus(text, safe=""): letters, digits and _.-~ stay; space is +; the rest %XX */
static int quote_plus(Buf *out, const char *text, size_t len) {
    if (buf_reserve(out, len * 3)) return -1;
    char *o = out->data + out->len;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)text[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '_' || ch == '.' || ch == '-' || ch == '~') {
            *o++ = (char)ch;
        } else if (ch == ' ') {
            *o++ = '+';
        } else {
            *o++ = '%';
            *o++ = HEX[ch >> 4];
            *o++ = HEX[ch & 15];
        }
    }
    out->len = (size_t)(o - out->data);
    return 0;
}

static int put_variables(Column *col, const Line *line, Buf *tmp) {
    tmp->len = 0;
    int parts = 0;
    for (int i = 0; i < line->var_count; i++) {
        const Variable *var = &line->vars[i];
        const char *text;
        size_t len;
        switch (var->value.kind) {
        case V_NULL: continue;
        case V_TRUE: text = "true"; len = 4; break;
        case V_FALSE: text = "false"; len = 5; break;
        default: text = var->value.text; len = var->value.len; break;
        }
        if (parts++ && buf_put(tmp, "&", 1)) return -1;
        if (quote_plus(tmp, var->key, var->key_len) || buf_put(tmp, "=", 1) ||
            quote_plus(tmp, text, len))
            return -1;
    }
    return column_put(col, tmp->data, tmp->len, parts > 0);
}

static inline size_t quoted_len(const char *text, size_t len) {
    /* what quote_plus writes for it */
    size_t n = len;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)text[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '-' || ch == '~' || ch == ' '))
            n += 2;
    }
    return n;
}

/* Whether the line's custom variables, as put_variables writes them, fit MAX_TEXT_BYTES:
 * measured only when three bytes a byte (quote_plus's most) could pass it. */
static int variables_fit(const Line *line) {
    size_t bound = 0;
    for (int i = 0; i < line->var_count; i++) {
        const Value *v = &line->vars[i].value; /* true, false, null: at most five */
        size_t len = v->kind == V_STRING || v->kind == V_INT ? v->len : 5;
        bound += 2 + 3 * (line->vars[i].key_len + len);
    }
    if (bound <= MAX_TEXT_BYTES) return 1;
    size_t n = 0;
    int parts = 0;
    for (int i = 0; i < line->var_count; i++) {
        const Variable *var = &line->vars[i];
        size_t len;
        switch (var->value.kind) {
        case V_NULL: continue;
        case V_TRUE: len = 4; break;
        case V_FALSE: len = 5; break;
        default: len = quoted_len(var->value.text, var->value.len); break;
        }
        n += (parts++ ? 1 : 0) + quoted_len(var->key, var->key_len) + 1 + len;
    }
    return n <= MAX_TEXT_BYTES;
}

static size_t utf8_chars(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* Whether a scanned line is plain, and its time (naive: it had no zone). */
static int plain(const Line *line, int64_t *us, int *naive) {
    const Value *k = line->known;
    if (time_value(&k[F_TIME], us, naive)) return -1;
    if (k[F_HEADERS].kind != V_ABSENT && k[F_HEADERS].kind != V_NULL) return -1;
    for (int f = F_UNIQUE_ID; f < F_HEADERS; f++) {
        if (k[f].kind != V_ABSENT && k[f].kind != V_NULL && k[f].kind != V_STRING) return -1;
        if (k[f].kind == V_STRING && k[f].len > MAX_TEXT_BYTES) return -1;
    }
    if (!variables_fit(line)) return -1;
    if (k[F_UNIQUE_ID].kind == V_STRING) {
        size_t bytes = k[F_UNIQUE_ID].len; /* characters <= bytes: count only long ones */
        if (bytes < 1) return -1;
        if (bytes > MAX_UNIQUE_ID_CHARS &&
            utf8_chars(k[F_UNIQUE_ID].text, bytes) > MAX_UNIQUE_ID_CHARS)
            return -1;
    }
    return 0;
}

typedef struct {
    Column cols[C_COLUMNS];
    Buf index, time, slow, scratch, tmp;
    Buf naive_index;   /* int32 line index of each plain line whose time had no zone */
    Column naive_text; /* and that time's text, for its warning */
    int64_t lines, fast;
} Scan;

/* Every buffer of a scan, into `out`; how many. */
#define SCAN_BUFS (3 * C_COLUMNS + 9)
static int scan_bufs(Scan *s, Buf *out[SCAN_BUFS]) {
    int n = 0;
    for (int i = 0; i < C_COLUMNS; i++) {
        out[n++] = &s->cols[i].validity;
        out[n++] = &s->cols[i].offsets;
        out[n++] = &s->cols[i].data;
    }
    Buf *others[] = {&s->index, &s->time, &s->slow, &s->scratch, &s->tmp, &s->naive_index,
                     &s->naive_text.validity, &s->naive_text.offsets, &s->naive_text.data};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) out[n++] = others[i];
    return n;
}

static void scan_free(Scan *s) {
    Buf *bufs[SCAN_BUFS];
    for (int i = 0, n = scan_bufs(s, bufs); i < n; i++) buf_free(bufs[i]);
}

/* The buffers empty, their memory kept. */
static void scan_reset(Scan *s) {
    Buf *bufs[SCAN_BUFS];
    for (int i = 0, n = scan_bufs(s, bufs); i < n; i++) bufs[i]->len = 0;
    for (int i = 0; i < C_COLUMNS; i++) s->cols[i].count = 0;
    s->naive_text.count = 0;
    s->lines = s->fast = 0;
}

#ifdef KEEP_BUFFERS
static pthread_key_t kept_key;
static int kept_ready;

static void kept_free(void *kept) {
    scan_free(kept);
    PyMem_RawFree(kept);
}
#endif

/* This thread's kept buffers, emptied (NULL: none could be made; *owned then says whether the
 * caller must free the fresh ones it got instead). Called without the GIL. */
static Scan *scan_take(int *owned) {
    *owned = 0;
#ifdef KEEP_BUFFERS
    if (kept_ready) {
        Scan *s = pthread_getspecific(kept_key);
        if (!s) {
            s = PyMem_RawCalloc(1, sizeof(Scan));
            if (s && pthread_setspecific(kept_key, s)) {
                PyMem_RawFree(s);
                s = NULL;
            }
        }
        if (s) {
            scan_reset(s);
            return s;
        }
    }
#endif
    *owned = 1;
    return PyMem_RawCalloc(1, sizeof(Scan));
}

/* After a scan: fresh buffers are freed; kept ones keep their memory, unless a scan of an odd
 * chunk grew them past KEPT_MAX (then they start small again). */
#define KEPT_MAX ((size_t)64 << 20)
static void scan_give_back(Scan *s, int owned) {
    Buf *bufs[SCAN_BUFS];
    size_t held = 0;
    for (int i = 0, n = scan_bufs(s, bufs); i < n; i++) held += bufs[i]->cap;
    if (owned || held > KEPT_MAX) scan_free(s);
    if (owned) PyMem_RawFree(s);
}

static int put_line(Scan *s, int32_t index, int64_t us, const Line *line) {
    const Value *k = line->known;
    Column *c = s->cols;
    if (buf_put(&s->index, &index, sizeof index) || buf_put(&s->time, &us, sizeof us) ||
        put_value(&c[C_UNIQUE_ID], &k[F_UNIQUE_ID]) || put_value(&c[C_PACKAGE], &k[F_PACKAGE]) ||
        put_value(&c[C_PIXEL], text_of(&k[F_TRACKING_PIXEL], &k[F_PIXEL])) ||
        put_value(&c[C_VERSION], &k[F_VERSION]) || put_value(&c[C_TYPE], &k[F_TYPE]) ||
        put_value(&c[C_REMOTE_ADDRESS], &k[F_REMOTE_ADDRESS]) ||
        put_value(&c[C_USER_AGENT], &k[F_USER_AGENT]) || put_value(&c[C_DOMAIN], &k[F_DOMAIN]) ||
        put_value(&c[C_REFERER], text_of(&k[F_REFERRER], &k[F_REFERER])) ||
        put_variables(&c[C_VARIABLES], line, &s->tmp))
        return -1;
    s->fast++;
    return 0;
}

static int run_scan(Scan *s, const char *data, size_t size, size_t max_line) {
    int32_t zero = 0;
    for (int i = 0; i < C_COLUMNS; i++)
        if (buf_put(&s->cols[i].offsets, &zero, sizeof zero)) return -1;
    if (buf_put(&s->naive_text.offsets, &zero, sizeof zero)) return -1;
    Line *line = PyMem_RawMalloc(sizeof(Line));
    if (!line) return -1;
    size_t at = 0;
    int rc = 0;
    while (at < size) {
        const char *nl = memchr(data + at, '\n', size - at);
        size_t end = nl ? (size_t)(nl - data) : size;
        if (s->lines >= INT32_MAX) { rc = -1; break; }
        int32_t index = (int32_t)s->lines++;
        int64_t us = 0;
        int fast = 0, naive = 0;
        if (end - at <= max_line) {
            Cursor c = {(const unsigned char *)data + at, (const unsigned char *)data + end,
                        &s->scratch};
            s->scratch.len = 0;
            if (buf_reserve(&s->scratch, end - at + 1)) { rc = -1; break; }
            fast = scan_object(&c, line) == 0 && plain(line, &us, &naive) == 0;
        }
        if (fast) {
            if (put_line(s, index, us, line)) { rc = -1; break; }
            if (naive) {
                const Value *t = &line->known[F_TIME];
                if (buf_put(&s->naive_index, &index, sizeof index) ||
                    column_put(&s->naive_text, t->text, t->len, 1)) { rc = -1; break; }
            }
        } else {
            int64_t triple[3] = {index, (int64_t)at, (int64_t)end};
            if (buf_put(&s->slow, triple, sizeof triple)) { rc = -1; break; }
        }
        at = nl ? end + 1 : size;
    }
    PyMem_RawFree(line);
    return rc;
}

static PyObject *bytes_of(const Buf *b) {
    return PyBytes_FromStringAndSize(b->data ? b->data : "", (Py_ssize_t)b->len);
}

/* The Python result of a scan: copies of its buffers. */
static PyObject *scan_result(const Scan *s) {
    PyObject *columns = PyTuple_New(C_COLUMNS);
    if (!columns) return NULL;
    for (int i = 0; i < C_COLUMNS; i++) {
        PyObject *col = Py_BuildValue("(NNN)", bytes_of(&s->cols[i].validity),
                                      bytes_of(&s->cols[i].offsets), bytes_of(&s->cols[i].data));
        if (!col) {
            Py_DECREF(columns);
            return NULL;
        }
        PyTuple_SET_ITEM(columns, i, col);
    }
    PyObject *result = Py_BuildValue(
        "(LLNNNN(NNN))", (long long)s->lines, (long long)s->fast, bytes_of(&s->index),
        bytes_of(&s->time), columns, bytes_of(&s->slow), bytes_of(&s->naive_index),
        bytes_of(&s->naive_text.offsets), bytes_of(&s->naive_text.data));
    return result;
}

static PyObject *scan(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer view;
    Py_ssize_t max_line;
    if (!PyArg_ParseTuple(args, "y*n", &view, &max_line)) return NULL;
    if (max_line < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "max_line_bytes must not be negative");
        return NULL;
    }
    int rc = -1, owned = 0;
    Scan *kept;
    Py_BEGIN_ALLOW_THREADS
    kept = scan_take(&owned);
    if (kept) rc = run_scan(kept, view.buf, (size_t)view.len, (size_t)max_line);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (!kept) return PyErr_NoMemory();
    PyObject *result = rc ? PyErr_NoMemory() : scan_result(kept);
    scan_give_back(kept, owned);
    return result;
}

static PyObject *count_lines(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer view;
    Py_ssize_t start = 0, stop = PY_SSIZE_T_MAX;
    if (!PyArg_ParseTuple(args, "y*|nn", &view, &start, &stop)) return NULL;
    if (stop > view.len) stop = view.len;
    if (start < 0) start = 0;
    Py_ssize_t n = 0;
    const char *p = (const char *)view.buf + start, *end = (const char *)view.buf + stop;
    Py_BEGIN_ALLOW_THREADS
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        n++;
        p++;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(n);
}

static PyObject *line_end(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer view;
    Py_ssize_t start, n;
    if (!PyArg_ParseTuple(args, "y*nn", &view, &start, &n)) return NULL;
    if (start < 0) start = 0;
    if (start > view.len) start = view.len;
    const char *base = view.buf, *p = base + start;
    const char *end = base + view.len;
    Py_ssize_t found = n <= 0 ? start : -1; /* no newline to pass: where it starts */
    Py_BEGIN_ALLOW_THREADS
    while (n > 0 && p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        p++;
        if (--n == 0) found = p - base;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(found);
}

static PyMethodDef methods[] = {
    {"line_end", line_end, METH_VARARGS,
     "line_end(buffer, start, n) -> the offset just after the n-th newline from start, or -1"},
    {"count_lines", count_lines, METH_VARARGS,
     "count_lines(buffer, start=0, stop=len) -> the newlines in buffer[start:stop]"},
    {"scan", scan, METH_VARARGS,
     "scan(buffer, max_line_bytes) -> (line_count, fast_count, index, time, columns, slow, "
     "naive)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_plainline",
    "The plain lines of an NDJSON import, scanned into Arrow column buffers.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__plainline(void) {
    init_special();
#ifdef KEEP_BUFFERS
    if (!kept_ready) kept_ready = pthread_key_create(&kept_key, kept_free) == 0;
#endif
    return PyModule_Create(&module);
}

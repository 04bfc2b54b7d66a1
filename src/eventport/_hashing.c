/*
 * Hashes of a column of texts at once (an Arrow string array's buffers), with the GIL released.
 *
 * Keyed BLAKE2b: the origin ids of an import batch.
 *
 * enrich/enricher.py defines an id as hashlib.blake2b(text, key=K, digest_size=16, person=P)
 * in hex. Calling hashlib once per distinct (address, agent) pair costs ~1.5 us of Python each;
 * this computes the same digests for a whole Arrow string column in C, with the GIL released.
 * BLAKE2b is implemented from RFC 7693 (with the parameter block's personalization, as in the
 * BLAKE2 paper); tests/unit/test_enricher.py checks it against hashlib.
 *
 * hex_digests(key, person, offsets, data, count) -> bytes of count * 32 lowercase hex digits,
 * for the texts data[offsets[i]:offsets[i+1]] (int32 offsets, as an Arrow string array has).
 * hashes(offsets, data, count) -> count native-endian 64-bit hashes, to find equal texts fast.
 *
 * MD5: the DuckDB event store's 128-bit keys (events/keys.py), the numbers DuckDB's own
 * md5_number() gives, computed here so that DuckDB only stores them (in SQL, MD5 is most of a
 * write's key work). MD5 is implemented from RFC 1321; tests/unit/test_keys.py checks every key
 * against DuckDB's md5_number and hashlib.
 * md5_keys(prefix, offsets, data, count) -> (high, low): count native-endian uint64 halves each
 * of md5_number(prefix || text), i.e. the digest read as a little-endian 128-bit number.
 * origin_keys(offsets, data, count) -> (high, low): a text of exactly 32 lowercase hex digits is
 * the number it spells; any other text, md5_number(text).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The lanes (MD5 keys in AVX2, BLAKE2b origin ids in AVX-512F or AVX2) are compiled for those
 * instruction sets whatever the build's flags, and used only where the CPU has them. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define X86_LANES
#include <immintrin.h>
#endif

typedef struct {
    uint64_t h[8], t[2];
    uint8_t b[128];
    size_t c;
} Blake2b;

static const uint64_t IV[8] = {
    0x6A09E667F3BCC908ULL, 0xBB67AE8584CAA73BULL, 0x3C6EF372FE94F82BULL, 0xA54FF53A5F1D36F1ULL,
    0x510E527FADE682D1ULL, 0x9B05688C2B3E6C1FULL, 0x1F83D9ABFB41BD6BULL, 0x5BE0CD19137E2179ULL,
};

static const uint8_t SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static inline uint64_t rotr(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

static inline uint64_t load64(const uint8_t *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
#else
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
#endif
}

/* BLAKE2b's G on whatever v holds (words, or vectors of lanes' words), with the ADD, XOR and
 * ROR (rotate right by a constant) of that kind. */
#define BLAKE2B_G(ADD, XOR, ROR, a, b, c, d, x, y)      \
    do {                                                \
        v[a] = ADD(ADD(v[a], v[b]), (x));               \
        v[d] = ROR(XOR(v[d], v[a]), 32);                \
        v[c] = ADD(v[c], v[d]);                         \
        v[b] = ROR(XOR(v[b], v[c]), 24);                \
        v[a] = ADD(ADD(v[a], v[b]), (y));               \
        v[d] = ROR(XOR(v[d], v[a]), 16);                \
        v[c] = ADD(v[c], v[d]);                         \
        v[b] = ROR(XOR(v[b], v[c]), 63);                \
    } while (0)
#define ADD64(x, y) ((x) + (y))
#define XOR64(x, y) ((x) ^ (y))
#define G(a, b, c, d, x, y) BLAKE2B_G(ADD64, XOR64, rotr, a, b, c, d, x, y)

/* BLAKE2b's twelve rounds over v (the 16 working words) and m (the block's 16 words), with
 * ROUND_G on whatever they hold: words (compress), or vectors of lanes' words. */
#define BLAKE2B_ROUNDS(ROUND_G)                                                                \
    for (int r = 0; r < 12; r++) {                                                            \
        const uint8_t *z = SIGMA[r];                                                          \
        ROUND_G(0, 4, 8, 12, m[z[0]], m[z[1]]);                                               \
        ROUND_G(1, 5, 9, 13, m[z[2]], m[z[3]]);                                               \
        ROUND_G(2, 6, 10, 14, m[z[4]], m[z[5]]);                                              \
        ROUND_G(3, 7, 11, 15, m[z[6]], m[z[7]]);                                              \
        ROUND_G(0, 5, 10, 15, m[z[8]], m[z[9]]);                                              \
        ROUND_G(1, 6, 11, 12, m[z[10]], m[z[11]]);                                            \
        ROUND_G(2, 7, 8, 13, m[z[12]], m[z[13]]);                                             \
        ROUND_G(3, 4, 9, 14, m[z[14]], m[z[15]]);                                             \
    }

static void compress(Blake2b *s, int last) {
    uint64_t v[16], m[16];
    for (int i = 0; i < 8; i++) {
        v[i] = s->h[i];
        v[i + 8] = IV[i];
    }
    v[12] ^= s->t[0];
    v[13] ^= s->t[1];
    if (last) v[14] = ~v[14];
    for (int i = 0; i < 16; i++) m[i] = load64(s->b + 8 * i);
    BLAKE2B_ROUNDS(G);
    for (int i = 0; i < 8; i++) s->h[i] ^= v[i] ^ v[i + 8];
}

static void update(Blake2b *s, const uint8_t *in, size_t n) {
    while (n > 0) {
        if (s->c == 128) { /* the buffer is full and more follows: not the last block */
            s->t[0] += s->c;
            if (s->t[0] < s->c) s->t[1]++;
            compress(s, 0);
            s->c = 0;
        }
        size_t take = 128 - s->c < n ? 128 - s->c : n;
        memcpy(s->b + s->c, in, take);
        s->c += take;
        in += take;
        n -= take;
    }
}

/* The keyed, personalized state before any message byte (the key is the first block). */
static void keyed_init(Blake2b *s, const uint8_t *key, size_t keylen, const uint8_t *person,
                       size_t outlen) {
    memset(s, 0, sizeof *s);
    for (int i = 0; i < 8; i++) s->h[i] = IV[i];
    s->h[0] ^= 0x01010000ULL ^ ((uint64_t)keylen << 8) ^ outlen;
    uint8_t p[16] = {0};
    memcpy(p, person, 16);
    s->h[6] ^= load64(p);
    s->h[7] ^= load64(p + 8);
    if (keylen) {
        update(s, key, keylen);
        s->c = 128; /* the key block is padded to a full block */
    }
}

static void finish(Blake2b *s, uint8_t *out, size_t outlen) {
    s->t[0] += s->c;
    if (s->t[0] < s->c) s->t[1]++;
    while (s->c < 128) s->b[s->c++] = 0;
    compress(s, 1);
    for (size_t i = 0; i < outlen; i++) out[i] = (uint8_t)(s->h[i >> 3] >> (8 * (i & 7)));
}

/* The keyed state with its key block compressed: where the digest of a non-empty message
 * starts (the key block is then not the last one). Compressed once per call instead of once
 * per digest, which halves the time of a one-block message (an origin id's address and agent,
 * an endpoint id's address). */
static void past_key(const Blake2b *keyed, Blake2b *out) {
    *out = *keyed;
    if (out->c == 128) {
        out->t[0] += 128;
        if (out->t[0] < 128) out->t[1]++;
        compress(out, 0);
        out->c = 0;
    }
}

/* Whether count+1 int32 offsets lie in order within data (else a ValueError is set). */
static int offsets_valid(const Py_buffer *offsets, const Py_buffer *data, Py_ssize_t count) {
    if (count < 0 || offsets->len < (Py_ssize_t)sizeof(int32_t) * (count + 1)) {
        PyErr_SetString(PyExc_ValueError, "offsets too short");
        return 0;
    }
    const int32_t *off = offsets->buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (off[i] < 0 || off[i] > off[i + 1] || off[i + 1] > data->len) {
            PyErr_SetString(PyExc_ValueError, "offsets outside the data");
            return 0;
        }
    }
    return 1;
}

/* n bytes as 2 * n lowercase hex digits at out. */
static void write_hex(const uint8_t *bytes, size_t n, char *out) {
    static const char HEX[] = "0123456789abcdef";
    for (size_t k = 0; k < n; k++) {
        out[2 * k] = HEX[bytes[k] >> 4];
        out[2 * k + 1] = HEX[bytes[k] & 15];
    }
}

/* The state's 16-byte digest as 32 lowercase hex digits at out. */
static void finish_hex(Blake2b *s, char *out) {
    uint8_t digest[16];
    finish(s, digest, 16);
    write_hex(digest, 16, out);
}

/* The keyed state every digest of a call starts from; 0 (ValueError set) for a key or person
 * BLAKE2b does not take. */
static int keyed_start(const Py_buffer *key, const Py_buffer *person, Blake2b *keyed) {
    if (key->len < 1 || key->len > 64 || person->len > 16) {
        PyErr_SetString(PyExc_ValueError, "a key of 1-64 bytes and a person of at most 16");
        return 0;
    }
    uint8_t personal[16] = {0};
    memcpy(personal, person->buf, (size_t)person->len);
    keyed_init(keyed, key->buf, (size_t)key->len, personal, 16);
    return 1;
}

static PyObject *hex_digests(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer key, person, offsets, data;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*y*y*y*n", &key, &person, &offsets, &data, &count)) return NULL;
    PyObject *result = NULL;
    Blake2b keyed, started, s;
    if (!keyed_start(&key, &person, &keyed)) goto done;
    if (!offsets_valid(&offsets, &data, count)) goto done;
    past_key(&keyed, &started);
    const int32_t *off = offsets.buf;
    result = PyBytes_FromStringAndSize(NULL, count * 32);
    if (!result) goto done;
    char *out = PyBytes_AS_STRING(result);
    Py_BEGIN_ALLOW_THREADS
    const uint8_t *bytes = data.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        size_t n = (size_t)(off[i + 1] - off[i]);
        s = n ? started : keyed; /* the empty text: its key block is its last */
        update(&s, bytes + off[i], n);
        finish_hex(&s, out + 32 * i);
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&person);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&data);
    return result;
}

/* pair_digests(key, person, a_offsets, a_data, a_count, b_offsets, b_data, b_count, a_at,
 * b_at, count) -> count 16-byte digests: those of hex_digests for the texts a[a_at[i]] + "\n" +
 * b[b_at[i]], hashed from the two columns where they are (an import's origin ids: its canonical
 * addresses and its user agents, by pair) instead of from texts joined first. */
static int indices_valid(const Py_buffer *at, Py_ssize_t count, Py_ssize_t limit) {
    if (at->len < count * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "fewer positions than the count");
        return 0;
    }
    const int64_t *p = at->buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (p[i] < 0 || p[i] >= limit) {
            PyErr_SetString(PyExc_ValueError, "a position outside its column");
            return 0;
        }
    }
    return 1;
}

/* BLAKE2b digests side by side in SIMD lanes (a 64-bit word of each message per vector), for
 * pair_digests: eight lanes with AVX-512F, four with AVX2. Each lane takes a message,
 * compresses its blocks one a step, and takes the next message when its last block is done,
 * so lanes of messages of different lengths stay busy. The compression is the scalar one on
 * a vector of words at once. Compiled for those instruction sets whatever the build's flags
 * and used only where the CPU has them (blake2b_usable); tests/unit/test_enricher.py checks
 * every width against hashlib. */
#ifdef X86_LANES
#define B2_LANES 8 /* the most lanes: the driver's arrays hold this many, a width uses some */

/* One block of each lane: h[w][k] is word w of lane k's state, m_[j][k] word j of its block,
 * t[k] its byte counter after the block and last[k] all ones where the block is its
 * message's last. */
#define LANES_PARAMS                                                                           \
    uint64_t h[8][B2_LANES], const uint64_t m_[16][B2_LANES], const uint64_t t[B2_LANES],      \
        const uint64_t last[B2_LANES]
typedef void (*Blake2bLanes)(LANES_PARAMS);

/* A lane function's body: the compression on vectors (VEC) of lanes' words, with that vector's
 * aligned LOAD and STORE, unaligned LOADU, SET1 (a word in every lane), XOR and G. */
#define BLAKE2B_LANES_BODY(VEC, LOAD, LOADU, STORE, SET1, XOR, ROUND_G)                        \
    VEC v[16], m[16];                                                                         \
    for (int j = 0; j < 16; j++) m[j] = LOAD((const void *)m_[j]);                            \
    for (int i = 0; i < 8; i++) {                                                             \
        v[i] = LOAD((const void *)h[i]);                                                      \
        v[i + 8] = SET1((long long)IV[i]);                                                    \
    }                                                                                         \
    v[12] = XOR(v[12], LOADU((const void *)t));                                               \
    v[14] = XOR(v[14], LOADU((const void *)last));                                            \
    BLAKE2B_ROUNDS(ROUND_G);                                                                  \
    for (int i = 0; i < 8; i++)                                                               \
        STORE((void *)h[i], XOR(LOAD((const void *)h[i]), XOR(v[i], v[i + 8])));

/* AVX-512F rotates 64-bit words in one instruction. */
#define ROR8(x, n) _mm512_ror_epi64((x), (n))
#define V_G8(a, b, c, d, x, y)                                                                 \
    BLAKE2B_G(_mm512_add_epi64, _mm512_xor_si512, ROR8, a, b, c, d, x, y)

__attribute__((target("avx512f"))) static void blake2b_lanes8(LANES_PARAMS) {
    BLAKE2B_LANES_BODY(__m512i, _mm512_load_si512, _mm512_loadu_si512, _mm512_store_si512,
                       _mm512_set1_epi64, _mm512_xor_si512, V_G8)
}

/* AVX2 has no 64-bit rotate: by 32, 24 and 16 bits it is a shuffle of bytes (or of 32-bit
 * halves), by 63 a shift and an add. */
#define ROR4(x, n) ROR4_##n(x)
#define ROR4_32(x) _mm256_shuffle_epi32((x), _MM_SHUFFLE(2, 3, 0, 1))
#define ROR4_24(x) _mm256_shuffle_epi8((x), r24)
#define ROR4_16(x) _mm256_shuffle_epi8((x), r16)
#define ROR4_63(x) _mm256_or_si256(_mm256_srli_epi64((x), 63), _mm256_add_epi64((x), (x)))
#define V_G4(a, b, c, d, x, y)                                                                 \
    BLAKE2B_G(_mm256_add_epi64, _mm256_xor_si256, ROR4, a, b, c, d, x, y)

__attribute__((target("avx2"))) static void blake2b_lanes4(LANES_PARAMS) {
    const __m256i r24 = _mm256_setr_epi8(3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10, 3,
                                         4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10);
    const __m256i r16 = _mm256_setr_epi8(2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9, 2,
                                         3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9);
    BLAKE2B_LANES_BODY(__m256i, _mm256_load_si256, _mm256_loadu_si256, _mm256_store_si256,
                       _mm256_set1_epi64x, _mm256_xor_si256, V_G4)
}

/* The lane function of a width (8 or 4; NULL for any other), whether or not the CPU can run
 * it: blake2b_usable says that, once, when the width is chosen. */
static Blake2bLanes blake2b_lanes_of(int width) {
    return width == 8 ? blake2b_lanes8 : width == 4 ? blake2b_lanes4 : NULL;
}

/* A message a + "\n" + b being hashed in a lane: where it is, and where its digest goes. */
typedef struct {
    const uint8_t *a, *b;
    size_t a_len, len, pos; /* len: the whole message's; pos: bytes compressed so far */
    uint8_t *out;
} PairLane;

/* The message's next block (bytes pos .. pos + 128, zero-padded) at block. */
static void pair_block(const PairLane *m, uint8_t *block) {
    size_t i = m->pos, end = m->pos + 128 < m->len ? m->pos + 128 : m->len;
    uint8_t *p = block;
    if (i < m->a_len) {
        size_t take = (end < m->a_len ? end : m->a_len) - i;
        memcpy(p, m->a + i, take);
        p += take;
        i += take;
    }
    if (i == m->a_len && i < end) {
        *p++ = '\n';
        i++;
    }
    if (i < end) {
        memcpy(p, m->b + (i - m->a_len - 1), end - i);
        p += end - i;
    }
    memset(p, 0, (size_t)(block + 128 - p));
}

/* pair_digests' digests, `width` messages at a time through `lanes`; `started` is the state
 * past the key. */
static void pair_digests_lanes(Blake2bLanes lanes, int width, const Blake2b *started,
                               const int32_t *a_off, const uint8_t *a, const int32_t *b_off,
                               const uint8_t *b, const int64_t *ai, const int64_t *bi,
                               Py_ssize_t count, uint8_t *out) {
    uint64_t words[8][B2_LANES] __attribute__((aligned(64)));
    uint64_t m[16][B2_LANES] __attribute__((aligned(64)));
    uint8_t block[128];
    uint64_t t[B2_LANES] = {0}, last[B2_LANES] = {0};
    PairLane lane[B2_LANES];
    int busy[B2_LANES] = {0}, active = 0;
    Py_ssize_t next = 0;
    memset(words, 0, sizeof words); /* a lane's words are set when it takes a message */
    memset(m, 0, sizeof m);
    for (;;) {
        for (int k = 0; k < width; k++) {
            if (!busy[k] && next < count) { /* the lane takes the next message */
                Py_ssize_t i = next++;
                lane[k].a = a + a_off[ai[i]];
                lane[k].a_len = (size_t)(a_off[ai[i] + 1] - a_off[ai[i]]);
                lane[k].b = b + b_off[bi[i]];
                lane[k].len = lane[k].a_len + 1 + (size_t)(b_off[bi[i] + 1] - b_off[bi[i]]);
                lane[k].pos = 0;
                lane[k].out = out + 16 * i;
                for (int w = 0; w < 8; w++) words[w][k] = started->h[w];
                busy[k] = 1;
                active++;
            }
            if (busy[k]) {
                PairLane *p = &lane[k];
                pair_block(p, block);
                for (int j = 0; j < 16; j++) m[j][k] = load64(block + 8 * j);
                size_t end = p->pos + 128 < p->len ? p->pos + 128 : p->len;
                t[k] = started->t[0] + end;
                last[k] = end == p->len ? ~0ULL : 0;
            }
        }
        if (!active) break;
        lanes(words, (const uint64_t(*)[B2_LANES])m, t, last);
        for (int k = 0; k < width; k++) {
            if (!busy[k]) continue;
            if (last[k]) { /* little-endian words: the digest's bytes in order */
                memcpy(lane[k].out, &words[0][k], 8);
                memcpy(lane[k].out + 8, &words[1][k], 8);
                busy[k] = 0;
                active--;
            } else {
                lane[k].pos += 128;
            }
        }
    }
}
#endif

/* How many messages pair_digests hashes at a time: 8 (AVX-512F), 4 (AVX2) or 1. The most the
 * CPU can at import; tests choose. */
static int blake2b_width = 1;

/* Whether this build and CPU can hash `width` messages at a time. */
static int blake2b_usable(int width) {
#ifdef B2_LANES
    __builtin_cpu_init();
    if (width == 8) return __builtin_cpu_supports("avx512f");
    if (width == 4) return __builtin_cpu_supports("avx2");
#endif
    return width == 1;
}

static PyObject *blake2b_lanes_set(PyObject *Py_UNUSED(self), PyObject *args) {
    int wanted = 0;
    if (!PyArg_ParseTuple(args, "|i", &wanted)) return NULL;
    if (wanted) blake2b_width = blake2b_usable(wanted) ? wanted : 1;
    return PyLong_FromLong(blake2b_width);
}

static PyObject *pair_digests(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer key, person, a_offsets, a_data, b_offsets, b_data, a_at, b_at;
    Py_ssize_t a_count, b_count, count;
    if (!PyArg_ParseTuple(args, "y*y*y*y*ny*y*ny*y*n", &key, &person, &a_offsets, &a_data,
                          &a_count, &b_offsets, &b_data, &b_count, &a_at, &b_at, &count))
        return NULL;
    PyObject *result = NULL;
    Blake2b keyed, started, s;
    if (!keyed_start(&key, &person, &keyed)) goto done;
    past_key(&keyed, &started); /* every message holds at least the newline */
    if (count < 0 || !offsets_valid(&a_offsets, &a_data, a_count) ||
        !offsets_valid(&b_offsets, &b_data, b_count) || !indices_valid(&a_at, count, a_count) ||
        !indices_valid(&b_at, count, b_count))
        goto done;
    result = PyBytes_FromStringAndSize(NULL, count * 16);
    if (!result) goto done;
    char *out = PyBytes_AS_STRING(result);
    const int32_t *a_off = a_offsets.buf, *b_off = b_offsets.buf;
    const uint8_t *a = a_data.buf, *b = b_data.buf;
    const int64_t *ai = a_at.buf, *bi = b_at.buf;
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t one_by_one = count;
#ifdef B2_LANES
    Blake2bLanes lanes = blake2b_lanes_of(blake2b_width);
    if (lanes) {
        pair_digests_lanes(lanes, blake2b_width, &started, a_off, a, b_off, b, ai, bi, count,
                           (uint8_t *)out);
        one_by_one = 0;
    }
#endif
    static const uint8_t NEWLINE = '\n';
    for (Py_ssize_t i = 0; i < one_by_one; i++) {
        s = started;
        update(&s, a + a_off[ai[i]], (size_t)(a_off[ai[i] + 1] - a_off[ai[i]]));
        update(&s, &NEWLINE, 1);
        update(&s, b + b_off[bi[i]], (size_t)(b_off[bi[i] + 1] - b_off[bi[i]]));
        finish(&s, (uint8_t *)out + 16 * i, 16);
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&person);
    PyBuffer_Release(&a_offsets);
    PyBuffer_Release(&a_data);
    PyBuffer_Release(&b_offsets);
    PyBuffer_Release(&b_data);
    PyBuffer_Release(&a_at);
    PyBuffer_Release(&b_at);
    return result;
}


/* A fast 64-bit hash of bytes (not keyed, not cryptographic): 8-byte words mixed with the
 * multiply-xorshift of splitmix64, length folded in. Used to find candidate equal texts
 * among many (equal hashes are then compared as texts), never as an id. */
static inline uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    x ^= x >> 31;
    return x;
}

static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)n;
    while (n >= 8) {
        h = mix(h ^ load64(p));
        p += 8;
        n -= 8;
    }
    uint64_t tail = 0;
    for (size_t i = 0; i < n; i++) tail |= (uint64_t)p[i] << (8 * i);
    return mix(h ^ tail ^ ((uint64_t)n << 59));
}

static PyObject *hashes(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer offsets, data;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*y*n", &offsets, &data, &count)) return NULL;
    PyObject *result = NULL;
    if (!offsets_valid(&offsets, &data, count)) goto done;
    const int32_t *off = offsets.buf;
    result = PyBytes_FromStringAndSize(NULL, count * 8);
    if (!result) goto done;
    uint64_t *out = (uint64_t *)PyBytes_AS_STRING(result);
    const uint8_t *bytes = data.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++)
        out[i] = hash_bytes(bytes + off[i], (size_t)(off[i + 1] - off[i]));
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&data);
    return result;
}

/* MD5 (RFC 1321). */
typedef struct {
    uint32_t h[4];
    uint64_t length;
    uint8_t b[64];
    size_t c;
} Md5;

static const uint32_t MD5_K[64] = {
    0xd76aa478U, 0xe8c7b756U, 0x242070dbU, 0xc1bdceeeU,
    0xf57c0fafU, 0x4787c62aU, 0xa8304613U, 0xfd469501U,
    0x698098d8U, 0x8b44f7afU, 0xffff5bb1U, 0x895cd7beU,
    0x6b901122U, 0xfd987193U, 0xa679438eU, 0x49b40821U,
    0xf61e2562U, 0xc040b340U, 0x265e5a51U, 0xe9b6c7aaU,
    0xd62f105dU, 0x02441453U, 0xd8a1e681U, 0xe7d3fbc8U,
    0x21e1cde6U, 0xc33707d6U, 0xf4d50d87U, 0x455a14edU,
    0xa9e3e905U, 0xfcefa3f8U, 0x676f02d9U, 0x8d2a4c8aU,
    0xfffa3942U, 0x8771f681U, 0x6d9d6122U, 0xfde5380cU,
    0xa4beea44U, 0x4bdecfa9U, 0xf6bb4b60U, 0xbebfbc70U,
    0x289b7ec6U, 0xeaa127faU, 0xd4ef3085U, 0x04881d05U,
    0xd9d4d039U, 0xe6db99e5U, 0x1fa27cf8U, 0xc4ac5665U,
    0xf4292244U, 0x432aff97U, 0xab9423a7U, 0xfc93a039U,
    0x655b59c3U, 0x8f0ccc92U, 0xffeff47dU, 0x85845dd1U,
    0x6fa87e4fU, 0xfe2ce6e0U, 0xa3014314U, 0x4e0811a1U,
    0xf7537e82U, 0xbd3af235U, 0x2ad7d2bbU, 0xeb86d391U,
};

static inline uint32_t rotl32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

/* The 64 steps unrolled (the RFC's own form): about twice as fast as a loop that picks each
 * step's function and word at run time. */
#define MD5_F(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define MD5_G(x, y, z) ((y) ^ ((z) & ((x) ^ (y))))
#define MD5_H(x, y, z) ((x) ^ (y) ^ (z))
#define MD5_I(x, y, z) ((y) ^ ((x) | ~(z)))
#define MD5_STEP(f, a, b, c, d, w, k, r) (a) = (b) + rotl32((a) + f((b), (c), (d)) + (w) + (k), (r))

/* The 64 steps of one block over words m and state a, b, c, d, spelled with STEP and the
 * four round functions: the scalar and the eight-lane forms share them. */
#define MD5_ROUNDS(STEP, F, G, H, I)                                                          \
    do {                                                                                      \
        const uint32_t *k = MD5_K;                                                            \
        for (int i = 0; i < 16; i += 4, k += 4) {                                             \
            STEP(F, a, b, c, d, m[i], k[0], 7);                                               \
            STEP(F, d, a, b, c, m[i + 1], k[1], 12);                                          \
            STEP(F, c, d, a, b, m[i + 2], k[2], 17);                                          \
            STEP(F, b, c, d, a, m[i + 3], k[3], 22);                                          \
        }                                                                                     \
        for (int i = 0; i < 16; i += 4, k += 4) {                                             \
            STEP(G, a, b, c, d, m[(5 * i + 1) & 15], k[0], 5);                                \
            STEP(G, d, a, b, c, m[(5 * i + 6) & 15], k[1], 9);                                \
            STEP(G, c, d, a, b, m[(5 * i + 11) & 15], k[2], 14);                              \
            STEP(G, b, c, d, a, m[(5 * i) & 15], k[3], 20);                                   \
        }                                                                                     \
        for (int i = 0; i < 16; i += 4, k += 4) {                                             \
            STEP(H, a, b, c, d, m[(3 * i + 5) & 15], k[0], 4);                                \
            STEP(H, d, a, b, c, m[(3 * i + 8) & 15], k[1], 11);                               \
            STEP(H, c, d, a, b, m[(3 * i + 11) & 15], k[2], 16);                              \
            STEP(H, b, c, d, a, m[(3 * i + 14) & 15], k[3], 23);                              \
        }                                                                                     \
        for (int i = 0; i < 16; i += 4, k += 4) {                                             \
            STEP(I, a, b, c, d, m[(7 * i) & 15], k[0], 6);                                    \
            STEP(I, d, a, b, c, m[(7 * i + 7) & 15], k[1], 10);                               \
            STEP(I, c, d, a, b, m[(7 * i + 14) & 15], k[2], 15);                              \
            STEP(I, b, c, d, a, m[(7 * i + 21) & 15], k[3], 21);                              \
        }                                                                                     \
    } while (0)

static void md5_block(Md5 *s, const uint8_t *p) {
    uint32_t m[16];
    for (int i = 0; i < 16; i++)
        m[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
               (uint32_t)p[4 * i + 3] << 24;
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    MD5_ROUNDS(MD5_STEP, MD5_F, MD5_G, MD5_H, MD5_I);
    s->h[0] += a;
    s->h[1] += b;
    s->h[2] += c;
    s->h[3] += d;
}

static void md5_init(Md5 *s) {
    s->h[0] = 0x67452301U;
    s->h[1] = 0xefcdab89U;
    s->h[2] = 0x98badcfeU;
    s->h[3] = 0x10325476U;
    s->length = 0;
    s->c = 0;
}

static void md5_update(Md5 *s, const uint8_t *in, size_t n) {
    s->length += n;
    if (s->c) {
        size_t take = 64 - s->c < n ? 64 - s->c : n;
        memcpy(s->b + s->c, in, take);
        s->c += take;
        in += take;
        n -= take;
        if (s->c < 64) return;
        md5_block(s, s->b);
        s->c = 0;
    }
    for (; n >= 64; in += 64, n -= 64) md5_block(s, in);
    memcpy(s->b, in, n);
    s->c = n;
}

/* A digest's state words as DuckDB's md5_number reads them: a little-endian 128-bit number. */
static inline void md5_halves(const uint32_t h[4], uint64_t *high, uint64_t *low) {
    *low = (uint64_t)h[0] | (uint64_t)h[1] << 32;
    *high = (uint64_t)h[2] | (uint64_t)h[3] << 32;
}

/* The digest as DuckDB's md5_number reads it: a little-endian 128-bit number (high, low). */
static void md5_number(Md5 *s, uint64_t *high, uint64_t *low) {
    uint64_t bits = s->length * 8;
    s->b[s->c++] = 0x80;
    if (s->c > 56) {
        memset(s->b + s->c, 0, 64 - s->c);
        md5_block(s, s->b);
        s->c = 0;
    }
    memset(s->b + s->c, 0, 56 - s->c);
    for (int i = 0; i < 8; i++) s->b[56 + i] = (uint8_t)(bits >> (8 * i));
    md5_block(s, s->b);
    md5_halves(s->h, high, low);
}

/* Two bytes objects of count uint64 each (native-endian), or NULL with an error set. */
static int halves(Py_ssize_t count, PyObject **high, PyObject **low) {
    *high = PyBytes_FromStringAndSize(NULL, count * 8);
    *low = PyBytes_FromStringAndSize(NULL, count * 8);
    if (*high && *low) return 1;
    Py_XDECREF(*high);
    Py_XDECREF(*low);
    return 0;
}

/* Eight MD5s side by side in AVX2 lanes, for messages of one or two blocks (up to 119 bytes:
 * an owner's prefix and a UUID are 74): each step is the scalar step's handful of operations
 * on eight words at once. Compiled for AVX2 whatever the build's flags, and used only where
 * the CPU has it (md5_lanes_usable). Where the CPU has AVX-512VL, the same eight lanes take
 * its rotate and its three-input logic instead (one instruction each for F, G, H and I, and for
 * the rotation, in place of two or three): id_keys of 1M UUIDs in 63 ms against 80 (medians of
 * five interleaved rounds, in process). Every key is checked against hashlib and DuckDB by
 * tests/unit/test_keys.py, each way. */
#ifdef X86_LANES
#define MD5_LANES 8
#define MD5_LANE_BYTES 128
/* The longest message that pads into one block, and into a lane's two (0x80 and the length). */
#define MD5_ONE_BLOCK_MAX (64 - 9)
#define MD5_LANE_MAX (MD5_LANE_BYTES - 9)

/* The highest of the levels md5_keys can use here, up to `wanted`: 2 (AVX-512VL), 1 (AVX2). */
static int md5_lanes_usable(int wanted) {
    __builtin_cpu_init();
    if (wanted >= 2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"))
        return 2;
    return wanted >= 1 && __builtin_cpu_supports("avx2");
}

#define V_F(x, y, z) _mm256_xor_si256((z), _mm256_and_si256((x), _mm256_xor_si256((y), (z))))
#define V_G(x, y, z) _mm256_xor_si256((y), _mm256_and_si256((z), _mm256_xor_si256((x), (y))))
#define V_H(x, y, z) _mm256_xor_si256(_mm256_xor_si256((x), (y)), (z))
#define V_I(x, y, z) _mm256_xor_si256((y), _mm256_or_si256((x), _mm256_xor_si256((z), ones)))
#define V_STEP(f, a, b, c, d, w, k, r)                                                        \
    do {                                                                                      \
        __m256i t_ = _mm256_add_epi32(_mm256_add_epi32((a), f((b), (c), (d))),                \
                                      _mm256_add_epi32((w), _mm256_set1_epi32((int)(k))));    \
        (a) = _mm256_add_epi32((b), _mm256_or_si256(_mm256_slli_epi32(t_, (r)),               \
                                                    _mm256_srli_epi32(t_, 32 - (r))));        \
    } while (0)

/* Rotate and F, G, H, I with AVX-512VL (ternary logic: imm8 is the truth table of the
 * three inputs, bit (x << 2 | y << 1 | z)). */
#define W_F(x, y, z) _mm256_ternarylogic_epi32((x), (y), (z), 0xCA) /* x ? y : z */
#define W_G(x, y, z) _mm256_ternarylogic_epi32((x), (y), (z), 0xE4) /* z ? x : y */
#define W_H(x, y, z) _mm256_ternarylogic_epi32((x), (y), (z), 0x96) /* x ^ y ^ z */
#define W_I(x, y, z) _mm256_ternarylogic_epi32((x), (y), (z), 0x39) /* y ^ (x | ~z) */
#define W_STEP(f, a, b, c, d, w, k, r)                                                        \
    do {                                                                                      \
        __m256i t_ = _mm256_add_epi32(_mm256_add_epi32((a), f((b), (c), (d))),                \
                                      _mm256_add_epi32((w), _mm256_set1_epi32((int)(k))));    \
        (a) = _mm256_add_epi32((b), _mm256_rol_epi32(t_, (r)));                               \
    } while (0)

/* The digests of MD5_LANES messages, each padded already into `blocks` (1 or 2) blocks of
 * its own MD5_LANE_BYTES in `padded`, as md5_number gives them: a function of that name,
 * compiled for the instructions `isa`, whose steps are STEP with F, G, H and I. */
#define MD5_LANES_FUNCTION(name, isa, STEP, F, G, H, I)                                       \
    __attribute__((target(isa))) static void name(const uint8_t *padded, int blocks,          \
                                                     uint64_t *high[MD5_LANES],               \
                                                     uint64_t *low[MD5_LANES]) {              \
        const __m256i ones = _mm256_set1_epi32(-1);                                           \
        (void)ones; /* V_I's */                                                              \
        __m256i h0 = _mm256_set1_epi32(0x67452301), h1 = _mm256_set1_epi32((int)0xefcdab89U); \
        __m256i h2 = _mm256_set1_epi32((int)0x98badcfeU), h3 = _mm256_set1_epi32(0x10325476); \
        /* Word j of every lane's block: the lanes lie MD5_LANE_BYTES apart. */              \
        const __m256i lane_offsets = _mm256_setr_epi32(                                       \
            0, MD5_LANE_BYTES, 2 * MD5_LANE_BYTES, 3 * MD5_LANE_BYTES, 4 * MD5_LANE_BYTES,    \
            5 * MD5_LANE_BYTES, 6 * MD5_LANE_BYTES, 7 * MD5_LANE_BYTES);                      \
        for (int block = 0; block < blocks; block++) {                                        \
            __m256i m[16];                                                                    \
            for (int j = 0; j < 16; j++)                                                      \
                m[j] = _mm256_i32gather_epi32((const int *)(padded + 64 * block + 4 * j),     \
                                              lane_offsets, 1);                               \
            __m256i a = h0, b = h1, c = h2, d = h3;                                           \
            MD5_ROUNDS(STEP, F, G, H, I);                                                     \
            h0 = _mm256_add_epi32(h0, a);                                                     \
            h1 = _mm256_add_epi32(h1, b);                                                     \
            h2 = _mm256_add_epi32(h2, c);                                                     \
            h3 = _mm256_add_epi32(h3, d);                                                     \
        }                                                                                     \
        uint32_t w[4][MD5_LANES];                                                             \
        _mm256_storeu_si256((__m256i *)w[0], h0);                                             \
        _mm256_storeu_si256((__m256i *)w[1], h1);                                             \
        _mm256_storeu_si256((__m256i *)w[2], h2);                                             \
        _mm256_storeu_si256((__m256i *)w[3], h3);                                             \
        for (int lane = 0; lane < MD5_LANES; lane++) {                                        \
            const uint32_t h[4] = {w[0][lane], w[1][lane], w[2][lane], w[3][lane]};           \
            md5_halves(h, high[lane], low[lane]);                                             \
        }                                                                                     \
    }

MD5_LANES_FUNCTION(md5_lanes_avx2, "avx2", V_STEP, V_F, V_G, V_H, V_I)
MD5_LANES_FUNCTION(md5_lanes_avx512, "avx2,avx512f,avx512vl", W_STEP, W_F, W_G, W_H, W_I)

/* How md5_keys runs: eight messages at a time with AVX-512VL (2) or AVX2 (1), or one by one
 * (0). Set at import to the best the CPU has; tests choose. */
static int md5_lanes_ok = 0;

/* Messages waiting for a full set of lanes, by their number of blocks (1 or 2). */
typedef struct {
    uint8_t padded[MD5_LANES * MD5_LANE_BYTES];
    uint64_t *high[MD5_LANES], *low[MD5_LANES];
    int used;
} Md5Lanes;

/* prefix || text padded as MD5 pads it into lane `set->used` (the caller knows it fits). */
static void md5_lane_add(Md5Lanes *set, int blocks, const uint8_t *prefix, size_t prefix_len,
                         const uint8_t *text, size_t text_len, uint64_t *high, uint64_t *low) {
    uint8_t *p = set->padded + (size_t)set->used * MD5_LANE_BYTES;
    size_t n = prefix_len + text_len, end = (size_t)blocks * 64;
    memcpy(p, prefix, prefix_len);
    memcpy(p + prefix_len, text, text_len);
    p[n] = 0x80;
    memset(p + n + 1, 0, end - 8 - (n + 1));
    uint64_t bits = (uint64_t)n * 8;
    for (int i = 0; i < 8; i++) p[end - 8 + i] = (uint8_t)(bits >> (8 * i));
    set->high[set->used] = high;
    set->low[set->used] = low;
    if (++set->used == MD5_LANES) {
        if (md5_lanes_ok == 2) md5_lanes_avx512(set->padded, blocks, set->high, set->low);
        else md5_lanes_avx2(set->padded, blocks, set->high, set->low);
        set->used = 0;
    }
}
#endif

static PyObject *md5_lanes_set(PyObject *Py_UNUSED(self), PyObject *args) {
    int wanted = -1;
    if (!PyArg_ParseTuple(args, "|i", &wanted)) return NULL;
#ifdef MD5_LANES
    if (wanted >= 0) md5_lanes_ok = md5_lanes_usable(wanted);
#else
    (void)wanted;
#endif
    return PyLong_FromLong(md5_lanes_ok);
}

static PyObject *md5_keys(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer prefix, offsets, data;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*y*y*n", &prefix, &offsets, &data, &count)) return NULL;
    PyObject *result = NULL, *high, *low;
    if (!offsets_valid(&offsets, &data, count) || !halves(count, &high, &low)) goto done;
    const int32_t *off = offsets.buf;
    const uint8_t *bytes = data.buf;
    uint64_t *hi = (uint64_t *)PyBytes_AS_STRING(high), *lo = (uint64_t *)PyBytes_AS_STRING(low);
    Py_BEGIN_ALLOW_THREADS
    Md5 start, s;
    md5_init(&start);
    md5_update(&start, prefix.buf, (size_t)prefix.len);
    Py_ssize_t i = 0;
#ifdef MD5_LANES
    if (md5_lanes_ok) {
        /* Sets of eight messages of one block and of two go through the lanes; longer ones,
         * and those left over at the end, one by one. */
        Md5Lanes sets[2];
        sets[0].used = sets[1].used = 0;
        size_t plen = (size_t)prefix.len;
        for (; i < count; i++) {
            size_t n = (size_t)(off[i + 1] - off[i]), total = plen + n;
            if (total > MD5_LANE_MAX) {
                s = start;
                md5_update(&s, bytes + off[i], n);
                md5_number(&s, hi + i, lo + i);
                continue;
            }
            int blocks = total > MD5_ONE_BLOCK_MAX ? 2 : 1;
            md5_lane_add(&sets[blocks - 1], blocks, prefix.buf, plen, bytes + off[i], n, hi + i,
                         lo + i);
        }
        for (int set = 0; set < 2; set++) { /* the last messages of each set, padded already */
            for (int lane = 0; lane < sets[set].used; lane++) {
                const uint8_t *p = sets[set].padded + (size_t)lane * MD5_LANE_BYTES;
                md5_init(&s);
                for (int block = 0; block <= set; block++) md5_block(&s, p + 64 * block);
                md5_halves(s.h, sets[set].high[lane], sets[set].low[lane]);
            }
        }
    }
#endif
    for (; i < count; i++) {
        s = start;
        md5_update(&s, bytes + off[i], (size_t)(off[i + 1] - off[i]));
        md5_number(&s, hi + i, lo + i);
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(NN)", high, low);
done:
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&data);
    return result;
}

/* Each byte's hex digit value, 0xFF for a byte that is not a lowercase hex digit (filled by
 * fill_hex_values at import). A table and no branches: ~4x faster than comparing ranges, and
 * every origin id and UUID of a batch is parsed. Used where SSE2 is not (hex16). */
static uint8_t HEX_VALUE[256];

static void fill_hex_values(void) {
    memset(HEX_VALUE, 0xFF, sizeof HEX_VALUE);
    for (int c = '0'; c <= '9'; c++) HEX_VALUE[c] = (uint8_t)(c - '0');
    for (int c = 'a'; c <= 'f'; c++) HEX_VALUE[c] = (uint8_t)(c - 'a' + 10);
}

#if defined(__SSE2__)
#include <emmintrin.h>
/* 16 lowercase hex digits as the 64-bit number they spell, 16 bytes at once (SSE2, in every
 * x86-64 CPU); 0 when one of them is not a digit. Each byte is tested as a digit ('0'-'9') and
 * as a letter ('a'-'f') by an unsigned range check; the digits' values are then joined two by
 * two in 16-bit lanes and packed, first digit most significant. Against the table below
 * (other CPUs), a digit a step: 1M origin ids' keys 6.4 ms against 26.8, 1M UUIDs' numbers
 * 16.5 against 34.5 (in process, the Arrow columns made included). */
static inline int hex16(const uint8_t *p, uint64_t *value) {
    const __m128i x = _mm_loadu_si128((const __m128i *)p);
    const __m128i digit = _mm_sub_epi8(x, _mm_set1_epi8('0'));  /* '0'-'9': 0-9 */
    const __m128i letter = _mm_sub_epi8(x, _mm_set1_epi8('a')); /* 'a'-'f': 0-5 */
    const __m128i is_digit = _mm_cmpeq_epi8(_mm_min_epu8(digit, _mm_set1_epi8(9)), digit);
    const __m128i is_letter = _mm_cmpeq_epi8(_mm_min_epu8(letter, _mm_set1_epi8(5)), letter);
    if (_mm_movemask_epi8(_mm_or_si128(is_digit, is_letter)) != 0xFFFF) return 0;
    const __m128i nibbles =
        _mm_or_si128(_mm_and_si128(is_digit, digit),
                     _mm_and_si128(is_letter, _mm_add_epi8(letter, _mm_set1_epi8(10))));
    /* A 16-bit lane holds digits 2i (low byte) and 2i + 1: (first << 4) | second. */
    const __m128i joined =
        _mm_or_si128(_mm_and_si128(_mm_slli_epi16(nibbles, 4), _mm_set1_epi16(0x00F0)),
                     _mm_srli_epi16(nibbles, 8));
    uint64_t bytes;
    _mm_storel_epi64((__m128i *)&bytes, _mm_packus_epi16(joined, joined));
    *value = __builtin_bswap64(bytes); /* the first byte in memory is the most significant */
    return 1;
}
#endif

/* A text of 32 lowercase hex digits as the number it spells; 0 when it is not one. */
static int hex_number(const uint8_t *p, size_t n, uint64_t *high, uint64_t *low) {
    if (n != 32) return 0;
#if defined(__SSE2__)
    uint64_t first, second;
    if (!hex16(p, &first) || !hex16(p + 16, &second)) return 0;
    *high = first;
    *low = second;
    return 1;
#else
    uint64_t half[2] = {0, 0};
    uint8_t seen = 0; /* every value OR-ed: a bit above the low four means a non-digit */
    for (int h = 0; h < 2; h++) {
        uint64_t value = 0;
        for (int i = 0; i < 16; i++) {
            uint8_t v = HEX_VALUE[p[h * 16 + i]];
            seen |= v;
            value = value << 4 | (uint64_t)(v & 0x0F);
        }
        half[h] = value;
    }
    if (seen & 0xF0) return 0;
    *high = half[0];
    *low = half[1];
    return 1;
#endif
}

/* A canonical UUID (36 characters: lowercase hex digits in groups of 8-4-4-4-12 joined by
 * hyphens) as the 128-bit number it spells; 0 when the text is not one. DuckDB's UUID type
 * gives exactly this text back for the number. */
static int uuid_number(const uint8_t *p, size_t n, uint64_t *high, uint64_t *low) {
    if (n != 36 || p[8] != '-' || p[13] != '-' || p[18] != '-' || p[23] != '-') return 0;
    uint8_t digits[32];
    memcpy(digits, p, 8);
    memcpy(digits + 8, p + 9, 4);
    memcpy(digits + 12, p + 14, 4);
    memcpy(digits + 16, p + 19, 4);
    memcpy(digits + 20, p + 24, 12);
    return hex_number(digits, 32, high, low);
}

/* Each text's number as (high, low) uint64 halves and a byte each, 1 where the text spells
 * it: with `hashed`, any other text's number is its md5_number (origin keys), else 0. */
static PyObject *spelled_numbers(PyObject *args,
                                 int (*spelled)(const uint8_t *, size_t, uint64_t *, uint64_t *),
                                 int hashed) {
    Py_buffer offsets, data;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*y*n", &offsets, &data, &count)) return NULL;
    PyObject *result = NULL, *high, *low, *flags;
    if (!offsets_valid(&offsets, &data, count) || !halves(count, &high, &low)) goto done;
    flags = PyBytes_FromStringAndSize(NULL, count);
    if (flags == NULL) {
        Py_DECREF(high);
        Py_DECREF(low);
        goto done;
    }
    const int32_t *off = offsets.buf;
    const uint8_t *bytes = data.buf;
    uint64_t *hi = (uint64_t *)PyBytes_AS_STRING(high), *lo = (uint64_t *)PyBytes_AS_STRING(low);
    uint8_t *is_spelled = (uint8_t *)PyBytes_AS_STRING(flags);
    Py_BEGIN_ALLOW_THREADS
    Md5 s;
    for (Py_ssize_t i = 0; i < count; i++) {
        const uint8_t *p = bytes + off[i];
        size_t n = (size_t)(off[i + 1] - off[i]);
        is_spelled[i] = (uint8_t)spelled(p, n, hi + i, lo + i);
        if (is_spelled[i]) continue;
        if (!hashed) {
            hi[i] = lo[i] = 0;
            continue;
        }
        md5_init(&s);
        md5_update(&s, p, n);
        md5_number(&s, hi + i, lo + i);
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(NNN)", high, low, flags);
done:
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&data);
    return result;
}

static PyObject *origin_keys(PyObject *Py_UNUSED(self), PyObject *args) {
    return spelled_numbers(args, hex_number, 1);
}

static PyObject *uuid_numbers(PyObject *Py_UNUSED(self), PyObject *args) {
    return spelled_numbers(args, uuid_number, 0);
}

/* -- int64 look-ups -----------------------------------------------------------------------
 * Arrow's hash kernels (unique, is_in, index_in, value_counts) cost 45-80 ns a 64-bit value
 * here, mostly building their memo table; a batch's id hashes and (address, agent) pair keys
 * take several of them per batch on the thread that builds batches. An open-addressing table
 * of positions does the same in a few ns a value, with the GIL released.
 *
 * index_of(values, count, set, set_count) -> count native int32s: the position of each value's
 *   first occurrence in set, or -1.
 * distinct(values, count) -> the distinct values (native int64s), in the order first seen.
 */
typedef struct {
    const int64_t *set;
    uint32_t *slots; /* position + 1 in set; 0: empty */
    size_t mask;
} Positions;

static inline size_t slot_of(int64_t value, size_t mask) {
    uint64_t x = (uint64_t)value; /* a 64-bit finalizer (MurmurHash3's): pair keys are sequential */
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (size_t)x & mask;
}

static int positions_init(Positions *t, const int64_t *set, Py_ssize_t n) {
    size_t size = 16;
    while (size < (size_t)n * 2) size <<= 1;
    t->set = set;
    t->mask = size - 1;
    t->slots = calloc(size, sizeof(uint32_t));
    return t->slots != NULL;
}

/* The position of value in the table, or -1; with insert, an absent value is added at `at`
 * (and -1 still returned). */
static inline int64_t positions_find(Positions *t, int64_t value, int insert, uint32_t at) {
    size_t h = slot_of(value, t->mask);
    while (t->slots[h]) {
        uint32_t p = t->slots[h] - 1;
        if (t->set[p] == value) return p;
        h = (h + 1) & t->mask;
    }
    if (insert) t->slots[h] = at + 1;
    return -1;
}

static int int64_buffer(const Py_buffer *buffer, Py_ssize_t count, const char *name) {
    if (count < 0 || count > INT32_MAX - 1 || buffer->len < count * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_Format(PyExc_ValueError, "%s: fewer than the given count of int64 values", name);
        return 0;
    }
    return 1;
}

static PyObject *index_of(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer values, set;
    Py_ssize_t count, set_count;
    if (!PyArg_ParseTuple(args, "y*ny*n", &values, &count, &set, &set_count)) return NULL;
    PyObject *result = NULL;
    Positions t;
    if (!int64_buffer(&values, count, "values") || !int64_buffer(&set, set_count, "set")) goto done;
    result = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(int32_t));
    if (result == NULL) goto done;
    if (!positions_init(&t, set.buf, set_count)) {
        Py_CLEAR(result);
        PyErr_NoMemory();
        goto done;
    }
    const int64_t *v = values.buf, *known = set.buf;
    int32_t *out = (int32_t *)PyBytes_AS_STRING(result);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < set_count; i++) positions_find(&t, known[i], 1, (uint32_t)i);
    for (Py_ssize_t i = 0; i < count; i++) out[i] = (int32_t)positions_find(&t, v[i], 0, 0);
    Py_END_ALLOW_THREADS
    free(t.slots);
done:
    PyBuffer_Release(&values);
    PyBuffer_Release(&set);
    return result;
}

static PyObject *distinct(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer values;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*n", &values, &count)) return NULL;
    PyObject *result = NULL;
    Positions t;
    int64_t *found = NULL;
    if (!int64_buffer(&values, count, "values")) goto done;
    found = malloc((size_t)(count ? count : 1) * sizeof(int64_t));
    if (found == NULL || !positions_init(&t, values.buf, count)) {
        PyErr_NoMemory();
        goto done;
    }
    const int64_t *v = values.buf;
    Py_ssize_t n = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++)
        if (positions_find(&t, v[i], 1, (uint32_t)i) < 0) found[n++] = v[i];
    Py_END_ALLOW_THREADS
    free(t.slots);
    result = PyBytes_FromStringAndSize((const char *)found, n * (Py_ssize_t)sizeof(int64_t));
done:
    free(found);
    PyBuffer_Release(&values);
    return result;
}


/* A table of distinct int64 keys, each with its position (the order added), that lasts from one
 * call to the next: the hashes of an import's raw addresses (positions.RememberedTexts), looked
 * up batch after batch. The Positions above over the keys it owns, kept and grown (its slots
 * built again past half full) instead of built again per call. */
typedef struct {
    PyObject_HEAD
    int64_t *keys; /* by position; index.set */
    Positions index;
    size_t count, room;
} KeyTable;

static int key_table_grow(KeyTable *t, size_t wanted) {
    if (wanted > (size_t)INT32_MAX - 1) {
        PyErr_SetString(PyExc_OverflowError, "a key table holds at most 2**31 - 2 keys");
        return 0;
    }
    if (wanted > t->room) {
        size_t room = t->room ? t->room : 1024;
        while (room < wanted) room *= 2;
        int64_t *keys = realloc(t->keys, room * sizeof(int64_t));
        if (keys == NULL) {
            PyErr_NoMemory();
            return 0;
        }
        t->keys = keys;
        t->index.set = keys;
        t->room = room;
    }
    if (t->index.slots != NULL && wanted * 2 <= t->index.mask + 1) return 1;
    Positions index;
    if (!positions_init(&index, t->keys, (Py_ssize_t)wanted)) {
        PyErr_NoMemory();
        return 0;
    }
    for (size_t p = 0; p < t->count; p++) positions_find(&index, t->keys[p], 1, (uint32_t)p);
    free(t->index.slots);
    t->index = index;
    return 1;
}

static void key_table_empty(KeyTable *t) {
    free(t->keys);
    free(t->index.slots);
    t->keys = NULL;
    t->index = (Positions){NULL, NULL, 0};
    t->count = t->room = 0;
}

static PyObject *key_table_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (!PyArg_ParseTuple(args, ":KeyTable") || (kwargs && PyDict_Size(kwargs))) return NULL;
    KeyTable *t = (KeyTable *)type->tp_alloc(type, 0);
    if (t == NULL) return NULL;
    key_table_empty(t);
    if (!key_table_grow(t, 1)) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

static void key_table_dealloc(KeyTable *t) {
    PyTypeObject *type = Py_TYPE(t);
    key_table_empty(t);
    type->tp_free((PyObject *)t);
    Py_DECREF(type);
}

static Py_ssize_t key_table_len(KeyTable *t) { return (Py_ssize_t)t->count; }

static PyObject *key_table_find_all(KeyTable *t, PyObject *args) {
    Py_buffer values;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*n", &values, &count)) return NULL;
    PyObject *result = NULL;
    if (!int64_buffer(&values, count, "keys")) goto done;
    result = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(int32_t));
    if (result == NULL) goto done;
    const int64_t *v = values.buf;
    int32_t *out = (int32_t *)PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i < count; i++) {
        /* a large table is read at random: ask for a later key's slot now (misses overlap) */
        if (i + 16 < count)
            __builtin_prefetch(&t->index.slots[slot_of(v[i + 16], t->index.mask)]);
        out[i] = (int32_t)positions_find(&t->index, v[i], 0, 0);
    }
done:
    PyBuffer_Release(&values);
    return result;
}

static PyObject *key_table_add(KeyTable *t, PyObject *args) {
    Py_buffer values;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*n", &values, &count)) return NULL;
    PyObject *result = NULL;
    Positions seen = {NULL, NULL, 0};
    if (!int64_buffer(&values, count, "keys")) goto done;
    const int64_t *v = values.buf;
    if (!positions_init(&seen, v, count)) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) { /* checked first: a refused call changes nothing */
        if (positions_find(&t->index, v[i], 0, 0) >= 0 ||
            positions_find(&seen, v[i], 1, (uint32_t)i) >= 0) {
            PyErr_Format(PyExc_ValueError, "key %lld is in the table or given twice",
                         (long long)v[i]);
            goto done;
        }
    }
    if (!key_table_grow(t, t->count + (size_t)count)) goto done;
    for (Py_ssize_t i = 0; i < count; i++, t->count++) {
        t->keys[t->count] = v[i];
        positions_find(&t->index, v[i], 1, (uint32_t)t->count);
    }
    result = Py_NewRef(Py_None);
done:
    free(seen.slots);
    PyBuffer_Release(&values);
    return result;
}

static PyObject *key_table_clear(KeyTable *t, PyObject *Py_UNUSED(args)) {
    key_table_empty(t);
    if (!key_table_grow(t, 1)) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef key_table_methods[] = {
    {"find", (PyCFunction)key_table_find_all, METH_VARARGS,
     "find(keys, count) -> int32 position of each int64 key, or -1"},
    {"add", (PyCFunction)key_table_add, METH_VARARGS,
     "add(keys, count) -> None: new distinct keys, at the next positions in order"},
    {"clear", (PyCFunction)key_table_clear, METH_NOARGS, "clear() -> None: forget every key"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot key_table_slots[] = {
    {Py_tp_new, key_table_new},
    {Py_tp_dealloc, key_table_dealloc},
    {Py_tp_methods, key_table_methods},
    {Py_sq_length, key_table_len},
    {Py_tp_doc, "KeyTable() -> a lasting table of distinct int64 keys and their positions"},
    {0, NULL},
};

static PyType_Spec key_table_spec = {
    "eventport._hashing.KeyTable", sizeof(KeyTable), 0, Py_TPFLAGS_DEFAULT, key_table_slots,
};

/* A blocked Bloom filter of 128-bit keys (the event store's id keys, given as uint64 halves):
 * each key sets BLOOM_PROBES of the 512 bits of one block, so adding or asking costs one cache
 * line. The block comes from the high half (multiply-shift: its top bits), the probes 9 bits at
 * a time from the low half (7) and from a mix of both halves (7 more): the keys are MD5 digests,
 * uniform in every bit. 14 probes: at 40 bits a key a simulation gave ~5e-7 false "maybe"s
 * against ~1.8e-6 with 10 (block loads vary, so more probes help past the textbook optimum).
 * The caller holds the GIL throughout (no other thread sees a half-set block), which costs a
 * few ms for a batch. */
#define BLOOM_PROBES 14
#define BLOOM_BLOCK_WORDS 8

static inline uint64_t *bloom_block(uint64_t *bits, uint64_t blocks, uint64_t high) {
    return bits + (uint64_t)(((unsigned __int128)high * blocks) >> 64) * BLOOM_BLOCK_WORDS;
}

/* The 14 probes' bit numbers within the block. */
static inline void bloom_bits(uint64_t high, uint64_t low, unsigned out[BLOOM_PROBES]) {
    uint64_t mixed = high ^ (low * 0x9e3779b97f4a7c15ULL);
    mixed ^= mixed >> 31;
    mixed *= 0xbf58476d1ce4e5b9ULL;
    mixed ^= mixed >> 29;
    for (int i = 0; i < 7; i++) {
        out[i] = (unsigned)(low >> (9 * i)) & 511u;
        out[7 + i] = (unsigned)(mixed >> (9 * i)) & 511u;
    }
}

/* The blocks of a filter's bits; 0 (ValueError set) unless a whole number, at least one. */
static uint64_t bloom_blocks(const Py_buffer *bits) {
    if (bits->len <= 0 || bits->len % (BLOOM_BLOCK_WORDS * 8)) {
        PyErr_SetString(PyExc_ValueError, "bits: a whole number of 64-byte blocks, at least one");
        return 0;
    }
    return (uint64_t)bits->len / (BLOOM_BLOCK_WORDS * 8);
}

static PyObject *bloom_add(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer bits, high, low;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "w*y*y*n", &bits, &high, &low, &count)) return NULL;
    PyObject *result = NULL;
    uint64_t blocks = bloom_blocks(&bits);
    if (blocks && int64_buffer(&high, count, "high") && int64_buffer(&low, count, "low")) {
        const uint64_t *h = high.buf, *l = low.buf;
        for (Py_ssize_t i = 0; i < count; i++) {
            if (i + 16 < count) __builtin_prefetch(bloom_block(bits.buf, blocks, h[i + 16]), 1);
            uint64_t *block = bloom_block(bits.buf, blocks, h[i]);
            unsigned probe[BLOOM_PROBES];
            bloom_bits(h[i], l[i], probe);
            for (int p = 0; p < BLOOM_PROBES; p++)
                block[probe[p] >> 6] |= (uint64_t)1 << (probe[p] & 63);
        }
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&bits);
    PyBuffer_Release(&high);
    PyBuffer_Release(&low);
    return result;
}

#define BLOOM_MAX_FILTERS 64

/* The filters (a sequence of buffers) as blocks; every buffer is released on failure too. */
static Py_ssize_t bloom_filters(PyObject *filters, Py_buffer *bits) {
    PyObject *seq = PySequence_Fast(filters, "filters: a sequence of buffers");
    if (seq == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), got = 0;
    if (n < 1 || n > BLOOM_MAX_FILTERS) {
        PyErr_Format(PyExc_ValueError, "filters: 1 to %d of them", BLOOM_MAX_FILTERS);
        n = -1; /* got (0) never equals it */
    } else {
        for (; got < n; got++) {
            if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &bits[got], PyBUF_SIMPLE))
                break;
            if (!bloom_blocks(&bits[got])) {
                PyBuffer_Release(&bits[got]);
                break;
            }
        }
    }
    Py_DECREF(seq);
    if (got == n) return n;
    while (got > 0) PyBuffer_Release(&bits[--got]);
    return -1;
}

/* bloom_candidates(filters, high, low, count[, add_to]) -> the native int32 positions of the
 * keys that any filter may hold. With add_to (one of the filters, writable: its blocks are
 * prefetched as one of them), every other key is added to it in the same pass: the writer asks
 * which of a batch's keys may be stored and adds the new ones while their block is in the cache
 * (two passes cost it ~0.4 s of a 5M import). A key is asked before it is added, so the keys
 * before it in the call can make it a candidate (as likely as any false "maybe"). */
static PyObject *bloom_candidates(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *filters, *add_to = Py_None;
    Py_buffer high, low, bits[BLOOM_MAX_FILTERS], added = {0};
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "Oy*y*n|O", &filters, &high, &low, &count, &add_to)) return NULL;
    PyObject *result = NULL;
    int32_t *found = NULL;
    Py_ssize_t filter_count = -1;
    uint64_t add_blocks = 0;
    if (!int64_buffer(&high, count, "high") || !int64_buffer(&low, count, "low")) goto done;
    if (add_to != Py_None) {
        if (PyObject_GetBuffer(add_to, &added, PyBUF_WRITABLE)) goto done;
        if (!(add_blocks = bloom_blocks(&added))) goto done;
    }
    if ((filter_count = bloom_filters(filters, bits)) < 0) goto done;
    found = malloc((size_t)(count ? count : 1) * sizeof(int32_t));
    if (found == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    uint64_t blocks[BLOOM_MAX_FILTERS];
    for (Py_ssize_t f = 0; f < filter_count; f++) blocks[f] = bloom_blocks(&bits[f]);
    const uint64_t *h = high.buf, *l = low.buf;
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        int present = 0;
        unsigned probe[BLOOM_PROBES];
        bloom_bits(h[i], l[i], probe);
        if (i + 16 < count) /* the blocks are read at random: ask for later ones now */
            for (Py_ssize_t f = 0; f < filter_count; f++)
                __builtin_prefetch(bloom_block(bits[f].buf, blocks[f], h[i + 16]));
        for (Py_ssize_t f = 0; f < filter_count && !present; f++) {
            const uint64_t *block = bloom_block(bits[f].buf, blocks[f], h[i]);
            present = 1;
            for (int p = 0; p < BLOOM_PROBES && present; p++)
                present = (block[probe[p] >> 6] >> (probe[p] & 63)) & 1;
        }
        if (present) {
            found[n++] = (int32_t)i;
        } else if (add_blocks) {
            uint64_t *block = bloom_block(added.buf, add_blocks, h[i]);
            for (int p = 0; p < BLOOM_PROBES; p++)
                block[probe[p] >> 6] |= (uint64_t)1 << (probe[p] & 63);
        }
    }
    result = PyBytes_FromStringAndSize((const char *)found, n * (Py_ssize_t)sizeof(int32_t));
done:
    free(found);
    for (Py_ssize_t f = 0; f < filter_count; f++) PyBuffer_Release(&bits[f]);
    if (added.obj != NULL) PyBuffer_Release(&added);
    PyBuffer_Release(&high);
    PyBuffer_Release(&low);
    return result;
}

/* fixed_offsets(count, width) -> the int32 offsets 0, width, 2 * width, ... of count texts of
 * one width (count + 1 of them): Arrow's offsets for a column of hex digests. */
static PyObject *fixed_offsets(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_ssize_t count, width;
    if (!PyArg_ParseTuple(args, "nn", &count, &width)) return NULL;
    if (count < 0 || width < 0 || (width && count > (INT32_MAX - 1) / width)) {
        PyErr_SetString(PyExc_ValueError, "fixed_offsets: past int32 offsets");
        return NULL;
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, (count + 1) * (Py_ssize_t)sizeof(int32_t));
    if (result == NULL) return NULL;
    int32_t *out = (int32_t *)PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i <= count; i++) out[i] = (int32_t)(i * width);
    return result;
}

static PyMethodDef methods[] = {
    {"fixed_offsets", fixed_offsets, METH_VARARGS,
     "fixed_offsets(count, width) -> int32 offsets of count texts of one width"},
    {"bloom_add", bloom_add, METH_VARARGS,
     "bloom_add(bits, high, low, count) -> None: add count 128-bit keys (uint64 halves)"},
    {"bloom_candidates", bloom_candidates, METH_VARARGS,
     "bloom_candidates(filters, high, low, count[, add_to]) -> int32 positions of the keys "
     "that any of the filters (buffers of bits) may hold; the others added to add_to"},
    {"distinct", distinct, METH_VARARGS,
     "distinct(values, count) -> the distinct int64 values, in the order first seen"},
    {"index_of", index_of, METH_VARARGS,
     "index_of(values, count, set, set_count) -> int32 position of each value in set, or -1"},
    {"hashes", hashes, METH_VARARGS,
     "hashes(offsets, data, count) -> count unkeyed 64-bit hashes (to find equal texts)"},
    {"pair_digests", pair_digests, METH_VARARGS,
     "pair_digests(key, person, a_offsets, a_data, a_count, b_offsets, b_data, b_count, a_at, "
     "b_at, count) -> 16-byte keyed digests of a[a_at[i]] + newline + b[b_at[i]]"},
    {"hex_digests", hex_digests, METH_VARARGS,
     "hex_digests(key, person, offsets, data, count) -> count * 32 hex digits"},
    {"md5_keys", md5_keys, METH_VARARGS,
     "md5_keys(prefix, offsets, data, count) -> (high, low) halves of md5_number(prefix||text)"},
    {"blake2b_lanes", blake2b_lanes_set, METH_VARARGS,
     "blake2b_lanes([width]) -> how many messages pair_digests hashes at a time: 8 (AVX-512F), "
     "4 (AVX2) or 1; with `width`, use that many first (1 where the CPU cannot)"},
    {"md5_lanes", md5_lanes_set, METH_VARARGS,
     "md5_lanes([level]) -> how md5_keys hashes: eight texts at a time with AVX-512VL (2) or "
     "AVX2 (1), or one by one (0); with `level`, use the best the CPU has up to it first"},
    {"origin_keys", origin_keys, METH_VARARGS,
     "origin_keys(offsets, data, count) -> (high, low) halves of each origin id's key, and a "
     "byte each: 1 where the key is the hex number the text spells"},
    {"uuid_numbers", uuid_numbers, METH_VARARGS,
     "uuid_numbers(offsets, data, count) -> (high, low) halves of the number each canonical "
     "UUID spells (0 for any other text), and a byte each: 1 where the text is one"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_hashing", "Hashes of a column of texts at once.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__hashing(void) {
    fill_hex_values();
#ifdef MD5_LANES
    md5_lanes_ok = md5_lanes_usable(2);
#endif
    blake2b_width = blake2b_usable(8) ? 8 : blake2b_usable(4) ? 4 : 1;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    PyObject *type = PyType_FromSpec(&key_table_spec);
    if (type == NULL || PyModule_AddObject(m, "KeyTable", type) < 0) {
        Py_XDECREF(type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

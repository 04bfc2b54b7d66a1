/*
 * Where a MaxMind database's search tree leads for each of many addresses: the record's place in
 * the data section, not the record itself.
 *
 * Why: a GeoLite2 City database shares one data record between all the networks of a city (in
 * the bundled 2018 file, 20,000 random addresses lead to ~6,800 records, 432,000 to ~72,000).
 * maxminddb's reader decodes the whole record (names in eight languages and more) for every
 * address, ~8 us each; finding the record first lets enrich/ip.py decode each record once and
 * reuse what it took from it. The format is MaxMind's published MMDB spec (search tree of
 * node_count nodes, records of 24, 28 or 32 bits; IPv4 addresses in an IPv6 tree under ::/96).
 * tests/unit/test_enrich_ip.py holds the answers to maxminddb's own.
 *
 * records(tree, node_count, record_size, ip_version, texts) -> list of int, one per text:
 *   0    the address is in no network of the database (what maxminddb answers None for);
 *   -1   the text is not an address, or an IPv6 one in an IPv4 database;
 *   n>0  the record's node value (node_count + 16 + its offset in the data section): equal
 *        values name the same record.
 * A corrupt tree (a node value between node_count and the tree's end, or a node past the buffer)
 * raises ValueError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const uint8_t *tree;
    Py_ssize_t size;
    uint32_t node_count;
    int record_size;
} Tree;

/* The record of node `node` on side `bit` (0 left, 1 right); -1 past the buffer. */
static int64_t child(const Tree *t, uint32_t node, int bit) {
    const Py_ssize_t width = t->record_size / 4; /* bytes a node takes: 6, 7 or 8 */
    const Py_ssize_t at = (Py_ssize_t)node * width;
    if (at + width > t->size) return -1;
    const uint8_t *p = t->tree + at;
    switch (t->record_size) {
        case 24:
            p += bit * 3;
            return ((uint32_t)p[0] << 16) | ((uint32_t)p[1] << 8) | p[2];
        case 28:
            if (bit == 0)
                return (((uint32_t)p[3] & 0xF0) << 20) | ((uint32_t)p[0] << 16) |
                       ((uint32_t)p[1] << 8) | p[2];
            return (((uint32_t)p[3] & 0x0F) << 24) | ((uint32_t)p[4] << 16) |
                   ((uint32_t)p[5] << 8) | p[6];
        default: /* 32 */
            p += bit * 4;
            return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    }
}

/* Follow `bits` bits of `address` from `node`; the value reached, or -2 for a corrupt tree. */
static int64_t walk(const Tree *t, int64_t node, const uint8_t *address, int bits) {
    for (int i = 0; i < bits && node < t->node_count; i++) {
        node = child(t, (uint32_t)node, (address[i >> 3] >> (7 - (i & 7))) & 1);
        if (node < 0) return -2;
    }
    return node;
}

/* The answer for one item: 0 with *value set, or -1 with a Python error set. */
typedef int (*Answer)(PyObject *item, const void *context, long long *value);

/* A list of one int per item of the sequence `items`: each item's answer. */
static PyObject *answers(PyObject *items, const char *what, Answer answer, const void *context) {
    PyObject *sequence = PySequence_Fast(items, what);
    if (sequence == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(sequence);
    PyObject **item = PySequence_Fast_ITEMS(sequence);
    PyObject *result = PyList_New(n);
    for (Py_ssize_t i = 0; result != NULL && i < n; i++) {
        long long value;
        int failed = answer(item[i], context, &value);
        PyObject *number = failed ? NULL : PyLong_FromLongLong(value);
        if (number == NULL)
            Py_CLEAR(result);
        else
            PyList_SET_ITEM(result, i, number);
    }
    Py_DECREF(sequence);
    return result;
}

typedef struct {
    Tree tree;
    int64_t ipv4_start; /* the node IPv4 addresses start from */
    int ip_version;
} Search;

static int record_of(PyObject *item, const void *context, long long *value) {
    const Search *s = context;
    const Tree *t = &s->tree;
    int64_t found = -1;
    Py_ssize_t length;
    const char *text = PyUnicode_Check(item) ? PyUnicode_AsUTF8AndSize(item, &length) : NULL;
    if (text == NULL) PyErr_Clear();
    uint8_t address[16];
    if (text != NULL && length < 64 && strlen(text) == (size_t)length) {
        if (inet_pton(AF_INET, text, address) == 1) {
            found = walk(t, s->ipv4_start, address, 32); /* at once past the tree */
        } else if (s->ip_version == 6 && inet_pton(AF_INET6, text, address) == 1) {
            found = walk(t, 0, address, 128);
        }
    }
    if (found == -2 || (found > t->node_count && found < (int64_t)t->node_count + 16)) {
        PyErr_SetString(PyExc_ValueError, "corrupt search tree");
        return -1;
    }
    *value = found == t->node_count ? 0 : found; /* the empty record: no network */
    return 0;
}

static PyObject *records(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer tree;
    unsigned long node_count;
    int record_size, ip_version;
    PyObject *texts;
    if (!PyArg_ParseTuple(args, "y*kiiO", &tree, &node_count, &record_size, &ip_version, &texts))
        return NULL;
    PyObject *result = NULL;
    if (record_size != 24 && record_size != 28 && record_size != 32) {
        PyErr_Format(PyExc_ValueError, "unsupported record size %d", record_size);
        goto done;
    }
    Search s = {{tree.buf, tree.len, (uint32_t)node_count, record_size}, 0, ip_version};
    /* IPv4 addresses: under ::/96 in an IPv6 tree, from the root in an IPv4 one. */
    static const uint8_t zeros[12] = {0};
    s.ipv4_start = ip_version == 6 ? walk(&s.tree, 0, zeros, 96) : 0;
    if (s.ipv4_start == -2) {
        PyErr_SetString(PyExc_ValueError, "corrupt search tree");
        goto done;
    }
    result = answers(texts, "texts must be a sequence", record_of, &s);
done:
    PyBuffer_Release(&tree);
    return result;
}

typedef struct {
    const void *starts; /* first keys: unsigned, `width` bytes each */
    Py_ssize_t width, count;
    const uint8_t *lengths;
    const uint32_t *values;
    const uint64_t *last_offsets;
    Py_ssize_t last_count;
} Ranges;

static uint64_t start_at(const Ranges *r, Py_ssize_t at) {
    return r->width == 4 ? ((const uint32_t *)r->starts)[at] : ((const uint64_t *)r->starts)[at];
}

static int range_of(PyObject *item, const void *context, long long *value) {
    const Ranges *r = context;
    unsigned long long key = PyLong_AsUnsignedLongLong(item);
    if (key == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    /* bisect_right: the number of networks that start at or before the key */
    Py_ssize_t lo = 0, hi = r->count;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (key < start_at(r, mid))
            hi = mid;
        else
            lo = mid + 1;
    }
    *value = -1;
    if (lo > 0) {
        uint8_t length = r->lengths[lo - 1];
        if (length < r->last_count && key - start_at(r, lo - 1) <= r->last_offsets[length])
            *value = r->values[lo - 1];
    }
    return 0;
}

/*
 * find_ranges(starts, lengths, values, last_offsets, keys) -> list of int, one per key: the value
 * of the network that holds the key, or -1. The networks are sorted by their first key (starts:
 * unsigned, 4 or 8 bytes each) with their prefix lengths (lengths: bytes) and values (values:
 * unsigned 32-bit); last_offsets (unsigned 64-bit, by prefix length) is how far a network's last
 * key lies from its first. The same search as enrich/ip_ranges.RangeTable.find (bisect_right,
 * then is the key within the network before it), for many keys in one call.
 */
static PyObject *find_ranges(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer starts, lengths, values, offsets;
    PyObject *keys;
    if (!PyArg_ParseTuple(args, "y*y*y*y*O", &starts, &lengths, &values, &offsets, &keys))
        return NULL;
    PyObject *result = NULL;
    const Py_ssize_t width = starts.itemsize;
    const Py_ssize_t count = width ? starts.len / width : 0;
    if ((width != 4 && width != 8) || lengths.itemsize != 1 || lengths.len < count ||
        values.itemsize != 4 || values.len / 4 < count || offsets.itemsize != 8) {
        PyErr_SetString(PyExc_ValueError, "find_ranges: tables of the wrong kinds or sizes");
    } else {
        Ranges r = {starts.buf,  width,       count,          lengths.buf,
                    values.buf,  offsets.buf, offsets.len / 8};
        result = answers(keys, "keys must be a sequence", range_of, &r);
    }
    PyBuffer_Release(&starts);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&values);
    PyBuffer_Release(&offsets);
    return result;
}


/*
 * decode(data, offset) -> the value at `offset` of a data section (the bytes after the search
 * tree's 16-byte separator): dict, list, str, bytes, int, float or bool, as maxminddb's reader
 * gives them (MaxMind DB spec 2.0, "Output Data Section"). With records() this reads a City
 * record from the one mapping of the file records() walks, so the file is not mapped (and its
 * tree read) a second time by maxminddb's reader. Data that leads outside the buffer, nests too
 * deep or has an unknown type raises ValueError.
 */
typedef struct {
    const uint8_t *data;
    Py_ssize_t size;
} Section;

#define MAX_DEPTH 64

static PyObject *corrupt(const char *what) {
    PyErr_Format(PyExc_ValueError, "corrupt data section: %s", what);
    return NULL;
}

/* `n` bytes at *at as an unsigned big-endian number (n <= 8); advances *at. -1 past the end. */
static int take_uint(const Section *s, Py_ssize_t *at, Py_ssize_t n, uint64_t *value) {
    if (n < 0 || n > 8 || *at + n > s->size) return -1;
    uint64_t v = 0;
    for (Py_ssize_t i = 0; i < n; i++) v = (v << 8) | s->data[*at + i];
    *at += n;
    *value = v;
    return 0;
}

static PyObject *decode_at(const Section *s, Py_ssize_t *at, int depth);

static PyObject *decode_map(const Section *s, Py_ssize_t *at, uint64_t size, int depth) {
    PyObject *map = PyDict_New();
    for (uint64_t i = 0; map != NULL && i < size; i++) {
        PyObject *key = decode_at(s, at, depth + 1);
        if (key != NULL && !PyUnicode_Check(key)) {
            Py_DECREF(key);
            key = corrupt("a map key that is not a string");
        }
        PyObject *value = key == NULL ? NULL : decode_at(s, at, depth + 1);
        if (value == NULL || PyDict_SetItem(map, key, value) < 0) Py_CLEAR(map);
        Py_XDECREF(key);
        Py_XDECREF(value);
    }
    return map;
}

static PyObject *decode_array(const Section *s, Py_ssize_t *at, uint64_t size, int depth) {
    if (size > (uint64_t)(s->size - *at)) return corrupt("an array longer than the data");
    PyObject *list = PyList_New((Py_ssize_t)size);
    for (uint64_t i = 0; list != NULL && i < size; i++) {
        PyObject *item = decode_at(s, at, depth + 1);
        if (item == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    return list;
}

/* A value's header: its type and payload size. */
typedef struct {
    int type;
    uint64_t size;
} Header;

/* Read the header of the value at *at and move *at past it; a pointer is followed (once: a
 * pointer to a pointer is damage), *at then being the target's payload and *next, if given,
 * the byte after the pointer (-1 when there was no pointer). NULL, or what is damaged. */
static const char *read_header(const Section *s, Py_ssize_t *at, Header *h, Py_ssize_t *next) {
    if (*at < 0 || *at >= s->size) return "a value outside the data";
    uint8_t control = s->data[(*at)++];
    int type = control >> 5;
    if (next != NULL) *next = -1;
    if (type == 1) { /* pointer: the value is elsewhere, reading goes on after the pointer */
        const int size = (control >> 3) & 3;
        static const uint64_t bias[4] = {0, 2048, 526336, 0};
        uint64_t tail;
        if (take_uint(s, at, size + 1, &tail) < 0) return "a pointer past the end";
        uint64_t target = size == 3 ? tail : (((uint64_t)(control & 7) << (8 * (size + 1))) | tail);
        target += bias[size];
        if (target >= (uint64_t)s->size) return "a pointer outside the data";
        if (next != NULL) *next = *at;
        *at = (Py_ssize_t)target;
        control = s->data[(*at)++];
        type = control >> 5;
        if (type == 1) return "a pointer to a pointer";
    }
    if (type == 0) { /* extended type: the next byte is the type minus 7 */
        if (*at >= s->size) return "an extended type past the end";
        type = 7 + s->data[(*at)++];
    }
    uint64_t size = control & 0x1f;
    if (size >= 29) {
        static const uint64_t base[3] = {29, 285, 65821};
        uint64_t extra;
        if (take_uint(s, at, (Py_ssize_t)size - 28, &extra) < 0) return "a size past the end";
        size = base[size - 29] + extra;
    }
    h->type = type;
    h->size = size;
    return NULL;
}

/* The double (type 3) or float (type 15) payload of `size` bytes at *at; advances *at. */
static PyObject *float_value(const Section *s, Py_ssize_t *at, int type, uint64_t size) {
    uint64_t number;
    if (size != (type == 3 ? 8u : 4u)) return corrupt("a float of the wrong size");
    if (take_uint(s, at, (Py_ssize_t)size, &number) < 0) return corrupt("a float past the end");
    if (type == 3) {
        double d;
        memcpy(&d, &number, 8);
        return PyFloat_FromDouble(d);
    }
    uint32_t bits = (uint32_t)number;
    float f;
    memcpy(&f, &bits, 4);
    return PyFloat_FromDouble((double)f);
}

static PyObject *decode_payload(const Section *s, Py_ssize_t *at, Header h, int depth);

static PyObject *decode_at(const Section *s, Py_ssize_t *at, int depth) {
    if (depth > MAX_DEPTH) return corrupt("data nested too deep");
    Header h;
    Py_ssize_t next;
    const char *damage = read_header(s, at, &h, &next);
    if (damage != NULL) return corrupt(damage);
    if (next < 0) return decode_payload(s, at, h, depth);
    if (depth + 1 > MAX_DEPTH) return corrupt("data nested too deep");
    PyObject *value = decode_payload(s, at, h, depth + 1);
    *at = next; /* decoding goes on after the pointer */
    return value;
}

static PyObject *decode_payload(const Section *s, Py_ssize_t *at, Header h, int depth) {
    const int type = h.type;
    const uint64_t size = h.size;
    const Py_ssize_t left = s->size - *at;
    const char *here = (const char *)s->data + *at;
    uint64_t number;
    switch (type) {
        case 2: /* UTF-8 string */
        case 4: /* bytes */
            if (size > (uint64_t)left) return corrupt("a string past the end");
            *at += (Py_ssize_t)size;
            return type == 2 ? PyUnicode_DecodeUTF8(here, (Py_ssize_t)size, "strict")
                             : PyBytes_FromStringAndSize(here, (Py_ssize_t)size);
        case 3: /* double */
        case 15: /* float */
            return float_value(s, at, type, size);
        case 5: /* uint16 */
        case 6: /* uint32 */
        case 9: /* uint64 */
            if (size > (type == 5 ? 2u : type == 6 ? 4u : 8u)) return corrupt("an integer too long");
            if (take_uint(s, at, (Py_ssize_t)size, &number) < 0) return corrupt("an integer past the end");
            return PyLong_FromUnsignedLongLong(number);
        case 8: /* int32 */
            if (size > 4) return corrupt("an integer too long");
            if (take_uint(s, at, (Py_ssize_t)size, &number) < 0) return corrupt("an integer past the end");
            return PyLong_FromLong((long)(int32_t)(uint32_t)number);
        case 10: /* uint128 */
            if (size > 16 || size > (uint64_t)left) return corrupt("an integer too long");
            *at += (Py_ssize_t)size;
            return _PyLong_FromByteArray((const unsigned char *)here, (size_t)size, 0, 0);
        case 7:
            return decode_map(s, at, size, depth);
        case 11:
            return decode_array(s, at, size, depth);
        case 14: /* boolean: the size is the value */
            if (size > 1) return corrupt("a boolean other than 0 or 1");
            return PyBool_FromLong((long)size);
        default:
            return corrupt("an unknown data type");
    }
}

/* What `read` makes of the value at `offset` of the data section in `args` (data, offset). */
static PyObject *read_section(PyObject *args, PyObject *(*read)(const Section *, Py_ssize_t)) {
    Py_buffer data;
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "y*n", &data, &offset)) return NULL;
    Section s = {data.buf, data.len};
    PyObject *result = read(&s, offset);
    PyBuffer_Release(&data);
    return result;
}

static PyObject *decode_value(const Section *s, Py_ssize_t offset) {
    return decode_at(s, &offset, 0);
}

static PyObject *decode(PyObject *self, PyObject *args) {
    (void)self;
    return read_section(args, decode_value);
}

/*
 * city(data, offset) -> (country, (state, city, postal, latitude, longitude)): what
 * enrich/ip.py's _city takes from the City record at `offset`, read where it lies instead of
 * decoding the whole record (names in eight languages, continent, registered country...:
 * ~14 us a record, against ~1 us here). Only the values on the way to those fields are read;
 * one of them corrupt raises ValueError, as decode() does.
 */

/* Move *at past the value there (a pointer: past the pointer only). -1: corrupt. */
static int skip_value(const Section *s, Py_ssize_t *at, int depth) {
    if (depth > MAX_DEPTH) return -1;
    Header h;
    Py_ssize_t next;
    if (read_header(s, at, &h, &next) != NULL) return -1;
    if (next >= 0) { /* a pointer: the value is elsewhere */
        *at = next;
        return 0;
    }
    uint64_t items = 0;
    switch (h.type) {
        case 7: items = 2 * h.size; break;
        case 11: items = h.size; break;
        case 14: return h.size > 1 ? -1 : 0;
        case 2: case 3: case 4: case 5: case 6: case 8: case 9: case 10: case 15:
            if (h.size > (uint64_t)(s->size - *at)) return -1;
            *at += (Py_ssize_t)h.size;
            return 0;
        default: return -1;
    }
    if (items > (uint64_t)(s->size - *at)) return -1;
    for (uint64_t i = 0; i < items; i++)
        if (skip_value(s, at, depth + 1) < 0) return -1;
    return 0;
}

enum { FOUND = 0, ABSENT = 1, CORRUPT = -1 };

/* The value of `key` in the map at `at` (the last one, as a dict built from the map keeps):
 * *value is where its header starts. ABSENT when `at` holds no map or the key is not in it. */
static int find_key(const Section *s, Py_ssize_t at, const char *key, Py_ssize_t *value) {
    Header h;
    if (read_header(s, &at, &h, NULL) != NULL) return CORRUPT;
    if (h.type != 7) return ABSENT;
    if (h.size > (uint64_t)(s->size - at)) return CORRUPT;
    const size_t length = strlen(key);
    int found = ABSENT;
    for (uint64_t i = 0; i < h.size; i++) {
        Py_ssize_t name = at;
        Header k;
        Py_ssize_t next;
        if (read_header(s, &name, &k, &next) != NULL || k.type != 2) return CORRUPT;
        if (k.size > (uint64_t)(s->size - name)) return CORRUPT;
        const int same = k.size == length && memcmp(s->data + name, key, length) == 0;
        at = next >= 0 ? next : name + (Py_ssize_t)k.size;
        if (same) {
            *value = at;
            found = FOUND;
        }
        if (skip_value(s, &at, 1) < 0) return CORRUPT;
    }
    return found;
}

/* The value at `path` (keys, NULL-terminated) from the map at `at`. */
static int find_path(const Section *s, Py_ssize_t at, const char *const *path, Py_ssize_t *value) {
    for (; *path != NULL; path++) {
        int found = find_key(s, at, *path, &at);
        if (found != FOUND) return found;
    }
    *value = at;
    return FOUND;
}

/* The header of the value at `path` from *at, *at moving to its payload: FOUND, ABSENT where
 * the path leads nowhere, or CORRUPT with ValueError set. */
static int value_at(const Section *s, Py_ssize_t *at, const char *const *path, Header *h) {
    int found = find_path(s, *at, path, at);
    if (found == CORRUPT) {
        corrupt("a map that cannot be read");
        return CORRUPT;
    }
    if (found == ABSENT) return ABSENT;
    const char *damage = read_header(s, at, h, NULL);
    if (damage != NULL) {
        corrupt(damage);
        return CORRUPT;
    }
    return FOUND;
}

/* The text at `path` from `at`, if it is a non-empty string (`empty`: or an empty one);
 * Py_None otherwise. NULL with ValueError: corrupt. */
static PyObject *text_at(const Section *s, Py_ssize_t at, const char *const *path, int empty) {
    Header h;
    int found = value_at(s, &at, path, &h);
    if (found == CORRUPT) return NULL;
    if (found == ABSENT || h.type != 2 || (h.size == 0 && !empty)) Py_RETURN_NONE;
    if (h.size > (uint64_t)(s->size - at)) return corrupt("a string past the end");
    return PyUnicode_DecodeUTF8((const char *)s->data + at, (Py_ssize_t)h.size, "strict");
}

/* The float at `path` from `at` (a double or a float), Py_None otherwise. */
static PyObject *float_at(const Section *s, Py_ssize_t at, const char *const *path) {
    Header h;
    int found = value_at(s, &at, path, &h);
    if (found == CORRUPT) return NULL;
    if (found == ABSENT || (h.type != 3 && h.type != 15)) Py_RETURN_NONE;
    return float_value(s, &at, h.type, h.size);
}

static const char *const COUNTRY[] = {"country", "iso_code", NULL};
static const char *const CITY[] = {"city", "names", "en", NULL};
static const char *const NAME[] = {"names", "en", NULL};
static const char *const ISO_CODE[] = {"iso_code", NULL};
static const char *const SUBDIVISIONS[] = {"subdivisions", NULL};
static const char *const POSTAL[] = {"postal", "code", NULL};
static const char *const LATITUDE[] = {"location", "latitude", NULL};
static const char *const LONGITUDE[] = {"location", "longitude", NULL};

/* The state: the first subdivision's English name, else its ISO code (even an empty one). */
static PyObject *state_at(const Section *s, Py_ssize_t record) {
    Py_ssize_t at = record;
    Header h;
    int found = value_at(s, &at, SUBDIVISIONS, &h);
    if (found == CORRUPT) return NULL;
    if (found == ABSENT || h.type != 11 || h.size == 0) Py_RETURN_NONE;
    PyObject *name = text_at(s, at, NAME, 0);
    if (name != Py_None) return name;
    Py_DECREF(name);
    return text_at(s, at, ISO_CODE, 1);
}

static PyObject *city_answer(const Section *s, Py_ssize_t record) {
    Header h;
    Py_ssize_t at = record;
    const char *damage = read_header(s, &at, &h, NULL);
    if (damage != NULL) return corrupt(damage);
    if (h.type != 7) return Py_BuildValue("(O(OOOOO))", Py_None, Py_None, Py_None, Py_None,
                                          Py_None, Py_None);
    PyObject *country = text_at(s, record, COUNTRY, 0);
    PyObject *city = country ? text_at(s, record, CITY, 0) : NULL;
    PyObject *state = city ? state_at(s, record) : NULL;
    PyObject *postal = state ? text_at(s, record, POSTAL, 0) : NULL;
    PyObject *latitude = NULL, *longitude = NULL, *answer = NULL;
    if (postal != NULL) {
        if (city == Py_None && state == Py_None) {
            latitude = Py_NewRef(Py_None);
            longitude = Py_NewRef(Py_None);
        } else {
            latitude = float_at(s, record, LATITUDE);
            longitude = latitude ? float_at(s, record, LONGITUDE) : NULL;
        }
    }
    if (longitude != NULL)
        answer = Py_BuildValue("(O(OOOOO))", country, state, city, postal, latitude, longitude);
    Py_XDECREF(country);
    Py_XDECREF(city);
    Py_XDECREF(state);
    Py_XDECREF(postal);
    Py_XDECREF(latitude);
    Py_XDECREF(longitude);
    return answer;
}

static PyObject *city(PyObject *self, PyObject *args) {
    (void)self;
    return read_section(args, city_answer);
}

/*
 * ipv4_values(texts) -> list of int, one per item: the address a plain dotted quad spells (four
 * decimal numbers 0-255 without leading zeros, nothing around them: the texts that are their
 * own canonical form, as enrich/enricher.py's _PLAIN_IPV4 takes them), or -1 for anything else
 * (the caller's slower path decides what those are).
 */
static int ipv4_value(PyObject *item, const void *context, long long *value) {
    (void)context;
    *value = -1;
    if (!PyUnicode_Check(item)) return 0;
    Py_ssize_t length;
    const char *text = PyUnicode_AsUTF8AndSize(item, &length);
    if (text == NULL) {
        PyErr_Clear(); /* a lone surrogate: not an address */
        return 0;
    }
    if (length < 7 || length > 15) return 0;
    uint32_t address = 0;
    Py_ssize_t at = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (at >= length || text[at] != '.') return 0;
            at++;
        }
        const Py_ssize_t start = at;
        unsigned number = 0;
        while (at < length && text[at] >= '0' && text[at] <= '9' && at - start < 3)
            number = number * 10 + (unsigned)(text[at++] - '0');
        const Py_ssize_t digits = at - start;
        if (digits == 0 || number > 255 || (digits > 1 && text[start] == '0')) return 0;
        address = address << 8 | number;
    }
    if (at == length) *value = address;
    return 0;
}

static PyObject *ipv4_values(PyObject *self, PyObject *texts) {
    (void)self;
    return answers(texts, "texts must be a sequence", ipv4_value, NULL);
}

static PyMethodDef methods[] = {
    {"records", records, METH_VARARGS,
     "records(tree, node_count, record_size, ip_version, texts) -> the record of each address"},
    {"find_ranges", find_ranges, METH_VARARGS,
     "find_ranges(starts, lengths, values, last_offsets, keys) -> each key's network's value"},
    {"decode", decode, METH_VARARGS,
     "decode(data, offset) -> the value at offset of a data section"},
    {"ipv4_values", ipv4_values, METH_O,
     "ipv4_values(texts) -> the address each plain dotted quad spells, -1 for other texts"},
    {"city", city, METH_VARARGS,
     "city(data, offset) -> (country, (state, city, postal, latitude, longitude)) of a record"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_mmdb", "Where a MaxMind database's search tree leads.", -1, methods,
};

PyMODINIT_FUNC PyInit__mmdb(void) { return PyModule_Create(&module); }

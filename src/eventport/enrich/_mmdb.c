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

static PyObject *decode_at(const Section *s, Py_ssize_t *at, int depth) {
    if (depth > MAX_DEPTH) return corrupt("data nested too deep");
    if (*at < 0 || *at >= s->size) return corrupt("a value outside the data");
    const uint8_t control = s->data[(*at)++];
    int type = control >> 5;
    if (type == 1) { /* pointer: the value is elsewhere, decoding goes on after the pointer */
        const int size = (control >> 3) & 3;
        static const uint64_t bias[4] = {0, 2048, 526336, 0};
        uint64_t tail;
        if (take_uint(s, at, size + 1, &tail) < 0) return corrupt("a pointer past the end");
        uint64_t target = size == 3 ? tail : (((uint64_t)(control & 7) << (8 * (size + 1))) | tail);
        target += bias[size];
        if (target >= (uint64_t)s->size) return corrupt("a pointer outside the data");
        Py_ssize_t there = (Py_ssize_t)target;
        if (there < s->size && (s->data[there] >> 5) == 1) return corrupt("a pointer to a pointer");
        return decode_at(s, &there, depth + 1);
    }
    if (type == 0) { /* extended type: the next byte is the type minus 7 */
        if (*at >= s->size) return corrupt("an extended type past the end");
        type = 7 + s->data[(*at)++];
    }
    uint64_t size = control & 0x1f;
    if (size >= 29) {
        static const uint64_t base[3] = {29, 285, 65821};
        uint64_t extra;
        if (take_uint(s, at, (Py_ssize_t)size - 28, &extra) < 0) return corrupt("a size past the end");
        size = base[size - 29] + extra;
    }
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
            if (size != (type == 3 ? 8u : 4u)) return corrupt("a float of the wrong size");
            if (take_uint(s, at, (Py_ssize_t)size, &number) < 0) return corrupt("a float past the end");
            if (type == 3) {
                double d;
                memcpy(&d, &number, 8);
                return PyFloat_FromDouble(d);
            } else {
                uint32_t bits = (uint32_t)number;
                float f;
                memcpy(&f, &bits, 4);
                return PyFloat_FromDouble((double)f);
            }
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

static PyObject *decode(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data;
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "y*n", &data, &offset)) return NULL;
    Section s = {data.buf, data.len};
    PyObject *result = decode_at(&s, &offset, 0);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef methods[] = {
    {"records", records, METH_VARARGS,
     "records(tree, node_count, record_size, ip_version, texts) -> the record of each address"},
    {"find_ranges", find_ranges, METH_VARARGS,
     "find_ranges(starts, lengths, values, last_offsets, keys) -> each key's network's value"},
    {"decode", decode, METH_VARARGS,
     "decode(data, offset) -> the value at offset of a data section"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_mmdb", "Where a MaxMind database's search tree leads.", -1, methods,
};

PyMODINIT_FUNC PyInit__mmdb(void) { return PyModule_Create(&module); }

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

static PyMethodDef methods[] = {
    {"records", records, METH_VARARGS,
     "records(tree, node_count, record_size, ip_version, texts) -> the record of each address"},
    {"find_ranges", find_ranges, METH_VARARGS,
     "find_ranges(starts, lengths, values, last_offsets, keys) -> each key's network's value"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_mmdb", "Where a MaxMind database's search tree leads.", -1, methods,
};

PyMODINIT_FUNC PyInit__mmdb(void) { return PyModule_Create(&module); }

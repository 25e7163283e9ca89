/* blacklist._speedups: the single-card check's front half in one C call.
 *
 * Why: Checker.check must be no slower than a naive regex + upper + dict.get lookup
 * (~440 ns on the slow build machine). In Python, encode + validate + upper + xxh64 +
 * region lookup is five or six C calls at ~50-100 ns of interpreter overhead each;
 * doing all of it here costs one call. blacklist/fastpath.py wraps this and keeps a
 * pure-Python fallback with identical results (tests/test_probe.py compares them).
 *
 * probe(card_id, views, provinces) -> (views.get(canon[:6]), canon, xxh64(canon))
 * scan_packed(...): a packed BatchCheck (blacklist/packed.py) parsed, hashed and probed in
 * one pass, with no Python object per id.
 *
 * Card id layout (blacklist/cardid.py): 32 ASCII characters
 *     0-5    region: 6 digits, the first two a province-level code (provinces[p] != 0)
 *     6-15   middle: 10 ASCII letters or digits
 *     16-31  serial: 16 hex digits, either case
 * The canonical form is the upper-case text. `provinces` is a 100-byte table built in
 * Python from regions.PROVINCE_PREFIXES, the single source of truth for valid prefixes.
 *
 * Any malformed id raises a bare ValueError; the Python wrapper replaces it with
 * cardid.diagnose(), which explains the failure. Wrong types for `views` or `provinces`
 * are programming errors and raise TypeError, so they are never mistaken for a bad id.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define CARD_ID_LENGTH 32
#define REGION_LENGTH 6
#define PROVINCE_TABLE_LENGTH 100

/* Character classes, one bit each. */
#define C_DIGIT 0x01
#define C_ALNUM 0x02
#define C_HEX 0x04

/* Class bits of each byte; everything not listed (including bytes >= 0x80) is 0. */
static const unsigned char char_class[256] = {
    ['0'] = C_DIGIT | C_ALNUM | C_HEX, ['1'] = C_DIGIT | C_ALNUM | C_HEX,
    ['2'] = C_DIGIT | C_ALNUM | C_HEX, ['3'] = C_DIGIT | C_ALNUM | C_HEX,
    ['4'] = C_DIGIT | C_ALNUM | C_HEX, ['5'] = C_DIGIT | C_ALNUM | C_HEX,
    ['6'] = C_DIGIT | C_ALNUM | C_HEX, ['7'] = C_DIGIT | C_ALNUM | C_HEX,
    ['8'] = C_DIGIT | C_ALNUM | C_HEX, ['9'] = C_DIGIT | C_ALNUM | C_HEX,
    ['A'] = C_ALNUM | C_HEX, ['B'] = C_ALNUM | C_HEX, ['C'] = C_ALNUM | C_HEX,
    ['D'] = C_ALNUM | C_HEX, ['E'] = C_ALNUM | C_HEX, ['F'] = C_ALNUM | C_HEX,
    ['a'] = C_ALNUM | C_HEX, ['b'] = C_ALNUM | C_HEX, ['c'] = C_ALNUM | C_HEX,
    ['d'] = C_ALNUM | C_HEX, ['e'] = C_ALNUM | C_HEX, ['f'] = C_ALNUM | C_HEX,
    ['G'] = C_ALNUM, ['H'] = C_ALNUM, ['I'] = C_ALNUM, ['J'] = C_ALNUM,
    ['K'] = C_ALNUM, ['L'] = C_ALNUM, ['M'] = C_ALNUM, ['N'] = C_ALNUM,
    ['O'] = C_ALNUM, ['P'] = C_ALNUM, ['Q'] = C_ALNUM, ['R'] = C_ALNUM,
    ['S'] = C_ALNUM, ['T'] = C_ALNUM, ['U'] = C_ALNUM, ['V'] = C_ALNUM,
    ['W'] = C_ALNUM, ['X'] = C_ALNUM, ['Y'] = C_ALNUM, ['Z'] = C_ALNUM,
    ['g'] = C_ALNUM, ['h'] = C_ALNUM, ['i'] = C_ALNUM, ['j'] = C_ALNUM,
    ['k'] = C_ALNUM, ['l'] = C_ALNUM, ['m'] = C_ALNUM, ['n'] = C_ALNUM,
    ['o'] = C_ALNUM, ['p'] = C_ALNUM, ['q'] = C_ALNUM, ['r'] = C_ALNUM,
    ['s'] = C_ALNUM, ['t'] = C_ALNUM, ['u'] = C_ALNUM, ['v'] = C_ALNUM,
    ['w'] = C_ALNUM, ['x'] = C_ALNUM, ['y'] = C_ALNUM, ['z'] = C_ALNUM,
};

/* XXH64 (xxHash specification, "XXH64 algorithm description") of exactly 32 bytes with
 * seed 0: one stripe of four little-endian 64-bit lanes, then merge, length, avalanche.
 * Must match xxhash.xxh64_intdigest and filters/fingerprint.py bit for bit. */
#define P1 UINT64_C(0x9E3779B185EBCA87)
#define P2 UINT64_C(0xC2B2AE3D27D4EB4F)
#define P3 UINT64_C(0x165667B19E3779F9)
#define P4 UINT64_C(0x85EBCA77C2B2AE63)

static inline uint64_t
rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t
read_le64(const unsigned char *p)
{
    /* Byte by byte so the result is the same on big-endian machines; compilers turn
     * this into one load on little-endian ones. */
    return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) |
           ((uint64_t)p[3] << 24) | ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) |
           ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
}

static inline uint64_t
xxh64_round(uint64_t acc, uint64_t lane)
{
    acc += lane * P2;
    acc = rotl64(acc, 31);
    return acc * P1;
}

static inline uint64_t
xxh64_merge(uint64_t h, uint64_t v)
{
    h ^= xxh64_round(0, v);
    return h * P1 + P4;
}

static uint64_t
xxh64_32(const unsigned char *p)
{
    uint64_t v1 = xxh64_round(P1 + P2, read_le64(p));
    uint64_t v2 = xxh64_round(P2, read_le64(p + 8));
    uint64_t v3 = xxh64_round(0, read_le64(p + 16));
    uint64_t v4 = xxh64_round((uint64_t)0 - P1, read_le64(p + 24));
    uint64_t h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
    h = xxh64_merge(h, v1);
    h = xxh64_merge(h, v2);
    h = xxh64_merge(h, v3);
    h = xxh64_merge(h, v4);
    h += CARD_ID_LENGTH;
    /* No tail bytes: the input is exactly one stripe. */
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

static PyObject *
invalid_card_id(void)
{
    PyErr_SetString(PyExc_ValueError, "invalid card id");
    return NULL;
}

/* Validate `card_id` and write its canonical upper-case form into `out`.
 * Returns 0 on success, -1 (with no exception set) if the id is malformed. */
static int
canonicalise(PyObject *card_id, const unsigned char *provinces, unsigned char *out)
{
    if (!PyUnicode_Check(card_id) || !PyUnicode_IS_ASCII(card_id) ||
        PyUnicode_GET_LENGTH(card_id) != CARD_ID_LENGTH) {
        return -1;
    }
    const unsigned char *s = PyUnicode_1BYTE_DATA(card_id);
    unsigned int bad = 0;
    int i;
    /* Accumulate the missing class bits instead of branching on each character. */
    for (i = 0; i < REGION_LENGTH; i++) {
        bad |= ~char_class[s[i]] & C_DIGIT;
    }
    for (; i < 16; i++) {
        bad |= ~char_class[s[i]] & C_ALNUM;
    }
    for (; i < CARD_ID_LENGTH; i++) {
        bad |= ~char_class[s[i]] & C_HEX;
    }
    if (bad) {
        return -1;
    }
    if (!provinces[(s[0] - '0') * 10 + (s[1] - '0')]) {
        return -1;
    }
    for (i = 0; i < CARD_ID_LENGTH; i++) {
        unsigned char c = s[i];
        /* Every character is now known to be [0-9A-Za-z]; only a-z change. */
        out[i] = (c >= 'a') ? (unsigned char)(c - ('a' - 'A')) : c;
    }
    return 0;
}

/* views.get(canon[:6]) as a new reference (None when absent), or NULL with an exception.
 * Like dict.get: a missing key is not an error (and __missing__ is not called). */
static PyObject *
view_of(PyObject *views, const unsigned char *buf)
{
    PyObject *region = PyBytes_FromStringAndSize((const char *)buf, REGION_LENGTH);
    if (region == NULL) {
        return NULL;
    }
    PyObject *view;
#if PY_VERSION_HEX >= 0x030D0000
    /* A strong reference: a borrowed one is unsafe in the free-threaded build. */
    int found = PyDict_GetItemRef(views, region, &view);
    Py_DECREF(region);
    if (found < 0) {
        return NULL;
    }
    if (found == 0) {
        view = Py_NewRef(Py_None);
    }
#else
    view = PyDict_GetItemWithError(views, region); /* borrowed */
    Py_DECREF(region);
    if (view == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        view = Py_None;
    }
    Py_INCREF(view);
#endif
    return view;
}

PyDoc_STRVAR(probe_doc,
"probe(card_id, views, provinces, /) -> (view or None, canon, hash)\n\n"
"Validate a card id, return views.get(canon[:6]), the canonical upper-case bytes and\n"
"XXH64 (seed 0) of them. Raises ValueError for a malformed id.");

static PyObject *
probe(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "probe() takes exactly 3 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *card_id = args[0];
    PyObject *views = args[1];
    PyObject *provinces = args[2];
    if (!PyDict_Check(views)) {
        PyErr_Format(PyExc_TypeError, "views must be a dict, not %.100s",
                     Py_TYPE(views)->tp_name);
        return NULL;
    }
    if (!PyBytes_Check(provinces) || PyBytes_GET_SIZE(provinces) != PROVINCE_TABLE_LENGTH) {
        PyErr_SetString(PyExc_TypeError, "provinces must be a bytes table of length 100");
        return NULL;
    }

    unsigned char buf[CARD_ID_LENGTH];
    if (canonicalise(card_id, (const unsigned char *)PyBytes_AS_STRING(provinces), buf) < 0) {
        return invalid_card_id();
    }

    PyObject *result = PyTuple_New(3);
    if (result == NULL) {
        return NULL;
    }
    PyObject *canon = PyBytes_FromStringAndSize((const char *)buf, CARD_ID_LENGTH);
    if (canon == NULL) {
        goto error;
    }
    PyTuple_SET_ITEM(result, 1, canon);
    PyObject *hash = PyLong_FromUnsignedLongLong((unsigned long long)xxh64_32(buf));
    if (hash == NULL) {
        goto error;
    }
    PyTuple_SET_ITEM(result, 2, hash);

    PyObject *view = view_of(views, buf);
    if (view == NULL) {
        goto error;
    }
    PyTuple_SET_ITEM(result, 0, view);
    return result;

error:
    /* Unset slots of a new tuple are NULL, which tuple deallocation skips. */
    Py_DECREF(result);
    return NULL;
}

PyDoc_STRVAR(members_doc,
"members(container, fingerprints, /) -> list[int]\n"
"\n"
"Indices i for which fingerprints[i] in container; fingerprints is a buffer of\n"
"uint32 (a numpy array). The check_many membership loop in C: the container's own\n"
"__contains__ is called for each value, without the interpreter in between.");

static PyObject *
members(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "members() takes exactly 2 arguments");
        return NULL;
    }
    PyObject *container = args[0];
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return NULL;
    }
    if (view.itemsize != 4 || view.format == NULL ||
        (strcmp(view.format, "I") != 0 && strcmp(view.format, "=I") != 0 &&
         strcmp(view.format, "<I") != 0 && strcmp(view.format, "L") != 0)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "fingerprints must be a contiguous uint32 buffer");
        return NULL;
    }
    const uint32_t *values = (const uint32_t *)view.buf;
    Py_ssize_t n = view.len / 4;
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *value = PyLong_FromUnsignedLong(values[i]);
        if (value == NULL) {
            goto fail;
        }
        int found = PySequence_Contains(container, value);
        Py_DECREF(value);
        if (found < 0) {
            goto fail;
        }
        if (found) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (index == NULL || PyList_Append(out, index) < 0) {
                Py_XDECREF(index);
                goto fail;
            }
            Py_DECREF(index);
        }
    }
    PyBuffer_Release(&view);
    return out;
fail:
    PyBuffer_Release(&view);
    Py_DECREF(out);
    return NULL;
}

PyDoc_STRVAR(scan_doc,
"scan(card_ids, provinces, shift, container, /) -> (canon, regions, hits)\n"
"\n"
"check_many's front half in one pass: validate and canonicalise every id (canon: the\n"
"n * 32 canonical bytes), its region code (regions: n native uint32), and the indices\n"
"whose fingerprint XXH64(canon) >> shift is in container (hits). A malformed id raises\n"
"ValueError(index) for the first one; the caller explains it.");

static PyObject *
scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "scan() takes exactly 4 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *provinces = args[1];
    if (!PyBytes_Check(provinces) || PyBytes_GET_SIZE(provinces) != PROVINCE_TABLE_LENGTH) {
        PyErr_SetString(PyExc_TypeError, "provinces must be a bytes table of length 100");
        return NULL;
    }
    long shift = PyLong_AsLong(args[2]);
    if (shift == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (shift < 32 || shift > 63) {
        PyErr_SetString(PyExc_ValueError, "shift must be within 32..63");
        return NULL;
    }
    PyObject *container = args[3];
    PyObject *seq = PySequence_Fast(args[0], "card_ids must be a sequence");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    const unsigned char *table = (const unsigned char *)PyBytes_AS_STRING(provinces);
    PyObject *canon = PyBytes_FromStringAndSize(NULL, n * CARD_ID_LENGTH);
    PyObject *regions = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(uint32_t));
    PyObject *hits = PyList_New(0);
    if (canon == NULL || regions == NULL || hits == NULL) {
        goto fail;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(canon);
    uint32_t *codes = (uint32_t *)PyBytes_AS_STRING(regions);
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char *row = out + i * CARD_ID_LENGTH;
        if (canonicalise(items[i], table, row) < 0) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (index != NULL) {
                PyErr_SetObject(PyExc_ValueError, index);
                Py_DECREF(index);
            }
            goto fail;
        }
        uint32_t code = 0;
        for (int k = 0; k < REGION_LENGTH; k++) {
            code = code * 10 + (uint32_t)(row[k] - '0');
        }
        codes[i] = code;
        PyObject *fp = PyLong_FromUnsignedLongLong(xxh64_32(row) >> shift);
        if (fp == NULL) {
            goto fail;
        }
        int found = PySequence_Contains(container, fp);
        Py_DECREF(fp);
        if (found < 0) {
            goto fail;
        }
        if (found) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (index == NULL || PyList_Append(hits, index) < 0) {
                Py_XDECREF(index);
                goto fail;
            }
            Py_DECREF(index);
        }
    }
    Py_DECREF(seq);
    return Py_BuildValue("(NNN)", canon, regions, hits);
fail:
    Py_DECREF(seq);
    Py_XDECREF(canon);
    Py_XDECREF(regions);
    Py_XDECREF(hits);
    return NULL;
}

PyDoc_STRVAR(card_key_doc,
"card_key(canon, /) -> bytes\n"
"\n"
"The 18-byte binary key (cardid.py layout: region u24, base-36 middle in 7 bytes, serial\n"
"u64, all big-endian) of a canonical 32-byte id that probe() or scan() produced.");

static int
base36_digit(unsigned char c)
{
    return c <= '9' ? c - '0' : c - 'A' + 10;
}

static int
hex_digit(unsigned char c)
{
    return c <= '9' ? c - '0' : c - 'A' + 10;
}

static PyObject *
card_key(PyObject *module, PyObject *canon)
{
    (void)module;
    if (!PyBytes_Check(canon) || PyBytes_GET_SIZE(canon) != CARD_ID_LENGTH) {
        PyErr_SetString(PyExc_TypeError, "card_key() needs 32 canonical bytes");
        return NULL;
    }
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(canon);
    uint64_t region = 0, middle = 0, serial = 0;
    for (int i = 0; i < REGION_LENGTH; i++) {
        region = region * 10 + (uint64_t)(s[i] - '0');
    }
    for (int i = REGION_LENGTH; i < 16; i++) {
        middle = middle * 36 + (uint64_t)base36_digit(s[i]);
    }
    for (int i = 16; i < CARD_ID_LENGTH; i++) {
        serial = (serial << 4) | (uint64_t)hex_digit(s[i]);
    }
    unsigned char key[18];
    for (int i = 0; i < 3; i++) {
        key[i] = (unsigned char)(region >> (8 * (2 - i)));
    }
    for (int i = 0; i < 7; i++) {
        key[3 + i] = (unsigned char)(middle >> (8 * (6 - i)));
    }
    for (int i = 0; i < 8; i++) {
        key[10 + i] = (unsigned char)(serial >> (8 * (7 - i)));
    }
    return PyBytes_FromStringAndSize((const char *)key, 18);
}

PyDoc_STRVAR(key_fingerprints_doc,
"key_fingerprints(keys, shift, /) -> bytes\n"
"\n"
"Fingerprints (XXH64 of the canonical id >> shift, native uint32) of n concatenated\n"
"18-byte binary keys: the apply path's way from stored keys to index entries without\n"
"building the text of every id in numpy first. Keys must be in range (cardbatch checks).");

static PyObject *
key_fingerprints(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    static const char digits36[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "key_fingerprints() takes exactly 2 arguments");
        return NULL;
    }
    long shift = PyLong_AsLong(args[1]);
    if (shift == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (shift < 32 || shift > 63) {
        PyErr_SetString(PyExc_ValueError, "shift must be within 32..63");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_C_CONTIGUOUS) < 0) {
        return NULL;
    }
    if (view.len % 18 != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "keys must be a multiple of 18 bytes");
        return NULL;
    }
    Py_ssize_t n = view.len / 18;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(uint32_t));
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    uint32_t *fps = (uint32_t *)PyBytes_AS_STRING(out);
    const unsigned char *keys = (const unsigned char *)view.buf;
    unsigned char text[CARD_ID_LENGTH];
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *k = keys + i * 18;
        uint64_t region = ((uint64_t)k[0] << 16) | ((uint64_t)k[1] << 8) | k[2];
        uint64_t middle = 0, serial = 0;
        for (int j = 3; j < 10; j++) {
            middle = (middle << 8) | k[j];
        }
        for (int j = 10; j < 18; j++) {
            serial = (serial << 8) | k[j];
        }
        for (int j = REGION_LENGTH - 1; j >= 0; j--) {
            text[j] = (unsigned char)('0' + region % 10);
            region /= 10;
        }
        for (int j = 15; j >= REGION_LENGTH; j--) {
            text[j] = (unsigned char)digits36[middle % 36];
            middle /= 36;
        }
        for (int j = CARD_ID_LENGTH - 1; j >= 16; j--) {
            text[j] = (unsigned char)digits36[serial & 15];
            serial >>= 4;
        }
        fps[i] = (uint32_t)(xxh64_32(text) >> shift);
    }
    PyBuffer_Release(&view);
    return out;
}

/* --- A CRoaring bitmap probed in place ------------------------------------------------
 *
 * pyroaring's BitMap.raw_pointer is the address of its roaring_bitmap_t, documented for
 * FFI use. A packed batch probes it here without a Python int per fingerprint. The
 * layouts below are CRoaring's (roaring_types.h: roaring_array_t is public; containers/
 * *.h: the container structs, unchanged since CRoaring 0.2). blacklist/packed.py checks
 * them at import against pyroaring's own `in` on bitmaps holding every container kind,
 * and uses the generic __contains__ path if they ever disagree. The caller holds the GIL
 * throughout each chunk (no Python call inside one), and pyroaring never releases it, so no
 * writer thread mutates the bitmap while it is read; without a GIL (a free-threaded build)
 * packed.py does not use this path. */

typedef struct {
    int32_t size;
    int32_t allocation_size;
    void **containers;
    uint16_t *keys;
    uint8_t *typecodes;
    uint8_t flags;
} croaring_array;

typedef struct {
    int32_t cardinality;
    uint64_t *words;
} croaring_bitset;

typedef struct {
    int32_t cardinality;
    int32_t capacity;
    uint16_t *array;
} croaring_sorted;

typedef struct {
    uint16_t value;
    uint16_t length;
} croaring_rle16;

typedef struct {
    int32_t n_runs;
    int32_t capacity;
    croaring_rle16 *runs;
} croaring_runs;

typedef struct {
    void *container;
    uint8_t typecode;
} croaring_shared;

#define CROARING_BITSET 1
#define CROARING_ARRAY 2
#define CROARING_RUN 3
#define CROARING_SHARED 4

/* 1 if `value` is in the bitmap, 0 if not, -1 for a container kind this code does not
 * know (the caller then falls back to the generic path). */
static int
croaring_contains(const croaring_array *ra, uint32_t value)
{
    uint16_t high = (uint16_t)(value >> 16), low = (uint16_t)(value & 0xFFFF);
    int32_t lo = 0, hi = ra->size - 1;
    while (lo <= hi) {
        int32_t mid = (lo + hi) >> 1;
        uint16_t key = ra->keys[mid];
        if (key < high) {
            lo = mid + 1;
        } else if (key > high) {
            hi = mid - 1;
        } else {
            const void *c = ra->containers[mid];
            uint8_t type = ra->typecodes[mid];
            if (type == CROARING_SHARED) {
                type = ((const croaring_shared *)c)->typecode;
                c = ((const croaring_shared *)c)->container;
            }
            if (type == CROARING_BITSET) {
                return (int)((((const croaring_bitset *)c)->words[low >> 6] >> (low & 63)) & 1);
            }
            if (type == CROARING_ARRAY) {
                const croaring_sorted *a = (const croaring_sorted *)c;
                int32_t l = 0, h = a->cardinality - 1;
                while (l <= h) {
                    int32_t m = (l + h) >> 1;
                    uint16_t v = a->array[m];
                    if (v < low) {
                        l = m + 1;
                    } else if (v > low) {
                        h = m - 1;
                    } else {
                        return 1;
                    }
                }
                return 0;
            }
            if (type == CROARING_RUN) {
                /* The last run starting at or before `low`, then whether it reaches it. */
                const croaring_runs *r = (const croaring_runs *)c;
                int32_t l = 0, h = r->n_runs - 1, found = -1;
                while (l <= h) {
                    int32_t m = (l + h) >> 1;
                    if (r->runs[m].value <= low) {
                        found = m;
                        l = m + 1;
                    } else {
                        h = m - 1;
                    }
                }
                return found >= 0 &&
                       (uint32_t)(low - r->runs[found].value) <= r->runs[found].length;
            }
            return -1;
        }
    }
    return 0;
}

/* Where `low` would sit in a sorted array container of `card` values, guessed from the
 * values being hashes (uniform over 0..65535): within a cache line or two of the truth. */
static inline int32_t
guess_position(uint16_t low, int32_t card)
{
    int32_t pos = (int32_t)(((uint32_t)low * (uint32_t)card) >> 16);
    return pos < card ? pos : card - 1;
}

/* Whether `low` is in the sorted array `v` of `card` values: an exponential search from
 * the guessed position, then a binary search in the bracket it found (correct for any
 * distribution, one or two cache lines for a uniform one). */
static int
sorted_contains_from(const uint16_t *v, int32_t card, uint16_t low)
{
    if (card <= 0) {
        return 0;
    }
    int32_t pos = guess_position(low, card), lo, hi;
    if (v[pos] == low) {
        return 1;
    }
    if (v[pos] < low) { /* the answer is in (pos, card) */
        int32_t step = 1;
        lo = pos;
        while (lo + step < card && v[lo + step] < low) {
            lo += step;
            step <<= 1;
        }
        hi = lo + step < card ? lo + step : card - 1;
        lo += 1;
    } else { /* the answer is in [0, pos) */
        int32_t step = 1;
        hi = pos;
        while (hi - step >= 0 && v[hi - step] > low) {
            hi -= step;
            step <<= 1;
        }
        lo = hi - step > 0 ? hi - step : 0;
        hi -= 1;
    }
    while (lo <= hi) {
        int32_t mid = (lo + hi) >> 1;
        if (v[mid] < low) {
            lo = mid + 1;
        } else if (v[mid] > low) {
            hi = mid - 1;
        } else {
            return 1;
        }
    }
    return 0;
}

/* The index of container `high`, or -1: a branch-free lower bound over the sorted keys (a
 * few KB, cached; the comparisons compile to conditional moves, so the ~12 steps of a
 * large index cost no mispredicted branches), then one equality test. */
static inline int32_t
croaring_key_index(const croaring_array *ra, uint16_t high)
{
    int32_t n = ra->size;
    if (n <= 0) {
        return -1;
    }
    const uint16_t *base = ra->keys;
    while (n > 1) {
        int32_t half = n >> 1;
        base = (base[half - 1] < high) ? base + half : base;
        n -= half;
    }
    int32_t at = (int32_t)(base - ra->keys);
    return *base == high ? at : -1;
}

#define PROBE_CHUNK 32

/* found[k] = whether values[k] is in the bitmap, for k < n <= PROBE_CHUNK; -1 if a
 * container kind is unknown, else 0. Why in stages: each probe of a large bitmap misses the
 * cache two or three times (the container, then its values); issuing the loads of a whole
 * chunk before using any of them lets the memory system serve them in parallel instead of
 * one ~100 ns miss after another. */
static int
croaring_probe_chunk(const croaring_array *ra, const uint32_t *values, int n, uint8_t *found)
{
    int32_t at[PROBE_CHUNK];
    const void *box[PROBE_CHUNK];
    uint8_t kind[PROBE_CHUNK];
    for (int k = 0; k < n; k++) { /* 1: the container (keys are a few KB: cached) */
        at[k] = croaring_key_index(ra, (uint16_t)(values[k] >> 16));
        if (at[k] >= 0) {
            __builtin_prefetch(ra->containers[at[k]]);
        }
    }
    for (int k = 0; k < n; k++) { /* 2: where in the container the value would be */
        if (at[k] < 0) {
            continue;
        }
        const void *c = ra->containers[at[k]];
        uint8_t type = ra->typecodes[at[k]];
        if (type == CROARING_SHARED) {
            type = ((const croaring_shared *)c)->typecode;
            c = ((const croaring_shared *)c)->container;
        }
        box[k] = c;
        kind[k] = type;
        uint16_t low = (uint16_t)(values[k] & 0xFFFF);
        if (type == CROARING_ARRAY) {
            const croaring_sorted *a = (const croaring_sorted *)c;
            if (a->cardinality > 0) {
                __builtin_prefetch(a->array + guess_position(low, a->cardinality));
            }
        } else if (type == CROARING_BITSET) {
            __builtin_prefetch(((const croaring_bitset *)c)->words + (low >> 6));
        }
    }
    for (int k = 0; k < n; k++) { /* 3: the answers */
        if (at[k] < 0) {
            found[k] = 0;
            continue;
        }
        uint16_t low = (uint16_t)(values[k] & 0xFFFF);
        const void *c = box[k];
        if (kind[k] == CROARING_ARRAY) {
            const croaring_sorted *a = (const croaring_sorted *)c;
            found[k] = (uint8_t)sorted_contains_from(a->array, a->cardinality, low);
        } else if (kind[k] == CROARING_BITSET) {
            found[k] =
                (uint8_t)((((const croaring_bitset *)c)->words[low >> 6] >> (low & 63)) & 1);
        } else if (kind[k] == CROARING_RUN) {
            int r = croaring_contains(ra, values[k]);
            if (r < 0) {
                return -1;
            }
            found[k] = (uint8_t)r;
        } else {
            return -1;
        }
    }
    return 0;
}

static int
append_index(PyObject *list, Py_ssize_t i)
{
    PyObject *index = PyLong_FromSsize_t(i);
    if (index == NULL) {
        return -1;
    }
    int rc = PyList_Append(list, index);
    Py_DECREF(index);
    return rc;
}

/* The roaring_bitmap_t behind a pyroaring BitMap, or NULL with an exception set. */
static const croaring_array *
croaring_of(PyObject *bitmap)
{
    PyObject *address = PyObject_GetAttrString(bitmap, "raw_pointer");
    if (address == NULL) {
        return NULL;
    }
    void *p = PyLong_AsVoidPtr(address);
    Py_DECREF(address);
    if (p == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "raw_pointer is NULL");
        }
        return NULL;
    }
    return (const croaring_array *)p;
}

static PyObject *
unknown_container(void)
{
    PyErr_SetString(PyExc_TypeError, "unknown CRoaring container type: use the generic path");
    return NULL;
}

PyDoc_STRVAR(roaring_members_doc,
"roaring_members(bitmap, fingerprints, /) -> list[int]\n"
"\n"
"Indices i with fingerprints[i] in bitmap (a pyroaring BitMap, read in place through\n"
"raw_pointer; fingerprints: a contiguous uint32 buffer). TypeError if the bitmap holds a\n"
"container kind this code does not know.");

static PyObject *
roaring_members(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "roaring_members() takes exactly 2 arguments");
        return NULL;
    }
    const croaring_array *ra = croaring_of(args[0]);
    if (ra == NULL) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_C_CONTIGUOUS) < 0) {
        return NULL;
    }
    if (view.len % 4 != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "fingerprints must be a contiguous uint32 buffer");
        return NULL;
    }
    const uint32_t *values = (const uint32_t *)view.buf;
    Py_ssize_t n = view.len / 4;
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    for (Py_ssize_t base = 0; base < n; base += PROBE_CHUNK) {
        int m = (int)(n - base < PROBE_CHUNK ? n - base : PROBE_CHUNK);
        uint8_t found[PROBE_CHUNK];
        if (croaring_probe_chunk(ra, values + base, m, found) < 0) {
            unknown_container();
            goto fail;
        }
        for (int k = 0; k < m; k++) {
            if (found[k] && append_index(out, base + k) < 0) {
                goto fail;
            }
        }
    }
    PyBuffer_Release(&view);
    return out;
fail:
    PyBuffer_Release(&view);
    Py_DECREF(out);
    return NULL;
}

PyDoc_STRVAR(probe_in_doc,
"probe_in(card_id, views, provinces, index, /) -> (view or None, canon, hit)\n"
"\n"
"probe() and the index test of Checker.check in one call. index is a tuple (bitmap,\n"
"shift), read together by the caller; hit: whether XXH64(canon) >> shift is in bitmap\n"
"(its __contains__: for one probe, CRoaring's own search is faster than reading the\n"
"bitmap in place as scan_packed does). Raises ValueError for a malformed id.");

static PyObject *
probe_in(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "probe_in() takes exactly 4 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *views = args[1];
    PyObject *provinces = args[2];
    PyObject *index = args[3];
    if (!PyDict_Check(views)) {
        PyErr_Format(PyExc_TypeError, "views must be a dict, not %.100s",
                     Py_TYPE(views)->tp_name);
        return NULL;
    }
    if (!PyBytes_Check(provinces) || PyBytes_GET_SIZE(provinces) != PROVINCE_TABLE_LENGTH) {
        PyErr_SetString(PyExc_TypeError, "provinces must be a bytes table of length 100");
        return NULL;
    }
    if (!PyTuple_Check(index) || PyTuple_GET_SIZE(index) != 2) {
        PyErr_SetString(PyExc_TypeError, "index must be a (bitmap, shift) tuple");
        return NULL;
    }
    PyObject *bitmap = PyTuple_GET_ITEM(index, 0);
    long shift = PyLong_AsLong(PyTuple_GET_ITEM(index, 1));
    if (shift == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (shift < 32 || shift > 63) {
        PyErr_SetString(PyExc_ValueError, "shift must be within 32..63");
        return NULL;
    }

    unsigned char buf[CARD_ID_LENGTH];
    if (canonicalise(args[0], (const unsigned char *)PyBytes_AS_STRING(provinces), buf) < 0) {
        return invalid_card_id();
    }
    PyObject *value = PyLong_FromUnsignedLong((unsigned long)(xxh64_32(buf) >> shift));
    if (value == NULL) {
        return NULL;
    }
    int hit = PySequence_Contains(bitmap, value);
    Py_DECREF(value);
    if (hit < 0) {
        return NULL;
    }
    PyObject *canon = PyBytes_FromStringAndSize((const char *)buf, CARD_ID_LENGTH);
    if (canon == NULL) {
        return NULL;
    }
    PyObject *view = view_of(views, buf);
    if (view == NULL) {
        Py_DECREF(canon);
        return NULL;
    }
    PyObject *result = PyTuple_New(3);
    if (result == NULL) {
        Py_DECREF(canon);
        Py_DECREF(view);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, view);
    PyTuple_SET_ITEM(result, 1, canon);
    PyTuple_SET_ITEM(result, 2, Py_NewRef(hit ? Py_True : Py_False));
    return result;
}

/* Validate and canonicalise one 32-byte row of a packed batch into `out`: 0 if valid,
 * -1 if not (the same rules as canonicalise() above, on bytes instead of a str). */
static int
canonicalise_row(const unsigned char *s, const unsigned char *provinces, unsigned char *out)
{
    unsigned int bad = 0;
    int i;
    for (i = 0; i < REGION_LENGTH; i++) {
        bad |= ~char_class[s[i]] & C_DIGIT;
    }
    for (; i < 16; i++) {
        bad |= ~char_class[s[i]] & C_ALNUM;
    }
    for (; i < CARD_ID_LENGTH; i++) {
        bad |= ~char_class[s[i]] & C_HEX;
    }
    if (bad || !provinces[(s[0] - '0') * 10 + (s[1] - '0')]) {
        return -1;
    }
    for (i = 0; i < CARD_ID_LENGTH; i++) {
        unsigned char c = s[i];
        out[i] = (c >= 'a') ? (unsigned char)(c - ('a' - 'A')) : c;
    }
    return 0;
}

PyDoc_STRVAR(scan_packed_doc,
"scan_packed(packed, provinces, shift, bitmap, in_place, /) -> (canon, regions, hits, bad)\n"
"\n"
"A packed batch (n ids of 32 ASCII bytes back to back; len(packed) a multiple of 32) in\n"
"one pass, with no Python object per id. The v valid ids, in order, are the first v * 32\n"
"bytes of canon (canonical text) and the first v native uint32 of regions (region codes);\n"
"hits are the valid rows whose fingerprint XXH64(row) >> shift is in bitmap; bad the\n"
"request indices of malformed ids. in_place: probe the pyroaring BitMap through its\n"
"raw_pointer (else through __contains__, one Python int per probe).");

static PyObject *
scan_packed(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "scan_packed() takes exactly 5 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    PyObject *provinces = args[1];
    if (!PyBytes_Check(provinces) || PyBytes_GET_SIZE(provinces) != PROVINCE_TABLE_LENGTH) {
        PyErr_SetString(PyExc_TypeError, "provinces must be a bytes table of length 100");
        return NULL;
    }
    long shift = PyLong_AsLong(args[2]);
    if (shift == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (shift < 32 || shift > 63) {
        PyErr_SetString(PyExc_ValueError, "shift must be within 32..63");
        return NULL;
    }
    PyObject *container = args[3];
    int in_place = PyObject_IsTrue(args[4]);
    if (in_place < 0) {
        return NULL;
    }
    const croaring_array *ra = NULL;
    if (in_place && (ra = croaring_of(container)) == NULL) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_C_CONTIGUOUS) < 0) {
        return NULL;
    }
    if (view.len % CARD_ID_LENGTH != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "packed ids must be a multiple of 32 bytes");
        return NULL;
    }
    Py_ssize_t n = view.len / CARD_ID_LENGTH;
    const unsigned char *in = (const unsigned char *)view.buf;
    const unsigned char *table = (const unsigned char *)PyBytes_AS_STRING(provinces);
    PyObject *canon = PyBytes_FromStringAndSize(NULL, n * CARD_ID_LENGTH);
    PyObject *regions = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(uint32_t));
    PyObject *hits = PyList_New(0);
    PyObject *bad = PyList_New(0);
    if (canon == NULL || regions == NULL || hits == NULL || bad == NULL) {
        goto fail;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(canon);
    uint32_t *codes = (uint32_t *)PyBytes_AS_STRING(regions);
    Py_ssize_t j = 0; /* valid rows so far: the valid ids are written back to back */
    for (Py_ssize_t base = 0; base < n; base += PROBE_CHUNK) {
        Py_ssize_t end = base + PROBE_CHUNK < n ? base + PROBE_CHUNK : n;
        uint32_t fps[PROBE_CHUNK];
        uint8_t found[PROBE_CHUNK];
        Py_ssize_t first = j; /* the chunk's first valid row */
        int m = 0;
        for (Py_ssize_t i = base; i < end; i++) {
            unsigned char *row = out + j * CARD_ID_LENGTH;
            if (canonicalise_row(in + i * CARD_ID_LENGTH, table, row) < 0) {
                if (append_index(bad, i) < 0) {
                    goto fail;
                }
                continue;
            }
            uint32_t code = 0;
            for (int k = 0; k < REGION_LENGTH; k++) {
                code = code * 10 + (uint32_t)(row[k] - '0');
            }
            codes[j++] = code;
            fps[m++] = (uint32_t)(xxh64_32(row) >> shift);
        }
        if (ra != NULL) {
            if (croaring_probe_chunk(ra, fps, m, found) < 0) {
                unknown_container();
                goto fail;
            }
        } else {
            for (int k = 0; k < m; k++) {
                PyObject *value = PyLong_FromUnsignedLong(fps[k]);
                if (value == NULL) {
                    goto fail;
                }
                int r = PySequence_Contains(container, value);
                Py_DECREF(value);
                if (r < 0) {
                    goto fail;
                }
                found[k] = (uint8_t)r;
            }
        }
        for (int k = 0; k < m; k++) {
            if (found[k] && append_index(hits, first + k) < 0) {
                goto fail;
            }
        }
    }
    /* The rows past j (as many as there were bad ids) are unused: the caller reads the
     * first n - len(bad) rows and region codes only. */
    memset(out + j * CARD_ID_LENGTH, 0, (size_t)((n - j) * CARD_ID_LENGTH));
    memset(codes + j, 0, (size_t)(n - j) * sizeof(uint32_t));
    PyBuffer_Release(&view);
    return Py_BuildValue("(NNNN)", canon, regions, hits, bad);
fail:
    PyBuffer_Release(&view);
    Py_XDECREF(canon);
    Py_XDECREF(regions);
    Py_XDECREF(hits);
    Py_XDECREF(bad);
    return NULL;
}

static PyMethodDef speedups_methods[] = {
    {"scan_packed", (PyCFunction)(void (*)(void))scan_packed, METH_FASTCALL, scan_packed_doc},
    {"roaring_members", (PyCFunction)(void (*)(void))roaring_members, METH_FASTCALL,
     roaring_members_doc},
    {"key_fingerprints", (PyCFunction)(void (*)(void))key_fingerprints, METH_FASTCALL,
     key_fingerprints_doc},
    {"card_key", (PyCFunction)card_key, METH_O, card_key_doc},
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL, scan_doc},
    {"probe", (PyCFunction)(void (*)(void))probe, METH_FASTCALL, probe_doc},
    {"probe_in", (PyCFunction)(void (*)(void))probe_in, METH_FASTCALL, probe_in_doc},
    {"members", (PyCFunction)(void (*)(void))members, METH_FASTCALL, members_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot speedups_slots[] = {
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "blacklist._speedups",
    .m_doc = "C fast path for the single-card check (see blacklist/fastpath.py).",
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}

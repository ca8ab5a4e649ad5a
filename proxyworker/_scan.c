/* Byte scans of the relay's hot path, in C (see proxyworker/scan.py, which documents each
 * function and holds the Python version used when this extension is not built).
 *
 * Compiled Python reads a byte at a time through a bounds-checked call and walks a chunk once
 * per question asked of it; these answer a question about a whole chunk in one call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stddef.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h> /* (every x86-64 has SSE2: 16 bytes compared in a few instructions) */
#endif

/* Whether a word read from memory (`word`) has the first byte lowest: then the position of a
 * byte in it follows from its bits (`equal_prefix`, `run_starts`). */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define WORDS_LITTLE_ENDIAN 1
#else
#define WORDS_LITTLE_ENDIAN 0
#endif

static int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int
bytes_arg(PyObject *arg, const char *function, const char *name)
{
    if (PyBytes_CheckExact(arg))
        return 1;
    PyErr_Format(PyExc_TypeError, "%s() argument '%s' must be bytes, not %.100s", function,
                 name, Py_TYPE(arg)->tp_name);
    return 0;
}

/* A function's arguments: as many as `names` has, the first `required` of them bytes. */
static int
bytes_args(const char *function, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t count,
           Py_ssize_t required, const char *const *names)
{
    if (nargs != count) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments", function, count);
        return 0;
    }
    for (Py_ssize_t i = 0; i < required; i++) {
        if (!bytes_arg(args[i], function, names[i]))
            return 0;
    }
    return 1;
}

static uint64_t
word(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* How many bytes `a` (of `n`) and `b` (of `m`) have equal at their start: a word at a time,
 * the first unequal word's equal bytes counted from where its bits first differ. */
static Py_ssize_t
equal_prefix(const unsigned char *a, Py_ssize_t n, const unsigned char *b, Py_ssize_t m)
{
    Py_ssize_t k = 0;
#if defined(__SSE2__)
    while (n - k >= 16 && m - k >= 16) {
        unsigned equal = (unsigned)_mm_movemask_epi8(
            _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(a + k)),
                           _mm_loadu_si128((const __m128i *)(b + k))));
        if (equal != 0xFFFF)
            return k + __builtin_ctz(~equal); /* (bit i: byte i) */
        k += 16;
    }
#endif
    while (n - k >= 8 && m - k >= 8) {
        uint64_t differ = word(a + k) ^ word(b + k);
        if (differ != 0) {
#if WORDS_LITTLE_ENDIAN
            return k + (__builtin_ctzll(differ) >> 3); /* (the first byte is the lowest) */
#else
            break;
#endif
        }
        k += 8;
    }
#if WORDS_LITTLE_ENDIAN
    /* The last bytes before the shorter one ends: one word reaching back over equal ones. */
    Py_ssize_t end = n < m ? n : m;
    if (k < end && end >= 8) {
        uint64_t differ = word(a + end - 8) ^ word(b + end - 8);
        return differ == 0 ? end : end - 8 + (__builtin_ctzll(differ) >> 3);
    }
#endif
    while (k < n && k < m && a[k] == b[k])
        k++;
    return k;
}

/* 0x80 in each byte of `w` that is an ASCII digit, 0 in the others: exact per byte (the low
 * 7 bits plus 0x50 reach 0x80 from '0' on, plus 0x46 from ':' on, and neither carries into
 * the next byte; a byte with its high bit set is no digit). */
static uint64_t
digit_bytes(uint64_t w)
{
    uint64_t low = w & 0x7f7f7f7f7f7f7f7fULL;
    return (low + 0x5050505050505050ULL) & ~(low + 0x4646464646464646ULL) & ~w &
           0x8080808080808080ULL;
}

/* How many runs of digits start in a[from:to] (a run starts at a digit not preceded by one). */
static Py_ssize_t
run_starts(const unsigned char *a, Py_ssize_t from, Py_ssize_t to)
{
    Py_ssize_t count = 0, p = from;
    int before = from > 0 && is_digit(a[from - 1]);
#if WORDS_LITTLE_ENDIAN
    while (to - p >= 8) {
        uint64_t digits = digit_bytes(word(a + p));
        /* A digit whose byte before (the word's bytes go up from its first) is none. */
        uint64_t starts = digits & ~(digits << 8 | (before ? 0x80 : 0));
        for (; starts; starts &= starts - 1) /* (few: no call to a generic popcount) */
            count++;
        before = (digits >> 63) != 0;
        p += 8;
    }
#endif
    for (; p < to; p++) {
        int digit = is_digit(a[p]);
        count += digit && !before;
        before = digit;
    }
    return count;
}

/* The length a message at `m` declares (its 4 bytes after the kind, big-endian, unsigned: a
 * length over 2**31 is over any limit, as it is negative signed). */
static long long
message_length(const unsigned char *m)
{
    return (long long)m[1] << 24 | m[2] << 16 | m[3] << 8 | m[4];
}

/* Frames(limit, shortest): called with a chunk, its frames or None. A callable object (with
 * the vectorcall protocol: no argument tuple), so the limit and table are converted once. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    long long limit;
    unsigned char shortest[256];
    PyObject *last; /* the bytes last returned, written again when only this holds it */
} Frames;

static PyObject *
frames_scan(Frames *self, PyObject *chunk)
{
    if (!bytes_arg(chunk, "Frames", "data"))
        return NULL;
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(chunk);
    Py_ssize_t n = PyBytes_GET_SIZE(chunk);

    Py_ssize_t count = 0, pos = 0;
    while (pos < n) {
        if (n - pos < 5)
            Py_RETURN_NONE;
        const unsigned char *m = data + pos;
        long long length = message_length(m);
        unsigned char least = self->shortest[m[0]];
        if (least == 0 || length < 4 || length > self->limit || 1 + length < least)
            Py_RETURN_NONE;
        pos += 1 + length;
        count++;
    }
    if (pos != n)
        Py_RETURN_NONE;

    /* A relay asks once per chunk and drops the answer before the next chunk: the bytes it
     * got last time are then referenced by this object only, and are filled again instead of
     * allocating new ones (as _PyBytes_Resize may change a bytes object nobody else holds). */
    PyObject *out = self->last;
    if (out != NULL && Py_REFCNT(out) == 1 && PyBytes_GET_SIZE(out) == 2 * count) {
        Py_INCREF(out);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        ((PyBytesObject *)out)->ob_shash = -1; /* (its cached hash, should it have one) */
#pragma GCC diagnostic pop
    }
    else {
        out = PyBytes_FromStringAndSize(NULL, 2 * count);
        if (out == NULL)
            return NULL;
        Py_INCREF(out);
        Py_XSETREF(self->last, out);
    }
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    for (pos = 0; pos < n; o += 2) {
        const unsigned char *m = data + pos;
        long long length = message_length(m);
        o[0] = m[0];
        o[1] = length > 4 ? m[5] : 0;
        pos += 1 + length;
    }
    return out;
}

static PyObject *
Frames_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "Frames takes one argument, the chunk");
        return NULL;
    }
    return frames_scan((Frames *)self, args[0]);
}

static PyObject *
Frames_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    long long limit;
    PyObject *shortest;
    static char *keywords[] = {"limit", "shortest", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "LO!:Frames", keywords, &limit, &PyBytes_Type,
                                     &shortest))
        return NULL;
    if (PyBytes_GET_SIZE(shortest) != 256) {
        PyErr_SetString(PyExc_ValueError, "Frames() argument 'shortest' must be 256 bytes");
        return NULL;
    }
    Frames *self = (Frames *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = Frames_vectorcall;
    self->last = NULL;
    self->limit = limit;
    memcpy(self->shortest, PyBytes_AS_STRING(shortest), 256);
    return (PyObject *)self;
}

static void
Frames_dealloc(Frames *self)
{
    Py_CLEAR(self->last);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject FramesType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "proxyworker._scan.Frames",
    .tp_doc = "Frames(limit, shortest)(data) -> bytes | None (see proxyworker/scan.py).",
    .tp_basicsize = sizeof(Frames),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = Frames_new,
    .tp_dealloc = (destructor)Frames_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Frames, vectorcall),
};

#if WORDS_LITTLE_ENDIAN
/* The 8 bytes of `text` (of `n`, at least 8) from `pos` (below `n`) on, as a word: those past
 * its end read as 0, which is no digit (the last word of the text, shifted). */
static inline uint64_t
word_from(const unsigned char *text, Py_ssize_t pos, Py_ssize_t n)
{
    if (n - pos >= 8)
        return word(text + pos);
    return word(text + n - 8) >> (8 * (8 - (n - pos)));
}
#endif

/* The runs of digits at a[*i] and b[*j], when each ends within the word read from its start:
 * compared in a few steps (`*unequal`), `*i` and `*j` moved past them, and 1 returned; 0, with
 * nothing done, otherwise (a run of 8 digits or more, a text shorter than a word). */
static inline int
short_runs(const unsigned char *a, Py_ssize_t n, const unsigned char *b, Py_ssize_t m,
           Py_ssize_t *i, Py_ssize_t *j, int *unequal)
{
#if WORDS_LITTLE_ENDIAN
    if (n < 8 || m < 8)
        return 0;
    uint64_t wa = word_from(a, *i, n), wb = word_from(b, *j, m);
    uint64_t a_others = ~digit_bytes(wa) & 0x8080808080808080ULL;
    uint64_t b_others = ~digit_bytes(wb) & 0x8080808080808080ULL;
    if (a_others == 0 || b_others == 0)
        return 0;
    int a_len = __builtin_ctzll(a_others) >> 3, b_len = __builtin_ctzll(b_others) >> 3;
    uint64_t run = (1ULL << (8 * a_len)) - 1; /* (a_len is 1 to 7: a[*i] is a digit) */
    *unequal = a_len != b_len || ((wa ^ wb) & run) != 0;
    *i += a_len;
    *j += b_len;
    return 1;
#else
    return 0;
#endif
}

#if defined(__SSE2__)
/* Bit i set when byte i of `v` is an ASCII digit (compared as signed bytes: one with its high
 * bit set is below '0', no digit). */
static inline unsigned
digit_lanes(__m128i v)
{
    __m128i from = _mm_cmpgt_epi8(v, _mm_set1_epi8('0' - 1));
    __m128i to = _mm_cmplt_epi8(v, _mm_set1_epi8('9' + 1));
    return (unsigned)_mm_movemask_epi8(_mm_and_si128(from, to));
}
#endif

/* 0x80 in each byte of `w` that is not 0, 0 in the others. */
static uint64_t
nonzero_bytes(uint64_t w)
{
    return (((w & 0x7f7f7f7f7f7f7f7fULL) + 0x7f7f7f7f7f7f7f7fULL) | w) & 0x8080808080808080ULL;
}

/* Texts of one length: 1 when every byte at which they differ is a digit in both (their runs
 * of digits then lie alike, the bytes between them are equal: one shape), with `*differs`
 * telling whether any byte does; 0 otherwise, when only the run-by-run comparison can tell. */
static int
same_places(const unsigned char *a, const unsigned char *b, Py_ssize_t n, int *differs)
{
#if defined(__SSE2__)
    if (n >= 16) {
        /* 16 bytes at a time, the last 16 reaching back over bytes already compared; a byte
         * that differs and is not a digit in both ends it (then only runs can tell). */
        unsigned differ16 = 0;
        for (Py_ssize_t k = 0;; k += 16) {
            if (k > n - 16)
                k = n - 16;
            __m128i va = _mm_loadu_si128((const __m128i *)(a + k));
            __m128i vb = _mm_loadu_si128((const __m128i *)(b + k));
            unsigned d = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(va, vb)) ^ 0xFFFFu;
            if (d != 0) {
                if ((d & ~(digit_lanes(va) & digit_lanes(vb))) != 0)
                    return 0;
                differ16 |= d;
            }
            if (k == n - 16)
                break;
        }
        *differs = differ16 != 0;
        return 1;
    }
#endif
    uint64_t others = 0, differ = 0;
#if WORDS_LITTLE_ENDIAN
    if (n >= 8) {
        /* A word at a time, the last one reaching back over bytes already compared. */
        for (Py_ssize_t k = 0;; k += 8) {
            if (k > n - 8)
                k = n - 8;
            uint64_t wa = word(a + k), wb = word(b + k);
            if (wa != wb) { /* (few words differ: only they are looked at byte by byte) */
                uint64_t d = nonzero_bytes(wa ^ wb);
                differ |= d;
                others |= d & ~(digit_bytes(wa) & digit_bytes(wb));
            }
            if (k == n - 8)
                break;
        }
        *differs = differ != 0;
        return others == 0;
    }
#endif
    for (Py_ssize_t k = 0; k < n; k++) {
        if (a[k] != b[k]) {
            differ = 1;
            others |= !(is_digit(a[k]) && is_digit(b[k]));
        }
    }
    *differs = differ != 0;
    return others == 0;
}

/* same_shape's answer when the texts are of one shape: FIXED_DIFFERS (0), SAME_SHAPE (1) or
 * SAME_TEXT (2) of scan.py. */
static int
shape_answer(int fixed_differs, int differs)
{
    return fixed_differs ? 0 : differs ? 1 : 2;
}

/* How a[0:n] compares with b[0:m], run of digits by run of digits: same_shape's answer, from
 * OTHER_SHAPE (-1) to SAME_TEXT (2) as scan.py numbers them. `fixed` (of `fixed_len`) marks
 * b's fixed runs; `all_fixed`: every run is. */
static int
compare_shape(const unsigned char *a, Py_ssize_t n, const unsigned char *b, Py_ssize_t m,
              const unsigned char *fixed, Py_ssize_t fixed_len, int all_fixed)
{
    /* Runs are told apart by their index only when some are fixed and some not: then the
     * runs before an unequal one are counted, when one is met (`counted` bytes of `a` so far:
     * equal texts count none). */
    int count_runs = fixed_len > 0;
    int differs = 0, fixed_differs = 0;
    /* Texts of one length differing at digits alone (a session's statement with other
     * values of as many digits) need no run found: unless only some runs are fixed (then
     * which runs differ is found below). */
    if (n == m && same_places(a, b, n, &differs)) {
        if (!differs || !count_runs) /* (all_fixed counts no runs: every one is fixed) */
            return shape_answer(differs && all_fixed, differs);
        differs = 0;
    }

    Py_ssize_t i = 0, j = 0, runs = 0, counted = 0;
    for (;;) {
        Py_ssize_t from = i, k = equal_prefix(a + i, n - i, b + j, m - j);
        i += k;
        j += k;
        /* Back to the start of a run the skip ended in (the bytes skipped are equal). */
        while (i > from && is_digit(a[i - 1])) {
            i--;
            j--;
        }
        if (i == n || j == m)
            break;
        unsigned char x = a[i], y = b[j];
        if (!is_digit(x) || !is_digit(y))
            return -1; /* (the equal bytes were skipped: x and y differ) */
        if (count_runs) {
            runs += run_starts(a, counted, i);
            counted = i;
        }
        int unequal;
        if (!short_runs(a, n, b, m, &i, &j, &unequal)) {
            /* The two runs, side by side while their digits are equal: they are equal runs
             * when neither goes on where that stops. */
            while (i < n && j < m && a[i] == b[j] && is_digit(a[i])) {
                i++;
                j++;
            }
            unequal = (i < n && is_digit(a[i])) || (j < m && is_digit(b[j]));
            while (i < n && is_digit(a[i]))
                i++;
            while (j < m && is_digit(b[j]))
                j++;
        }
        if (unequal) {
            if (all_fixed || (runs < fixed_len && fixed[runs]))
                fixed_differs = 1;
            else
                differs = 1;
        }
        runs++;
        counted = i;
    }
    if (i != n || j != m)
        return -1;
    return shape_answer(fixed_differs, differs);
}

/* A text's compared bounds (`start`, `end` as Python ints) within its `n` bytes, or -1 with
 * the error set. */
static int
text_bounds(const char *function, PyObject *start_arg, PyObject *end_arg, Py_ssize_t n,
            Py_ssize_t *start, Py_ssize_t *end)
{
    *start = PyLong_AsSsize_t(start_arg);
    *end = PyLong_AsSsize_t(end_arg);
    if ((*start == -1 || *end == -1) && PyErr_Occurred())
        return -1;
    if (*start < 0 || *start > *end || *end > n) {
        PyErr_Format(PyExc_ValueError, "%s(): %zd:%zd is not within %zd bytes", function,
                     *start, *end, n);
        return -1;
    }
    return 0;
}

/* compare_shape of a[0:n] with the bytes `reference`, whose fixed runs are the bytes `fixed`
 * (NULL: every run is). */
static int
compare_with(const unsigned char *a, Py_ssize_t n, PyObject *reference, PyObject *fixed)
{
    return compare_shape(a, n, (const unsigned char *)PyBytes_AS_STRING(reference),
                         PyBytes_GET_SIZE(reference),
                         fixed ? (const unsigned char *)PyBytes_AS_STRING(fixed) : NULL,
                         fixed ? PyBytes_GET_SIZE(fixed) : 0, fixed == NULL);
}

/* same_shape(raw, reference, fixed[, start, end]) -> int: raw[start:end] compared */
static PyObject *
scan_same_shape(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    static const char *const names[] = {"raw", "reference", "fixed"};
    if (nargs != 3 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "same_shape() takes 3 or 5 arguments");
        return NULL;
    }
    if (!bytes_args("same_shape", args, 3, 3, 2, names))
        return NULL;
    PyObject *fixed = args[2];
    if (fixed != Py_None && !bytes_arg(fixed, "same_shape", "fixed"))
        return NULL;
    const unsigned char *a = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    if (nargs == 5) {
        Py_ssize_t start, end;
        if (text_bounds("same_shape", args[3], args[4], n, &start, &end) < 0)
            return NULL;
        a += start;
        n = end - start;
    }
    return PyLong_FromLong(compare_with(a, n, args[1], fixed == Py_None ? NULL : fixed));
}

/* shape_hash(raw) -> int: the arithmetic is scan.py's shape_hash_py, to the bit. */
#define HASH_START 0xcbf29ce484222325ULL
#define HASH_PRIME 0x9e3779b97f4a7c15ULL
#define SEGMENT_END (1ULL << 63)

static uint64_t
mix(uint64_t h, uint64_t w)
{
    h = (h ^ w) * HASH_PRIME;
    return h ^ (h >> 29);
}

static uint64_t
hash_shape(const unsigned char *a, Py_ssize_t n)
{
    uint64_t h = HASH_START;
    Py_ssize_t i = 0;
    for (;;) {
        /* A segment: the bytes up to the next run of digits (or the end), as little-endian
         * words, the last one padded with zeros, then its length. */
        Py_ssize_t start = i;
        while (n - i >= 8 && !digit_bytes(word(a + i))) {
            h = mix(h, word(a + i));
            i += 8;
        }
        uint64_t w = 0;
        int k = 0;
        while (i < n && !is_digit(a[i])) {
            w |= (uint64_t)a[i++] << (8 * k);
            if (++k == 8) {
                h = mix(h, w);
                w = 0;
                k = 0;
            }
        }
        if (k)
            h = mix(h, w);
        h = mix(h, SEGMENT_END | (uint64_t)(i - start));
        if (i == n)
            break;
        while (i < n && is_digit(a[i])) /* the run: only that it is there */
            i++;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    return h ^ (h >> 33);
}

static PyObject *
scan_shape_hash(PyObject *module, PyObject *raw)
{
    if (!bytes_arg(raw, "shape_hash", "raw"))
        return NULL;
    return PyLong_FromUnsignedLongLong(
        hash_shape((const unsigned char *)PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw)));
}

/* contains_any(data, chars) -> bool */
static PyObject *
scan_contains_any(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    static const char *const names[] = {"data", "chars"};
    if (!bytes_args("contains_any", args, nargs, 2, 2, names))
        return NULL;
    const char *data = PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    const unsigned char *chars = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    for (Py_ssize_t i = 0; i < PyBytes_GET_SIZE(args[1]); i++) {
        if (memchr(data, chars[i], n) != NULL)
            Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

/* ShapeCache(maxsize): scan.py's ShapeCachePy (which documents it), in C: a lookup is one
 * call, the text compared where it lies and its key made without copying it. */

#define RECENT 64            /* _RECENT */
#define MAX_SHAPED_TEXT 8192 /* MAX_SHAPED_TEXT */
#define SAME_SHAPE 1
#define SAME_TEXT 2

typedef struct Entry {
    PyObject *value;     /* for the text stored */
    PyObject *elsewhere; /* for other texts of its shape */
    PyObject *reference; /* the text stored (bytes) */
    PyObject *fixed;     /* its fixed runs (bytes), or NULL: only that text */
    struct Entry *next;  /* found after it, the last time one was (not owned) */
    uint64_t key;
    int live;
} Entry;

typedef struct {
    PyObject_HEAD
    Entry **slots; /* open addressing by key, linear probing; NULL: free */
    Py_ssize_t capacity, keys;
    Entry **stored; /* every entry stored since the last clear, which frees them */
    Py_ssize_t n_stored, stored_capacity, maxsize;
    Entry *recent[RECENT];
    Entry *last;
    PyObject *last_raw; /* owned: an identity compared, so it must not be freed and reused */
    char own;
} ShapeCache;

static Entry **
slot_of(ShapeCache *self, uint64_t key)
{
    size_t mask = (size_t)self->capacity - 1, at = (size_t)key & mask;
    while (self->slots[at] != NULL && self->slots[at]->key != key)
        at = (at + 1) & mask;
    return &self->slots[at];
}

static Entry *
entry_of(ShapeCache *self, uint64_t key)
{
    return self->capacity ? *slot_of(self, key) : NULL;
}

/* Forget the keys and what was found for each length (the entries stay stored). */
static void
forget_keys(ShapeCache *self)
{
    if (self->capacity)
        memset(self->slots, 0, sizeof(Entry *) * (size_t)self->capacity);
    self->keys = 0;
    memset(self->recent, 0, sizeof self->recent);
}

/* Forget what was found last and for each length. */
static void
forget_order(ShapeCache *self)
{
    memset(self->recent, 0, sizeof self->recent);
    self->last = NULL;
    Py_CLEAR(self->last_raw);
}

/* Forget every entry: the cache is empty before any value is released (a value's release may
 * run code that uses the cache). */
static void
cache_clear(ShapeCache *self)
{
    Entry **stored = self->stored;
    Py_ssize_t n = self->n_stored;
    self->stored = NULL;
    self->n_stored = self->stored_capacity = 0;
    forget_keys(self);
    forget_order(self);
    for (Py_ssize_t i = 0; i < n; i++) {
        Entry *e = stored[i];
        Py_DECREF(e->value);
        Py_DECREF(e->elsewhere);
        Py_DECREF(e->reference);
        Py_XDECREF(e->fixed);
        PyMem_Free(e);
    }
    PyMem_Free(stored);
}

static PyObject *
ShapeCache_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"maxsize", NULL};
    Py_ssize_t maxsize;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "n:ShapeCache", names, &maxsize))
        return NULL;
    if (maxsize < 1) {
        PyErr_SetString(PyExc_ValueError, "ShapeCache() argument 'maxsize' must be at least 1");
        return NULL;
    }
    ShapeCache *self = (ShapeCache *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->maxsize = maxsize;
    return (PyObject *)self;
}

static int
ShapeCache_traverse(ShapeCache *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < self->n_stored; i++) {
        Py_VISIT(self->stored[i]->value);
        Py_VISIT(self->stored[i]->elsewhere);
    }
    return 0;
}

static int
ShapeCache_tp_clear(ShapeCache *self)
{
    cache_clear(self);
    return 0;
}

static void
ShapeCache_dealloc(ShapeCache *self)
{
    PyObject_GC_UnTrack(self);
    cache_clear(self);
    PyMem_Free(self->slots);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static void
follows(ShapeCache *self, Entry *e)
{
    if (self->last != NULL)
        self->last->next = e;
    self->last = e;
}

/* What a lookup returns for a text that compared with `e`'s as `match` (`raw`: the text, when
 * it is an object of its own, else NULL). */
static PyObject *
found(ShapeCache *self, Entry *e, int match, PyObject *raw)
{
    if (match < SAME_SHAPE)
        Py_RETURN_NONE;
    self->own = match == SAME_TEXT;
    follows(self, e);
    Py_XINCREF(raw);
    Py_XSETREF(self->last_raw, raw);
    return Py_NewRef(self->own ? e->value : e->elsewhere);
}

static int
compare_entry(const unsigned char *a, Py_ssize_t n, Entry *e)
{
    return compare_with(a, n, e->reference, e->fixed);
}

static PyObject *
cache_find(ShapeCache *self, PyObject *data, Py_ssize_t start, Py_ssize_t end)
{
    const unsigned char *a = (const unsigned char *)PyBytes_AS_STRING(data) + start;
    Py_ssize_t n = end - start;
    PyObject *whole = start == 0 && end == PyBytes_GET_SIZE(data) ? data : NULL;
    Entry *last = self->last, *e;
    int match;
    if (last != NULL) {
        /* (Storing or clearing forgets last_raw: `last` is live when it is set.) */
        if (whole != NULL && whole == self->last_raw) {
            last->next = last; /* (as if found by comparing: follows) */
            return Py_NewRef(self->own ? last->value : last->elsewhere);
        }
        e = last->next;
        if (e != NULL && e->live && (match = compare_entry(a, n, e)) != -1)
            return found(self, e, match, whole);
    }
    Entry **recent = &self->recent[n % RECENT];
    e = *recent;
    if (e != NULL && e->live && (match = compare_entry(a, n, e)) != -1)
        return found(self, e, match, whole);
    if (n > MAX_SHAPED_TEXT || (e = entry_of(self, hash_shape(a, n))) == NULL)
        Py_RETURN_NONE;
    *recent = e;
    return found(self, e, compare_entry(a, n, e), whole);
}

/* find_in(data, start, end) */
static PyObject *
ShapeCache_find_in(ShapeCache *self, PyObject *const *args, Py_ssize_t nargs)
{
    static const char *const names[] = {"data"};
    if (!bytes_args("find_in", args, nargs, 3, 1, names))
        return NULL;
    Py_ssize_t start, end;
    if (text_bounds("find_in", args[1], args[2], PyBytes_GET_SIZE(args[0]), &start, &end) < 0)
        return NULL;
    return cache_find(self, args[0], start, end);
}

/* find_query(data): the value for the text of the Query message `data` starts with (up to
 * the NUL that ends it), as find_in with the bounds its length gives. */
static PyObject *
ShapeCache_find_query(ShapeCache *self, PyObject *data)
{
    if (!bytes_arg(data, "find_query", "data"))
        return NULL;
    const unsigned char *m = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    long long length = n < 6 ? 0 : message_length(m);
    if (m[0] != 'Q' || length < 5 || length >= n || m[length] != 0) {
        PyErr_SetString(PyExc_ValueError,
                        "find_query(): data does not start with a whole Query message");
        return NULL;
    }
    return cache_find(self, data, 5, (Py_ssize_t)length);
}

static PyObject *
ShapeCache_find(ShapeCache *self, PyObject *raw)
{
    if (!bytes_arg(raw, "find", "raw"))
        return NULL;
    return cache_find(self, raw, 0, PyBytes_GET_SIZE(raw));
}

static PyObject *
ShapeCache_get(ShapeCache *self, PyObject *raw)
{
    PyObject *value = ShapeCache_find(self, raw);
    if (value == NULL || value == Py_None)
        return value;
    return Py_BuildValue("(NO)", value, self->own ? Py_True : Py_False);
}

/* The entry stored under `key`, replacing the one there (which is never found again). */
static int
cache_store(ShapeCache *self, uint64_t key, PyObject *raw, PyObject *value, PyObject *fixed,
            PyObject *elsewhere)
{
    if (self->n_stored >= self->maxsize)
        cache_clear(self);
    if (self->keys * 2 >= self->capacity) { /* (at most half full: probes stay short) */
        Py_ssize_t capacity = self->capacity ? self->capacity * 2 : 16;
        Entry **slots = PyMem_Calloc((size_t)capacity, sizeof(Entry *));
        if (slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        Entry **old = self->slots;
        Py_ssize_t old_capacity = self->capacity;
        self->slots = slots;
        self->capacity = capacity;
        for (Py_ssize_t i = 0; i < old_capacity; i++) {
            if (old[i] != NULL)
                *slot_of(self, old[i]->key) = old[i];
        }
        PyMem_Free(old);
    }
    if (self->n_stored == self->stored_capacity) {
        Py_ssize_t capacity = self->stored_capacity ? self->stored_capacity * 2 : 16;
        Entry **stored = PyMem_Realloc(self->stored, sizeof(Entry *) * (size_t)capacity);
        if (stored == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->stored = stored;
        self->stored_capacity = capacity;
    }
    Entry *e = PyMem_Malloc(sizeof(Entry));
    if (e == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    e->value = Py_NewRef(value);
    e->elsewhere = Py_NewRef(elsewhere);
    e->reference = Py_NewRef(raw);
    e->fixed = fixed == Py_None ? NULL : Py_NewRef(fixed);
    e->next = NULL;
    e->key = key;
    e->live = 1;
    self->stored[self->n_stored++] = e;
    Entry **slot = slot_of(self, key);
    if (*slot != NULL) {
        (*slot)->live = 0;
        (*slot)->next = NULL;
    }
    else
        self->keys++;
    *slot = e;
    self->recent[PyBytes_GET_SIZE(raw) % RECENT] = e;
    follows(self, e); /* (stored after a lookup missed it: as if found) */
    Py_CLEAR(self->last_raw);
    return 0;
}

/* put(raw, value, fixed[, elsewhere]) and _put_under(key, raw, value, fixed[, elsewhere]) */
static PyObject *
put_args(ShapeCache *self, const char *function, int keyed, PyObject *const *args,
         Py_ssize_t nargs)
{
    if (nargs < 3 + keyed || nargs > 4 + keyed) {
        PyErr_Format(PyExc_TypeError, "%s() takes %d or %d arguments", function, 3 + keyed,
                     4 + keyed);
        return NULL;
    }
    PyObject *raw = args[keyed], *value = args[keyed + 1], *fixed = args[keyed + 2];
    PyObject *elsewhere = nargs > 3 + keyed ? args[keyed + 3] : Py_None;
    if (elsewhere == Py_None)
        elsewhere = value;
    if (!bytes_arg(raw, function, "raw") ||
        (fixed != Py_None && !bytes_arg(fixed, function, "fixed")))
        return NULL;
    if (value == Py_None) {
        PyErr_Format(PyExc_ValueError, "%s(): a value may not be None", function);
        return NULL;
    }
    if (PyBytes_GET_SIZE(raw) > MAX_SHAPED_TEXT)
        Py_RETURN_NONE;
    uint64_t key;
    if (keyed) {
        key = PyLong_AsUnsignedLongLong(args[0]);
        if (key == (uint64_t)-1 && PyErr_Occurred())
            return NULL;
    }
    else
        key = hash_shape((const unsigned char *)PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw));
    if (cache_store(self, key, raw, value, fixed, elsewhere) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
ShapeCache_put(ShapeCache *self, PyObject *const *args, Py_ssize_t nargs)
{
    return put_args(self, "put", 0, args, nargs);
}

static PyObject *
ShapeCache_put_under(ShapeCache *self, PyObject *const *args, Py_ssize_t nargs)
{
    return put_args(self, "_put_under", 1, args, nargs);
}

static PyObject *
ShapeCache_clear(ShapeCache *self, PyObject *unused)
{
    cache_clear(self);
    Py_RETURN_NONE;
}

static PyObject *
ShapeCache_forget_order(ShapeCache *self, PyObject *unused)
{
    forget_order(self);
    Py_RETURN_NONE;
}

static PyObject *
ShapeCache_forget_keys(ShapeCache *self, PyObject *unused)
{
    forget_keys(self);
    Py_RETURN_NONE;
}

static Py_ssize_t
ShapeCache_len(ShapeCache *self)
{
    return self->keys;
}

static PyMethodDef ShapeCache_methods[] = {
    {"find_in", (PyCFunction)(void (*)(void))ShapeCache_find_in, METH_FASTCALL,
     "find_in(data, start, end): the value for the text data[start:end], or None"},
    {"find_query", (PyCFunction)ShapeCache_find_query, METH_O,
     "find_query(data): the value for the text of the Query message data starts with"},
    {"find", (PyCFunction)ShapeCache_find, METH_O, "find(raw): the value for raw, or None"},
    {"get", (PyCFunction)ShapeCache_get, METH_O, "get(raw): (value, own), or None"},
    {"put", (PyCFunction)(void (*)(void))ShapeCache_put, METH_FASTCALL,
     "put(raw, value, fixed[, elsewhere])"},
    {"clear", (PyCFunction)ShapeCache_clear, METH_NOARGS, "clear(): forget every value"},
    {"_put_under", (PyCFunction)(void (*)(void))ShapeCache_put_under, METH_FASTCALL,
     "(for tests) put under the key given"},
    {"_forget_order", (PyCFunction)ShapeCache_forget_order, METH_NOARGS,
     "(for tests) forget what was found last and for each length"},
    {"_forget_keys", (PyCFunction)ShapeCache_forget_keys, METH_NOARGS,
     "(for tests) forget the keys and what was found for each length"},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef ShapeCache_members[] = {
    {"own", T_BOOL, offsetof(ShapeCache, own), READONLY,
     "after a lookup found a value: was it stored for that very text?"},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods ShapeCache_as_sequence = {
    .sq_length = (lenfunc)ShapeCache_len,
};

static PyTypeObject ShapeCacheType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "proxyworker._scan.ShapeCache",
    .tp_basicsize = sizeof(ShapeCache),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = ShapeCache_new,
    .tp_dealloc = (destructor)ShapeCache_dealloc,
    .tp_traverse = (traverseproc)ShapeCache_traverse,
    .tp_clear = (inquiry)ShapeCache_tp_clear,
    .tp_methods = ShapeCache_methods,
    .tp_members = ShapeCache_members,
    .tp_as_sequence = &ShapeCache_as_sequence,
};

static PyMethodDef methods[] = {
    {"same_shape", (PyCFunction)(void (*)(void))scan_same_shape, METH_FASTCALL,
     "same_shape(raw, reference, fixed[, start, end]) -> int"},
    {"shape_hash", (PyCFunction)scan_shape_hash, METH_O, "shape_hash(raw) -> int"},
    {"contains_any", (PyCFunction)(void (*)(void))scan_contains_any, METH_FASTCALL,
     "contains_any(data, chars) -> bool"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "proxyworker._scan",
    .m_doc = "Byte scans of the relay's hot path (proxyworker/scan.py documents them).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__scan(void)
{
    if (PyType_Ready(&FramesType) < 0 || PyType_Ready(&ShapeCacheType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Frames", (PyObject *)&FramesType) < 0 ||
        PyModule_AddObjectRef(m, "ShapeCache", (PyObject *)&ShapeCacheType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

/* Optional compiled helpers for the per-request observability work (see speedups.py).
 *
 * Small functions that the pure-Python code would otherwise spend most of the metrics + access-log cost on
 * (reading an answer's token usage, writing access-log records as JSON lines), checking answers are JSON, and
 * the in-process limiter's token-bucket steps. Each returns None for any
 * input it does not handle exactly, and the caller then takes the pure-Python path, which is the reference:
 * tests compare both on the same inputs, byte for byte.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* --- usage ------------------------------------------------------------------------------------------------ */

static const char USAGE_KEY[] = "\"usage\"";
static const char COMPACT_HEAD[] = "\"usage\":{\"prompt_tokens\":";
static const char COMPACT_MID[] = ",\"completion_tokens\":";

/* Reads 1 to 18 digits at *pos into *out; returns 0 if there are none or too many (the caller falls back). */
static int
read_digits(const char *s, Py_ssize_t n, Py_ssize_t *pos, long long *out)
{
    Py_ssize_t i = *pos;
    long long value = 0;
    int count = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        if (++count > 18) {
            return 0;
        }
        value = value * 10 + (s[i] - '0');
        i++;
    }
    if (count == 0) {
        return 0;
    }
    *pos = i;
    *out = value;
    return 1;
}

/* usage(body) -> (prompt, completion) | None: the answer's last "usage" object, when it is written the way
 * OpenAI and most servers write it (compact, prompt_tokens first). */
static PyObject *
usage(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyBytes_CheckExact(arg)) {
        Py_RETURN_NONE;
    }
    const char *s = PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    const Py_ssize_t key = sizeof(USAGE_KEY) - 1;
    Py_ssize_t at = n - key;
    /* The last occurrence: usage comes at the end of an answer, after its (possibly long) content. */
    for (; at >= 0; at--) {
        if (s[at] == '"' && memcmp(s + at, USAGE_KEY, key) == 0) {
            break;
        }
    }
    if (at < 0) {
        Py_RETURN_NONE;
    }
    const Py_ssize_t head = sizeof(COMPACT_HEAD) - 1, mid = sizeof(COMPACT_MID) - 1;
    if (n - at < head || memcmp(s + at, COMPACT_HEAD, head) != 0) {
        Py_RETURN_NONE;
    }
    Py_ssize_t pos = at + head;
    long long prompt, completion;
    if (!read_digits(s, n, &pos, &prompt)) {
        Py_RETURN_NONE;
    }
    if (n - pos < mid || memcmp(s + pos, COMPACT_MID, mid) != 0) {
        Py_RETURN_NONE;
    }
    pos += mid;
    if (!read_digits(s, n, &pos, &completion)) {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(LL)", prompt, completion);
}

/* --- JSON lines --------------------------------------------------------------------------------------------- */

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buffer;

static int
reserve(Buffer *b, Py_ssize_t more)
{
    if (b->len + more <= b->cap) {
        return 1;
    }
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return 0;
        }
        cap *= 2;
    }
    char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    b->data = data;
    b->cap = cap;
    return 1;
}

static int
put(Buffer *b, const char *s, Py_ssize_t n)
{
    if (!reserve(b, n)) {
        return 0;
    }
    memcpy(b->data + b->len, s, (size_t)n);
    b->len += n;
    return 1;
}

static const char HEX[] = "0123456789abcdef";

/* A JSON string, escaped as orjson escapes it: quote, backslash and control characters; UTF-8 left as is. */
static int
put_string(Buffer *b, PyObject *text)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    if (s == NULL) {
        PyErr_Clear(); /* lone surrogates: not valid UTF-8, the pure-Python path decides */
        return -1;
    }
    if (n > (PY_SSIZE_T_MAX - 2) / 6 || !reserve(b, n * 6 + 2)) {
        return 0;
    }
    char *out = b->data + b->len;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '\b': *out++ = 'b'; break;
        case '\f': *out++ = 'f'; break;
        case '\n': *out++ = 'n'; break;
        case '\r': *out++ = 'r'; break;
        case '\t': *out++ = 't'; break;
        default:
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = HEX[c >> 4];
            *out++ = HEX[c & 15];
        }
    }
    *out++ = '"';
    b->len = out - b->data;
    return 1;
}

/* The decimal digits of ``value`` at the end of ``end``'s buffer, written backwards; returns where they start.
 * (with snprintf instead, json_lines took three times as long: the access log writes nine numbers a line.) */
static char *
digits_before(char *end, unsigned long long value)
{
    do {
        *--end = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    return end;
}

static int
put_integer(Buffer *b, long long value)
{
    char text[24];
    char *end = text + sizeof text;
    unsigned long long magnitude = value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;
    char *start = digits_before(end, magnitude);
    if (value < 0) {
        *--start = '-';
    }
    return put(b, start, end - start);
}

/* floor(x * 1000) / 1000, written as the shortest decimal (as orjson writes that float: "0.293", "12.5",
 * "3.0"). Returns -1 for values orjson would write in exponent form (the pure-Python path then decides). */
static int
put_float3(Buffer *b, double x)
{
    if (!isfinite(x)) {
        return put(b, "null", 4);
    }
    double scaled = floor(x * 1000.0);
    if (fabs(scaled) >= 1e15) {
        return -1;
    }
    char text[40];
    char *p = text + 24; /* the integer part is written backwards before it, the fraction after it */
    int negative = signbit(scaled);
    unsigned long long k = (unsigned long long)(negative ? -scaled : scaled);
    char *start = digits_before(p, k / 1000);
    if (negative) {
        *--start = '-';
    }
    int frac = (int)(k % 1000);
    *p++ = '.';
    *p++ = (char)('0' + frac / 100);
    if (frac % 100) {
        *p++ = (char)('0' + frac / 10 % 10);
        if (frac % 10) {
            *p++ = (char)('0' + frac % 10);
        }
    }
    return put(b, start, p - start);
}

/* json_lines(keys, rows) -> bytes | None: one JSON object per row, {"key": value, ...}, each on its own line.
 * Values may be None, bool, int (64-bit), float (written floored to 3 decimals) or str; anything else, and
 * anything orjson would write differently, gives None. */
static PyObject *
json_lines(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *keys, *rows;
    if (!PyArg_ParseTuple(args, "O!O!:json_lines", &PyTuple_Type, &keys, &PyList_Type, &rows)) {
        return NULL;
    }
    Py_ssize_t width = PyTuple_GET_SIZE(keys);
    Buffer names = {NULL, 0, 0}; /* every key as '{"key":' / ',"key":', back to back */
    Py_ssize_t *starts = PyMem_Calloc((size_t)width + 1, sizeof(Py_ssize_t));
    Buffer out = {NULL, 0, 0};
    PyObject *result = NULL;
    int ok = starts != NULL;
    if (!ok) {
        PyErr_NoMemory();
    }
    for (Py_ssize_t k = 0; ok && k < width; k++) {
        PyObject *key = PyTuple_GET_ITEM(keys, k);
        starts[k] = names.len;
        ok = PyUnicode_CheckExact(key) && put(&names, k ? "," : "{", 1) && put_string(&names, key) == 1 &&
             put(&names, ":", 1);
    }
    if (ok) {
        starts[width] = names.len;
    }
    Py_ssize_t count = PyList_GET_SIZE(rows);
    /* Room for typical lines up front (growing the buffer copies it); batches are small, the guess bounded. */
    if (ok && count <= 4096 && width <= 256) {
        ok = reserve(&out, count * (names.len + 64 * width));
    }
    for (Py_ssize_t r = 0; ok && r < count; r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) != width) {
            ok = 0;
            break;
        }
        for (Py_ssize_t k = 0; ok && k < width; k++) {
            PyObject *v = PyTuple_GET_ITEM(row, k);
            if (!put(&out, names.data + starts[k], starts[k + 1] - starts[k])) {
                ok = 0;
            }
            else if (v == Py_None) {
                ok = put(&out, "null", 4);
            }
            else if (v == Py_True) {
                ok = put(&out, "true", 4);
            }
            else if (v == Py_False) {
                ok = put(&out, "false", 5);
            }
            else if (PyLong_CheckExact(v)) {
                int overflow;
                long long value = PyLong_AsLongLongAndOverflow(v, &overflow);
                ok = !overflow && !(value == -1 && PyErr_Occurred()) && put_integer(&out, value);
            }
            else if (PyFloat_CheckExact(v)) {
                ok = put_float3(&out, PyFloat_AS_DOUBLE(v)) == 1;
            }
            else if (PyUnicode_CheckExact(v)) {
                ok = put_string(&out, v) == 1;
            }
            else {
                ok = 0;
            }
        }
        ok = ok && put(&out, "}\n", 2);
    }
    if (ok) {
        result = PyBytes_FromStringAndSize(out.data ? out.data : "", out.len);
    }
    else if (!PyErr_Occurred() || !PyErr_ExceptionMatches(PyExc_MemoryError)) {
        PyErr_Clear(); /* something this path does not write: the pure-Python path will */
        result = Py_NewRef(Py_None);
    }
    PyMem_Free(out.data);
    PyMem_Free(names.data);
    PyMem_Free(starts);
    return result;
}

/* --- json_kind -------------------------------------------------------------------------------------------- */

/* What json_kind answers. UNKNOWN: something this scan does not decide exactly as orjson would (a number that
 * may not be a finite double, a top-level key written with escapes); the caller parses then. */
enum { KIND_UNKNOWN = -1, KIND_INVALID = 0, KIND_OTHER = 1, KIND_WITH_USAGE = 2, KIND_WITHOUT_USAGE = 3 };
/* orjson's limit: 1,024 nested arrays/objects parse, 1,025 do not. */
#define MAX_DEPTH 1024
#define IS_DIGIT(ch) ((unsigned)((ch) - '0') < 10u)
/* Eight bytes at a time, where the first byte of interest in a word can be found from a mask of them. */
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SWAR 1
#else
#define SWAR 0
#endif
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Every scan below runs on a bytes object's data, which CPython ends with a NUL: no valid JSON has a NUL
 * outside a string (and in one it is a control character, refused), so a loop over a byte class stops there
 * without a bounds check, and reading s[n] is safe. Each returns the position after what it read, or -1. */

static inline Py_ssize_t
skip_space(const unsigned char *s, Py_ssize_t i)
{
    while (s[i] <= ' ' && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) {
        i++;
    }
    return i;
}

static inline int
hex4(const unsigned char *s, unsigned *out)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned ch = s[k];
        v <<= 4;
        if (IS_DIGIT(ch)) {
            v |= ch - '0';
        }
        else if ((ch | 0x20) - 'a' < 6u) {
            v |= (ch | 0x20) - 'a' + 10;
        }
        else {
            return 0;
        }
    }
    *out = v;
    return 1;
}

/* One UTF-8 sequence at i (its first byte >= 0x80), by RFC 3629: no overlong forms, no surrogates, nothing
 * past U+10FFFF (orjson refuses each). */
static inline Py_ssize_t
utf8_sequence(const unsigned char *s, Py_ssize_t n, Py_ssize_t i)
{
    unsigned char b0 = s[i];
    Py_ssize_t left = n - i;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        return left >= 2 && (s[i + 1] & 0xC0) == 0x80 ? i + 2 : -1;
    }
    if (b0 >= 0xE0 && b0 <= 0xEF) {
        if (left < 3 || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 ||
            (b0 == 0xE0 && s[i + 1] < 0xA0) || (b0 == 0xED && s[i + 1] >= 0xA0)) {
            return -1; /* cut short, overlong, or a surrogate */
        }
        return i + 3;
    }
    if (b0 >= 0xF0 && b0 <= 0xF4) {
        if (left < 4 || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 || (s[i + 3] & 0xC0) != 0x80 ||
            (b0 == 0xF0 && s[i + 1] < 0x90) || (b0 == 0xF4 && s[i + 1] >= 0x90)) {
            return -1; /* cut short, overlong, or past U+10FFFF */
        }
        return i + 4;
    }
    return -1;
}

/* A string whose opening quote is at i; sets *escaped when it holds a backslash escape. */
static Py_ssize_t
scan_string(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, int *escaped)
{
    i++;
    for (;;) {
        /* Plain ASCII text, the usual case: skip to the first quote, backslash, control character or
         * non-ASCII byte. (A mask bit can be set wrongly only above a true one: the lowest is exact.) */
#if SWAR
        while (i + 8 <= n) {
            uint64_t v;
            memcpy(&v, s + i, 8);
            uint64_t quote = v ^ 0x2222222222222222ULL, slash = v ^ 0x5C5C5C5C5C5C5C5CULL;
            uint64_t special = (v | (v - 0x2020202020202020ULL) | ((quote - ONES) & ~quote) | ((slash - ONES) & ~slash)) & HIGHS;
            if (special) {
                i += __builtin_ctzll(special) >> 3;
                break;
            }
            i += 8;
        }
#endif
        while (s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\') {
            i++;
        }
        unsigned char ch = s[i];
        if (ch == '"') {
            return i + 1;
        }
        if (ch < 0x20) {
            return -1; /* a control character must be escaped; or the end of the data */
        }
        if (ch == '\\') {
            *escaped = 1;
            unsigned char e = s[i + 1];
            if (e == 'u') {
                unsigned unit, low;
                if (n - i < 6 || !hex4(s + i + 2, &unit) || (unit >= 0xDC00 && unit <= 0xDFFF)) {
                    return -1; /* a low surrogate alone */
                }
                i += 6;
                if (unit >= 0xD800 && unit <= 0xDBFF) {
                    /* a high surrogate: a low one must follow */
                    if (n - i < 6 || s[i] != '\\' || s[i + 1] != 'u' || !hex4(s + i + 2, &low) || low < 0xDC00 ||
                        low > 0xDFFF) {
                        return -1;
                    }
                    i += 6;
                }
            }
            else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
                i += 2;
            }
            else {
                return -1;
            }
            continue;
        }
        i = utf8_sequence(s, n, i);
        if (i < 0) {
            return -1;
        }
    }
}

/* Past a run of digits at i (embeddings are mostly 16-digit fractions). */
static inline Py_ssize_t
skip_digits(const unsigned char *s, Py_ssize_t n, Py_ssize_t i)
{
#if SWAR
    while (i + 8 <= n) {
        uint64_t v;
        memcpy(&v, s + i, 8);
        /* non-zero in each byte that is not '0'..'9' (a carry out of such a byte only reaches the ones above) */
        uint64_t other = ((v & 0xF0F0F0F0F0F0F0F0ULL) ^ 0x3030303030303030ULL) |
                         (((v + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) ^ 0x3030303030303030ULL);
        if (other) {
            return i + (__builtin_ctzll(other) >> 3);
        }
        i += 8;
    }
#else
    (void)n;
#endif
    while (IS_DIGIT(s[i])) {
        i++;
    }
    return i;
}

/* A number at i, by RFC 8259's grammar. Sets *unknown when it might overflow a double (orjson refuses those:
 * "number is infinity"), which takes more than 300 decimal orders of magnitude. */
static Py_ssize_t
scan_number(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, int *unknown)
{
    if (s[i] == '-') {
        i++;
    }
    Py_ssize_t digits = 0; /* integer digits after leading zeros: the order of magnitude before the exponent */
    if (s[i] == '0') {
        i++;
        if (IS_DIGIT(s[i])) {
            return -1; /* a leading zero */
        }
    }
    else if (IS_DIGIT(s[i])) {
        Py_ssize_t start = i;
        i = skip_digits(s, n, i);
        digits = i - start;
    }
    else {
        return -1;
    }
    if (s[i] == '.') {
        Py_ssize_t start = ++i;
        i = skip_digits(s, n, i);
        if (i == start) {
            return -1;
        }
    }
    if (s[i] == 'e' || s[i] == 'E') {
        i++;
        int negative = s[i] == '-';
        if (s[i] == '+' || s[i] == '-') {
            i++;
        }
        Py_ssize_t start = i;
        long exponent = 0;
        while (IS_DIGIT(s[i])) {
            if (exponent < 100000) {
                exponent = exponent * 10 + (s[i] - '0');
            }
            i++;
        }
        if (i == start) {
            return -1;
        }
        digits += negative ? -exponent : exponent;
    }
    if (digits > 300) {
        *unknown = 1;
    }
    return i;
}

static inline Py_ssize_t
scan_literal(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, const char *word, Py_ssize_t len)
{
    return n - i >= len && memcmp(s + i, word, (size_t)len) == 0 ? i + len : -1;
}

static int
classify(const unsigned char *s, Py_ssize_t n)
{
    unsigned char stack[MAX_DEPTH]; /* '{' or '[' for each open container; the closer is that + 2 in ASCII */
    int depth = 0, unknown = 0, top_object = 0, usage_object = 0, key_escaped = 0, at_usage = 0;
    Py_ssize_t i = skip_space(s, 0);
    for (;;) {
        /* a value at i */
        unsigned char ch = s[i];
        if (ch == '{' || ch == '[') {
            if (depth == MAX_DEPTH) {
                return KIND_INVALID;
            }
            if (depth == 0) {
                top_object = ch == '{';
            }
            if (at_usage) {
                usage_object = ch == '{';
                at_usage = 0;
            }
            stack[depth++] = ch;
            i = skip_space(s, i + 1);
            if (s[i] == ch + 2) {
                depth--;
                i++;
            }
            else if (ch == '{') {
                goto member;
            }
            else {
                continue; /* the array's first value */
            }
        }
        else {
            if (at_usage) {
                usage_object = 0;
                at_usage = 0;
            }
            if (ch == '"') {
                int escaped = 0;
                i = scan_string(s, n, i, &escaped);
            }
            else if (ch == 't') {
                i = scan_literal(s, n, i, "true", 4);
            }
            else if (ch == 'f') {
                i = scan_literal(s, n, i, "false", 5);
            }
            else if (ch == 'n') {
                i = scan_literal(s, n, i, "null", 4);
            }
            else {
                i = scan_number(s, n, i, &unknown);
            }
            if (i < 0) {
                return KIND_INVALID;
            }
        }
        /* after a value: the next one, or the end of its container(s), or of the document */
        for (;;) {
            i = skip_space(s, i);
            if (depth == 0) {
                if (i != n) {
                    return KIND_INVALID; /* content after the document */
                }
                if (unknown || (top_object && key_escaped)) {
                    return KIND_UNKNOWN;
                }
                return !top_object ? KIND_OTHER : usage_object ? KIND_WITH_USAGE : KIND_WITHOUT_USAGE;
            }
            unsigned char open = stack[depth - 1];
            ch = s[i];
            if (ch == ',') {
                i = skip_space(s, i + 1);
                if (open == '{') {
                    goto member;
                }
                if (IS_DIGIT(s[i]) || s[i] == '-') {
                    /* an array of numbers (an embedding): from one to the next without the value dispatch */
                    i = scan_number(s, n, i, &unknown);
                    if (i < 0) {
                        return KIND_INVALID;
                    }
                    continue;
                }
                break; /* any other value */
            }
            if (ch != open + 2) {
                return KIND_INVALID;
            }
            depth--;
            i++;
        }
        continue;
    member:
        /* "key" : (then the value, at the top of the loop) */
        if (s[i] != '"') {
            return KIND_INVALID; /* also a trailing comma */
        }
        {
            Py_ssize_t start = i;
            int escaped = 0;
            i = scan_string(s, n, i, &escaped);
            if (i < 0) {
                return KIND_INVALID;
            }
            if (depth == 1) {
                key_escaped |= escaped;
                at_usage = i - start == 7 && memcmp(s + start, "\"usage\"", 7) == 0;
            }
        }
        i = skip_space(s, i);
        if (s[i] != ':') {
            return KIND_INVALID;
        }
        i = skip_space(s, i + 1);
    }
}

/* json_kind(body) -> int: whether body is one JSON document exactly as orjson.loads would accept it, and
 * whether it is an object whose (last) top-level "usage" member is an object. Nothing is allocated: the
 * gateway checks every answer it passes through, and a full parse of a 1 MB answer costs a millisecond. */
static PyObject *
json_kind(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyBytes_CheckExact(arg)) {
        return PyLong_FromLong(KIND_UNKNOWN); /* the scan relies on the NUL that ends a bytes object's data */
    }
    return PyLong_FromLong(classify((const unsigned char *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg)));
}


/* --- token buckets -------------------------------------------------------------------------------------------- */

/* The in-process limiter's token-bucket steps (limits/memory.py, limits/algorithms.py TokenBucket), for all of one
 * request's buckets at once: the step every request of a gateway with limits runs, several times. Only the shape
 * the Python code leaves behind after a bucket's first step is handled - an existing entry of the same rule object
 * (entry.bucket names it), a state dict holding exact floats "tokens" and "at", exact amounts and bucket sizes - and every
 * item is checked before any state is touched, so None (take the Python path) never follows a partial step. The
 * arithmetic is the Python code's, operation for operation, so the floats come out bit for bit the same. */

#define MAX_BUCKETS 16

static PyObject *s_state, *s_bucket, *s_tokens, *s_at;

typedef struct {
    PyObject *state;        /* borrowed: the entry's state dict */
    PyObject *capacity_obj; /* borrowed: the size in entry.bucket */
    double cost, tokens, at, capacity, fill;
} Bucket;

/* The exact float in d[key], or -1 with no exception set if it is missing or not an exact float. */
static int
float_item(PyObject *d, PyObject *key, double *out)
{
    PyObject *v = PyDict_GetItemWithError(d, key);
    if (v == NULL || !PyFloat_CheckExact(v)) {
        return -1;
    }
    *out = PyFloat_AS_DOUBLE(v);
    return 0;
}

/* An item's amount as a double, exactly as Python's float arithmetic would take it: an exact float, or an exact
 * int small enough to convert without rounding (settle's corrections are ints). 0 if it is neither. */
static int
amount(PyObject *v, double *out)
{
    if (PyFloat_CheckExact(v)) {
        *out = PyFloat_AS_DOUBLE(v);
        return 1;
    }
    if (PyLong_CheckExact(v)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (!overflow && x > -(1LL << 53) && x < (1LL << 53)) {
            *out = (double)x;
            return 1;
        }
        PyErr_Clear();
    }
    return 0;
}

/* Reads an item (key, amount, rule) into b: 1 if the fast path can take it, 0 if not, -1 on an error. */
static int
load_bucket(PyObject *entries, PyObject *item, Bucket *b)
{
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 3 || !amount(PyTuple_GET_ITEM(item, 1), &b->cost)) {
        return 0;
    }
    PyObject *rule = PyTuple_GET_ITEM(item, 2);
    PyObject *entry = PyDict_GetItemWithError(entries, PyTuple_GET_ITEM(item, 0));
    if (entry == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    /* entry.bucket: (rule, capacity, fill) for a token bucket of float sizes, else None (memory.py) */
    int ok = 0;
    PyObject *bucket = PyObject_GetAttr(entry, s_bucket);
    PyObject *state = bucket == NULL ? NULL : PyObject_GetAttr(entry, s_state);
    if (state == NULL) {
        ok = -1;
    } else if (PyTuple_CheckExact(bucket) && PyTuple_GET_SIZE(bucket) == 3 && PyTuple_GET_ITEM(bucket, 0) == rule &&
               PyFloat_CheckExact(PyTuple_GET_ITEM(bucket, 1)) && PyFloat_CheckExact(PyTuple_GET_ITEM(bucket, 2)) &&
               PyDict_CheckExact(state) && float_item(state, s_tokens, &b->tokens) == 0 &&
               float_item(state, s_at, &b->at) == 0) {
        b->state = state; /* the entry holds a reference for as long as the call runs: no await in it */
        b->capacity_obj = PyTuple_GET_ITEM(bucket, 1);
        b->capacity = PyFloat_AS_DOUBLE(b->capacity_obj); /* rule.burst or rule.rate */
        b->fill = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(bucket, 2));     /* rule.rate / rule.period */
        ok = 1;
    }
    if (PyErr_Occurred() && ok != -1) {
        ok = -1;
    }
    Py_XDECREF(bucket);
    Py_XDECREF(state);
    return ok;
}

static int
set_float(PyObject *d, PyObject *key, double value)
{
    PyObject *v = PyFloat_FromDouble(value);
    if (v == NULL) {
        return -1;
    }
    int r = PyDict_SetItem(d, key, v);
    Py_DECREF(v);
    return r;
}

/* A Decision (a NamedTuple) as tuple.__new__(Decision, (...)) builds it. Like the Python step's, its limit is the
 * bucket's own size object and its zeros one shared 0.0: three of its five floats cost no allocation. */
static PyObject *zero;

static PyObject *
decision(PyTypeObject *type, int allowed, double remaining, PyObject *limit, double retry, double reset)
{
    PyObject *d = type->tp_alloc(type, 6);
    if (d == NULL) {
        return NULL;
    }
    PyTuple_SET_ITEM(d, 0, Py_NewRef(allowed ? Py_True : Py_False));
    PyTuple_SET_ITEM(d, 2, Py_NewRef(limit));
    PyTuple_SET_ITEM(d, 5, Py_NewRef(zero)); /* wait: a token bucket never holds a request */
    double values[3] = {remaining, retry, reset};
    int at[3] = {1, 3, 4};
    for (int i = 0; i < 3; i++) {
        PyObject *v = values[i] == 0.0 && !signbit(values[i]) ? Py_NewRef(zero) : PyFloat_FromDouble(values[i]);
        if (v == NULL) {
            for (int j = i; j < 3; j++) {
                PyTuple_SET_ITEM(d, at[j], Py_NewRef(zero)); /* a complete tuple, to be freed */
            }
            Py_DECREF(d);
            return NULL;
        }
        PyTuple_SET_ITEM(d, at[i], v);
    }
    return d;
}

/* Loads every item; 1 if all can take the fast path. A bucket named twice is left to Python, which steps it twice
 * in turn (the loaded copies would both start from the state before the first step). */
static int
load_all(PyObject *entries, PyObject *items, Bucket *buckets, Py_ssize_t *n, int skip_zero)
{
    *n = 0;
    if (!PyDict_CheckExact(entries) || !PyList_CheckExact(items) || PyList_GET_SIZE(items) > MAX_BUCKETS) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        int r = load_bucket(entries, item, &buckets[*n]);
        if (r != 1) {
            return r;
        }
        if (skip_zero && buckets[*n].cost == 0.0) {
            continue; /* adjust_all skips a zero correction (`if delta:`) */
        }
        for (Py_ssize_t j = 0; j < *n; j++) {
            if (buckets[j].state == buckets[*n].state) {
                return 0;
            }
        }
        (*n)++;
    }
    return 1;
}

/* TokenBucket.adjust on a loaded bucket: refill to now, then tokens = min(tokens - delta, capacity). */
static int
adjust_bucket(Bucket *b, double delta, double now, PyObject *now_obj)
{
    double elapsed = now - b->at;
    if (elapsed > 0) {
        if (PyDict_SetItem(b->state, s_at, now_obj) < 0) {
            return -1;
        }
    } else {
        elapsed = 0.0;
    }
    double tokens = b->tokens + elapsed * b->fill;
    if (tokens > b->capacity) {
        tokens = b->capacity;
    }
    tokens = tokens - delta;
    if (b->capacity < tokens) { /* min(tokens - delta, capacity) */
        tokens = b->capacity;
    }
    b->tokens = tokens;
    return set_float(b->state, s_tokens, tokens);
}

/* token_take_all(entries, items, now, Decision) -> (refusal, decisions) | None: MemoryBackend.take_all
 * for token buckets. */
static PyObject *
token_take_all(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4 || !PyFloat_CheckExact(args[2]) || !PyType_Check(args[3])) {
        Py_RETURN_NONE;
    }
    Bucket buckets[MAX_BUCKETS];
    Py_ssize_t n;
    int r = load_all(args[0], args[1], buckets, &n, 0);
    if (r != 1) {
        if (r < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PyObject *now_obj = args[2];
    double now = PyFloat_AS_DOUBLE(now_obj);
    PyTypeObject *type = (PyTypeObject *)args[3];
    PyObject *decisions = PyList_New(0);
    if (decisions == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Bucket *b = &buckets[i];
        double tokens;
        double elapsed = now - b->at;
        if (elapsed > 0) {
            if (PyDict_SetItem(b->state, s_at, now_obj) < 0) {
                goto error;
            }
            b->at = now;
            tokens = b->tokens + elapsed * b->fill;
            if (tokens > b->capacity) {
                tokens = b->capacity;
            }
        } else {
            tokens = b->tokens;
            if (tokens > b->capacity) {
                tokens = b->capacity;
            }
        }
        PyObject *d;
        if (tokens + 1e-9 >= b->cost) {
            tokens -= b->cost;
            b->tokens = tokens;
            if (set_float(b->state, s_tokens, tokens) < 0) {
                goto error;
            }
            d = decision(type, 1, tokens > 0.0 ? tokens : 0.0, b->capacity_obj, 0.0, (b->capacity - tokens) / b->fill);
            if (d == NULL || PyList_Append(decisions, d) < 0) {
                Py_XDECREF(d);
                goto error;
            }
            Py_DECREF(d);
            continue;
        }
        b->tokens = tokens;
        if (set_float(b->state, s_tokens, tokens) < 0) {
            goto error;
        }
        double retry = b->cost <= b->capacity ? (b->cost - tokens) / b->fill : Py_HUGE_VAL;
        d = decision(type, 0, 0.0 > tokens ? 0.0 : tokens, b->capacity_obj, retry, (b->capacity - tokens) / b->fill);
        if (d == NULL) {
            goto error;
        }
        /* Refused: give back what the earlier buckets gave (MemoryBackend.adjust_now with -cost). */
        for (Py_ssize_t j = 0; j < i; j++) {
            if (adjust_bucket(&buckets[j], -buckets[j].cost, now, now_obj) < 0) {
                Py_DECREF(d);
                goto error;
            }
        }
        if (PyList_Append(decisions, d) < 0) {
            Py_DECREF(d);
            goto error;
        }
        PyObject *result = PyTuple_Pack(2, d, decisions);
        Py_DECREF(d);
        Py_DECREF(decisions);
        return result;
    }
    PyObject *result = PyTuple_Pack(2, Py_None, decisions);
    Py_DECREF(decisions);
    return result;
error:
    Py_DECREF(decisions);
    return NULL;
}

/* token_adjust_all(entries, items, now) -> True | None: MemoryBackend.adjust_all for token buckets. */
static PyObject *
token_adjust_all(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3 || !PyFloat_CheckExact(args[2])) {
        Py_RETURN_NONE;
    }
    Bucket buckets[MAX_BUCKETS];
    Py_ssize_t n;
    int r = load_all(args[0], args[1], buckets, &n, 1);
    if (r != 1) {
        if (r < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        /* load_bucket kept the delta in cost */
        if (adjust_bucket(&buckets[i], buckets[i].cost, PyFloat_AS_DOUBLE(args[2]), args[2]) < 0) {
            return NULL;
        }
    }
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"usage", usage, METH_O, "usage(body) -> (prompt, completion) | None: a compact last usage object."},
    {"json_lines", json_lines, METH_VARARGS, "json_lines(keys, rows) -> bytes | None: rows as JSON lines."},
    {"json_kind", json_kind, METH_O, "json_kind(body) -> int: -1 unknown, 0 invalid, 1 other, 2/3 object with/without usage."},
    {"token_take_all", (PyCFunction)(void (*)(void))token_take_all, METH_FASTCALL,
     "token_take_all(entries, items, now, Decision) -> (refusal, decisions) | None."},
    {"token_adjust_all", (PyCFunction)(void (*)(void))token_adjust_all, METH_FASTCALL,
     "token_adjust_all(entries, items, now) -> True | None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "modelrouter._speedups",
    .m_doc = "Optional compiled helpers (see speedups.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    zero = PyFloat_FromDouble(0.0);
    if (zero == NULL) {
        return NULL;
    }
    static const char *names[] = {"state", "bucket", "tokens", "at"};
    PyObject **slots[] = {&s_state, &s_bucket, &s_tokens, &s_at};
    for (int i = 0; i < 4; i++) {
        *slots[i] = PyUnicode_InternFromString(names[i]);
        if (*slots[i] == NULL) {
            return NULL;
        }
    }
    return PyModule_Create(&module);
}

/* Optional compiled helpers for the per-request observability work (see speedups.py).
 *
 * Two small functions that the pure-Python code would otherwise spend most of the metrics + access-log cost on:
 * reading an answer's token usage, and writing access-log records as JSON lines. Each returns None for any
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

static PyMethodDef methods[] = {
    {"usage", usage, METH_O, "usage(body) -> (prompt, completion) | None: a compact last usage object."},
    {"json_lines", json_lines, METH_VARARGS, "json_lines(keys, rows) -> bytes | None: rows as JSON lines."},
    {"json_kind", json_kind, METH_O, "json_kind(body) -> int: -1 unknown, 0 invalid, 1 other, 2/3 object with/without usage."},
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
    return PyModule_Create(&module);
}

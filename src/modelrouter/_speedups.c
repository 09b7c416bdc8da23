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

static PyMethodDef methods[] = {
    {"usage", usage, METH_O, "usage(body) -> (prompt, completion) | None: a compact last usage object."},
    {"json_lines", json_lines, METH_VARARGS, "json_lines(keys, rows) -> bytes | None: rows as JSON lines."},
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

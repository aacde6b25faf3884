/* A native twin of evidence extraction's frame loop: check each frame's SHA-256 against the
   digest its manifest records and copy the intact ones, in order, into one bytes object.

   An extraction streams every frame of a clip out of the store's pack segments, re-hashes it
   (a store is a convenience, never a witness) and appends it to the clip's media. In Python
   that is a slice, a hashlib call, a comparison and a write per frame: ~6 us a frame on this
   project's machine, where the SHA-256 itself (OpenSSL, SHA extensions) takes ~1.7 us of a
   2 kB frame (docs/EVIDENCE.md, Performance). Here one call does a window of frames, with the
   GIL released while it hashes and copies.

   sha256_each is the verifier's side: the digest of each of many consecutive samples of one read.

   Pure function of its inputs, no state. Its own module (not _native.c) because it links
   OpenSSL's libcrypto: a machine without OpenSSL's headers still builds the Keccak loops.
   Optional like them; offchain.core.native.gather is None where it was not built and the
   Python loop runs. tests/unit/test_native_gather.py keeps both ways identical. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>

static const EVP_MD *SHA256_MD = NULL;

/* One place: which buffer, where in it, how long; buffer < 0 for a frame the store has not. */
typedef struct {
    Py_ssize_t buffer, offset, length;
} place_t;

/* The places, parsed and bounds-checked against the buffers; -1 with an exception set. */
static int read_places(PyObject *places, Py_buffer *views, Py_ssize_t nbuf, place_t *out, Py_ssize_t n,
                       Py_ssize_t *total) {
    *total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PySequence_Fast_GET_ITEM(places, i);
        if (p == Py_None) {
            out[i].buffer = -1;
            out[i].offset = out[i].length = 0;
            continue;
        }
        if (!PyTuple_Check(p) || PyTuple_GET_SIZE(p) != 3) {
            PyErr_Format(PyExc_TypeError, "place %zd is neither None nor a (buffer, offset, length) tuple", i);
            return -1;
        }
        Py_ssize_t b = PyLong_AsSsize_t(PyTuple_GET_ITEM(p, 0));
        Py_ssize_t off = PyLong_AsSsize_t(PyTuple_GET_ITEM(p, 1));
        Py_ssize_t len = PyLong_AsSsize_t(PyTuple_GET_ITEM(p, 2));
        if (PyErr_Occurred()) return -1;
        if (b < 0 || b >= nbuf || off < 0 || len < 0 || off > views[b].len || len > views[b].len - off) {
            PyErr_Format(PyExc_ValueError, "place %zd (%zd, %zd, %zd) lies outside its buffer", i, b, off, len);
            return -1;
        }
        out[i] = (place_t){b, off, len};
        *total += len;
    }
    return 0;
}

/* Hash and copy without the GIL; bad[i] = 1 for a missing frame or one whose hash differs.
   Returns the bytes written, or -1 if OpenSSL failed. */
static Py_ssize_t hash_and_copy(const place_t *places, Py_ssize_t n, const Py_buffer *views, const uint8_t *digests,
                                uint8_t *out, uint8_t *bad) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL) return -1;
    Py_ssize_t pos = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        if (places[i].buffer < 0) {
            bad[i] = 1;
            continue;
        }
        const uint8_t *src = (const uint8_t *)views[places[i].buffer].buf + places[i].offset;
        if (!EVP_DigestInit_ex(ctx, SHA256_MD, NULL) || !EVP_DigestUpdate(ctx, src, (size_t)places[i].length) ||
            !EVP_DigestFinal_ex(ctx, md, &mdlen)) {
            EVP_MD_CTX_free(ctx);
            return -1;
        }
        if (mdlen != 32 || memcmp(md, digests + 32 * i, 32) != 0) {
            bad[i] = 1;
            continue;
        }
        memcpy(out + pos, src, (size_t)places[i].length);
        pos += places[i].length;
    }
    EVP_MD_CTX_free(ctx);
    return pos;
}

static PyObject *bad_indices(const uint8_t *bad, Py_ssize_t n) {
    PyObject *list = PyList_New(0);
    for (Py_ssize_t i = 0; list != NULL && i < n; i++) {
        if (!bad[i]) continue;
        PyObject *v = PyLong_FromSsize_t(i);
        if (v == NULL || PyList_Append(list, v) < 0) Py_CLEAR(list);
        Py_XDECREF(v);
    }
    return list;
}

/* gather_sha256(buffers, places, digests) -> (joined: bytes, bad: list[int])
   buffers: a sequence of bytes-like objects; places: one per frame, in the order wanted, None or
   (buffer index, offset, length); digests: the frames' SHA-256 digests, 32 bytes each, back to
   back. joined holds, in order, the bytes of every frame whose SHA-256 equals its digest; bad
   lists the indices of the others (missing or different), which joined leaves out. */
static PyObject *py_gather_sha256(PyObject *self, PyObject *args) {
    PyObject *buffers_arg, *places_arg, *buffers = NULL, *places = NULL, *joined = NULL, *result = NULL;
    Py_buffer digests = {0};
    Py_buffer *views = NULL;
    place_t *where = NULL;
    uint8_t *bad = NULL;
    Py_ssize_t nbuf = 0, got = 0, n, total, written;
    if (!PyArg_ParseTuple(args, "OOy*", &buffers_arg, &places_arg, &digests)) return NULL;
    if ((buffers = PySequence_Fast(buffers_arg, "buffers must be a sequence")) == NULL) goto done;
    if ((places = PySequence_Fast(places_arg, "places must be a sequence")) == NULL) goto done;
    nbuf = PySequence_Fast_GET_SIZE(buffers);
    n = PySequence_Fast_GET_SIZE(places);
    if (digests.len != 32 * n) {
        PyErr_Format(PyExc_ValueError, "%zd places need %zd digest bytes, got %zd", n, 32 * n, digests.len);
        goto done;
    }
    views = PyMem_Calloc((size_t)(nbuf ? nbuf : 1), sizeof(Py_buffer));
    where = PyMem_Calloc((size_t)(n ? n : 1), sizeof(place_t));
    bad = PyMem_Calloc((size_t)(n ? n : 1), 1);
    if (views == NULL || where == NULL || bad == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < nbuf; got++)
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(buffers, got), &views[got], PyBUF_SIMPLE) < 0) goto done;
    if (read_places(places, views, nbuf, where, n, &total) < 0) goto done;
    if ((joined = PyBytes_FromStringAndSize(NULL, total)) == NULL) goto done;
    Py_BEGIN_ALLOW_THREADS
    written = hash_and_copy(where, n, views, (const uint8_t *)digests.buf, (uint8_t *)PyBytes_AS_STRING(joined), bad);
    Py_END_ALLOW_THREADS
    if (written < 0) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL's SHA-256 failed");
        goto done;
    }
    if (written < total && _PyBytes_Resize(&joined, written) < 0) goto done;
    PyObject *indices = bad_indices(bad, n);
    if (indices != NULL) result = Py_BuildValue("(ON)", joined, indices);
done:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(where);
    PyMem_Free(bad);
    Py_XDECREF(joined);
    Py_XDECREF(buffers);
    Py_XDECREF(places);
    PyBuffer_Release(&digests);
    return result;
}

/* sha256_each(buffer, sizes) -> bytes
   The SHA-256 of each consecutive span of buffer (the first sizes[0] bytes, the next sizes[1],
   ...), 32 bytes each, back to back: a verifier hashing a clip's samples from one read of many
   of them. The spans must fit in the buffer. */
static PyObject *py_sha256_each(PyObject *self, PyObject *args) {
    PyObject *sizes_arg, *sizes = NULL, *out = NULL;
    Py_buffer data = {0};
    Py_ssize_t *lengths = NULL;
    if (!PyArg_ParseTuple(args, "y*O", &data, &sizes_arg)) return NULL;
    if ((sizes = PySequence_Fast(sizes_arg, "sizes must be a sequence")) == NULL) goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(sizes), total = 0;
    if ((lengths = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_ssize_t))) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        lengths[i] = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(sizes, i));
        if (PyErr_Occurred()) goto done;
        if (lengths[i] < 0 || lengths[i] > data.len - total) {
            PyErr_Format(PyExc_ValueError, "span %zd (%zd bytes) does not fit the %zd-byte buffer", i, lengths[i], data.len);
            goto done;
        }
        total += lengths[i];
    }
    if ((out = PyBytes_FromStringAndSize(NULL, 32 * n)) == NULL) goto done;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    const uint8_t *src = (const uint8_t *)data.buf;
    uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
    ok = ctx != NULL;
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        unsigned int mdlen = 0;
        ok = EVP_DigestInit_ex(ctx, SHA256_MD, NULL) && EVP_DigestUpdate(ctx, src, (size_t)lengths[i]) &&
             EVP_DigestFinal_ex(ctx, dst + 32 * i, &mdlen) && mdlen == 32;
        src += lengths[i];
    }
    EVP_MD_CTX_free(ctx);
    Py_END_ALLOW_THREADS
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL's SHA-256 failed");
        Py_CLEAR(out);
    }
done:
    PyMem_Free(lengths);
    Py_XDECREF(sizes);
    PyBuffer_Release(&data);
    return out;
}

static PyMethodDef methods[] = {
    {"gather_sha256", py_gather_sha256, METH_VARARGS,
     "gather_sha256(buffers, places, digests) -> (the intact frames' bytes joined in order, indices of the others)."},
    {"sha256_each", py_sha256_each, METH_VARARGS,
     "sha256_each(buffer, sizes) -> the SHA-256 of each consecutive span of the buffer, 32 bytes each."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_gather",
                                    "Evidence extraction's verified frame copy (see the source's header).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__gather(void) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    SHA256_MD = EVP_MD_fetch(NULL, "SHA256", NULL); /* fetched once: an implicit fetch per digest costs */
#else
    SHA256_MD = EVP_sha256();
#endif
    if (SHA256_MD == NULL) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL offers no SHA-256");
        return NULL;
    }
    return PyModule_Create(&module);
}

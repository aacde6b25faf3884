/* A native twin of evidence extraction's frame loop: check each frame's SHA-256 against the
   digest its manifest records and copy the intact ones, in order, into one bytes object.

   An extraction streams every frame of a clip out of the store's pack segments, re-hashes it
   (a store is a convenience, never a witness) and appends it to the clip's media. In Python
   that is a slice, a hashlib call, a comparison and a write per frame: ~6 us a frame on this
   project's machine, where the SHA-256 itself (OpenSSL, SHA extensions) takes ~1.7 us of a
   2 kB frame (docs/EVIDENCE.md, Performance). Here one call does a window of frames, with the
   GIL released while it hashes and copies.

   sha256_each is the verifier's side: the digest of each of many consecutive samples of one read.

   locate_records and copy_frames are a clip's whole stream in two calls: the first walks a pack
   segment's record headers from a place the index gave (each must name the next frame asked for,
   in the store's order); the second reads each frame where it was found, in the clip's (decode)
   order, hashes it, carries the CRC-32 (the zip's) on and writes it to the clip (pwrite), with
   the GIL released from the first frame to the last. One release per run of records is what lets the
   stream run in a worker thread beside busy Python: a stream that gives the GIL up per window
   waits a switch interval for it each time (the convoy, docs/EVIDENCE.md).

   Pure function of its inputs, no state. Its own module (not _native.c) because it links
   OpenSSL's libcrypto (and zlib, for the CRC-32): a machine without their headers still builds
   the Keccak loops.
   Optional like them; offchain.core.native.gather is None where it was not built and the
   Python loop runs. tests/unit/test_native_gather.py keeps both ways identical. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

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

/* ---- copy_records ---------------------------------------------------------------------------- */

/* CRC-32 as zip computes it: zlib's own (the one Python's zipfile uses; its braided loop ran at
   ~6.7 GB/s here, where a table of eight bytes a step ran at ~1.5 GB/s and was most of a 720p
   clip's copy, docs/EVIDENCE.md). Without zlib's header at build time, that table. */
#if defined(__has_include)
#if __has_include(<zlib.h>)
#include <zlib.h>
#define HAVE_ZLIB 1
#endif
#endif

#ifdef HAVE_ZLIB
static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n) { return (uint32_t)crc32_z(crc, p, n); }

static void crc_init(void) {}
#else
/* Reflected, polynomial 0xEDB88320, eight bytes a step; the tables are filled at import. */
static uint32_t CRC_TABLE[8][256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        CRC_TABLE[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            CRC_TABLE[t][i] = (CRC_TABLE[t - 1][i] >> 8) ^ CRC_TABLE[0][CRC_TABLE[t - 1][i] & 0xff];
}

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (n >= 8) {
        uint32_t one, two;
        memcpy(&one, p, 4);
        memcpy(&two, p + 4, 4);
        one ^= crc;
        crc = CRC_TABLE[7][one & 0xff] ^ CRC_TABLE[6][(one >> 8) & 0xff] ^ CRC_TABLE[5][(one >> 16) & 0xff] ^
              CRC_TABLE[4][one >> 24] ^ CRC_TABLE[3][two & 0xff] ^ CRC_TABLE[2][(two >> 8) & 0xff] ^
              CRC_TABLE[1][(two >> 16) & 0xff] ^ CRC_TABLE[0][two >> 24];
        p += 8;
        n -= 8;
    }
#endif
    while (n--) crc = CRC_TABLE[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}
#endif

#define RECORD_HEADER 40                 /* LocalStore's _RECORD: magic (4), digest (32), length (4, big-endian) */
#define COPY_WINDOW (4 << 20)            /* bytes of the pack read, and of the clip written, at a time */
#define COPY_MAX_RECORD (64 << 20)       /* a record larger than this is left to the careful way */

/* Make rbuf hold pack bytes [pos, pos + need): 0, or -1 where the pack ends first (or a read fails). */
static int fill(int fd, uint8_t **rbuf, size_t *cap, int64_t *bufpos, size_t *have, int64_t pos, size_t need) {
    if (pos >= *bufpos && pos + (int64_t)need <= *bufpos + (int64_t)*have) return 0;
    *bufpos = pos;
    *have = 0;
    if (need > *cap) {
        uint8_t *bigger = realloc(*rbuf, need);
        if (bigger == NULL) return -1;
        *rbuf = bigger;
        *cap = need;
    }
    while (*have < need) {
        ssize_t r = pread(fd, *rbuf + *have, *cap - *have, *bufpos + (int64_t)*have);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        *have += (size_t)r;
    }
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n, int64_t at) {
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, at);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return w < 0 ? errno : EIO;
        p += w;
        n -= (size_t)w;
        at += w;
    }
    return 0;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The records from offset on, while each is whole and its header names the next digest with its
   size: each one's bytes' pack offset into offsets; returns how many (the bytes are hashed when
   copied, not here). */
static Py_ssize_t locate_run(int fd, int64_t offset, const uint8_t *digests, const uint32_t *sizes, Py_ssize_t n,
                             int64_t *offsets) {
    size_t cap = COPY_WINDOW, have = 0;
    int64_t bufpos = offset, pos = offset;
    uint8_t *buf = malloc(cap);
    Py_ssize_t i = 0;
    for (; buf != NULL && i < n; i++) {
        size_t need = RECORD_HEADER + (size_t)sizes[i];
        if (sizes[i] > COPY_MAX_RECORD || fill(fd, &buf, &cap, &bufpos, &have, pos, need) < 0) break;
        const uint8_t *rec = buf + (pos - bufpos);
        if (memcmp(rec, "FLB1", 4) != 0 || memcmp(rec + 4, digests + 32 * (size_t)i, 32) != 0 || be32(rec + 36) != sizes[i])
            break;
        offsets[i] = pos + RECORD_HEADER;
        pos += (int64_t)need;
    }
    free(buf);
    return i;
}

/* locate_records(pack_fd, offset, digests, sizes, offsets) -> count
   The frames whose records follow one another in the pack from offset (a record header), in
   order, while each record is whole, carries the magic and names the frame's digest (32 bytes a
   frame in digests) with the size sizes records (uint32, native order: array('I')): each one's
   bytes' offset in the pack written into offsets (int64: array('q'), at least as many). Without the GIL. */
static PyObject *py_locate_records(PyObject *self, PyObject *args) {
    int fd;
    long long offset;
    Py_buffer digests = {0}, sizes = {0}, offsets = {0};
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "iLy*y*w*", &fd, &offset, &digests, &sizes, &offsets)) return NULL;
    Py_ssize_t n = digests.len / 32;
    if (digests.len % 32 != 0 || sizes.len != n * 4 || offsets.len < n * 8 || offset < 0) {
        PyErr_Format(PyExc_ValueError, "locate_records: %zd digest bytes, %zd size bytes (4 a frame), %zd offset "
                     "bytes (8 a frame), offset %lld", digests.len, sizes.len, offsets.len, offset);
        goto done;
    }
    Py_ssize_t count;
    Py_BEGIN_ALLOW_THREADS
    count = locate_run(fd, offset, (const uint8_t *)digests.buf, (const uint32_t *)sizes.buf, n, (int64_t *)offsets.buf);
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(count);
done:
    PyBuffer_Release(&digests);
    PyBuffer_Release(&sizes);
    PyBuffer_Release(&offsets);
    return result;
}

typedef struct {
    const int32_t *fds;                  /* per frame (in the store's order): its pack, or -1: not located */
    const int64_t *offsets;
    const uint32_t *sizes, *order;       /* order[k]: the frame written k-th */
    const uint8_t *digests;
    Py_ssize_t n, start;
    int out_fd;
    int64_t out_offset;
    uint32_t crc;
} copy_job_t;

typedef struct {
    Py_ssize_t next;                     /* the first k not written */
    int64_t written;
    uint32_t crc;
    int write_errno, failed;
} copy_result_t;

/* The store's records read a window at a time: the frames from `lo` on (store order) that lie in
   one pack within COPY_WINDOW bytes of the first, each starting at most READ_GAP bytes after the
   previous one ends (another camera's records between them are read and skipped). One pread for
   all of them, where one per frame was most of a 720p clip's copy (docs/EVIDENCE.md). */
#define READ_GAP (64 << 10)
#define READ_BACK 32 /* frames before the one asked for: a B-frame is decoded after the frame it follows */

typedef struct {
    uint8_t *buf;
    size_t cap;
    Py_ssize_t lo, hi; /* store indices held: lo <= i < hi */
    int64_t base;      /* the pack offset of buf[0] */
} read_window_t;

static int window_fill(read_window_t *w, const copy_job_t *job, Py_ssize_t i) {
    const int32_t fd = job->fds[i];
    Py_ssize_t lo = i;
    while (lo > 0 && i - lo < READ_BACK && job->fds[lo - 1] == fd && job->offsets[lo - 1] < job->offsets[lo] &&
           job->offsets[lo - 1] + (int64_t)job->sizes[lo - 1] + READ_GAP >= job->offsets[lo] &&
           job->offsets[i] + (int64_t)job->sizes[i] - job->offsets[lo - 1] <= (int64_t)w->cap)
        lo--;
    if ((size_t)job->sizes[i] + (size_t)(job->offsets[i] - job->offsets[lo]) > w->cap) {
        size_t want = (size_t)job->sizes[i] + (size_t)(job->offsets[i] - job->offsets[lo]);
        uint8_t *bigger = realloc(w->buf, want);
        if (bigger == NULL) return -1;
        w->buf = bigger;
        w->cap = want;
    }
    const int64_t base = job->offsets[lo];
    Py_ssize_t hi = lo + 1;
    int64_t end = job->offsets[lo] + (int64_t)job->sizes[lo];
    while (hi < job->n && job->fds[hi] == fd && job->offsets[hi] >= end && job->offsets[hi] - end <= READ_GAP &&
           job->offsets[hi] + (int64_t)job->sizes[hi] - base <= (int64_t)w->cap) {
        end = job->offsets[hi] + (int64_t)job->sizes[hi];
        hi++;
    }
    if (hi <= i) { /* i itself lies past what the walk from lo reached: a window of i alone */
        lo = i;
        hi = i + 1;
        end = job->offsets[i] + (int64_t)job->sizes[i];
    }
    const int64_t from = job->offsets[lo];
    size_t got = 0, need = (size_t)(end - from);
    while (got < need) {
        ssize_t r = pread(fd, w->buf + got, need - got, from + (int64_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    while (hi > lo && job->offsets[hi - 1] + (int64_t)job->sizes[hi - 1] - from > (int64_t)got) hi--; /* short read */
    w->lo = lo;
    w->hi = hi;
    w->base = from;
    return 0;
}

/* Frames order[start], order[start+1], ... read, hashed, carried into the CRC and written, until
   one is not located, cannot be read or does not hash to its digest. */
static copy_result_t copy_run(const copy_job_t *job) {
    copy_result_t res = {job->start, 0, job->crc, 0, 0};
    size_t wlen = 0, wcap = COPY_WINDOW;
    uint8_t *wbuf = malloc(wcap);
    read_window_t win = {malloc(COPY_WINDOW), COPY_WINDOW, 0, 0, 0};
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (wbuf == NULL || win.buf == NULL || ctx == NULL) {
        res.failed = 1;
        goto out;
    }
    Py_ssize_t k = job->start;
    for (; k < job->n; k++) {
        uint32_t i = job->order[k];
        if ((Py_ssize_t)i >= job->n || job->fds[i] < 0) break;
        size_t size = job->sizes[i];
        if (wlen + size > wcap) {
            if ((res.write_errno = write_all(job->out_fd, wbuf, wlen, job->out_offset + res.written)) != 0) goto out;
            res.written += (int64_t)wlen;
            wlen = 0;
            if (size > wcap) {
                uint8_t *bigger = realloc(wbuf, size);
                if (bigger == NULL) {
                    res.failed = 1;
                    goto out;
                }
                wbuf = bigger;
                wcap = size;
            }
        }
        if (!((Py_ssize_t)i >= win.lo && (Py_ssize_t)i < win.hi)) { /* a window's frames share one pack */
            if (window_fill(&win, job, (Py_ssize_t)i) != 0) {
                res.failed = 1;
                goto out;
            }
            if (!((Py_ssize_t)i >= win.lo && (Py_ssize_t)i < win.hi)) break; /* cannot be read (a short pack) */
        }
        memcpy(wbuf + wlen, win.buf + (job->offsets[i] - win.base), size);
        uint8_t md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        if (!EVP_DigestInit_ex(ctx, SHA256_MD, NULL) || !EVP_DigestUpdate(ctx, wbuf + wlen, size) ||
            !EVP_DigestFinal_ex(ctx, md, &mdlen)) {
            res.failed = 1;
            goto out;
        }
        if (mdlen != 32 || memcmp(md, job->digests + 32 * (size_t)i, 32) != 0) break;
        res.crc = crc32_update(res.crc, wbuf + wlen, size);
        wlen += size;
    }
    if (wlen > 0 && (res.write_errno = write_all(job->out_fd, wbuf, wlen, job->out_offset + res.written)) == 0)
        res.written += (int64_t)wlen;
    if (res.write_errno == 0) res.next = k;
out:
    EVP_MD_CTX_free(ctx);
    free(wbuf);
    free(win.buf);
    return res;
}

/* copy_frames(fds, offsets, sizes, digests, order, start, out_fd, out_offset, crc) -> (next, written, crc)
   fds (int32: array('i')), offsets (int64: array('q')), sizes (uint32: array('I')) and digests (32
   bytes each) describe each frame in the store's order; order (uint32) the order they are written
   in. From order[start] on, each frame is read from its pack (fds[i] at offsets[i], as
   locate_records found it), hashed against its digest, carried into the CRC-32 begun as crc and
   written to out_fd from out_offset on, until one is not located (fd -1), cannot be read or does
   not hash to its digest. next: the first k not written (n when all were); written: bytes out.
   Raises OSError for a write that failed. Without the GIL from the first frame to the last. */
static PyObject *py_copy_frames(PyObject *self, PyObject *args) {
    Py_buffer fds = {0}, offsets = {0}, sizes = {0}, digests = {0}, order = {0};
    Py_ssize_t start;
    int out_fd;
    long long out_offset;
    unsigned long crc;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*niLk", &fds, &offsets, &sizes, &digests, &order, &start, &out_fd,
                          &out_offset, &crc))
        return NULL;
    Py_ssize_t n = digests.len / 32;
    if (digests.len % 32 != 0 || fds.len != n * 4 || offsets.len != n * 8 || sizes.len != n * 4 || order.len != n * 4 ||
        start < 0 || start > n || out_offset < 0 || crc > 0xFFFFFFFFul) {
        PyErr_Format(PyExc_ValueError, "copy_frames: %zd frames by their digests; fds, offsets, sizes and order "
                     "must be 4, 8, 4 and 4 bytes a frame; start %zd", n, start);
        goto done;
    }
    copy_job_t job = {(const int32_t *)fds.buf, (const int64_t *)offsets.buf, (const uint32_t *)sizes.buf,
                      (const uint32_t *)order.buf, (const uint8_t *)digests.buf, n, start, out_fd, out_offset,
                      (uint32_t)crc};
    copy_result_t res;
    Py_BEGIN_ALLOW_THREADS
    res = copy_run(&job);
    Py_END_ALLOW_THREADS
    if (res.write_errno != 0) {
        errno = res.write_errno;
        PyErr_SetFromErrno(PyExc_OSError);
    } else if (res.failed) {
        PyErr_SetString(PyExc_RuntimeError, "copy_frames: OpenSSL's SHA-256 or memory failed");
    } else {
        result = Py_BuildValue("(nLk)", res.next, (long long)res.written, (unsigned long)res.crc);
    }
done:
    PyBuffer_Release(&fds);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&sizes);
    PyBuffer_Release(&digests);
    PyBuffer_Release(&order);
    return result;
}

static PyMethodDef methods[] = {
    {"gather_sha256", py_gather_sha256, METH_VARARGS,
     "gather_sha256(buffers, places, digests) -> (the intact frames' bytes joined in order, indices of the others)."},
    {"sha256_each", py_sha256_each, METH_VARARGS,
     "sha256_each(buffer, sizes) -> the SHA-256 of each consecutive span of the buffer, 32 bytes each."},
    {"locate_records", py_locate_records, METH_VARARGS,
     "locate_records(pack_fd, offset, digests, sizes, offsets) -> how many records follow as asked."},
    {"copy_frames", py_copy_frames, METH_VARARGS,
     "copy_frames(fds, offsets, sizes, digests, order, start, out_fd, out_offset, crc) -> (next, written, crc)."},
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
    crc_init();
    return PyModule_Create(&module);
}

/* Native twins of the frame tree's hot loops (offchain.core.merkle / offchain.core.block), and of
   the verifier's reading of a whole block's proof (offchain.evidence.verify.KnownLeaves.whole).

   A block's frame tree costs three Keccak-256 per frame (two for the leaf, one for its pair).
   Each is a call into safe-pysha3 from Python (object, update, digest: ~0.8 us), where the
   permutation itself takes ~0.25 us; over an hour of one camera (90,000 frames) the tree was
   a tenth of an extraction and as much of a verification (docs/EVIDENCE.md, Performance). Here
   the same hashes are computed in one call per tree.

   Pure functions of their inputs, no state. The Python code falls back to its own loops when
   this module is absent (built by `pip install -e .` with `optional = true`, so a machine
   without a C compiler still installs) or when an input is not of the fixed layout handled
   here (returns None: the generic path then accepts or rejects it exactly as before).
   tests/unit/test_native_merkle.py keeps both ways identical.

   Keccak-f[1600] as in FIPS 202 / the Keccak reference (round constants, rotation offsets and
   the pi lane order are the standard tables); Ethereum's Keccak-256 pads with 0x01 .. 0x80
   (not SHA-3's 0x06). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define RATE 136 /* bytes: 1600 - 2 * 256 bits */


static const uint64_t ROUND_CONSTANTS[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL, 0x8000000080008000ULL,
    0x000000000000808bULL, 0x0000000080000001ULL, 0x8000000080008081ULL, 0x8000000000008009ULL,
    0x000000000000008aULL, 0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
    0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
    0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800aULL, 0x800000008000000aULL,
    0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL};
static inline uint64_t rotl64(uint64_t x, int n) { return (x << n) | (x >> (64 - n)); }

static inline uint64_t load_le64(const uint8_t *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
#else
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
#endif
}

static inline void store_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* One permutation, every lane index a constant (theta, rho and pi, chi, iota; generated from
   the standard rotation table): the compiler keeps the state in registers. */
static void keccak_f1600(uint64_t A[25]) {
    uint64_t B[25], C[5], D[5];
    for (int round = 0; round < 24; round++) {
        C[0] = A[0] ^ A[5] ^ A[10] ^ A[15] ^ A[20];
        C[1] = A[1] ^ A[6] ^ A[11] ^ A[16] ^ A[21];
        C[2] = A[2] ^ A[7] ^ A[12] ^ A[17] ^ A[22];
        C[3] = A[3] ^ A[8] ^ A[13] ^ A[18] ^ A[23];
        C[4] = A[4] ^ A[9] ^ A[14] ^ A[19] ^ A[24];
        D[0] = C[4] ^ rotl64(C[1], 1);
        D[1] = C[0] ^ rotl64(C[2], 1);
        D[2] = C[1] ^ rotl64(C[3], 1);
        D[3] = C[2] ^ rotl64(C[4], 1);
        D[4] = C[3] ^ rotl64(C[0], 1);
        B[0] = A[0] ^ D[0];
        B[10] = rotl64(A[1] ^ D[1], 1);
        B[20] = rotl64(A[2] ^ D[2], 62);
        B[5] = rotl64(A[3] ^ D[3], 28);
        B[15] = rotl64(A[4] ^ D[4], 27);
        B[16] = rotl64(A[5] ^ D[0], 36);
        B[1] = rotl64(A[6] ^ D[1], 44);
        B[11] = rotl64(A[7] ^ D[2], 6);
        B[21] = rotl64(A[8] ^ D[3], 55);
        B[6] = rotl64(A[9] ^ D[4], 20);
        B[7] = rotl64(A[10] ^ D[0], 3);
        B[17] = rotl64(A[11] ^ D[1], 10);
        B[2] = rotl64(A[12] ^ D[2], 43);
        B[12] = rotl64(A[13] ^ D[3], 25);
        B[22] = rotl64(A[14] ^ D[4], 39);
        B[23] = rotl64(A[15] ^ D[0], 41);
        B[8] = rotl64(A[16] ^ D[1], 45);
        B[18] = rotl64(A[17] ^ D[2], 15);
        B[3] = rotl64(A[18] ^ D[3], 21);
        B[13] = rotl64(A[19] ^ D[4], 8);
        B[14] = rotl64(A[20] ^ D[0], 18);
        B[24] = rotl64(A[21] ^ D[1], 2);
        B[9] = rotl64(A[22] ^ D[2], 61);
        B[19] = rotl64(A[23] ^ D[3], 56);
        B[4] = rotl64(A[24] ^ D[4], 14);
        A[0] = B[0] ^ (~B[1] & B[2]);
        A[1] = B[1] ^ (~B[2] & B[3]);
        A[2] = B[2] ^ (~B[3] & B[4]);
        A[3] = B[3] ^ (~B[4] & B[0]);
        A[4] = B[4] ^ (~B[0] & B[1]);
        A[5] = B[5] ^ (~B[6] & B[7]);
        A[6] = B[6] ^ (~B[7] & B[8]);
        A[7] = B[7] ^ (~B[8] & B[9]);
        A[8] = B[8] ^ (~B[9] & B[5]);
        A[9] = B[9] ^ (~B[5] & B[6]);
        A[10] = B[10] ^ (~B[11] & B[12]);
        A[11] = B[11] ^ (~B[12] & B[13]);
        A[12] = B[12] ^ (~B[13] & B[14]);
        A[13] = B[13] ^ (~B[14] & B[10]);
        A[14] = B[14] ^ (~B[10] & B[11]);
        A[15] = B[15] ^ (~B[16] & B[17]);
        A[16] = B[16] ^ (~B[17] & B[18]);
        A[17] = B[17] ^ (~B[18] & B[19]);
        A[18] = B[18] ^ (~B[19] & B[15]);
        A[19] = B[19] ^ (~B[15] & B[16]);
        A[20] = B[20] ^ (~B[21] & B[22]);
        A[21] = B[21] ^ (~B[22] & B[23]);
        A[22] = B[22] ^ (~B[23] & B[24]);
        A[23] = B[23] ^ (~B[24] & B[20]);
        A[24] = B[24] ^ (~B[20] & B[21]);
        A[0] ^= ROUND_CONSTANTS[round];
    }
}

/* Keccak-256 of len bytes at in, into out[32]. */
static void keccak256(const uint8_t *in, size_t len, uint8_t out[32]) {
    uint64_t st[25] = {0};
    uint8_t block[RATE];
    while (len >= RATE) {
        for (int i = 0; i < RATE / 8; i++) st[i] ^= load_le64(in + 8 * i);
        keccak_f1600(st);
        in += RATE;
        len -= RATE;
    }
    memset(block, 0, RATE);
    memcpy(block, in, len);
    block[len] ^= 0x01;
    block[RATE - 1] ^= 0x80;
    for (int i = 0; i < RATE / 8; i++) st[i] ^= load_le64(block + 8 * i);
    keccak_f1600(st);
    for (int i = 0; i < 4; i++) store_le64(out + 8 * i, st[i]);
}

/* Eight Keccak-256 at once with AVX-512 (x86-64 only, chosen at run time: `simd`): lane j of
   message k is element k of state vector j. Rotations are one instruction (vprolq), theta's
   five-way XOR two and chi one (vpternlogq), so eight permutations cost about what two do one by
   one. Used for the tree's many short messages (a leaf's 128-byte encoding, its 32-byte inner
   hash, a node's 64-byte pair), which all fit one block: `keccak256_short_x8`. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X8 1
#define X8 __attribute__((target("avx512f")))

X8 static inline __m512i xor5(__m512i a, __m512i b, __m512i c, __m512i d, __m512i e) {
    return _mm512_ternarylogic_epi64(_mm512_ternarylogic_epi64(a, b, c, 0x96), d, e, 0x96);
}

#define CHI(a, b, c) _mm512_ternarylogic_epi64(a, b, c, 0xD2) /* a ^ (~b & c) */

X8 static void keccak_f1600_x8(__m512i A[25]) {
    __m512i B[25], C[5], D[5];
    for (int round = 0; round < 24; round++) {
        for (int x = 0; x < 5; x++) C[x] = xor5(A[x], A[x + 5], A[x + 10], A[x + 15], A[x + 20]);
        for (int x = 0; x < 5; x++) D[x] = _mm512_xor_si512(C[(x + 4) % 5], _mm512_rol_epi64(C[(x + 1) % 5], 1));
        B[0] = _mm512_xor_si512(A[0], D[0]);
        B[10] = _mm512_rol_epi64(_mm512_xor_si512(A[1], D[1]), 1);
        B[20] = _mm512_rol_epi64(_mm512_xor_si512(A[2], D[2]), 62);
        B[5] = _mm512_rol_epi64(_mm512_xor_si512(A[3], D[3]), 28);
        B[15] = _mm512_rol_epi64(_mm512_xor_si512(A[4], D[4]), 27);
        B[16] = _mm512_rol_epi64(_mm512_xor_si512(A[5], D[0]), 36);
        B[1] = _mm512_rol_epi64(_mm512_xor_si512(A[6], D[1]), 44);
        B[11] = _mm512_rol_epi64(_mm512_xor_si512(A[7], D[2]), 6);
        B[21] = _mm512_rol_epi64(_mm512_xor_si512(A[8], D[3]), 55);
        B[6] = _mm512_rol_epi64(_mm512_xor_si512(A[9], D[4]), 20);
        B[7] = _mm512_rol_epi64(_mm512_xor_si512(A[10], D[0]), 3);
        B[17] = _mm512_rol_epi64(_mm512_xor_si512(A[11], D[1]), 10);
        B[2] = _mm512_rol_epi64(_mm512_xor_si512(A[12], D[2]), 43);
        B[12] = _mm512_rol_epi64(_mm512_xor_si512(A[13], D[3]), 25);
        B[22] = _mm512_rol_epi64(_mm512_xor_si512(A[14], D[4]), 39);
        B[23] = _mm512_rol_epi64(_mm512_xor_si512(A[15], D[0]), 41);
        B[8] = _mm512_rol_epi64(_mm512_xor_si512(A[16], D[1]), 45);
        B[18] = _mm512_rol_epi64(_mm512_xor_si512(A[17], D[2]), 15);
        B[3] = _mm512_rol_epi64(_mm512_xor_si512(A[18], D[3]), 21);
        B[13] = _mm512_rol_epi64(_mm512_xor_si512(A[19], D[4]), 8);
        B[14] = _mm512_rol_epi64(_mm512_xor_si512(A[20], D[0]), 18);
        B[24] = _mm512_rol_epi64(_mm512_xor_si512(A[21], D[1]), 2);
        B[9] = _mm512_rol_epi64(_mm512_xor_si512(A[22], D[2]), 61);
        B[19] = _mm512_rol_epi64(_mm512_xor_si512(A[23], D[3]), 56);
        B[4] = _mm512_rol_epi64(_mm512_xor_si512(A[24], D[4]), 14);
        for (int y = 0; y < 25; y += 5)
            for (int x = 0; x < 5; x++) A[y + x] = CHI(B[y + x], B[y + (x + 1) % 5], B[y + (x + 2) % 5]);
        A[0] = _mm512_xor_si512(A[0], _mm512_set1_epi64((long long)ROUND_CONSTANTS[round]));
    }
}

/* Keccak-256 of eight messages of the same length len (< RATE: one block each). */
X8 static void keccak256_short_x8(const uint8_t *const in[8], size_t len, uint8_t *const out[8]) {
    uint8_t blocks[8][RATE];
    __m512i A[25];
    for (int k = 0; k < 8; k++) {
        memset(blocks[k], 0, RATE);
        memcpy(blocks[k], in[k], len);
        blocks[k][len] ^= 0x01;
        blocks[k][RATE - 1] ^= 0x80;
    }
    for (int j = 0; j < 25; j++) {
        if (j < RATE / 8) {
            uint64_t lane[8];
            for (int k = 0; k < 8; k++) lane[k] = load_le64(blocks[k] + 8 * j);
            A[j] = _mm512_loadu_si512((const void *)lane);
        } else {
            A[j] = _mm512_setzero_si512();
        }
    }
    keccak_f1600_x8(A);
    for (int j = 0; j < 4; j++) {
        uint64_t lane[8];
        _mm512_storeu_si512((void *)lane, A[j]);
        for (int k = 0; k < 8; k++) store_le64(out[k] + 8 * j, lane[k]);
    }
}
#else
#define HAVE_X8 0
#endif

/* Whether keccak256_short_x8 runs here: set at import from the CPU (`use_simd` lets the tests
   compare both ways). */
static int simd = 0;

/* Keccak-256 of n messages of len bytes (< RATE) laid out every `stride` bytes from in, into
   out[32 * i]: eight at a time where the CPU allows, the rest one by one. */
static void keccak256_many(const uint8_t *in, size_t stride, size_t len, Py_ssize_t n, uint8_t *out) {
    Py_ssize_t i = 0;
#if HAVE_X8
    if (simd) {
        for (; i + 8 <= n; i += 8) {
            const uint8_t *msgs[8];
            uint8_t *outs[8];
            for (int k = 0; k < 8; k++) {
                msgs[k] = in + stride * (size_t)(i + k);
                outs[k] = out + 32 * (size_t)(i + k);
            }
            keccak256_short_x8(msgs, len, outs);
        }
    }
#endif
    for (; i < n; i++) keccak256(in + stride * (size_t)i, len, out + 32 * (size_t)i);
}

static PyObject *py_keccak256(PyObject *self, PyObject *arg) {
    Py_buffer view;
    uint8_t out[32];
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    keccak256((const uint8_t *)view.buf, (size_t)view.len, out);
    PyBuffer_Release(&view);
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

/* An int in [0, 2**64) as 32 big-endian bytes; 0 on success, -1 if it is not such an int
   (a bool or an int subclass included: the caller then takes the generic path). */
static int put_uint64_word(PyObject *value, uint8_t word[32]) {
    if (!PyLong_CheckExact(value)) return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    memset(word, 0, 24);
    for (int i = 0; i < 8; i++) word[31 - i] = (uint8_t)(v >> (8 * i));
    return 0;
}

/* frame_leaf_hashes(camera: bytes, frames: list) -> list[bytes] | None
   Each frame's StandardMerkleTree leaf hash for the values (camera, seq, timestamp_ms, sha256):
   keccak256(keccak256(abi.encode(bytes32, uint64, uint64, bytes32))). None when the camera is
   not 32 bytes or a frame's seq / timestamp_ms is not an int in [0, 2**64) or its sha256 not
   32 bytes. */
static PyObject *py_frame_leaf_hashes(PyObject *self, PyObject *args) {
    PyObject *camera, *frames, *seq_name = NULL, *ts_name = NULL, *sha_name = NULL, *out = NULL;
    PyObject *given;
    if (!PyArg_ParseTuple(args, "SO!", &camera, &PyList_Type, &given)) return NULL;
    if (PyBytes_GET_SIZE(camera) != 32) Py_RETURN_NONE;
    /* A private copy: attribute reads (and the allocations' collections) may run Python code,
       which must not change the list under the loop. */
    frames = PyList_GetSlice(given, 0, PyList_GET_SIZE(given));
    if (frames == NULL) return NULL;
    seq_name = PyUnicode_InternFromString("seq");
    ts_name = PyUnicode_InternFromString("timestamp_ms");
    sha_name = PyUnicode_InternFromString("sha256");
    if (seq_name == NULL || ts_name == NULL || sha_name == NULL) goto done;
    Py_ssize_t n = PyList_GET_SIZE(frames);
    out = PyList_New(n);
    if (out == NULL) goto done;
    /* Every leaf's encoding first (attribute reads may run Python code), then the hashes in
       bulk (eight at a time where the CPU allows), then the objects. */
    if (n > PY_SSIZE_T_MAX / 256) {
        Py_CLEAR(out);
        PyErr_NoMemory();
        goto done;
    }
    uint8_t *encoded = PyMem_Malloc((size_t)(n ? n : 1) * 128 + (size_t)(n ? n : 1) * 64);
    if (encoded == NULL) {
        Py_CLEAR(out);
        PyErr_NoMemory();
        goto done;
    }
    uint8_t *inner = encoded + (size_t)n * 128, *leaves = inner + (size_t)n * 32;
    for (Py_ssize_t k = 0; k < n; k++) {
        uint8_t *e = encoded + 128 * (size_t)k;
        memcpy(e, PyBytes_AS_STRING(camera), 32);
        PyObject *frame = PyList_GET_ITEM(frames, k);
        PyObject *seq = PyObject_GetAttr(frame, seq_name);
        PyObject *ts = seq ? PyObject_GetAttr(frame, ts_name) : NULL;
        PyObject *sha = ts ? PyObject_GetAttr(frame, sha_name) : NULL;
        int ok = sha != NULL && put_uint64_word(seq, e + 32) == 0 && put_uint64_word(ts, e + 64) == 0 &&
                 PyBytes_CheckExact(sha) && PyBytes_GET_SIZE(sha) == 32;
        if (ok) memcpy(e + 96, PyBytes_AS_STRING(sha), 32);
        Py_XDECREF(seq);
        Py_XDECREF(ts);
        Py_XDECREF(sha);
        if (!ok) {
            PyMem_Free(encoded);
            Py_CLEAR(out);
            if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_AttributeError)) goto done;
            PyErr_Clear();
            out = Py_NewRef(Py_None);
            goto done;
        }
    }
    keccak256_many(encoded, 128, 128, n, inner);
    keccak256_many(inner, 32, 32, n, leaves);
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *hash = PyBytes_FromStringAndSize((const char *)(leaves + 32 * (size_t)k), 32);
        if (hash == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, k, hash);
    }
    PyMem_Free(encoded);
done:
    Py_DECREF(frames);
    Py_XDECREF(seq_name);
    Py_XDECREF(ts_name);
    Py_XDECREF(sha_name);
    return out;
}

/* make_tree(leaves: list[bytes]) -> list[bytes] | None
   The StandardMerkleTree array (`merkle._make_tree`): 2n - 1 nodes, the n leaves at the tail
   in reverse order, node i = keccak256(sorted(node 2i+1, node 2i+2)). None when a leaf is not
   32 bytes; ValueError for no leaves. */
static PyObject *build_tree(PyObject *leaves);

static PyObject *py_make_tree(PyObject *self, PyObject *arg) {
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "make_tree takes a list of 32-byte leaves");
        return NULL;
    }
    if (PyList_GET_SIZE(arg) == 0) {
        PyErr_SetString(PyExc_ValueError, "Expected non-zero number of leaves");
        return NULL;
    }
    /* A private copy: the allocations below may run a collection, and its finalizers Python code. */
    PyObject *leaves = PyList_GetSlice(arg, 0, PyList_GET_SIZE(arg));
    if (leaves == NULL) return NULL;
    PyObject *out = build_tree(leaves);
    Py_DECREF(leaves);
    return out;
}

static PyObject *build_tree(PyObject *arg) {
    Py_ssize_t n = PyList_GET_SIZE(arg);
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *leaf = PyList_GET_ITEM(arg, k);
        if (!PyBytes_CheckExact(leaf) || PyBytes_GET_SIZE(leaf) != 32) Py_RETURN_NONE;
    }
    if (n > PY_SSIZE_T_MAX / 64) return PyErr_NoMemory();
    Py_ssize_t size = 2 * n - 1;
    uint8_t *nodes = PyMem_Malloc((size_t)size * 32);
    if (nodes == NULL) return PyErr_NoMemory();
    for (Py_ssize_t k = 0; k < n; k++)
        memcpy(nodes + 32 * (size - 1 - k), PyBytes_AS_STRING(PyList_GET_ITEM(arg, k)), 32);
    /* Node i hashes its sorted children 2i+1, 2i+2. Going down in runs of 8 nodes [j, j+7], the
       children of all of them are at 2j+1 or beyond, which is past j+7 once j >= 7: computed by an
       earlier run. So runs of 8 are hashed at once down to node 7, the rest one by one. */
    uint8_t pairs[8 * 64];
    Py_ssize_t i = size - n - 1;
    while (i >= 0) {
        Py_ssize_t count = (simd && i - 7 >= 7) ? 8 : 1;
        for (Py_ssize_t k = 0; k < count; k++) {
            Py_ssize_t node = i - k;
            const uint8_t *a = nodes + 32 * (2 * node + 1), *b = nodes + 32 * (2 * node + 2);
            int in_order = memcmp(a, b, 32) <= 0;
            memcpy(pairs + 64 * k, in_order ? a : b, 32);
            memcpy(pairs + 64 * k + 32, in_order ? b : a, 32);
        }
        if (count == 8) {
            uint8_t digests[8 * 32];
            keccak256_many(pairs, 64, 64, 8, digests);
            for (Py_ssize_t k = 0; k < 8; k++) memcpy(nodes + 32 * (i - k), digests + 32 * k, 32);
        } else {
            keccak256(pairs, 64, nodes + 32 * i);
        }
        i -= count;
    }
    PyObject *out = PyList_New(size);
    if (out == NULL) {
        PyMem_Free(nodes);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *node;
        if (i >= size - n) {  /* the leaves themselves: the caller's objects, as _make_tree keeps them */
            node = Py_NewRef(PyList_GET_ITEM(arg, size - 1 - i));
        } else {
            node = PyBytes_FromStringAndSize((const char *)(nodes + 32 * i), 32);
            if (node == NULL) {
                Py_DECREF(out);
                PyMem_Free(nodes);
                return NULL;
            }
        }
        PyList_SET_ITEM(out, i, node);
    }
    PyMem_Free(nodes);
    return out;
}

/* sorted_tree(hashes: list[bytes]) -> (tree, tree_indices) | None
   `StandardMerkleTree.from_leaf_hashes` with sorted leaves, in one call: the leaves in a stable
   sort by hash (as Python's sorted and V8's Array.prototype.sort: equal hashes keep their input
   order), the tree `make_tree` builds over them, and tree_indices[i] = the node of hashes[i].
   None when a hash is not 32 bytes; ValueError for no leaves. */
static const uint8_t *sort_base;

static int by_hash_then_index(const void *a, const void *b) {
    Py_ssize_t i = *(const Py_ssize_t *)a, j = *(const Py_ssize_t *)b;
    int c = memcmp(sort_base + 32 * i, sort_base + 32 * j, 32);
    return c != 0 ? c : (i > j) - (i < j);  /* the index breaks ties: a stable sort */
}

static PyObject *py_sorted_tree(PyObject *self, PyObject *arg) {
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "sorted_tree takes a list of 32-byte leaf hashes");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "Expected non-zero number of leaves");
        return NULL;
    }
    /* A private copy, checked before anything is allocated: nothing below runs Python code but
       the allocations' collections, which must not change the list under the loop. */
    PyObject *hashes = PyList_GetSlice(arg, 0, n);
    if (hashes == NULL) return NULL;
    PyObject *out = NULL, *sorted_leaves = NULL, *tree = NULL, *indices = NULL;
    uint8_t *flat = NULL;
    Py_ssize_t *order = NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *h = PyList_GET_ITEM(hashes, k);
        if (!PyBytes_CheckExact(h) || PyBytes_GET_SIZE(h) != 32) {
            out = Py_NewRef(Py_None);
            goto done;
        }
    }
    if (n > PY_SSIZE_T_MAX / 64) {
        PyErr_NoMemory();
        goto done;
    }
    flat = PyMem_Malloc((size_t)n * 32);
    order = PyMem_Malloc((size_t)n * sizeof(Py_ssize_t));
    if (flat == NULL || order == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        memcpy(flat + 32 * k, PyBytes_AS_STRING(PyList_GET_ITEM(hashes, k)), 32);
        order[k] = k;
    }
    sort_base = flat;  /* the GIL is held throughout: no other caller of qsort's comparator */
    qsort(order, (size_t)n, sizeof(Py_ssize_t), by_hash_then_index);
    sorted_leaves = PyList_New(n);
    indices = PyList_New(n);
    if (sorted_leaves == NULL || indices == NULL) goto done;
    Py_ssize_t last = 2 * n - 2;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyList_SET_ITEM(sorted_leaves, k, Py_NewRef(PyList_GET_ITEM(hashes, order[k])));
        PyObject *node = PyLong_FromSsize_t(last - k);
        if (node == NULL) goto done;
        PyList_SET_ITEM(indices, order[k], node);
    }
    tree = build_tree(sorted_leaves);
    if (tree == NULL) goto done;
    out = PyTuple_Pack(2, tree, indices);
done:
    PyMem_Free(flat);
    PyMem_Free(order);
    Py_XDECREF(sorted_leaves);
    Py_XDECREF(tree);
    Py_XDECREF(indices);
    Py_DECREF(hashes);
    return out;
}

/* frame_refs(cls, rows: list) -> tuple[cls, ...] | None
   `FrameRef.from_row` of every manifest row, in one call: each row a list
   [seq, timestamp_ms, sha256 as 64 hex digits, keyframe, size, dts_ms or null] with exact ints
   (keyframe an int or a bool), each record made as from_row makes it (object.__new__, then the
   fields set as object.__setattr__ sets them, past the frozen dataclass's guard). None when a row
   is off that layout: the Python loop then accepts or rejects it exactly as before. */
static int hex_value(Py_UCS4 c) {
    if (c >= '0' && c <= '9') return (int)(c - '0');
    if (c >= 'a' && c <= 'f') return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return (int)(c - 'A' + 10);
    return -1;
}

/* The 32 bytes spelled by a 64-digit hex string, or NULL without an error when it is not one. */
static PyObject *digest_of_hex(PyObject *text) {
    if (!PyUnicode_CheckExact(text) || PyUnicode_GET_LENGTH(text) != 64) return NULL;
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    uint8_t out[32];
    for (Py_ssize_t i = 0; i < 32; i++) {
        int hi = hex_value(PyUnicode_READ(kind, data, 2 * i)), lo = hex_value(PyUnicode_READ(kind, data, 2 * i + 1));
        if (hi < 0 || lo < 0) return NULL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

static int row_fits(PyObject *row) {
    if (!PyList_CheckExact(row) || PyList_GET_SIZE(row) != 6) return 0;
    PyObject *key = PyList_GET_ITEM(row, 3), *dts = PyList_GET_ITEM(row, 5);
    return PyLong_CheckExact(PyList_GET_ITEM(row, 0)) && PyLong_CheckExact(PyList_GET_ITEM(row, 1)) &&
           (PyLong_CheckExact(key) || PyBool_Check(key)) && PyLong_CheckExact(PyList_GET_ITEM(row, 4)) &&
           (dts == Py_None || PyLong_CheckExact(dts));
}

static const char *const FRAME_FIELDS[6] = {"seq", "timestamp_ms", "sha256", "keyframe", "size", "dts_ms"};

static PyObject *frame_of_row(PyObject *cls, PyObject *no_args, PyObject *const names[6], PyObject *row) {
    PyObject *digest = digest_of_hex(PyList_GET_ITEM(row, 2));
    if (digest == NULL) return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    int key = PyObject_IsTrue(PyList_GET_ITEM(row, 3));
    PyObject *frame = key < 0 ? NULL : PyBaseObject_Type.tp_new((PyTypeObject *)cls, no_args, NULL);
    if (frame == NULL) {
        Py_DECREF(digest);
        return NULL;
    }
    if (!row_fits(row)) {  /* changed by Python code a collection ran in the allocation */
        Py_DECREF(frame);
        Py_DECREF(digest);
        return Py_NewRef(Py_None);
    }
    PyObject *values[6] = {PyList_GET_ITEM(row, 0), PyList_GET_ITEM(row, 1), digest, key ? Py_True : Py_False,
                           PyList_GET_ITEM(row, 4), PyList_GET_ITEM(row, 5)};
    int failed = 0;
    for (int f = 0; f < 6 && !failed; f++) failed = PyObject_GenericSetAttr(frame, names[f], values[f]) < 0;
    Py_DECREF(digest);
    if (failed) Py_CLEAR(frame);
    return frame;
}

static PyObject *py_frame_refs(PyObject *self, PyObject *args) {
    PyObject *cls, *given;
    if (!PyArg_ParseTuple(args, "O!O!", &PyType_Type, &cls, &PyList_Type, &given)) return NULL;
    /* A private copy, checked whole before a record is made: the allocations' collections may run
       Python code, which must not change the list under the loop. */
    PyObject *rows = PyList_GetSlice(given, 0, PyList_GET_SIZE(given));
    if (rows == NULL) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(rows);
    PyObject *names[6] = {NULL}, *no_args = PyTuple_New(0), *out = NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        if (!row_fits(PyList_GET_ITEM(rows, k))) {
            out = Py_NewRef(Py_None);
            goto done;
        }
    }
    if (no_args == NULL) goto done;
    for (int f = 0; f < 6; f++)
        if ((names[f] = PyUnicode_InternFromString(FRAME_FIELDS[f])) == NULL) goto done;
    out = PyTuple_New(n);
    if (out == NULL) goto done;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *frame = frame_of_row(cls, no_args, names, PyList_GET_ITEM(rows, k));
        if (frame == NULL || frame == Py_None) {
            Py_DECREF(out);
            out = frame;  /* NULL: an error; None: a digest off the layout */
            goto done;
        }
        PyTuple_SET_ITEM(out, k, frame);
    }
done:
    for (int f = 0; f < 6; f++) Py_XDECREF(names[f]);
    Py_XDECREF(no_args);
    Py_DECREF(rows);
    return out;
}

/* spelled_leaves(camera, camera_hex, values) -> list | None
   A multiproof document's ``leaves`` as the extractor spells them
   (`evidence.extract._multiproof_json`): for each value (camera, seq, ts, sha) the list
   [camera_hex, seq, ts, "0x" + 64 lowercase hex digits of sha], camera_hex one shared string.
   None when a value is off that layout (another camera, seq or ts not an int in [0, 2**53), sha
   not 32 bytes): the caller then spells the generic way. */
static PyObject *sha_hex(PyObject *sha) {
    static const char digits[] = "0123456789abcdef";
    PyObject *text = PyUnicode_New(66, 127);
    if (text == NULL) return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(text);
    const uint8_t *b = (const uint8_t *)PyBytes_AS_STRING(sha);
    out[0] = '0';
    out[1] = 'x';
    for (int i = 0; i < 32; i++) {
        out[2 + 2 * i] = (Py_UCS1)digits[b[i] >> 4];
        out[3 + 2 * i] = (Py_UCS1)digits[b[i] & 15];
    }
    return text;
}

static int json_safe_uint(PyObject *v) {
    if (!PyLong_CheckExact(v)) return 0;
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    return !overflow && x >= 0 && x < (1LL << 53);
}

/* Whether every value is (camera, seq, ts, sha) of the fixed layout: camera these bytes, seq
   and ts ints in [0, 2**53), sha 32 bytes. */
static int leaf_values_fit(PyObject *values, PyObject *camera) {
    Py_ssize_t n = PyList_GET_SIZE(values);
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *v = PyList_GET_ITEM(values, k);
        int fits = PyTuple_CheckExact(v) && PyTuple_GET_SIZE(v) == 4;
        PyObject *cam = fits ? PyTuple_GET_ITEM(v, 0) : NULL, *sha = fits ? PyTuple_GET_ITEM(v, 3) : NULL;
        if (!fits || !PyBytes_CheckExact(cam) || PyBytes_GET_SIZE(cam) != PyBytes_GET_SIZE(camera) ||
            memcmp(PyBytes_AS_STRING(cam), PyBytes_AS_STRING(camera), (size_t)PyBytes_GET_SIZE(camera)) != 0 ||
            !json_safe_uint(PyTuple_GET_ITEM(v, 1)) || !json_safe_uint(PyTuple_GET_ITEM(v, 2)) ||
            !PyBytes_CheckExact(sha) || PyBytes_GET_SIZE(sha) != 32)
            return 0;
    }
    return 1;
}

static PyObject *py_spelled_leaves(PyObject *self, PyObject *args) {
    PyObject *camera, *camera_hex, *given;
    if (!PyArg_ParseTuple(args, "SUO!", &camera, &camera_hex, &PyList_Type, &given)) return NULL;
    /* A private copy of immutable, checked tuples: nothing a collection in the allocations below
       runs can change what is spelled. */
    PyObject *values = PyList_GetSlice(given, 0, PyList_GET_SIZE(given));
    if (values == NULL) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(values);
    if (!leaf_values_fit(values, camera)) {
        Py_DECREF(values);
        Py_RETURN_NONE;
    }
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        Py_DECREF(values);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *v = PyList_GET_ITEM(values, k);
        PyObject *text = sha_hex(PyTuple_GET_ITEM(v, 3));
        PyObject *leaf = text ? PyList_New(4) : NULL;
        if (leaf == NULL) {
            Py_XDECREF(text);
            Py_DECREF(out);
            Py_DECREF(values);
            return NULL;
        }
        PyList_SET_ITEM(leaf, 0, Py_NewRef(camera_hex));
        PyList_SET_ITEM(leaf, 1, Py_NewRef(PyTuple_GET_ITEM(v, 1)));
        PyList_SET_ITEM(leaf, 2, Py_NewRef(PyTuple_GET_ITEM(v, 2)));
        PyList_SET_ITEM(leaf, 3, text);
        PyList_SET_ITEM(out, k, leaf);
    }
    Py_DECREF(values);
    return out;
}

/* leaves_json(camera, camera_hex, values) -> bytes | None
   The compact JSON of `spelled_leaves`' list, written straight from the values:
   json.dumps(spelled_leaves(camera, camera_hex, values), separators=(",", ":")).encode(), byte
   for byte (tests/unit/test_native_merkle.py). A block's proof is ~1,500 such leaves; the
   generic encoder's per-object work on them was a sixth of an extraction (issue 9). None when a
   value is off the layout or camera_hex holds a character JSON would escape. */
static char *put_uint(char *out, unsigned long long x) {
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + x % 10);
        x /= 10;
    } while (x);
    while (n) *out++ = digits[--n];
    return out;
}

static PyObject *py_leaves_json(PyObject *self, PyObject *args) {
    static const char hex[] = "0123456789abcdef";
    PyObject *camera, *camera_hex, *values;
    if (!PyArg_ParseTuple(args, "SUO!", &camera, &camera_hex, &PyList_Type, &values)) return NULL;
    if (!PyUnicode_IS_ASCII(camera_hex)) Py_RETURN_NONE;
    const char *cam = (const char *)PyUnicode_1BYTE_DATA(camera_hex);
    const Py_ssize_t cam_len = PyUnicode_GET_LENGTH(camera_hex);
    for (Py_ssize_t i = 0; i < cam_len; i++)
        if (cam[i] == '"' || cam[i] == '\\' || (unsigned char)cam[i] < 0x20 || cam[i] == 0x7f) Py_RETURN_NONE;
    if (!leaf_values_fit(values, camera)) Py_RETURN_NONE;
    /* Nothing below runs Python code: the list and its (immutable) tuples stay as checked. */
    const Py_ssize_t n = PyList_GET_SIZE(values);
    const size_t per_leaf = (size_t)cam_len + 4 + 2 * 16 + 2 + 2 + 66 + 2; /* ["cam",seq,ts,"0x…"], */
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(2 + (size_t)n * per_leaf));
    if (out == NULL) return NULL;
    char *p = PyBytes_AS_STRING(out);
    *p++ = '[';
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *v = PyList_GET_ITEM(values, k);
        if (k) *p++ = ',';
        *p++ = '[';
        *p++ = '"';
        memcpy(p, cam, (size_t)cam_len);
        p += cam_len;
        *p++ = '"';
        *p++ = ',';
        p = put_uint(p, (unsigned long long)PyLong_AsLongLong(PyTuple_GET_ITEM(v, 1)));
        *p++ = ',';
        p = put_uint(p, (unsigned long long)PyLong_AsLongLong(PyTuple_GET_ITEM(v, 2)));
        *p++ = ',';
        *p++ = '"';
        *p++ = '0';
        *p++ = 'x';
        const uint8_t *b = (const uint8_t *)PyBytes_AS_STRING(PyTuple_GET_ITEM(v, 3));
        for (int i = 0; i < 32; i++) {
            *p++ = hex[b[i] >> 4];
            *p++ = hex[b[i] & 15];
        }
        *p++ = '"';
        *p++ = ']';
    }
    *p++ = ']';
    if (_PyBytes_Resize(&out, p - PyBytes_AS_STRING(out)) != 0) return NULL;
    return out;
}

/* spelled_leaves_equal(leaves, camera_hex, values) -> bool | None
   Whether a multiproof document's ``leaves`` (parsed JSON) spell ``values`` exactly as the
   extractor writes them (`evidence.extract._multiproof_json`): each leaf a list
   [camera_hex, seq, ts, "0x" + 64 lowercase hex digits of sha], seq and ts ints (not bool or
   float), the same length and order as ``values`` (tuples (camera, seq, ts, sha)). The
   comparison `verify.KnownLeaves.whole` makes in Python, without building the spelling; None
   when a value is off that layout (the caller then compares in Python). */
static int hex_digit_is(Py_UCS4 c, unsigned nibble) {
    return c == (Py_UCS4)(nibble < 10 ? '0' + nibble : 'a' + nibble - 10);
}

static int sha_spelled(PyObject *text, PyObject *sha) {
    if (!PyUnicode_CheckExact(text) || PyUnicode_GET_LENGTH(text) != 66) return 0;
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    if (PyUnicode_READ(kind, data, 0) != '0' || PyUnicode_READ(kind, data, 1) != 'x') return 0;
    const uint8_t *b = (const uint8_t *)PyBytes_AS_STRING(sha);
    for (Py_ssize_t i = 0; i < 32; i++) {
        if (!hex_digit_is(PyUnicode_READ(kind, data, 2 + 2 * i), b[i] >> 4) ||
            !hex_digit_is(PyUnicode_READ(kind, data, 3 + 2 * i), b[i] & 15))
            return 0;
    }
    return 1;
}

static PyObject *py_spelled_leaves_equal(PyObject *self, PyObject *args) {
    PyObject *leaves, *camera_hex, *values;
    if (!PyArg_ParseTuple(args, "O!UO!", &PyList_Type, &leaves, &camera_hex, &PyList_Type, &values)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(values);
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *v = PyList_GET_ITEM(values, k);
        if (!PyTuple_CheckExact(v) || PyTuple_GET_SIZE(v) != 4 || !PyLong_CheckExact(PyTuple_GET_ITEM(v, 1)) ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(v, 2)) || !PyBytes_CheckExact(PyTuple_GET_ITEM(v, 3)) ||
            PyBytes_GET_SIZE(PyTuple_GET_ITEM(v, 3)) != 32)
            Py_RETURN_NONE;
    }
    if (PyList_GET_SIZE(leaves) != n) Py_RETURN_FALSE;
    /* Nothing below runs Python code (exact types only), so neither list changes under the loop. */
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *leaf = PyList_GET_ITEM(leaves, k), *v = PyList_GET_ITEM(values, k);
        if (!PyList_CheckExact(leaf) || PyList_GET_SIZE(leaf) != 4) Py_RETURN_FALSE;
        PyObject *cam = PyList_GET_ITEM(leaf, 0), *seq = PyList_GET_ITEM(leaf, 1), *ts = PyList_GET_ITEM(leaf, 2);
        if (!PyUnicode_CheckExact(cam) || PyUnicode_Compare(cam, camera_hex) != 0) Py_RETURN_FALSE;
        if (!PyLong_CheckExact(seq) || !PyLong_CheckExact(ts)) Py_RETURN_FALSE;
        int same = PyObject_RichCompareBool(seq, PyTuple_GET_ITEM(v, 1), Py_EQ);
        if (same == 1) same = PyObject_RichCompareBool(ts, PyTuple_GET_ITEM(v, 2), Py_EQ);
        if (same < 0) return NULL;
        if (!same || !sha_spelled(PyList_GET_ITEM(leaf, 3), PyTuple_GET_ITEM(v, 3))) Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

/* use_simd(on) -> whether it was on. The tests compare the eight-way hashing with the one-by-one
   way; it stays off where the CPU lacks AVX-512F whatever is asked. */
static PyObject *py_use_simd(PyObject *self, PyObject *arg) {
    int was = simd, on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
#if HAVE_X8
    simd = on && __builtin_cpu_supports("avx512f");
#endif
    return PyBool_FromLong(was);
}

static PyMethodDef methods[] = {
    {"keccak256", py_keccak256, METH_O, "Keccak-256 (Ethereum's) of a bytes-like object."},
    {"frame_leaf_hashes", py_frame_leaf_hashes, METH_VARARGS,
     "frame_leaf_hashes(camera, frames) -> each frame's leaf hash, or None for a value off the fixed layout."},
    {"use_simd", py_use_simd, METH_O, "use_simd(on) -> whether eight-way AVX-512 Keccak was on (tests compare both)."},
    {"make_tree", py_make_tree, METH_O, "make_tree(leaves) -> the StandardMerkleTree node array, or None."},
    {"frame_refs", py_frame_refs, METH_VARARGS,
     "frame_refs(cls, rows) -> FrameRef.from_row of every manifest row, or None for a row off the fixed layout."},
    {"spelled_leaves", py_spelled_leaves, METH_VARARGS,
     "spelled_leaves(camera, camera_hex, values) -> a multiproof's leaves as the extractor spells them, or None."},
    {"leaves_json", py_leaves_json, METH_VARARGS,
     "leaves_json(camera, camera_hex, values) -> the compact JSON of spelled_leaves(...), or None."},
    {"sorted_tree", py_sorted_tree, METH_O,
     "sorted_tree(hashes) -> (node array over the hashes sorted stably, each hash's node index), or None."},
    {"spelled_leaves_equal", py_spelled_leaves_equal, METH_VARARGS,
     "spelled_leaves_equal(leaves, camera_hex, values) -> whether a proof's JSON leaves spell the values, or None."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native",
                                    "Native twins of the frame tree's hot loops (see the source's header).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__native(void) {
#if HAVE_X8
    __builtin_cpu_init(); /* a shared object: the CPU model is not read before main's constructors */
    simd = __builtin_cpu_supports("avx512f");
#endif
    return PyModule_Create(&module);
}

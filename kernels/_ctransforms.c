/* Winograd transforms in C for graphopt.kernels (the Numba versions live in winograd.py).
 *
 * Every function takes C-contiguous float64 buffers (anything with the buffer protocol, e.g. numpy arrays) and
 * writes its result into a caller-allocated output buffer, so the module needs no numpy headers.
 *
 *   weight_transform(w[K,C,r,r], g[n,r], u[n,n,C,K])          u[:, :, c, k] = g w[k, c] g^T
 *   input_transform(x[B,C,Hp,Wp], bt[n,n], m, v[n,n,C,B*T])   v[:, :, c, tile] = bt d bt^T, tiles of n x n, stride m
 *   output_transform(mm[n,n,K,B*T], at[m,n], th, tw, y[B,K,th*m,tw*m])   the m x m tile at^T . mm . at, in place
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define ABI_VERSION 1

typedef struct {
    Py_buffer view;
    int held;
} Buf;

static int get(PyObject *obj, Buf *b, int writable, Py_ssize_t ndim, const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND | (writable ? PyBUF_WRITABLE : 0);
    b->held = 0;
    if (PyObject_GetBuffer(obj, &b->view, flags) < 0) return -1;
    b->held = 1;
    if (b->view.ndim != ndim || b->view.itemsize != 8 || b->view.format == NULL || strcmp(b->view.format, "d") != 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous float64 array of rank %zd", what, ndim);
        return -1;
    }
    return 0;
}

static void release(Buf *b) {
    if (b->held) PyBuffer_Release(&b->view);
    b->held = 0;
}

static PyObject *weight_transform(PyObject *self, PyObject *args) {
    PyObject *ow, *og, *ou;
    Buf w, g, u;
    w.held = g.held = u.held = 0;
    if (!PyArg_ParseTuple(args, "OOO", &ow, &og, &ou)) return NULL;
    if (get(ow, &w, 0, 4, "w") < 0 || get(og, &g, 0, 2, "g") < 0 || get(ou, &u, 1, 4, "u") < 0) goto fail;
    {
        const Py_ssize_t K = w.view.shape[0], C = w.view.shape[1], r = w.view.shape[2], n = g.view.shape[0];
        if (w.view.shape[3] != r || g.view.shape[1] != r || u.view.shape[0] != n || u.view.shape[1] != n ||
            u.view.shape[2] != C || u.view.shape[3] != K) {
            PyErr_SetString(PyExc_ValueError, "weight_transform: shapes do not agree");
            goto fail;
        }
        const double *W = (const double *)w.view.buf, *G = (const double *)g.view.buf;
        double *U = (double *)u.view.buf;
        double tmp[16 * 16];
        if (n > 16 || r > 16) {
            PyErr_SetString(PyExc_ValueError, "weight_transform: tiles up to 16 points");
            goto fail;
        }
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t k = 0; k < K; k++) {
            for (Py_ssize_t c = 0; c < C; c++) {
                const double *wk = W + ((k * C + c) * r) * r;
                for (Py_ssize_t i = 0; i < n; i++)
                    for (Py_ssize_t j = 0; j < r; j++) {
                        double s = 0.0;
                        for (Py_ssize_t t = 0; t < r; t++) s += G[i * r + t] * wk[t * r + j];
                        tmp[i * r + j] = s;
                    }
                for (Py_ssize_t i = 0; i < n; i++)
                    for (Py_ssize_t j = 0; j < n; j++) {
                        double s = 0.0;
                        for (Py_ssize_t t = 0; t < r; t++) s += tmp[i * r + t] * G[j * r + t];
                        U[((i * n + j) * C + c) * K + k] = s;
                    }
            }
        }
        Py_END_ALLOW_THREADS
    }
    release(&w); release(&g); release(&u);
    Py_RETURN_NONE;
fail:
    release(&w); release(&g); release(&u);
    return NULL;
}

static PyObject *input_transform(PyObject *self, PyObject *args) {
    PyObject *ox, *ob, *ov;
    Py_ssize_t m;
    Buf x, b, v;
    x.held = b.held = v.held = 0;
    if (!PyArg_ParseTuple(args, "OOnO", &ox, &ob, &m, &ov)) return NULL;
    if (get(ox, &x, 0, 4, "x") < 0 || get(ob, &b, 0, 2, "bt") < 0 || get(ov, &v, 1, 4, "v") < 0) goto fail;
    {
        const Py_ssize_t B = x.view.shape[0], C = x.view.shape[1], Hp = x.view.shape[2], Wp = x.view.shape[3];
        const Py_ssize_t n = b.view.shape[0];
        if (n > 16 || m < 1 || b.view.shape[1] != n || Hp < n || Wp < n) {
            PyErr_SetString(PyExc_ValueError, "input_transform: bad tile or input size");
            goto fail;
        }
        const Py_ssize_t th = (Hp - n) / m + 1, tw = (Wp - n) / m + 1, T = th * tw;
        if (v.view.shape[0] != n || v.view.shape[1] != n || v.view.shape[2] != C || v.view.shape[3] != B * T) {
            PyErr_SetString(PyExc_ValueError, "input_transform: output shape must be [n, n, C, B*tiles]");
            goto fail;
        }
        const double *X = (const double *)x.view.buf, *BT = (const double *)b.view.buf;
        double *V = (double *)v.view.buf;
        double tmp[16 * 16];
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t bi = 0; bi < B; bi++)
            for (Py_ssize_t c = 0; c < C; c++) {
                const double *img = X + (bi * C + c) * Hp * Wp;
                for (Py_ssize_t ty = 0; ty < th; ty++)
                    for (Py_ssize_t tx = 0; tx < tw; tx++) {
                        const double *d = img + (ty * m) * Wp + tx * m;
                        for (Py_ssize_t i = 0; i < n; i++)
                            for (Py_ssize_t j = 0; j < n; j++) {
                                double s = 0.0;
                                for (Py_ssize_t q = 0; q < n; q++) s += BT[i * n + q] * d[q * Wp + j];
                                tmp[i * n + j] = s;
                            }
                        const Py_ssize_t col = bi * T + ty * tw + tx;
                        for (Py_ssize_t i = 0; i < n; i++)
                            for (Py_ssize_t j = 0; j < n; j++) {
                                double s = 0.0;
                                for (Py_ssize_t q = 0; q < n; q++) s += tmp[i * n + q] * BT[j * n + q];
                                V[((i * n + j) * C + c) * (B * T) + col] = s;
                            }
                    }
            }
        Py_END_ALLOW_THREADS
    }
    release(&x); release(&b); release(&v);
    Py_RETURN_NONE;
fail:
    release(&x); release(&b); release(&v);
    return NULL;
}

static PyObject *output_transform(PyObject *self, PyObject *args) {
    PyObject *omm, *oa, *oy;
    Py_ssize_t th, tw;
    Buf mm, a, y;
    mm.held = a.held = y.held = 0;
    if (!PyArg_ParseTuple(args, "OOnnO", &omm, &oa, &th, &tw, &oy)) return NULL;
    if (get(omm, &mm, 0, 4, "mm") < 0 || get(oa, &a, 0, 2, "at") < 0 || get(oy, &y, 1, 4, "y") < 0) goto fail;
    {
        const Py_ssize_t n = mm.view.shape[0], K = mm.view.shape[2], BT = mm.view.shape[3];
        const Py_ssize_t m = a.view.shape[0], T = th * tw;
        if (n > 16 || mm.view.shape[1] != n || a.view.shape[1] != n || T < 1 || BT % T != 0 ||
            y.view.shape[0] != BT / T || y.view.shape[1] != K || y.view.shape[2] != th * m ||
            y.view.shape[3] != tw * m) {
            PyErr_SetString(PyExc_ValueError, "output_transform: shapes do not agree");
            goto fail;
        }
        const Py_ssize_t B = BT / T, H = th * m, W = tw * m;
        const double *M = (const double *)mm.view.buf, *AT = (const double *)a.view.buf;
        double *Y = (double *)y.view.buf;
        double tile[16 * 16], tmp[16 * 16];
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t bi = 0; bi < B; bi++)
            for (Py_ssize_t k = 0; k < K; k++)
                for (Py_ssize_t t = 0; t < T; t++) {
                    const Py_ssize_t col = bi * T + t, ty = t / tw, tx = t % tw;
                    for (Py_ssize_t i = 0; i < n; i++)
                        for (Py_ssize_t j = 0; j < n; j++) tile[i * n + j] = M[((i * n + j) * K + k) * BT + col];
                    for (Py_ssize_t i = 0; i < m; i++)
                        for (Py_ssize_t j = 0; j < n; j++) {
                            double s = 0.0;
                            for (Py_ssize_t q = 0; q < n; q++) s += AT[i * n + q] * tile[q * n + j];
                            tmp[i * n + j] = s;
                        }
                    double *out = Y + ((bi * K + k) * H + ty * m) * W + tx * m;
                    for (Py_ssize_t i = 0; i < m; i++)
                        for (Py_ssize_t j = 0; j < m; j++) {
                            double s = 0.0;
                            for (Py_ssize_t q = 0; q < n; q++) s += tmp[i * n + q] * AT[j * n + q];
                            out[i * W + j] = s;
                        }
                }
        Py_END_ALLOW_THREADS
    }
    release(&mm); release(&a); release(&y);
    Py_RETURN_NONE;
fail:
    release(&mm); release(&a); release(&y);
    return NULL;
}

static PyMethodDef methods[] = {
    {"weight_transform", weight_transform, METH_VARARGS, "u = G w G^T for every (output, input) channel pair"},
    {"input_transform", input_transform, METH_VARARGS, "v = B^T d B for every channel and tile"},
    {"output_transform", output_transform, METH_VARARGS, "y tiles = A^T mm A, laid out in place"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ctransforms",
                                    "Winograd transforms in C (float64 buffers in, caller-allocated output).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__ctransforms(void) {
    PyObject *mod = PyModule_Create(&module);
    if (mod != NULL) PyModule_AddIntConstant(mod, "ABI_VERSION", ABI_VERSION);
    return mod;
}

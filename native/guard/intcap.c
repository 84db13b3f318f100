/*
 * Caps on the integer operations whose cost grows faster than their operands and that run without
 * allocating as they go, so that the late-allocation refusal (guard.h) cannot stop them: division,
 * remainder and divmod (schoolbook: digits(a) x digits(b) steps), powers (the result's size) and
 * modular powers (bits(exponent) x digits(modulus)^2 steps).
 *
 *   int_caps_install(exc) put the capped versions in int's number slots, in the wrappers behind
 *                        int.__floordiv__/__mod__/__divmod__/__pow__ (and their reflected forms),
 *                        and in the slots of the int subclasses that already exist (bool, IntEnum...)
 *
 * The caps apply only inside a guarded call (guard_call_deadline set): the host's own arithmetic is
 * untouched. Refusals raise the exception class given to int_caps_install (a MemoryError subclass:
 * the runtime reports it as `resource`).
 */
#include "guard.h"

/* pow() results above this many bits are refused: one such C call can hold the GIL for minutes. */
#define MAX_POW_BITS ((double)(1 << 22))
/* Division-like work above this many digit steps is refused (about 20-40 ms of one C call). */
#define MAX_INT_WORK ((double)(1 << 24))

static binaryfunc orig_floordiv, orig_mod, orig_divmod;
static ternaryfunc orig_pow;
static PyObject *refused_exc = NULL;

/* The number of 30-bit digits of an int, read from the object (no call). */
static inline double
ndigits(PyObject *v)
{
#if PY_VERSION_HEX >= 0x030C0000
    return (double)(((PyLongObject *)v)->long_value.lv_tag >> _PyLong_NON_SIZE_BITS);
#else
    return (double)Py_ABS(Py_SIZE(v));
#endif
}

/* Checked only when the cheap tests below say the work could be large: the thread-local read of
 * the deadline is the slow part of the common case. */
static int
division_refused(PyObject *a, PyObject *b)
{
    if (!PyLong_Check(a) || !PyLong_Check(b))
        return 0;
    double db = ndigits(b), da = ndigits(a);
    if (db <= 2 || da < db || da * db <= MAX_INT_WORK || guard_call_deadline == 0) /* linear, or small */
        return 0;
    PyErr_Format(refused_exc,
                 "integer division of a %lld-digit number by a %lld-digit number (30-bit digits) is more work "
                 "than one call may do", (long long)da, (long long)db);
    return -1;
}

static PyObject *
capped_floordiv(PyObject *a, PyObject *b)
{
    return division_refused(a, b) ? NULL : orig_floordiv(a, b);
}

static PyObject *
capped_mod(PyObject *a, PyObject *b)
{
    return division_refused(a, b) ? NULL : orig_mod(a, b);
}

static PyObject *
capped_divmod(PyObject *a, PyObject *b)
{
    return division_refused(a, b) ? NULL : orig_divmod(a, b);
}

static PyObject *
capped_pow(PyObject *a, PyObject *b, PyObject *m)
{
    if (!PyLong_Check(a) || !PyLong_Check(b) || (m != Py_None && !PyLong_Check(m)))
        return orig_pow(a, b, m);
    double da = ndigits(a), db = ndigits(b);
    if (m == Py_None) {
        if (db <= 1) { /* a one-digit exponent: cheap unless the base is big (da * 30 bounds its bits) */
            long e = PyLong_AsLong(b);
            if (e <= 0 || da * PyLong_SHIFT * (double)e <= MAX_POW_BITS)
                return orig_pow(a, b, m);
        }
        if (guard_call_deadline != 0 && _PyLong_Sign(b) > 0) {
            double bits = (double)_PyLong_NumBits(a);
            int overflow;
            long long e = PyLong_AsLongLongAndOverflow(b, &overflow);
            if (bits > 1 && (overflow != 0 || bits * (double)e > MAX_POW_BITS)) {
                PyErr_Format(refused_exc, "pow() result would exceed %lld bits", (long long)MAX_POW_BITS);
                return NULL;
            }
        }
        return orig_pow(a, b, m);
    }
    double dm = ndigits(m);
    if (db * PyLong_SHIFT * dm * dm > MAX_INT_WORK && guard_call_deadline != 0) {
        PyErr_Format(refused_exc,
                     "pow() with a %lld-digit exponent and a %lld-digit modulus (30-bit digits) is more work than "
                     "one call may do", (long long)db, (long long)dm);
        return NULL;
    }
    return orig_pow(a, b, m);
}

/* The number slots of tp (int or a subclass) that still hold int's originals get the capped ones. */
static int
patch_type(PyTypeObject *tp)
{
    PyNumberMethods *nb = tp->tp_as_number;
    if (nb != NULL) {
        if (nb->nb_floor_divide == orig_floordiv)
            nb->nb_floor_divide = capped_floordiv;
        if (nb->nb_remainder == orig_mod)
            nb->nb_remainder = capped_mod;
        if (nb->nb_divmod == orig_divmod)
            nb->nb_divmod = capped_divmod;
        if (nb->nb_power == orig_pow)
            nb->nb_power = capped_pow;
    }
    PyObject *subs = PyObject_CallMethod((PyObject *)tp, "__subclasses__", NULL);
    if (subs == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(subs); i++) {
        if (patch_type((PyTypeObject *)PyList_GET_ITEM(subs, i)) < 0) {
            Py_DECREF(subs);
            return -1;
        }
    }
    Py_DECREF(subs);
    return 0;
}

/* int.__floordiv__ and friends call the function they were created with, not the slot. */
static int
patch_wrapper(const char *name, void *orig, void *capped)
{
    PyObject *d = PyObject_GetAttrString((PyObject *)&PyLong_Type, name);
    if (d == NULL)
        return -1;
    if (Py_IS_TYPE(d, &PyWrapperDescr_Type) && ((PyWrapperDescrObject *)d)->d_wrapped == orig)
        ((PyWrapperDescrObject *)d)->d_wrapped = capped;
    Py_DECREF(d);
    return 0;
}

static PyObject *install_once(PyObject *exc);

static PyObject *
int_caps_install(PyObject *self, PyObject *exc)
{
    if (!PyExceptionClass_Check(exc)) {
        PyErr_SetString(PyExc_TypeError, "int_caps_install(exc): exc must be an exception class");
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030D0000
    static PyMutex install_lock; /* without a GIL, two first calls at once would patch twice */
    PyMutex_Lock(&install_lock);
#endif
    PyObject *rc = install_once(exc);
#if PY_VERSION_HEX >= 0x030D0000
    PyMutex_Unlock(&install_lock);
#endif
    return rc;
}

/* The first call installs the caps, raising exc; later calls keep them as they are (a guarded call on
 * another thread may be raising refused_exc at this moment, so it is never replaced). */
static PyObject *
install_once(PyObject *exc)
{
    if (orig_pow != NULL)
        Py_RETURN_NONE;
    refused_exc = Py_NewRef(exc);
    PyNumberMethods *nb = PyLong_Type.tp_as_number;
    orig_floordiv = nb->nb_floor_divide;
    orig_mod = nb->nb_remainder;
    orig_divmod = nb->nb_divmod;
    orig_pow = nb->nb_power;
    static const struct { const char *name; int which; } wrappers[] = {
        {"__floordiv__", 0}, {"__rfloordiv__", 0}, {"__mod__", 1}, {"__rmod__", 1},
        {"__divmod__", 2}, {"__rdivmod__", 2}, {"__pow__", 3}, {"__rpow__", 3},
    };
    void *origs[] = {(void *)orig_floordiv, (void *)orig_mod, (void *)orig_divmod, (void *)orig_pow};
    void *capped[] = {(void *)capped_floordiv, (void *)capped_mod, (void *)capped_divmod, (void *)capped_pow};
    for (size_t i = 0; i < sizeof wrappers / sizeof wrappers[0]; i++)
        if (patch_wrapper(wrappers[i].name, origs[wrappers[i].which], capped[wrappers[i].which]) < 0)
            return NULL;
    if (patch_type(&PyLong_Type) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyMethodDef guard_intcap_methods[] = {
    {"int_caps_install", int_caps_install, METH_O,
     "int_caps_install(exc): cap int division, remainder, divmod and pow inside guarded calls, raising exc "
     "(idempotent, process-wide)."},
    {NULL, NULL, 0, NULL},
};

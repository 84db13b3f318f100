/*
 * vm.policy._verify — the bytecode verifier's pass over a module's code objects (vm/policy/verifier.py
 * is the Python half and judges what this pass reports):
 *
 *   verify_tree(code, filename, table, extended_arg, (for_iter, end_for, pop_top, skip), attr_special,
 *               protected) -> [(code, offset, name_class, name, prev_opcode, prev_arg, joined)]
 *
 * Constants are plain data or code, opcodes are on the interpreter's allowlist (vm/policy/opcodes.py
 * builds the table), operand indices, jump targets, inline caches and the exception table are in
 * range, and the stack depth is checked on every path. Keeps no state between calls, so it runs on
 * several threads at once where there is no GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* One 8-byte row per opcode, built by vm/opcodes.py for the running interpreter. */
enum {
    ARG_NONE = 0,
    ARG_CONST = 1,      /* index into co_consts */
    ARG_NAME = 2,       /* (oparg >> shift) indexes co_names; checked by name class */
    ARG_LOCAL = 3,      /* index into the fast locals (co_varnames + cells + free vars) */
    ARG_LOCAL_PAIR = 4, /* two 4-bit local indices */
    ARG_FREE_COUNT = 5, /* oparg <= number of free variables */
    ARG_JUMP_FWD = 6,   /* relative forward jump in code units, after the inline caches */
    ARG_JUMP_BWD = 7,   /* relative backward jump */
    ARG_ENUM = 8,       /* (oparg >> shift) <= max and not in deny_mask */
    ARG_REPORT = 9,     /* no operand check; always reported to the caller */
};

/* Name classes (vm/opcodes.py NC_*). */
enum { NC_GLOBAL_LOAD = 1, NC_GLOBAL_STORE = 2, NC_ATTR_LOAD = 3, NC_ATTR_STORE = 4 };

typedef struct {
    uint8_t allowed, caches, argkind, shift, name_class, deny_mask;
    uint16_t max;
    uint8_t expect_next; /* 3.12 superinstructions: opcode + 1 that must follow (0: any) */
    uint8_t base_op;     /* 3.12 superinstructions: opcode + 1 of their first half (0: not one) */
    uint8_t in_kind;     /* how many stack items the instruction reads: IN_* below */
    uint8_t in_const;
    uint8_t flow;        /* FLOW_* below */
    uint8_t resumes;     /* RETURN_GENERATOR: execution goes on with the sent value pushed (+1) */
    uint8_t typed;       /* what the type pass does with it: OP_* below */
    uint8_t code_req;    /* REQ_*: which code objects may hold it (co_flags) */
} oprow_t;

/* vm/policy/opcodes.py OP_*: how an instruction moves cells, containers, iterators and exceptions. */
enum {
    OP_NONE, OP_LOAD_FAST, OP_LOAD_FAST_CLEAR, OP_LOAD_FAST_PAIR, OP_STORE_FAST, OP_STORE_LOAD_FAST,
    OP_STORE_FAST_PAIR, OP_DELETE_FAST, OP_DEREF, OP_LOAD_CLOSURE, OP_MAKE_CELL, OP_COPY_FREE_VARS, OP_SWAP, OP_COPY,
    OP_LOAD_CONST, OP_BUILD_TUPLE, OP_BUILD_LIST, OP_BUILD_SET, OP_BUILD_MAP, OP_LIST_TO_TUPLE, OP_LIST_ADD,
    OP_SET_ADD, OP_MAP_ADD, OP_POP_ONLY, OP_MAKE_FUNCTION, OP_SET_FUNCTION_ATTRIBUTE, OP_GET_ITER, OP_GET_AWAITABLE,
    OP_GET_ANEXT, OP_FOR_ITER, OP_SEND, OP_PUSH_EXC_INFO, OP_POP_EXCEPT, OP_RERAISE, OP_NEEDS_EXC,
    OP_WITH_EXCEPT_START, OP_CHECK_EXC_MATCH, OP_CHECK_EG_MATCH, OP_PREP_RERAISE_STAR, OP_INTRINSIC_1,
    OP_INTRINSIC_2, OP_MATCH_KEYS, OP_JUMP_IF_NOT_NONE, OP_KW_NAMES, OP_PRECALL, OP_CALL, OP_CALL_KW,
    OP_LIST_EXTEND, OP_LOAD_NAME,
};
enum { REQ_GEN = 1, REQ_ASYNC = 2, REQ_ASYNC_GEN = 4, REQ_UNOPTIMIZED = 8 };
enum { INTRINSIC_STOPITERATION_ERROR = 3, INTRINSIC_ASYNC_GEN_WRAP = 4, INTRINSIC_LIST_TO_TUPLE = 6 };

/* co_flags and co_localspluskinds bits (CPython's Include/cpython/code.h, Include/internal/pycore_code.h). */
#define F_OPTIMIZED 0x1
#define F_GENERATOR 0x20
#define F_COROUTINE 0x80
#define F_ITERABLE_COROUTINE 0x100
#define F_ASYNC_GENERATOR 0x200
#define K_CELL 0x40
#define K_FREE 0x80

enum { IN_FIXED = 0, IN_ARG = 1, IN_ARG2 = 2, IN_MAKE_FUNCTION = 3, IN_FORMAT_VALUE = 4, IN_CALL_EX = 5,
       IN_SLICE = 6 };
enum { FLOW_NEXT = 0, FLOW_JUMP = 1, FLOW_BRANCH = 2, FLOW_STOP = 3 };

static long
stack_inputs(const oprow_t *r, long arg)
{
    switch (r->in_kind) {
    case IN_ARG:
        return arg + r->in_const;
    case IN_ARG2:
        return 2 * arg + r->in_const;
    case IN_MAKE_FUNCTION:
        return r->in_const + __builtin_popcountl((unsigned long)arg & 0xF);
    case IN_FORMAT_VALUE:
        return r->in_const + ((arg >> 2) & 1);
    case IN_CALL_EX:
        return r->in_const + (arg & 1);
    case IN_SLICE:
        return arg == 3 ? 3 : 2;
    default:
        return r->in_const;
    }
}

typedef struct {
    const oprow_t *rows;
    int ext_arg_op, for_iter_op, end_for_op, pop_top_op, for_iter_skip;
    PyObject *filename;    /* every code object must carry this file name */
    PyObject *attr_special; /* attribute names never accepted without the caller's judgement */
    PyObject *protected_;   /* global names never accepted without the caller's judgement */
    PyObject *reports;      /* list of (code, offset, name_class, name, prev_op, prev_arg) */
    void *scratch;          /* the stack analysis' space, reused across this call's code objects */
    size_t scratch_size;
} verifier_t;

static int
fail_at(PyObject *code, Py_ssize_t unit, const char *msg, int op)
{
    PyObject *qual = PyObject_GetAttrString(code, "co_qualname");
    PyErr_Format(PyExc_ValueError, "in %U at offset %zd: %s (opcode %d)", qual ? qual : Py_None, unit * 2, msg,
                 op);
    Py_XDECREF(qual);
    return -1;
}

/* Parse one varint of co_exceptiontable (CPython 3.11-3.13). */
static int
read_varint(const uint8_t *p, Py_ssize_t n, Py_ssize_t *pos, long *out)
{
    if (*pos >= n)
        return -1;
    uint8_t b = p[(*pos)++];
    long val = b & 63;
    while (b & 64) {
        if (*pos >= n || val > (1L << 24))
            return -1;
        b = p[(*pos)++];
        val = (val << 6) | (b & 63);
    }
    *out = val;
    return 0;
}

/* Accept the ordinary case without the caller; report anything that needs vm.policy.rules's judgement. */
static int
name_needs_judgement(verifier_t *v, int nclass, PyObject *name)
{
    Py_ssize_t len = PyUnicode_GET_LENGTH(name);
    Py_UCS4 c0 = len > 0 ? PyUnicode_READ_CHAR(name, 0) : 0;
    Py_UCS4 c1 = len > 1 ? PyUnicode_READ_CHAR(name, 1) : 0;
    int r;
    switch (nclass) {
    case NC_ATTR_LOAD:
    case NC_ATTR_STORE:
        if (c0 == '_')
            return 1;
        r = PySet_Contains(v->attr_special, name);
        return r; /* 1, 0 or -1 */
    case NC_GLOBAL_LOAD:
        return c0 == '_' && c1 == '_';
    case NC_GLOBAL_STORE:
        if (c0 == '_' && c1 == '_')
            return 1;
        return PySet_Contains(v->protected_, name);
    default:
        return 1; /* imports, match-class patterns: always judged by the caller */
    }
}

/* A report's last field is first the unit where its instruction starts; once the jump targets are
 * known it becomes `joined`: True if another path can reach the instruction, in which case what
 * the previous instruction left on the stack says nothing about what the instruction will see. */
static int
report(verifier_t *v, PyObject *code, Py_ssize_t unit, Py_ssize_t start, int nclass, PyObject *name,
       int prev_op, long prev_arg)
{
    PyObject *t = Py_BuildValue("(OniOiln)", code, unit * 2, nclass, name ? name : Py_None, prev_op, prev_arg,
                                start);
    if (!t)
        return -1;
    int rc = PyList_Append(v->reports, t);
    Py_DECREF(t);
    return rc;
}

static int
check_const(PyObject *c, int depth)
{
    if (c == Py_None || c == Py_Ellipsis || PyBool_Check(c) || PyLong_CheckExact(c) || PyFloat_CheckExact(c) ||
        PyComplex_CheckExact(c) || PyUnicode_CheckExact(c) || PyBytes_CheckExact(c))
        return 1;
    if (depth > 20)
        return 0;
    if (PyTuple_CheckExact(c)) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(c); i++) {
            int ok = check_const(PyTuple_GET_ITEM(c, i), depth + 1);
            if (ok <= 0)
                return ok;
        }
        return 1;
    }
    if (Py_IS_TYPE(c, &PySlice_Type)) { /* 3.14 folds constant slices (x[1:2]) */
        PySliceObject *sl = (PySliceObject *)c;
        PyObject *parts[3] = {sl->start, sl->stop, sl->step};
        for (int i = 0; i < 3; i++) {
            int ok = check_const(parts[i], depth + 1);
            if (ok <= 0)
                return ok;
        }
        return 1;
    }
    if (PyFrozenSet_CheckExact(c)) { /* iterated through the public API (_PySet_NextEntry is private) */
        PyObject *it = PyObject_GetIter(c), *key;
        int ok = it != NULL;
        while (ok == 1 && (key = PyIter_Next(it)) != NULL) {
            ok = check_const(key, depth + 1);
            Py_DECREF(key);
        }
        Py_XDECREF(it);
        return PyErr_Occurred() ? -1 : ok;
    }
    return 0;
}

static int verify_code(verifier_t *v, PyObject *code, int depth);

/* Stack depth on every path: never below what an instruction reads, never above co_stacksize,
 * the same whichever way an instruction is reached, and deep enough for the exception handler that
 * covers it. CPython trusts code objects on all of this; a crafted one would read or write outside
 * its frame. Net effects come from the compiler's own table (PyCompile_OpcodeStackEffectWithJump). */
typedef struct {
    long start, end, target, depth, lasti;
} exc_entry_t;

static int
merge_depth(int *depth, Py_ssize_t *work, Py_ssize_t *nwork, Py_ssize_t at, int d, PyObject *codeobj)
{
    if (depth[at] < 0) {
        depth[at] = d;
        work[(*nwork)++] = at;
        return 0;
    }
    if (depth[at] != d)
        return fail_at(codeobj, at, "inconsistent stack depth where paths meet", 0);
    return 0;
}

/* Scratch space for the analysis, reused across one call's code objects: per call, not static, so
 * that calls on several threads at once (free-threaded CPython, no GIL) never share it. */
static void *
scratch_for(verifier_t *v, size_t need)
{
    if (need > v->scratch_size) {
        void *grown = PyMem_Realloc(v->scratch, need);
        if (grown == NULL)
            return PyErr_NoMemory();
        v->scratch = grown;
        v->scratch_size = need;
    }
    return v->scratch;
}

/* ---- The type pass ------------------------------------------------------------------------------
 * CPython's instructions trust what they find: LOAD_DEREF takes its slot for a cell, LIST_APPEND its
 * target for a list, FOR_ITER calls its operand's tp_iternext, RERAISE and PUSH_EXC_INFO take theirs
 * for exceptions, MAKE_FUNCTION its operands for a tuple of defaults, a dict of keyword defaults and a
 * tuple of cells as long as the code's free variables. The compiler only emits them on values it made
 * for that purpose; this pass follows, on every path (exception handlers included), which stack items
 * and which cell or free slots hold such values, and refuses an instruction whose operand is not one. */
enum {
    T_ANY, T_CELL, T_TUPLE_EVEN, T_TUPLE_ODD, T_TUPLE, T_LIST, T_EXCLIST, T_SET, T_DICT, T_FUNC, T_COMPFUNC,
    T_ITER, T_SENDABLE, T_EXC, T_EXC_OR_NONE, T_EXCPREV, T_LASTI,
    T_GENFUNC, /* a generator expression's function: like T_COMPFUNC, and calling it gives an iterator */
    T_CLOSURE = 64, /* + n: a tuple of n cells (1 <= n <= MAX_CLOSURE) */
};
#define MAX_CLOSURE 191

static int
is_tuple(int t)
{
    return t == T_TUPLE_EVEN || t == T_TUPLE_ODD || t == T_TUPLE || t > T_CLOSURE;
}

static int
is_compfunc(int t)
{
    return t == T_COMPFUNC || t == T_GENFUNC;
}

static int
is_list(int t)
{
    return t == T_LIST || t == T_EXCLIST;
}

/* What two paths that meet agree on. */
static uint8_t
combine(uint8_t a, uint8_t b)
{
    if (a == b)
        return a;
    if (is_tuple(a) && is_tuple(b))
        return T_TUPLE;
    if (is_list(a) && is_list(b))
        return T_LIST;
    if ((a == T_EXC || a == T_EXC_OR_NONE) && (b == T_EXC || b == T_EXC_OR_NONE))
        return T_EXC_OR_NONE;
    return T_ANY;
}

static uint8_t
tuple_tag(Py_ssize_t n)
{
    return n % 2 ? T_TUPLE_ODD : T_TUPLE_EVEN;
}

typedef struct {
    int depth, seen, queued;
    uint64_t cells; /* bit b: the b-th cell or free slot holds a cell */
} tstate_t;         /* followed by one tag per stack item */
#define TAGS(s) ((uint8_t *)((s) + 1))

typedef struct {
    const verifier_t *v;
    PyCodeObject *co;
    PyObject *codeobj;
    const int8_t *cbit;  /* per slot: its bit among the cell and free slots, or -1 */
    uint64_t free_mask;  /* the free slots' bits */
    int comp;            /* a comprehension's or generator expression's code: slot 0 ('.0') is its iterator */
    int *slot_of;        /* per unit: its state's index, or -1 (states are kept where paths meet) */
    char *states;
    size_t stride;
    int *queue, nqueue;
} typed_t;

#define STATE(t, k) ((tstate_t *)((t)->states + (size_t)(k) * (t)->stride))

/* Facts about the instruction the walk just passed (straight-line code only). */
typedef struct {
    PyObject *prev_code; /* it loaded this code constant */
    int made_nfree;      /* it was MAKE_FUNCTION of a code with this many free variables (-1: it was not) */
    int prev_copy1;      /* it was COPY 1 */
} walk_t;

/* A comprehension's or generator expression's code: its one argument, '.0', is only ever the iterator
 * of a FOR_ITER right after it is loaded. Its function is called at once with that iterator (the
 * caller's type pass checks it), so loading slot 0 gives an iterator. An async comprehension's '.0'
 * is an async iterator: it does not qualify, and its slot 0 is an ordinary value. */
static int
comp_code(const verifier_t *v, PyCodeObject *co)
{
    if (co->co_argcount != 1 || co->co_nlocalsplus < 1)
        return 0;
    PyObject *name = PyTuple_GET_ITEM(co->co_localsplusnames, 0);
    if (!PyUnicode_Check(name) || PyUnicode_CompareWithASCIIString(name, ".0") != 0)
        return 0;
    const uint8_t *bc = (const uint8_t *)co->co_code_adaptive;
    Py_ssize_t n = Py_SIZE(co), i = 0;
    int found = 0;
    long ext = 0;
    while (i < n) {
        int op = bc[2 * i];
        long arg = bc[2 * i + 1] | (ext << 8);
        const oprow_t *r = &v->rows[op];
        if (op == v->ext_arg_op) {
            ext = arg & 0xFFFFFF;
            i++;
            continue;
        }
        ext = 0;
        Py_ssize_t next = i + 1 + r->caches;
        switch (r->typed) {
        case OP_LOAD_FAST:
            if (arg == 0) {
                if (next >= n || v->rows[bc[2 * next]].typed != OP_FOR_ITER)
                    return 0;
                found = 1;
            }
            break;
        case OP_LOAD_FAST_PAIR:
        case OP_STORE_LOAD_FAST:
        case OP_STORE_FAST_PAIR:
            if ((arg >> 4) == 0 || (arg & 15) == 0)
                return 0;
            break;
        case OP_LOAD_FAST_CLEAR:
        case OP_STORE_FAST:
        case OP_DELETE_FAST:
            if (arg == 0)
                return 0;
            break;
        default:
            break;
        }
        i = next;
    }
    return found;
}

static int
tmerge(typed_t *t, Py_ssize_t unit, const tstate_t *in)
{
    int k = t->slot_of[unit];
    if (k < 0)
        return fail_at(t->codeobj, unit, "internal: no state where paths meet", 0);
    tstate_t *s = STATE(t, k);
    uint8_t *st = TAGS(s);
    const uint8_t *it = TAGS((tstate_t *)in);
    int changed = 0;
    if (!s->seen) {
        memcpy(s, in, sizeof(tstate_t) + (size_t)in->depth);
        s->seen = 1;
        s->queued = 0;
        changed = 1;
    }
    else {
        if (s->depth != in->depth)
            return fail_at(t->codeobj, unit, "inconsistent stack depth where paths meet", 0);
        if ((s->cells & in->cells) != s->cells) {
            s->cells &= in->cells;
            changed = 1;
        }
        for (int p = 0; p < s->depth; p++) {
            uint8_t c = combine(st[p], it[p]);
            if (c != st[p]) {
                st[p] = c;
                changed = 1;
            }
        }
    }
    if (changed && !s->queued) {
        s->queued = 1;
        t->queue[t->nqueue++] = k;
    }
    return 0;
}

static int
tfail(typed_t *t, Py_ssize_t unit, const char *msg, int op)
{
    return fail_at(t->codeobj, unit, msg, op);
}

/* The tag a load from slot k pushes; -1 if the load is refused. */
static int
slot_tag(typed_t *t, const tstate_t *s, long k, int op, Py_ssize_t unit, int clearing)
{
    if (t->comp && k == 0) /* only ever loaded, for FOR_ITER (comp_code) */
        return T_ITER;
    int b = t->cbit[k];
    if (b < 0 || !((s->cells >> b) & 1))
        return T_ANY;
#if PY_VERSION_HEX < 0x030D0000
    if (!clearing) /* 3.13 loads cells with LOAD_FAST to build closures; 3.11 and 3.12 with LOAD_CLOSURE */
        return tfail(t, unit, "LOAD_FAST of a cell", op);
#endif
    return T_CELL;
}

static void
slot_store(typed_t *t, tstate_t *s, long k, uint8_t tag)
{
    int b = t->cbit[k];
    if (b >= 0) {
        if (tag == T_CELL)
            s->cells |= (uint64_t)1 << b;
        else
            s->cells &= ~((uint64_t)1 << b);
    }
}

/* Apply one instruction to state s (its jump edge if `jump`). */
static int
tapply(typed_t *t, tstate_t *s, Py_ssize_t unit, int op, const oprow_t *r, int base, long arg, int jump,
       const walk_t *w)
{
    uint8_t *tg = TAGS(s);
    int d = s->depth;
    int eff = r->resumes ? 1 : PyCompile_OpcodeStackEffectWithJump(base, (int)arg, jump);
    int nd = d + eff;
    long inputs = stack_inputs(r, arg);
    int lo = d - inputs < nd ? (int)(d - inputs) : nd; /* the first item the instruction pops or rewrites */
    int top = -1, second = -1;                          /* tags it pushes, if not T_ANY */
    int comp_call = 0;
    int b, tag;
    switch (r->typed) {
    case OP_LOAD_FAST:
        if ((top = slot_tag(t, s, arg, op, unit, 0)) < 0)
            return -1;
        break;
    case OP_LOAD_FAST_CLEAR:
        if ((top = slot_tag(t, s, arg, op, unit, 1)) < 0)
            return -1;
        if (t->cbit[arg] >= 0)
            s->cells &= ~((uint64_t)1 << t->cbit[arg]);
        break;
    case OP_LOAD_FAST_PAIR:
        if ((second = slot_tag(t, s, arg >> 4, op, unit, 0)) < 0 || (top = slot_tag(t, s, arg & 15, op, unit, 0)) < 0)
            return -1;
        break;
    case OP_STORE_FAST:
        slot_store(t, s, arg, tg[d - 1]);
        break;
    case OP_STORE_LOAD_FAST:
        slot_store(t, s, arg >> 4, tg[d - 1]);
        if ((top = slot_tag(t, s, arg & 15, op, unit, 0)) < 0)
            return -1;
        break;
    case OP_STORE_FAST_PAIR:
        slot_store(t, s, arg >> 4, tg[d - 1]);
        slot_store(t, s, arg & 15, tg[d - 2]);
        break;
    case OP_DELETE_FAST:
        slot_store(t, s, arg, T_ANY);
        break;
    case OP_DEREF:
    case OP_LOAD_CLOSURE:
        b = t->cbit[arg];
        if (b < 0 || !((s->cells >> b) & 1))
            return tfail(t, unit, "uses a cell variable whose slot holds no cell", op);
        if (r->typed == OP_LOAD_CLOSURE)
            top = T_CELL;
        break;
    case OP_MAKE_CELL:
        b = t->cbit[arg];
        if (b < 0 || ((s->cells >> b) & 1))
            return tfail(t, unit, "MAKE_CELL on a slot that already holds a cell", op);
        s->cells |= (uint64_t)1 << b;
        break;
    case OP_COPY_FREE_VARS:
        s->cells |= t->free_mask;
        break;
    case OP_SWAP: {
        uint8_t a = tg[d - 1];
        if (is_compfunc(a) || is_compfunc(tg[d - arg]))
            return tfail(t, unit, "moves a comprehension's function", op);
        tg[d - 1] = tg[d - arg];
        tg[d - arg] = a;
        return 0;
    }
    case OP_COPY:
        tag = tg[d - arg];
        if (is_compfunc(tag))
            return tfail(t, unit, "copies a comprehension's function", op);
        if (tag == T_EXCLIST) /* two references to one list: appends through either are not followed */
            tag = tg[d - arg] = T_LIST;
        top = tag;
        lo = d;
        break;
    case OP_LOAD_NAME:
        /* 3.14 records which conditional annotations ran with LOAD_NAME __conditional_annotations__;
         * SET_ADD. The name is only ever bound to a new set (vm/policy/verifier.py checks every store
         * of it, and the source policy refuses it in scripts), so loading it gives a set. */
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(t->co->co_names, arg), "__conditional_annotations__") == 0)
            top = T_SET;
        break;
    case OP_LOAD_CONST: {
        PyObject *c = PyTuple_GET_ITEM(t->co->co_consts, arg);
        if (PyTuple_CheckExact(c))
            top = tuple_tag(PyTuple_GET_SIZE(c));
        break;
    }
    case OP_BUILD_TUPLE: {
        int cells = arg >= 1 && arg <= MAX_CLOSURE;
        for (long k = 1; cells && k <= arg; k++)
            cells = tg[d - k] == T_CELL;
        top = cells ? T_CLOSURE + (int)arg : tuple_tag(arg);
        break;
    }
    case OP_BUILD_LIST:
        top = arg == 0 ? T_EXCLIST : T_LIST;
        break;
    case OP_BUILD_SET:
        top = T_SET;
        break;
    case OP_BUILD_MAP:
        top = T_DICT;
        break;
    case OP_LIST_TO_TUPLE:
        top = T_TUPLE;
        break;
    case OP_LIST_ADD:
    case OP_LIST_EXTEND:
        if (!is_list(tg[d - 1 - arg]))
            return tfail(t, unit, "appends to something that is not a list", op);
        /* a list of exceptions stays one while only exceptions (or None) are appended to it */
        if (r->typed == OP_LIST_EXTEND || (tg[d - 1] != T_EXC && tg[d - 1] != T_EXC_OR_NONE))
            tg[d - 1 - arg] = T_LIST;
        lo = nd;
        break;
    case OP_SET_ADD:
        if (tg[d - 1 - arg] != T_SET)
            return tfail(t, unit, "adds to something that is not a set", op);
        lo = nd;
        break;
    case OP_MAP_ADD:
        if (tg[d - 2 - arg] != T_DICT)
            return tfail(t, unit, "adds to something that is not a dict", op);
        lo = nd;
        break;
    case OP_POP_ONLY:
        lo = nd;
        break;
    case OP_MAKE_FUNCTION: {
        if (w->prev_code == NULL)
            return tfail(t, unit, "MAKE_FUNCTION of something other than a code constant", op);
        PyCodeObject *fc = (PyCodeObject *)w->prev_code;
#if PY_VERSION_HEX < 0x030D0000
        int p = d - 2;
        if (arg & 8) {
            if (fc->co_nfreevars == 0 || tg[p] != T_CLOSURE + fc->co_nfreevars)
                return tfail(t, unit, "a function's closure is not a tuple of its free variables' cells", op);
            p--;
        }
        else if (fc->co_nfreevars)
            return tfail(t, unit, "a function with free variables made without its closure", op);
        if ((arg & 4) && tg[p--] != T_TUPLE_EVEN)
            return tfail(t, unit, "a function's annotations are not a tuple of pairs", op);
        if ((arg & 2) && tg[p--] != T_DICT)
            return tfail(t, unit, "a function's keyword defaults are not a dict", op);
        if ((arg & 1) && !is_tuple(tg[p--]))
            return tfail(t, unit, "a function's defaults are not a tuple", op);
#endif
        top = !comp_code(t->v, fc) ? T_FUNC : (fc->co_flags & F_GENERATOR) ? T_GENFUNC : T_COMPFUNC;
        break;
    }
    case OP_SET_FUNCTION_ATTRIBUTE: {
        uint8_t f = tg[d - 1], a = tg[d - 2];
        if (f != T_FUNC && !is_compfunc(f))
            return tfail(t, unit, "SET_FUNCTION_ATTRIBUTE on something other than a new function", op);
        if ((arg == 8 && (w->made_nfree <= 0 || a != T_CLOSURE + w->made_nfree)) ||
            (arg == 4 && a != T_TUPLE_EVEN) || (arg == 2 && a != T_DICT) || (arg == 1 && !is_tuple(a)) ||
            (arg == 16 && a != T_FUNC)) /* 3.14: __annotate__, a function made from the same source */
            return tfail(t, unit, "a function attribute of the wrong kind", op);
        comp_call = 1; /* the function goes back on the stack */
        top = f;
        break;
    }
    case OP_GET_ITER:
        top = T_ITER;
        break;
    case OP_GET_AWAITABLE:
        top = T_SENDABLE;
        break;
    case OP_GET_ANEXT:
        lo = d;
        top = T_SENDABLE;
        break;
    case OP_FOR_ITER:
        if (tg[d - 1] != T_ITER)
            return tfail(t, unit, "FOR_ITER over something that is not an iterator", op);
        if (!jump)
            lo = d;
        break;
    case OP_SEND:
        if (tg[d - 2] != T_SENDABLE)
            return tfail(t, unit, "SEND to something that is not an iterator or awaitable", op);
        if (!jump)
            lo = d - 1;
        break;
    case OP_PUSH_EXC_INFO:
        if (tg[d - 1] != T_EXC)
            return tfail(t, unit, "PUSH_EXC_INFO of something that is not the exception being handled", op);
        lo = d - 1;
        second = T_EXCPREV;
        top = T_EXC;
        break;
    case OP_POP_EXCEPT:
        if (tg[d - 1] != T_EXCPREV)
            return tfail(t, unit, "POP_EXCEPT of something PUSH_EXC_INFO did not save", op);
        break;
    case OP_RERAISE:
        if (tg[d - 1] != T_EXC || (arg && tg[d - 1 - arg] != T_LASTI))
            return tfail(t, unit, "RERAISE of something that is not a caught exception", op);
        break;
    case OP_NEEDS_EXC:
        if (tg[d - 1] != T_EXC)
            return tfail(t, unit, "expects the exception being handled", op);
        break;
    case OP_WITH_EXCEPT_START:
        if (tg[d - 1] != T_EXC)
            return tfail(t, unit, "expects the exception being handled", op);
        lo = d;
        break;
    case OP_CHECK_EXC_MATCH:
        lo = d - 1;
        break;
    case OP_CHECK_EG_MATCH:
        if (tg[d - 2] != T_EXC && tg[d - 2] != T_EXC_OR_NONE)
            return tfail(t, unit, "CHECK_EG_MATCH of something that is not a caught exception", op);
        second = T_EXC_OR_NONE;
        break;
    case OP_PREP_RERAISE_STAR:
        if (tg[d - 1] != T_EXCLIST)
            return tfail(t, unit, "PREP_RERAISE_STAR of something that is not a list of exceptions", op);
        top = T_EXC_OR_NONE;
        break;
    case OP_INTRINSIC_1:
        if (arg == INTRINSIC_LIST_TO_TUPLE) {
            if (!is_list(tg[d - 1]))
                return tfail(t, unit, "LIST_TO_TUPLE of something that is not a list", op);
            top = T_TUPLE;
        }
        else if (arg == INTRINSIC_STOPITERATION_ERROR) {
            if (tg[d - 1] != T_EXC)
                return tfail(t, unit, "expects the exception being handled", op);
            top = T_EXC;
        }
        break;
    case OP_INTRINSIC_2: /* only INTRINSIC_PREP_RERAISE_STAR is allowed */
        if (tg[d - 1] != T_EXCLIST)
            return tfail(t, unit, "PREP_RERAISE_STAR of something that is not a list of exceptions", op);
        top = T_EXC_OR_NONE;
        break;
    case OP_MATCH_KEYS:
        if (!is_tuple(tg[d - 1]))
            return tfail(t, unit, "MATCH_KEYS with keys that are not a tuple", op);
        break;
    case OP_JUMP_IF_NOT_NONE:
        /* COPY 1; POP_JUMP_IF_NOT_NONE: where it jumps, the item below the copy is not None */
        if (jump && w->prev_copy1 && tg[d - 2] == T_EXC_OR_NONE)
            top = T_EXC;
        break;
    case OP_PRECALL:
    case OP_CALL:
        /* a comprehension's function, called at once with its iterator as the only argument */
        comp_call = arg == 0 && d >= 2 && is_compfunc(tg[d - 2]) && tg[d - 1] == T_ITER;
        /* 3.14 iterates a generator expression's generator at once (list(x for x in y) inlined) */
        if (comp_call && r->typed == OP_CALL && tg[d - 2] == T_GENFUNC)
            top = T_ITER;
        break;
    default:
        break;
    }
    for (int p = lo; p < d; p++)
        if (is_compfunc(tg[p]) && !comp_call)
            return tfail(t, unit, "a comprehension's function is used other than by calling it with its iterator", op);
    for (int p = lo; p < nd; p++)
        tg[p] = T_ANY;
    if (second >= 0)
        tg[nd - 2] = (uint8_t)second;
    if (top >= 0)
        tg[nd - 1] = (uint8_t)top;
    s->depth = nd;
    return 0;
}

static int
check_types(verifier_t *v, PyCodeObject *co, PyObject *codeobj, const uint8_t *bc, Py_ssize_t nunits,
            const uint8_t *is_start, const int *depth, const int *handler, const exc_entry_t *entries,
            int maxdepth, const int8_t *cbit, uint64_t free_mask)
{
    const oprow_t *rows = v->rows;
    typed_t t = {v, co, codeobj, cbit, free_mask, comp_code(v, co), NULL, NULL, 0, NULL, 0};
    int nslots = 0, rc = -1;
    char *cur = NULL;
    t.slot_of = PyMem_Malloc(sizeof(int) * (size_t)nunits);
    Py_ssize_t *unit_of = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)nunits);
    if (!t.slot_of || !unit_of) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t u = 0; u < nunits; u++) {
        t.slot_of[u] = (u == 0 || (is_start[u] & 2)) && depth[u] >= 0 ? nslots : -1;
        if (t.slot_of[u] >= 0)
            unit_of[nslots++] = u;
    }
    t.stride = (sizeof(tstate_t) + (size_t)maxdepth + 2 + 7) & ~(size_t)7;
    t.states = PyMem_Calloc((size_t)nslots, t.stride);
    t.queue = PyMem_Malloc(sizeof(int) * (size_t)nslots);
    cur = PyMem_Malloc(2 * t.stride);
    if (!t.states || !t.queue || !cur) {
        PyErr_NoMemory();
        goto out;
    }
    tstate_t *s = (tstate_t *)cur, *j = (tstate_t *)(cur + t.stride);
    memset(s, 0, sizeof(tstate_t));
    if (tmerge(&t, 0, s) < 0)
        goto out;
    while (t.nqueue > 0) {
        int k = t.queue[--t.nqueue];
        STATE(&t, k)->queued = 0;
        memcpy(s, STATE(&t, k), sizeof(tstate_t) + (size_t)STATE(&t, k)->depth);
        Py_ssize_t i = unit_of[k];
        walk_t w = {NULL, -1, 0};
        for (;;) {
            long arg = 0;
            while (bc[2 * i] == v->ext_arg_op) {
                arg = (arg | bc[2 * i + 1]) << 8;
                i++;
            }
            int op = bc[2 * i];
            arg |= bc[2 * i + 1];
            const oprow_t *r = &rows[op];
            int base = r->base_op ? r->base_op - 1 : op;
            Py_ssize_t next = i + 1 + r->caches;
            /* PUSH_EXC_INFO cannot raise: the handler covering it only sees what follows it. */
            if (handler != NULL && handler[i] >= 0 && r->typed != OP_PUSH_EXC_INFO) {
                const exc_entry_t *e = &entries[handler[i]];
                memcpy(j, s, sizeof(tstate_t) + (size_t)e->depth);
                j->depth = (int)(e->depth + e->lasti + 1);
                if (e->lasti)
                    TAGS(j)[e->depth] = T_LASTI;
                TAGS(j)[j->depth - 1] = T_EXC;
                if (tmerge(&t, e->target, j) < 0)
                    goto out;
            }
#if PY_VERSION_HEX >= 0x030D0000
            if (w.made_nfree > 0 && !(r->typed == OP_SET_FUNCTION_ATTRIBUTE && arg == 8)) {
                fail_at(codeobj, i, "a function with free variables made without its closure", op);
                goto out;
            }
#endif
            if (r->flow == FLOW_JUMP || r->flow == FLOW_BRANCH) {
                memcpy(j, s, sizeof(tstate_t) + (size_t)s->depth);
                if (tapply(&t, j, i, op, r, base, arg, 1, &w) < 0)
                    goto out;
                if (tmerge(&t, r->argkind == ARG_JUMP_BWD ? next - arg : next + arg, j) < 0)
                    goto out;
            }
            if (r->flow == FLOW_JUMP)
                break;
            if (tapply(&t, s, i, op, r, base, arg, 0, &w) < 0)
                goto out;
            if (r->flow == FLOW_STOP)
                break;
            w.made_nfree = r->typed == OP_MAKE_FUNCTION ? ((PyCodeObject *)w.prev_code)->co_nfreevars : -1;
            w.prev_code = NULL;
            if (r->typed == OP_LOAD_CONST && PyCode_Check(PyTuple_GET_ITEM(co->co_consts, arg)))
                w.prev_code = PyTuple_GET_ITEM(co->co_consts, arg);
            w.prev_copy1 = r->typed == OP_COPY && arg == 1;
            i = next;
            if (is_start[i] & 2) {
#if PY_VERSION_HEX >= 0x030D0000
                if (w.made_nfree > 0) {
                    fail_at(codeobj, i, "a function with free variables made without its closure", op);
                    goto out;
                }
#endif
                if (tmerge(&t, i, s) < 0)
                    goto out;
                break;
            }
        }
    }
    rc = 0;
out:
    PyMem_Free(t.slot_of);
    PyMem_Free(unit_of);
    PyMem_Free(t.states);
    PyMem_Free(t.queue);
    PyMem_Free(cur);
    return rc;
}

static int
check_stack(verifier_t *v, PyCodeObject *co, PyObject *codeobj, const uint8_t *bc, Py_ssize_t nunits,
            const uint8_t *is_start, const int8_t *cbit, uint64_t free_mask)
{
    const oprow_t *rows = v->rows;
    int stacksize = co->co_stacksize, rc = -1;
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(co->co_exceptiontable);
    Py_ssize_t n = PyBytes_GET_SIZE(co->co_exceptiontable), pos = 0;
    size_t max_entries = (size_t)(n / 4 + 1);
    char *base = scratch_for(v, (sizeof(int) * 2 + sizeof(Py_ssize_t)) * (size_t)nunits +
                             sizeof(exc_entry_t) * max_entries);
    if (base == NULL)
        return -1;
    Py_ssize_t *work = (Py_ssize_t *)base;
    exc_entry_t *entries = (exc_entry_t *)(work + nunits);
    int *depth = (int *)(entries + max_entries);
    int *handler = depth + nunits;
    Py_ssize_t nentries = 0, nwork = 0;
    memset(depth, 0xff, sizeof(int) * (size_t)nunits); /* -1: not reached yet */
    if (n > 0)
        memset(handler, 0xff, sizeof(int) * (size_t)nunits); /* -1: no handler */
    while (pos < n) { /* already validated by the caller */
        long start, length, target, dl;
        read_varint(p, n, &pos, &start);
        read_varint(p, n, &pos, &length);
        read_varint(p, n, &pos, &target);
        read_varint(p, n, &pos, &dl);
        exc_entry_t *e = &entries[nentries];
        e->start = start;
        e->end = start + length;
        e->target = target;
        e->depth = dl >> 1;
        e->lasti = dl & 1;
        if (e->depth + e->lasti + 1 > stacksize) {
            fail_at(codeobj, target, "exception handler deeper than the frame's stack", 0);
            goto out;
        }
        for (long k = e->start; k < e->end; k++)
            handler[k] = (int)nentries;
        nentries++;
    }

    if (merge_depth(depth, work, &nwork, 0, 0, codeobj) < 0)
        goto out;
    int maxdepth = 0;
    while (nwork > 0) {
        Py_ssize_t s = work[--nwork], i = s;
        int d = depth[s];
        if (d > maxdepth)
            maxdepth = d;
        long arg = 0;
        while (bc[2 * i] == v->ext_arg_op) {
            arg = (arg | bc[2 * i + 1]) << 8;
            i++;
        }
        int op = bc[2 * i];
        arg |= bc[2 * i + 1];
        const oprow_t *r = &rows[op];
        int base = r->base_op ? r->base_op - 1 : op;
        Py_ssize_t next = i + 1 + r->caches;

        if (d < stack_inputs(r, arg)) {
            fail_at(codeobj, i, "instruction reads below the bottom of the stack", op);
            goto out;
        }
        if (n > 0 && handler[i] >= 0) {
            exc_entry_t *e = &entries[handler[i]];
            if (d < e->depth) {
                fail_at(codeobj, i, "stack shallower than its exception handler expects", op);
                goto out;
            }
            if (merge_depth(depth, work, &nwork, e->target, (int)(e->depth + e->lasti + 1), codeobj) < 0)
                goto out;
        }
        if (r->flow != FLOW_JUMP && r->flow != FLOW_STOP) {
            int eff = r->resumes ? 1 : PyCompile_OpcodeStackEffectWithJump(base, (int)arg, 0);
            if (eff == PY_INVALID_STACK_EFFECT || d + eff < 0 || d + eff > stacksize) {
                fail_at(codeobj, i, "stack depth out of bounds", op);
                goto out;
            }
            if (next >= nunits || !(is_start[next] & 1)) {
                fail_at(codeobj, i, "execution runs off the end of the code", op);
                goto out;
            }
            if (merge_depth(depth, work, &nwork, next, d + eff, codeobj) < 0)
                goto out;
        }
        if (r->flow == FLOW_JUMP || r->flow == FLOW_BRANCH) {
            int eff = PyCompile_OpcodeStackEffectWithJump(base, (int)arg, 1);
            Py_ssize_t target = r->argkind == ARG_JUMP_BWD ? next - arg : next + arg;
            if (eff == PY_INVALID_STACK_EFFECT || d + eff < 0 || d + eff > stacksize) {
                fail_at(codeobj, i, "stack depth out of bounds at the jump target", op);
                goto out;
            }
            if (merge_depth(depth, work, &nwork, target, d + eff, codeobj) < 0)
                goto out;
        }
    }
    rc = check_types(v, co, codeobj, bc, nunits, is_start, depth, n > 0 ? handler : NULL, entries, maxdepth + 1,
                     cbit, free_mask);
out:
    return rc;
}

static int
scan_bytecode(verifier_t *v, PyCodeObject *co, PyObject *codeobj)
{
    /* The instructions as stored, which is what will run: not PyCode_GetCode(), which returns them
     * "deoptimised" and so would show a crafted specialised opcode as its harmless base form. */
    const uint8_t *bc = (const uint8_t *)co->co_code_adaptive;
    Py_ssize_t nunits = Py_SIZE(co);
    Py_ssize_t nconsts = PyTuple_GET_SIZE(co->co_consts), nnames = PyTuple_GET_SIZE(co->co_names);
    Py_ssize_t nlocals = co->co_nlocalsplus, nfree = co->co_nfreevars;
    const oprow_t *rows = v->rows;
    /* bit 0: an instruction starts here; bit 1: a jump or handler lands here; bit 2: nothing may land here
     * (the compiler emits it together with the instruction before) */
    uint8_t *is_start = NULL;
    int8_t *cbit = NULL;      /* per slot: its bit among the cell and free slots, or -1 */
    uint8_t *made = NULL;     /* per slot: the entry prefix gives it its cell */
    uint64_t free_mask = 0;
    Py_ssize_t first_report = PyList_GET_SIZE(v->reports);
    int rc = -1, flags = co->co_flags;
    int gen = flags & (F_GENERATOR | F_COROUTINE | F_ASYNC_GENERATOR);
    int req_ok = (gen ? REQ_GEN : 0) | (flags & (F_COROUTINE | F_ASYNC_GENERATOR) ? REQ_ASYNC : 0) |
                 (flags & F_ASYNC_GENERATOR ? REQ_ASYNC_GEN : 0) | (flags & F_OPTIMIZED ? 0 : REQ_UNOPTIMIZED);

    if (nunits == 0) {
        fail_at(codeobj, 0, "empty code", 0);
        goto out;
    }
    if ((gen & (gen - 1)) || (flags & F_ITERABLE_COROUTINE)) {
        fail_at(codeobj, 0, "co_flags name more than one kind of generator", 0);
        goto out;
    }
    is_start = PyMem_Calloc((size_t)nunits + 1, 1);
    cbit = PyMem_Malloc((size_t)nlocals + 1);
    made = PyMem_Calloc((size_t)nlocals + 1, 1);
    if (!is_start || !cbit || !made) {
        PyErr_NoMemory();
        goto out;
    }
    /* Slot kinds: the free variables are the last co_nfreevars slots (COPY_FREE_VARS fills those); the
     * type pass follows which cell and free slots hold a cell, one bit each. */
    {
        const uint8_t *kinds = (const uint8_t *)PyBytes_AS_STRING(co->co_localspluskinds);
        int ncells = 0;
        for (Py_ssize_t k = 0; k < nlocals; k++) {
            if (((kinds[k] & K_FREE) != 0) != (k >= nlocals - nfree)) {
                fail_at(codeobj, 0, "free variables are not the last slots", 0);
                goto out;
            }
            cbit[k] = -1;
            if (kinds[k] & (K_CELL | K_FREE)) {
                if (ncells == 64) {
                    fail_at(codeobj, 0, "more than 64 cell and free variables", 0);
                    goto out;
                }
                if (kinds[k] & K_FREE)
                    free_mask |= (uint64_t)1 << ncells;
                cbit[k] = (int8_t)ncells++;
            }
        }
    }

    /* Pass 1: opcodes, extended args, inline caches and operand bounds; names. */
    Py_ssize_t i = 0, chain = -1, njumps = 0;
    long ext = 0, prev_arg = 0;
    int prev_op = -1, prefix = 1, returns_generator = 0, copies_free = 0;
    while (i < nunits) {
        int op = bc[2 * i];
        long arg = bc[2 * i + 1] | (ext << 8);
        const oprow_t *r = &rows[op];
        if (!r->allowed) {
            fail_at(codeobj, i, "opcode not allowed", op);
            goto out;
        }
        if ((r->code_req & req_ok) != r->code_req) {
            fail_at(codeobj, i, r->code_req == REQ_UNOPTIMIZED ? "only class bodies may use this opcode"
                                                                : "generator opcode outside generator code", op);
            goto out;
        }
        if (op == v->ext_arg_op) {
            if (ext > 0xFFFFFF) {
                fail_at(codeobj, i, "too many EXTENDED_ARG prefixes", op);
                goto out;
            }
            ext = arg;
            if (chain < 0)
                chain = i;
            if (++i >= nunits) {
                fail_at(codeobj, i, "EXTENDED_ARG at end of code", op);
                goto out;
            }
            continue;
        }
        ext = 0;
        /* An instruction starts at its first EXTENDED_ARG prefix: that is where jumps land. */
        Py_ssize_t istart = chain >= 0 ? chain : i;
        is_start[istart] |= 1;
        chain = -1;
        Py_ssize_t next = i + 1 + r->caches;
        if (next > nunits) {
            fail_at(codeobj, i, "inline cache runs past the end of the code", op);
            goto out;
        }
        /* The second half may itself have been fused with what follows it. */
        if (r->expect_next && (next >= nunits || (rows[bc[2 * next]].base_op ? rows[bc[2 * next]].base_op - 1
                                                                              : bc[2 * next]) !=
                                                     r->expect_next - 1)) {
            fail_at(codeobj, i, "superinstruction not followed by its second half", op);
            goto out;
        }
        /* 3.12+ write a warm-up counter into the first cache entry when they create the code object. */
        for (Py_ssize_t c = i + 1 + (PY_VERSION_HEX >= 0x030C0000); c < next; c++) {
            if (bc[2 * c] != 0 || bc[2 * c + 1] != 0) {
                fail_at(codeobj, c, "inline cache entry is not zero", op);
                goto out;
            }
        }
        /* The entry prefix: MAKE_CELL and COPY_FREE_VARS, then RETURN_GENERATOR in generator code. */
        if (r->typed == OP_MAKE_CELL || r->typed == OP_COPY_FREE_VARS || r->resumes) {
            if (r->typed == OP_COPY_FREE_VARS && (!prefix || arg != nfree || copies_free)) {
                fail_at(codeobj, i, "COPY_FREE_VARS must copy every free variable, once, at the start", op);
                goto out;
            }
            if (r->resumes && (!prefix || !gen)) {
                fail_at(codeobj, i, "RETURN_GENERATOR must start generator code", op);
                goto out;
            }
            if (prefix) {
                is_start[istart] |= 4;
                if (r->typed == OP_MAKE_CELL && arg < nlocals)
                    made[arg] = 1;
                copies_free |= r->typed == OP_COPY_FREE_VARS;
                returns_generator |= r->resumes;
                prefix = !r->resumes;
            }
        }
        else
            prefix = 0;
        /* Instructions the compiler only emits in one sequence. */
        if (r->typed == OP_KW_NAMES || r->typed == OP_PRECALL) {
            /* 3.11: KW_NAMES, PRECALL n, CALL n; 3.12: KW_NAMES, CALL n */
            const oprow_t *nr = next < nunits ? &rows[bc[2 * next]] : NULL;
            long narg = next < nunits ? bc[2 * next + 1] : 0;
            PyObject *kw = r->typed == OP_KW_NAMES && arg < nconsts ? PyTuple_GET_ITEM(co->co_consts, arg) : NULL;
            int want = r->typed == OP_KW_NAMES && PY_VERSION_HEX < 0x030C0000 ? OP_PRECALL : OP_CALL;
            if (nr == NULL || nr->typed != want || (r->typed == OP_PRECALL && narg != arg) ||
                (r->typed == OP_KW_NAMES && !(kw && PyTuple_CheckExact(kw) && PyTuple_GET_SIZE(kw) <= narg))) {
                fail_at(codeobj, i, "not followed by the call it belongs to", op);
                goto out;
            }
            is_start[next] |= 4;
        }
        if (r->typed == OP_CALL && PY_VERSION_HEX < 0x030C0000 && !(prev_op >= 0 && rows[prev_op].typed == OP_PRECALL)) {
            fail_at(codeobj, i, "CALL without its PRECALL", op);
            goto out;
        }
        if (r->typed == OP_CALL_KW) {
            /* 3.13: the keyword names are the constant loaded just before */
            PyObject *kw = prev_op >= 0 && rows[prev_op].typed == OP_LOAD_CONST ? PyTuple_GET_ITEM(co->co_consts, prev_arg)
                                                                              : NULL;
            if (!(kw && PyTuple_CheckExact(kw) && PyTuple_GET_SIZE(kw) <= arg)) {
                fail_at(codeobj, i, "CALL_KW without its tuple of keyword names", op);
                goto out;
            }
            is_start[istart] |= 4;
        }
        if (r->typed == OP_KW_NAMES && arg < nconsts) {
            PyObject *kw = PyTuple_GET_ITEM(co->co_consts, arg);
            for (Py_ssize_t k = 0; PyTuple_CheckExact(kw) && k < PyTuple_GET_SIZE(kw); k++)
                if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(kw, k))) {
                    fail_at(codeobj, i, "keyword names must be strings", op);
                    goto out;
                }
        }
        if (r->typed == OP_INTRINSIC_1 &&
            ((arg == INTRINSIC_STOPITERATION_ERROR && !gen) ||
             (arg == INTRINSIC_ASYNC_GEN_WRAP && !(flags & F_ASYNC_GENERATOR)))) {
            fail_at(codeobj, i, "generator opcode outside generator code", op);
            goto out;
        }
        switch (r->argkind) {
        case ARG_CONST:
            if (arg >= nconsts) {
                fail_at(codeobj, i, "constant index out of range", op);
                goto out;
            }
            /* A code constant only ever becomes a function, at once: it never reaches a script. */
            if (PyCode_Check(PyTuple_GET_ITEM(co->co_consts, arg))) {
                if (r->typed != OP_LOAD_CONST || r->base_op || next >= nunits ||
                    rows[bc[2 * next]].typed != OP_MAKE_FUNCTION) {
                    fail_at(codeobj, i, "a code constant is only loaded to make a function", op);
                    goto out;
                }
                is_start[next] |= 4;
            }
            break;
        case ARG_NAME: {
            long idx = arg >> r->shift;
            if (idx >= nnames) {
                fail_at(codeobj, i, "name index out of range", op);
                goto out;
            }
            if (r->name_class) {
                PyObject *name = PyTuple_GET_ITEM(co->co_names, idx);
                int need = name_needs_judgement(v, r->name_class, name);
                if (need < 0 ||
                    (need && report(v, codeobj, i, istart, r->name_class, name, prev_op, prev_arg) < 0))
                    goto out;
            }
            break;
        }
        case ARG_REPORT:
            if (report(v, codeobj, i, istart, r->name_class, NULL, prev_op, prev_arg) < 0)
                goto out;
            break;
        case ARG_LOCAL:
            if (arg >= nlocals) {
                fail_at(codeobj, i, "local variable index out of range", op);
                goto out;
            }
            if ((r->typed == OP_DEREF || r->typed == OP_LOAD_CLOSURE || r->typed == OP_MAKE_CELL) && cbit[arg] < 0) {
                fail_at(codeobj, i, "cell operation on a slot that is not a cell or free variable", op);
                goto out;
            }
            break;
        case ARG_LOCAL_PAIR:
            if ((arg >> 4) >= nlocals || (arg & 15) >= nlocals || arg > 255) {
                fail_at(codeobj, i, "local variable index out of range", op);
                goto out;
            }
            break;
        case ARG_FREE_COUNT:
            if (arg > nfree) {
                fail_at(codeobj, i, "free variable count out of range", op);
                goto out;
            }
            break;
        case ARG_JUMP_FWD:
            if (next + arg > nunits) {
                fail_at(codeobj, i, "jump target out of range", op);
                goto out;
            }
            njumps++;
            break;
        case ARG_JUMP_BWD:
            if (next - arg < 0) {
                fail_at(codeobj, i, "jump target out of range", op);
                goto out;
            }
            njumps++;
            break;
        case ARG_ENUM: {
            long e = arg >> r->shift;
            /* SET_FUNCTION_ATTRIBUTE indexes a table of field offsets with one bit (0 elsewhere) */
            if (e > r->max || (e < 8 && ((r->deny_mask >> e) & 1)) ||
                (r->typed == OP_SET_FUNCTION_ATTRIBUTE && (e & (e - 1)))) {
                fail_at(codeobj, i, r->typed == OP_INTRINSIC_1 || r->typed == OP_INTRINSIC_2
                                        ? "intrinsic not allowed (star imports, PEP 695 type parameters)"
                                        : "operand out of range", op);
                goto out;
            }
            break;
        }
        default:
            break;
        }
        prev_op = op;
        prev_arg = arg;
        i = next;
    }

    if (gen && !returns_generator) {
        fail_at(codeobj, 0, "generator code must start with RETURN_GENERATOR", 0);
        goto out;
    }
    if (nfree && !copies_free) {
        fail_at(codeobj, 0, "code with free variables must start with COPY_FREE_VARS", 0);
        goto out;
    }
    {
        const uint8_t *kinds = (const uint8_t *)PyBytes_AS_STRING(co->co_localspluskinds);
        for (Py_ssize_t k = 0; k < nlocals; k++)
            if ((kinds[k] & K_CELL) && !(kinds[k] & K_FREE) && !made[k]) {
                fail_at(codeobj, 0, "every cell variable gets its cell at the start (MAKE_CELL)", 0);
                goto out;
            }
    }

    /* Pass 2: every jump lands on the start of an instruction (not a cache, not mid-prefix). */
    if (njumps) {
        i = 0;
        ext = 0;
        while (i < nunits) {
            int op = bc[2 * i];
            long arg = bc[2 * i + 1] | (ext << 8);
            const oprow_t *r = &rows[op];
            if (op == v->ext_arg_op) {
                ext = arg;
                i++;
                continue;
            }
            ext = 0;
            Py_ssize_t next = i + 1 + r->caches;
            Py_ssize_t target = -1;
            if (r->argkind == ARG_JUMP_FWD)
                target = next + arg;
            else if (r->argkind == ARG_JUMP_BWD)
                target = next - arg;
            if (target >= 0 && (target >= nunits || !(is_start[target] & 1))) {
                fail_at(codeobj, i, "jump into the middle of an instruction", op);
                goto out;
            }
            if (target >= 0 && (is_start[target] & 4)) {
                fail_at(codeobj, i, "jump into an instruction sequence the compiler emits whole", op);
                goto out;
            }
            if (target >= 0)
                is_start[target] |= 2;
            /* 3.12+: an exhausted FOR_ITER skips the END_FOR (and in 3.13 the POP_TOP) it targets. */
            if (op == v->for_iter_op && v->for_iter_skip > 0 &&
                (target + v->for_iter_skip >= nunits || bc[2 * target] != v->end_for_op ||
                 (v->for_iter_skip == 2 && bc[2 * (target + 1)] != v->pop_top_op))) {
                fail_at(codeobj, i, "FOR_ITER does not target END_FOR", op);
                goto out;
            }
            i = next;
        }
    }

    /* Exception table: entries in order, not overlapping, each covering whole instructions, its handler
     * an instruction. CPython finds an entry by scanning back to a byte with bit 7 set, so exactly the
     * first byte of every entry has it. */
    {
        const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(co->co_exceptiontable);
        Py_ssize_t n = PyBytes_GET_SIZE(co->co_exceptiontable), pos = 0;
        long prev_end = 0;
        while (pos < n) {
            long start, length, target, depth;
            Py_ssize_t at = pos;
            if (read_varint(p, n, &pos, &start) < 0 || read_varint(p, n, &pos, &length) < 0 ||
                read_varint(p, n, &pos, &target) < 0 || read_varint(p, n, &pos, &depth) < 0) {
                fail_at(codeobj, 0, "malformed exception table", 0);
                goto out;
            }
            for (Py_ssize_t b = at; b < pos; b++)
                if (((p[b] & 128) != 0) != (b == at)) {
                    fail_at(codeobj, 0, "malformed exception table (entry start marks)", 0);
                    goto out;
                }
            if (start >= nunits || length <= 0 || start + length > nunits || target >= nunits ||
                !(is_start[start] & 1) || !(is_start[target] & 1) ||
                (start + length < nunits && !(is_start[start + length] & 1))) {
                fail_at(codeobj, start, "exception table entry out of range", 0);
                goto out;
            }
            if (start < prev_end) {
                fail_at(codeobj, start, "exception table entries out of order or overlapping", 0);
                goto out;
            }
            if (is_start[target] & 4) {
                fail_at(codeobj, target, "exception handler inside an instruction sequence the compiler emits whole",
                        0);
                goto out;
            }
            prev_end = start + length;
            is_start[target] |= 2;
        }
    }
    for (Py_ssize_t k = first_report; k < PyList_GET_SIZE(v->reports); k++) {
        PyObject *t = PyList_GET_ITEM(v->reports, k);
        Py_ssize_t at = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 6));
        PyObject *joined = PyTuple_Pack(7, PyTuple_GET_ITEM(t, 0), PyTuple_GET_ITEM(t, 1), PyTuple_GET_ITEM(t, 2),
                                        PyTuple_GET_ITEM(t, 3), PyTuple_GET_ITEM(t, 4), PyTuple_GET_ITEM(t, 5),
                                        (is_start[at] & 2) ? Py_True : Py_False);
        if (!joined || PyList_SetItem(v->reports, k, joined) < 0)
            goto out;
    }
    if (check_stack(v, co, codeobj, bc, nunits, is_start, cbit, free_mask) < 0)
        goto out;
    rc = 0;
out:
    PyMem_Free(is_start);
    PyMem_Free(cbit);
    PyMem_Free(made);
    return rc;
}

static int
verify_code(verifier_t *v, PyObject *code, int depth)
{
    if (!PyCode_Check(code)) {
        PyErr_Format(PyExc_ValueError, "expected a code object, got %s", Py_TYPE(code)->tp_name);
        return -1;
    }
    if (depth > 100) {
        PyErr_SetString(PyExc_ValueError, "code objects nested too deeply");
        return -1;
    }
    PyCodeObject *co = (PyCodeObject *)code;
    int same = PyUnicode_Check(co->co_filename) ? PyUnicode_Compare(co->co_filename, v->filename) : -1;
    if (same != 0) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "code object %R claims another file name %R", co->co_name,
                         co->co_filename);
        return -1;
    }
    if (scan_bytecode(v, co, code) < 0)
        return -1;
    int ok;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(co->co_consts); i++) {
        PyObject *c = PyTuple_GET_ITEM(co->co_consts, i);
        if (PyCode_Check(c)) {
            if (verify_code(v, c, depth + 1) < 0)
                return -1;
        }
        else if ((ok = check_const(c, 0)) <= 0) {
            if (ok < 0)
                return -1;
            PyErr_Format(PyExc_ValueError, "in %U: constant of type %s is not allowed", co->co_qualname,
                         Py_TYPE(c)->tp_name);
            return -1;
        }
    }
    return 0;
}

static PyObject *
verify_tree(PyObject *self, PyObject *args)
{
    verifier_t v = {0};
    PyObject *code;
    Py_buffer table;
    if (!PyArg_ParseTuple(args, "OUy*i(iiii)O!O!", &code, &v.filename, &table, &v.ext_arg_op, &v.for_iter_op,
                          &v.end_for_op, &v.pop_top_op, &v.for_iter_skip, &PyFrozenSet_Type, &v.attr_special,
                          &PyFrozenSet_Type, &v.protected_))
        return NULL;
    if (table.len != 256 * (Py_ssize_t)sizeof(oprow_t)) {
        PyBuffer_Release(&table);
        PyErr_SetString(PyExc_ValueError, "bad opcode table");
        return NULL;
    }
    v.rows = table.buf;
    v.reports = PyList_New(0);
    if (v.reports && verify_code(&v, code, 0) < 0)
        Py_CLEAR(v.reports);
    PyMem_Free(v.scratch);
    PyBuffer_Release(&table);
    return v.reports;
}

static PyMethodDef methods[] = {
    {"verify_tree", verify_tree, METH_VARARGS,
     "verify_tree(code, filename, table, extended_arg, (for_iter, end_for, pop_top, skip), attr_special,"
     " protected) -> [(code, offset, name_class, name, prev_opcode, prev_arg)]: check a code object and"
     " everything nested in it; raise ValueError on malformed code, report what vm.policy.rules must judge."},
    {NULL, NULL, 0, NULL},
};

/* Thread-safe without the GIL: all state is per call (the verifier_t on the caller's stack), and the
 * code objects and constants it reads are immutable. */
static PyModuleDef_Slot slots[] = {
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "vm.policy._verify", NULL, 0, methods, slots};

PyMODINIT_FUNC
PyInit__verify(void)
{
    return PyModuleDef_Init(&module);
}

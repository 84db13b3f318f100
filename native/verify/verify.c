/*
 * vm.policy._verify — the bytecode verifier's pass over a module's code objects (vm/policy/verifier.py
 * is the Python half and judges what this pass reports):
 *
 *   verify_tree(code, filename, table, extended_arg, (for_iter, end_for, pop_top, skip), attr_special,
 *               protected) -> [(code, offset, name_class, name, prev_opcode, prev_arg, joined)]
 *
 * Constants are plain data or code, opcodes are on the interpreter's allowlist (vm/policy/opcodes.py
 * builds the table), operand indices, jump targets, inline caches and the exception table are in
 * range, and the stack depth is checked on every path. Runs with the GIL held.
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
    uint8_t pad[2];
} oprow_t;

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
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(c); i++)
            if (!check_const(PyTuple_GET_ITEM(c, i), depth + 1))
                return 0;
        return 1;
    }
    if (PyFrozenSet_CheckExact(c)) {
        Py_ssize_t pos = 0;
        PyObject *key;
        Py_hash_t hash;
        while (_PySet_NextEntry(c, &pos, &key, &hash))
            if (!check_const(key, depth + 1))
                return 0;
        return 1;
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

/* Scratch space for the analysis, reused across code objects (verification runs with the GIL held). */
static void *scratch = NULL;
static size_t scratch_size = 0;

static void *
scratch_for(size_t need)
{
    if (need > scratch_size) {
        void *grown = PyMem_Realloc(scratch, need);
        if (grown == NULL)
            return PyErr_NoMemory();
        scratch = grown;
        scratch_size = need;
    }
    return scratch;
}

static int
check_stack(verifier_t *v, PyCodeObject *co, PyObject *codeobj, const uint8_t *bc, Py_ssize_t nunits,
            const uint8_t *is_start)
{
    const oprow_t *rows = v->rows;
    int stacksize = co->co_stacksize, rc = -1;
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(co->co_exceptiontable);
    Py_ssize_t n = PyBytes_GET_SIZE(co->co_exceptiontable), pos = 0;
    size_t max_entries = (size_t)(n / 4 + 1);
    char *base = scratch_for((sizeof(int) * 2 + sizeof(Py_ssize_t)) * (size_t)nunits +
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
    while (nwork > 0) {
        Py_ssize_t s = work[--nwork], i = s;
        int d = depth[s];
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
            if (next >= nunits || !is_start[next]) {
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
    rc = 0;
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
    uint8_t *is_start = NULL; /* bit 0: an instruction starts here; bit 1: a jump or handler lands here */
    Py_ssize_t first_report = PyList_GET_SIZE(v->reports);
    int rc = -1;

    if (nunits == 0) {
        fail_at(codeobj, 0, "empty code", 0);
        goto out;
    }
    is_start = PyMem_Calloc((size_t)nunits + 1, 1);
    if (!is_start) {
        PyErr_NoMemory();
        goto out;
    }

    /* Pass 1: opcodes, extended args, inline caches and operand bounds; names. */
    Py_ssize_t i = 0, chain = -1, njumps = 0;
    long ext = 0, prev_arg = 0;
    int prev_op = -1;
    while (i < nunits) {
        int op = bc[2 * i];
        long arg = bc[2 * i + 1] | (ext << 8);
        const oprow_t *r = &rows[op];
        if (!r->allowed) {
            fail_at(codeobj, i, "opcode not allowed", op);
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
        is_start[istart] = 1;
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
        switch (r->argkind) {
        case ARG_CONST:
            if (arg >= nconsts) {
                fail_at(codeobj, i, "constant index out of range", op);
                goto out;
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
            if (e > r->max || (e < 8 && ((r->deny_mask >> e) & 1))) {
                fail_at(codeobj, i, "operand out of range", op);
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
            if (target >= 0 && (target >= nunits || !is_start[target])) {
                fail_at(codeobj, i, "jump into the middle of an instruction", op);
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

    /* Exception table: every entry covers whole instructions and its handler is an instruction. */
    {
        const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(co->co_exceptiontable);
        Py_ssize_t n = PyBytes_GET_SIZE(co->co_exceptiontable), pos = 0;
        while (pos < n) {
            long start, length, target, depth;
            if (read_varint(p, n, &pos, &start) < 0 || read_varint(p, n, &pos, &length) < 0 ||
                read_varint(p, n, &pos, &target) < 0 || read_varint(p, n, &pos, &depth) < 0) {
                fail_at(codeobj, 0, "malformed exception table", 0);
                goto out;
            }
            if (start >= nunits || length <= 0 || start + length > nunits || target >= nunits ||
                !is_start[start] || !is_start[target] || (start + length < nunits && !is_start[start + length])) {
                fail_at(codeobj, start, "exception table entry out of range", 0);
                goto out;
            }
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
    if (check_stack(v, co, codeobj, bc, nunits, is_start) < 0)
        goto out;
    rc = 0;
out:
    PyMem_Free(is_start);
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
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(co->co_consts); i++) {
        PyObject *c = PyTuple_GET_ITEM(co->co_consts, i);
        if (PyCode_Check(c)) {
            if (verify_code(v, c, depth + 1) < 0)
                return -1;
        }
        else if (!check_const(c, 0)) {
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

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "vm.policy._verify", NULL, 0, methods};

PyMODINIT_FUNC
PyInit__verify(void)
{
    return PyModuleDef_Init(&module);
}

/*
 * The command line's last word in thread mode (vm.host.cli):
 *
 *   exit_arm(seconds, status, line)   in `seconds`, write `line` to stderr and _exit(status),
 *                                     unless disarmed or re-armed first
 *   exit_disarm()                     cancel
 *
 * A script's C call that holds the GIL stops every Python thread, the CLI's main thread included:
 * no Python code can answer then. This is a plain C thread that never takes the GIL, so the CLI ends
 * at deadline + grace with the typed timeout's line and exit status whatever the worker is doing.
 */
#include "guard.h"
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;
static int started = 0;
static int armed = 0;
static struct timespec fire_at;
static int fire_status = 0;
static char *fire_line = NULL;
static size_t fire_len = 0;

static int
reached(const struct timespec *at)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > at->tv_sec || (now.tv_sec == at->tv_sec && now.tv_nsec >= at->tv_nsec);
}

static void *
exit_thread(void *unused)
{
    pthread_mutex_lock(&mu);
    for (;;) {
        while (!armed)
            pthread_cond_wait(&cv, &mu);
        struct timespec at = fire_at;
        int rc = pthread_cond_timedwait(&cv, &mu, &at);
        if ((rc == ETIMEDOUT || rc == 0) && armed && reached(&fire_at)) {
            for (size_t done = 0; done < fire_len;) {
                ssize_t n = write(STDERR_FILENO, fire_line + done, fire_len - done);
                if (n <= 0 && errno != EINTR)
                    break;
                done += n > 0 ? (size_t)n : 0;
            }
            _exit(fire_status);
        }
    }
    return NULL;
}

static int
start_thread(void)
{
    pthread_condattr_t attr;
    pthread_attr_t tattr;
    pthread_t t;
    if (pthread_condattr_init(&attr) != 0 || pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&cv, &attr) != 0)
        return -1;
    pthread_condattr_destroy(&attr);
    if (pthread_attr_init(&tattr) != 0)
        return -1;
    pthread_attr_setdetachstate(&tattr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &tattr, exit_thread, NULL);
    pthread_attr_destroy(&tattr);
    return rc == 0 ? 0 : -1;
}

static PyObject *
exit_arm(PyObject *self, PyObject *args)
{
    double seconds;
    int status;
    const char *line;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "diy#", &seconds, &status, &line, &len))
        return NULL;
    if (!(seconds >= 0 && seconds < 1e9)) {
        PyErr_SetString(PyExc_ValueError, "exit_arm: seconds must be between 0 and 1e9");
        return NULL;
    }
    char *copy = malloc(len ? (size_t)len : 1);
    if (copy == NULL)
        return PyErr_NoMemory();
    memcpy(copy, line, (size_t)len);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long ns = (long long)now.tv_nsec + (long long)((seconds - (double)(long long)seconds) * 1e9);
    pthread_mutex_lock(&mu);
    if (!started) {
        if (start_thread() < 0) {
            pthread_mutex_unlock(&mu);
            free(copy);
            PyErr_SetString(PyExc_OSError, "exit_arm: cannot start the exit thread");
            return NULL;
        }
        started = 1;
    }
    fire_at.tv_sec = now.tv_sec + (time_t)seconds + (time_t)(ns / 1000000000LL);
    fire_at.tv_nsec = (long)(ns % 1000000000LL);
    fire_status = status;
    free(fire_line);
    fire_line = copy;
    fire_len = (size_t)len;
    armed = 1;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    Py_RETURN_NONE;
}

static PyObject *
exit_disarm(PyObject *self, PyObject *noargs)
{
    pthread_mutex_lock(&mu);
    armed = 0;
    if (started)
        pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    Py_RETURN_NONE;
}

PyMethodDef guard_exit_methods[] = {
    {"exit_arm", exit_arm, METH_VARARGS,
     "exit_arm(seconds, status, line): a C thread writes line to stderr and _exit(status)s the process in "
     "seconds, whatever Python threads do (re-arming replaces it)."},
    {"exit_disarm", exit_disarm, METH_NOARGS, "Cancel exit_arm."},
    {NULL, NULL, 0, NULL},
};

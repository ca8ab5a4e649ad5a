/* The worker's socket transports in C: epoll, recv and send without uvloop's per-callback cost.
 *
 * uvloop runs libuv with the interpreter lock released and takes it back for every callback:
 * twice per read (the buffer allocation and the read itself), and it wraps each read in a
 * context run. A relay reads twice per simple transaction, so that is four lock round trips
 * per transaction before any of the worker's own work. Here one epoll instance holds every
 * plain (non-TLS) socket of the worker; uvloop watches that one descriptor, and each time it
 * is readable, `Reactor.poll` runs every ready socket's callbacks under a single hold of the
 * lock. recv and send are non-blocking calls made with the lock held (they never wait).
 *
 * `Transport` behaves as asyncio's socket transports do for the calls the worker makes:
 * write/writelines (sent at once when nothing is queued, the rest buffered with
 * pause_writing/resume_writing at the high/low marks), pause_reading/resume_reading,
 * close (after the buffer drains), abort, get_extra_info, and the protocol callbacks
 * data_received, eof_received and connection_lost (the last one always through
 * loop.call_soon, never from inside the call that closed the transport).
 *
 * TLS stays on uvloop: `Transport.detach` hands the socket back before start_tls.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define READ_SIZE (256 * 1024)
#define MAX_EVENTS 256
#define MAX_IOV 64
#define DEFAULT_HIGH (64 * 1024)
#define KEEP_BUFFER (256 * 1024) /* a drained write buffer larger than this is freed */

typedef struct {
    PyObject_HEAD
    int epfd;
    PyObject *call_soon;         /* loop.call_soon */
    PyObject *exception_handler; /* loop.call_exception_handler */
    char *rbuf;
} Reactor;

typedef struct {
    PyObject_HEAD
    Reactor *reactor;
    int fd;                 /* -1 once closed or detached */
    uint32_t interest;      /* what epoll watches; 0 = not registered */
    int reading;            /* the protocol wants data_received */
    int closing;            /* close() called: the fd closes once the buffer is sent */
    int writing_paused;     /* pause_writing sent to the protocol */
    PyObject *protocol;
    PyObject *data_received; /* protocol.data_received, bound once */
    PyObject *extra;         /* dict for get_extra_info */
    char *wbuf;
    size_t wstart, wend, wcap;
    size_t high, low;
} Transport;

static PyTypeObject ReactorType;
static PyTypeObject TransportType;

/* The socket calls, made as plain system calls: glibc's wrappers are cancellation points,
 * which in a process with threads costs an enable/disable pair around every call. */
static ssize_t
sock_recv(int fd, void *buf, size_t len)
{
    return syscall(SYS_recvfrom, fd, buf, len, 0, NULL, NULL);
}

static ssize_t
sock_send(int fd, const void *buf, size_t len)
{
    return syscall(SYS_sendto, fd, buf, len, MSG_NOSIGNAL, NULL, 0);
}

static ssize_t
sock_sendmsg(int fd, const struct msghdr *msg)
{
    return syscall(SYS_sendmsg, fd, msg, MSG_NOSIGNAL);
}

/* --- the buffer ---------------------------------------------------------------------- */

static size_t
pending(Transport *t)
{
    return t->wend - t->wstart;
}

static int
buffer_append(Transport *t, const char *data, size_t len)
{
    if (t->wstart == t->wend)
        t->wstart = t->wend = 0;
    if (t->wend + len > t->wcap) {
        size_t used = t->wend - t->wstart;
        if (t->wstart > 0 && used + len <= t->wcap) {
            memmove(t->wbuf, t->wbuf + t->wstart, used);
        }
        else {
            size_t cap = t->wcap ? t->wcap : 16384;
            while (cap < used + len)
                cap *= 2;
            char *buf = PyMem_Malloc(cap);
            if (buf == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            memcpy(buf, t->wbuf + t->wstart, used);
            PyMem_Free(t->wbuf);
            t->wbuf = buf;
            t->wcap = cap;
        }
        t->wstart = 0;
        t->wend = used;
    }
    memcpy(t->wbuf + t->wend, data, len);
    t->wend += len;
    return 0;
}

/* --- epoll interest ------------------------------------------------------------------ */

static uint32_t
wanted(Transport *t)
{
    uint32_t want = 0;
    if (t->reading && !t->closing)
        want |= EPOLLIN;
    if (pending(t))
        want |= EPOLLOUT;
    return want;
}

/* Make epoll watch what the transport needs. Pausing leaves EPOLLIN in place (a pause is
 * usually short, and most end before the socket has anything to read); `handle` drops it
 * when an event finds the transport paused. A socket with nothing to watch leaves epoll
 * entirely, since epoll reports a hang-up whatever the mask says. */
static int
update_interest(Transport *t, uint32_t want)
{
    if (want == t->interest || t->fd < 0)
        return 0;
    struct epoll_event ev = {.events = want, .data.ptr = t};
    int op = want == 0 ? EPOLL_CTL_DEL : t->interest == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (epoll_ctl(t->reactor->epfd, op, t->fd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    t->interest = want;
    return 0;
}

/* --- closing ------------------------------------------------------------------------- */

static void
report(Transport *t, const char *message, PyObject *exc)
{
    PyObject *context = Py_BuildValue("{s:s,s:O,s:O,s:O}", "message", message, "exception",
                                      exc, "transport", (PyObject *)t, "protocol",
                                      t->protocol ? t->protocol : Py_None);
    if (context == NULL) {
        PyErr_WriteUnraisable((PyObject *)t);
        return;
    }
    PyObject *r = PyObject_CallOneArg(t->reactor->exception_handler, context);
    Py_DECREF(context);
    if (r == NULL)
        PyErr_WriteUnraisable((PyObject *)t);
    Py_XDECREF(r);
}

/* Take the socket out of epoll and out of the transport, which counts as closed from then on;
 * returns its fd. The caller drops the reference the transport held to itself while it had an
 * fd (epoll's pointer to it). */
static int
forget_fd(Transport *t)
{
    int fd = t->fd;
    if (t->interest)
        epoll_ctl(t->reactor->epfd, EPOLL_CTL_DEL, fd, NULL);
    t->fd = -1;
    t->interest = 0;
    t->closing = 1;
    t->reading = 0;
    return fd;
}

/* Close the socket now and schedule protocol.connection_lost(exc). */
static void
close_now(Transport *t, PyObject *exc)
{
    if (t->fd < 0)
        return;
    close(forget_fd(t));
    t->wstart = t->wend = 0;
    if (t->protocol != NULL) {
        PyObject *lost = PyObject_GetAttrString(t->protocol, "connection_lost");
        PyObject *r = NULL;
        if (lost != NULL) {
            r = PyObject_CallFunctionObjArgs(t->reactor->call_soon, lost, exc ? exc : Py_None,
                                             NULL);
            Py_DECREF(lost);
        }
        if (r == NULL)
            PyErr_WriteUnraisable((PyObject *)t);
        Py_XDECREF(r);
    }
    Py_DECREF(t);
}

/* The exception being raised, cleared and normalized with its traceback (new reference;
 * NULL if none is set). */
static PyObject *
take_exception(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* An error from the socket (or from a protocol callback, with `message`): close at once. */
static void
fail(Transport *t, const char *message)
{
    PyObject *exc = take_exception();
    if (message != NULL && exc != NULL)
        report(t, message, exc);
    close_now(t, exc);
    Py_XDECREF(exc);
}

static void
fail_errno(Transport *t, int err)
{
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    fail(t, NULL);
}

/* --- writing ------------------------------------------------------------------------- */

/* protocol.pause_writing() / resume_writing(): an exception goes to the loop's handler. */
static void
call_hook(Transport *t, const char *name)
{
    PyObject *r = PyObject_CallMethod(t->protocol, name, NULL);
    if (r != NULL) {
        Py_DECREF(r);
        return;
    }
    PyObject *exc = take_exception();
    report(t, name, exc ? exc : Py_None);
    Py_XDECREF(exc);
}

static void
maybe_pause_protocol(Transport *t)
{
    if (t->writing_paused || pending(t) <= t->high || t->protocol == NULL)
        return;
    t->writing_paused = 1;
    call_hook(t, "pause_writing");
}

static void
maybe_resume_protocol(Transport *t)
{
    if (!t->writing_paused || pending(t) > t->low || t->protocol == NULL)
        return;
    t->writing_paused = 0;
    call_hook(t, "resume_writing");
}

/* Send what the buffer holds, when epoll says the socket can take more. */
static void
flush(Transport *t)
{
    while (pending(t)) {
        ssize_t n = sock_send(t->fd, t->wbuf + t->wstart, pending(t));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            fail_errno(t, errno);
            return;
        }
        t->wstart += (size_t)n;
    }
    if (!pending(t) && t->wcap > KEEP_BUFFER) { /* one large result must not pin its size */
        PyMem_Free(t->wbuf);
        t->wbuf = NULL;
        t->wstart = t->wend = t->wcap = 0;
    }
    if (!pending(t) && t->closing) {
        close_now(t, NULL);
        return;
    }
    if (update_interest(t, wanted(t)) < 0) {
        fail(t, NULL);
        return;
    }
    maybe_resume_protocol(t);
}

/* Send `iov` now if nothing is queued before it; buffer what the socket did not take. */
static int
write_iov(Transport *t, struct iovec *iov, int count)
{
    size_t sent = 0;
    if (!pending(t)) {
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)count};
        ssize_t n;
        do {
            n = count == 1 ? sock_send(t->fd, iov[0].iov_base, iov[0].iov_len)
                           : sock_sendmsg(t->fd, &msg);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                fail_errno(t, errno);
                return 0;
            }
            n = 0;
        }
        sent = (size_t)n;
    }
    size_t before = pending(t);
    for (int i = 0; i < count; i++) {
        size_t len = iov[i].iov_len;
        if (sent >= len) {
            sent -= len;
            continue;
        }
        if (buffer_append(t, (char *)iov[i].iov_base + sent, len - sent) < 0)
            return -1;
        sent = 0;
    }
    if (before == 0 && pending(t)) {
        if (update_interest(t, wanted(t)) < 0)
            return -1;
    }
    maybe_pause_protocol(t);
    return 0;
}

static PyObject *
Transport_write(Transport *t, PyObject *data)
{
    if (PyBytes_CheckExact(data)) { /* the relay's case: no buffer view to take and release */
        struct iovec iov = {.iov_base = PyBytes_AS_STRING(data),
                            .iov_len = (size_t)PyBytes_GET_SIZE(data)};
        if (t->fd >= 0 && iov.iov_len > 0 && write_iov(t, &iov, 1) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int r = 0;
    if (t->fd >= 0 && view.len > 0) {
        struct iovec iov = {.iov_base = view.buf, .iov_len = (size_t)view.len};
        r = write_iov(t, &iov, 1);
    }
    PyBuffer_Release(&view);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Transport_writelines(Transport *t, PyObject *lines)
{
    PyObject *seq = PySequence_Fast(lines, "writelines() takes an iterable of bytes");
    if (seq == NULL)
        return NULL;
    Py_ssize_t total = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_buffer views[MAX_IOV];
    struct iovec iov[MAX_IOV];
    int r = 0;
    for (Py_ssize_t start = 0; start < total && r == 0; start += MAX_IOV) {
        int count = 0;
        for (Py_ssize_t i = start; i < total && count < MAX_IOV; i++) {
            if (PyObject_GetBuffer(items[i], &views[count], PyBUF_SIMPLE) < 0) {
                r = -1;
                break;
            }
            iov[count].iov_base = views[count].buf;
            iov[count].iov_len = (size_t)views[count].len;
            count++;
        }
        if (r == 0 && t->fd >= 0)
            r = write_iov(t, iov, count);
        for (int i = 0; i < count; i++)
            PyBuffer_Release(&views[i]);
    }
    Py_DECREF(seq);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Stop reading and close once the buffer is sent (at once if it is empty). */
static int
begin_close(Transport *t)
{
    t->closing = 1;
    t->reading = 0;
    if (!pending(t)) {
        close_now(t, NULL);
        return 0;
    }
    return update_interest(t, wanted(t));
}

/* --- reading ------------------------------------------------------------------------- */

static void
eof(Transport *t)
{
    t->reading = 0;
    PyObject *r = PyObject_CallMethod(t->protocol, "eof_received", NULL);
    if (r == NULL) {
        fail(t, "protocol.eof_received() failed");
        return;
    }
    int keep_open = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (keep_open > 0) {
        if (update_interest(t, wanted(t)) < 0)
            fail(t, NULL);
        return;
    }
    if (begin_close(t) < 0)
        fail(t, NULL);
}

static void
readable(Transport *t)
{
    char *buf = t->reactor->rbuf;
    for (int turn = 0; turn < 16 && t->reading && !t->closing && t->fd >= 0; turn++) {
        ssize_t n = sock_recv(t->fd, buf, READ_SIZE);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                fail_errno(t, errno);
            return;
        }
        if (n == 0) {
            eof(t);
            return;
        }
        PyObject *data = PyBytes_FromStringAndSize(buf, n);
        if (data == NULL) {
            fail(t, "out of memory reading a socket");
            return;
        }
        /* Held for the call: the protocol may replace itself (set_protocol) meanwhile. */
        PyObject *callback = Py_NewRef(t->data_received);
        PyObject *r = PyObject_CallOneArg(callback, data);
        Py_DECREF(callback);
        Py_DECREF(data);
        if (r == NULL) {
            fail(t, "protocol.data_received() failed");
            return;
        }
        Py_DECREF(r);
        if (n < READ_SIZE)
            return;
    }
}

static void
handle(Transport *t, uint32_t events)
{
    if (t->fd < 0)
        return;
    if ((events & EPOLLOUT) && pending(t)) {
        flush(t);
        if (t->fd < 0)
            return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (t->reading && !t->closing) {
            readable(t);
        }
        else if (events & EPOLLERR) {
            int err = 0;
            socklen_t len = sizeof(err);
            getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            fail_errno(t, err ? err : ECONNRESET);
        }
        else if (update_interest(t, wanted(t)) < 0) {
            fail(t, NULL);
        }
    }
}

/* --- Transport ----------------------------------------------------------------------- */

static PyObject *
Transport_pause_reading(Transport *t, PyObject *Py_UNUSED(ignored))
{
    t->reading = 0;
    Py_RETURN_NONE;
}

static PyObject *
Transport_resume_reading(Transport *t, PyObject *Py_UNUSED(ignored))
{
    if (t->fd < 0 || t->closing || t->reading)
        Py_RETURN_NONE;
    t->reading = 1;
    if (update_interest(t, wanted(t)) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Transport_is_reading(Transport *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(t->fd >= 0 && t->reading && !t->closing);
}

static PyObject *
Transport_is_closing(Transport *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(t->closing || t->fd < 0);
}

static PyObject *
Transport_close(Transport *t, PyObject *Py_UNUSED(ignored))
{
    if (t->fd < 0 || t->closing)
        Py_RETURN_NONE;
    if (begin_close(t) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Transport_abort(Transport *t, PyObject *Py_UNUSED(ignored))
{
    close_now(t, NULL);
    Py_RETURN_NONE;
}

/* Stop watching the socket and give its descriptor to the caller (for TLS on uvloop). The
 * transport is closed afterwards, and no connection_lost follows. */
static PyObject *
Transport_detach(Transport *t, PyObject *Py_UNUSED(ignored))
{
    if (t->fd < 0) {
        PyErr_SetString(PyExc_RuntimeError, "transport is closed");
        return NULL;
    }
    if (pending(t)) {
        PyErr_SetString(PyExc_RuntimeError, "cannot detach with data still to send");
        return NULL;
    }
    int fd = forget_fd(t);
    Py_DECREF(t);
    return PyLong_FromLong(fd);
}

static PyObject *
Transport_get_extra_info(Transport *t, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get_extra_info(name, default=None)");
        return NULL;
    }
    PyObject *value = t->extra ? PyDict_GetItemWithError(t->extra, args[0]) : NULL;
    if (value == NULL) {
        if (PyErr_Occurred())
            return NULL;
        value = nargs == 2 ? args[1] : Py_None;
    }
    return Py_NewRef(value);
}

static PyObject *
Transport_get_write_buffer_size(Transport *t, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSize_t(pending(t));
}

static PyObject *
Transport_get_write_buffer_limits(Transport *t, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(nn)", (Py_ssize_t)t->low, (Py_ssize_t)t->high);
}

static PyObject *
Transport_set_write_buffer_limits(Transport *t, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"high", "low", NULL};
    PyObject *high = Py_None, *low = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO", names, &high, &low))
        return NULL;
    Py_ssize_t h, l;
    if (high == Py_None) {
        h = low == Py_None ? DEFAULT_HIGH : 4 * PyLong_AsSsize_t(low);
    }
    else {
        h = PyLong_AsSsize_t(high);
    }
    if (h == -1 && PyErr_Occurred())
        return NULL;
    l = low == Py_None ? h / 4 : PyLong_AsSsize_t(low);
    if (l == -1 && PyErr_Occurred())
        return NULL;
    if (!(0 <= l && l <= h)) {
        PyErr_Format(PyExc_ValueError, "high (%zd) must be >= low (%zd) must be >= 0", h, l);
        return NULL;
    }
    t->high = (size_t)h;
    t->low = (size_t)l;
    maybe_pause_protocol(t);
    Py_RETURN_NONE;
}

static int
set_protocol(Transport *t, PyObject *protocol)
{
    PyObject *bound = PyObject_GetAttrString(protocol, "data_received");
    if (bound == NULL)
        return -1;
    Py_XSETREF(t->data_received, bound);
    Py_XSETREF(t->protocol, Py_NewRef(protocol));
    return 0;
}

static PyObject *
Transport_set_protocol(Transport *t, PyObject *protocol)
{
    if (set_protocol(t, protocol) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Transport_get_protocol(Transport *t, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(t->protocol ? t->protocol : Py_None);
}

static PyObject *
Transport_fileno(Transport *t, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(t->fd);
}

static int
Transport_traverse(Transport *t, visitproc visit, void *arg)
{
    Py_VISIT(t->reactor);
    Py_VISIT(t->protocol);
    Py_VISIT(t->data_received);
    Py_VISIT(t->extra);
    return 0;
}

static int
Transport_clear(Transport *t)
{
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->data_received);
    Py_CLEAR(t->extra);
    return 0;
}

static void
Transport_dealloc(Transport *t)
{
    PyObject_GC_UnTrack(t);
    Transport_clear(t);
    Py_CLEAR(t->reactor);
    PyMem_Free(t->wbuf);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyMethodDef Transport_methods[] = {
    {"write", (PyCFunction)Transport_write, METH_O, "Send bytes (buffered if the socket is full)."},
    {"writelines", (PyCFunction)Transport_writelines, METH_O, "Send several buffers at once."},
    {"pause_reading", (PyCFunction)Transport_pause_reading, METH_NOARGS, NULL},
    {"resume_reading", (PyCFunction)Transport_resume_reading, METH_NOARGS, NULL},
    {"is_reading", (PyCFunction)Transport_is_reading, METH_NOARGS, NULL},
    {"is_closing", (PyCFunction)Transport_is_closing, METH_NOARGS, NULL},
    {"close", (PyCFunction)Transport_close, METH_NOARGS, "Close once the buffer is sent."},
    {"abort", (PyCFunction)Transport_abort, METH_NOARGS, "Close now, dropping the buffer."},
    {"detach", (PyCFunction)Transport_detach, METH_NOARGS, "Hand the socket back: its fd."},
    {"get_extra_info", (PyCFunction)(void (*)(void))Transport_get_extra_info, METH_FASTCALL,
     NULL},
    {"get_write_buffer_size", (PyCFunction)Transport_get_write_buffer_size, METH_NOARGS, NULL},
    {"get_write_buffer_limits", (PyCFunction)Transport_get_write_buffer_limits, METH_NOARGS,
     NULL},
    {"set_write_buffer_limits", (PyCFunction)(void (*)(void))Transport_set_write_buffer_limits,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"set_protocol", (PyCFunction)Transport_set_protocol, METH_O, NULL},
    {"get_protocol", (PyCFunction)Transport_get_protocol, METH_NOARGS, NULL},
    {"fileno", (PyCFunction)Transport_fileno, METH_NOARGS, "The socket's fd, -1 once closed."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TransportType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "proxyworker._reactor.Transport",
    .tp_doc = "A socket watched by a Reactor (made by Reactor.transport).",
    .tp_basicsize = sizeof(Transport),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Transport_traverse,
    .tp_clear = (inquiry)Transport_clear,
    .tp_dealloc = (destructor)Transport_dealloc,
    .tp_methods = Transport_methods,
};

/* --- Reactor ------------------------------------------------------------------------- */

static PyObject *
Reactor_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"loop", NULL};
    PyObject *loop;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O", names, &loop))
        return NULL;
    Reactor *r = (Reactor *)type->tp_alloc(type, 0);
    if (r == NULL)
        return NULL;
    r->epfd = -1;
    r->call_soon = PyObject_GetAttrString(loop, "call_soon");
    r->exception_handler = PyObject_GetAttrString(loop, "call_exception_handler");
    if (r->call_soon == NULL || r->exception_handler == NULL)
        goto error;
    r->rbuf = PyMem_Malloc(READ_SIZE);
    if (r->rbuf == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (r->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto error;
    }
    return (PyObject *)r;
error:
    Py_DECREF(r);
    return NULL;
}

/* Reactor.transport(fd, protocol, extra): own the connected socket `fd` (non-blocking; closed
 * here if this fails), read it for `protocol`. The caller calls protocol.connection_made. */
static PyObject *
Reactor_transport(Reactor *r, PyObject *args)
{
    int fd;
    PyObject *protocol, *extra;
    if (!PyArg_ParseTuple(args, "iOO!", &fd, &protocol, &PyDict_Type, &extra))
        return NULL;
    if (r->epfd < 0) {
        PyErr_SetString(PyExc_RuntimeError, "reactor is closed");
        close(fd);
        return NULL;
    }
    Transport *t = PyObject_GC_New(Transport, &TransportType);
    if (t == NULL) {
        close(fd);
        return NULL;
    }
    t->reactor = (Reactor *)Py_NewRef(r);
    t->fd = -1;
    t->interest = 0;
    t->reading = 1;
    t->closing = 0;
    t->writing_paused = 0;
    t->protocol = t->data_received = NULL;
    t->extra = Py_NewRef(extra);
    t->wbuf = NULL;
    t->wstart = t->wend = t->wcap = 0;
    t->high = DEFAULT_HIGH;
    t->low = DEFAULT_HIGH / 4;
    PyObject_GC_Track(t);
    if (set_protocol(t, protocol) < 0) {
        close(fd);
        Py_DECREF(t);
        return NULL;
    }
    t->fd = fd;
    if (update_interest(t, EPOLLIN) < 0) {
        close(fd);
        t->fd = -1;
        Py_DECREF(t);
        return NULL;
    }
    Py_INCREF(t); /* held while the fd is open: epoll points at it */
    return (PyObject *)t;
}

/* Run the callbacks of every socket that is ready; uvloop calls this when the epoll fd is. */
static PyObject *
Reactor_poll(Reactor *r, PyObject *Py_UNUSED(ignored))
{
    struct epoll_event events[MAX_EVENTS];
    if (r->epfd < 0)
        Py_RETURN_NONE;
    int n;
    do {
        n = epoll_wait(r->epfd, events, MAX_EVENTS, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    /* A callback may close (and free) a transport whose event is later in this batch. */
    for (int i = 0; i < n; i++)
        Py_INCREF((PyObject *)events[i].data.ptr);
    for (int i = 0; i < n; i++)
        handle((Transport *)events[i].data.ptr, events[i].events);
    for (int i = 0; i < n; i++)
        Py_DECREF((PyObject *)events[i].data.ptr);
    Py_RETURN_NONE;
}

static PyObject *
Reactor_fileno(Reactor *r, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(r->epfd);
}

static PyObject *
Reactor_close(Reactor *r, PyObject *Py_UNUSED(ignored))
{
    if (r->epfd >= 0) {
        close(r->epfd);
        r->epfd = -1;
    }
    Py_RETURN_NONE;
}

static int
Reactor_traverse(Reactor *r, visitproc visit, void *arg)
{
    Py_VISIT(r->call_soon);
    Py_VISIT(r->exception_handler);
    return 0;
}

static int
Reactor_clear(Reactor *r)
{
    Py_CLEAR(r->call_soon);
    Py_CLEAR(r->exception_handler);
    return 0;
}

static void
Reactor_dealloc(Reactor *r)
{
    PyObject_GC_UnTrack(r);
    Reactor_clear(r);
    if (r->epfd >= 0)
        close(r->epfd);
    PyMem_Free(r->rbuf);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyMethodDef Reactor_methods[] = {
    {"transport", (PyCFunction)Reactor_transport, METH_VARARGS,
     "transport(fd, protocol, extra) -> Transport owning the connected socket fd."},
    {"poll", (PyCFunction)Reactor_poll, METH_NOARGS, "Run the callbacks of the ready sockets."},
    {"fileno", (PyCFunction)Reactor_fileno, METH_NOARGS, "The epoll fd, for loop.add_reader."},
    {"close", (PyCFunction)Reactor_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReactorType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "proxyworker._reactor.Reactor",
    .tp_doc = "One epoll instance for the worker's plain sockets, polled from the event loop.",
    .tp_basicsize = sizeof(Reactor),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Reactor_new,
    .tp_traverse = (traverseproc)Reactor_traverse,
    .tp_clear = (inquiry)Reactor_clear,
    .tp_dealloc = (destructor)Reactor_dealloc,
    .tp_methods = Reactor_methods,
};

/* write(transport, data): transport.write(data) without looking the method up by name, which
 * is most of what a call from compiled code costs. Any other transport (TLS on uvloop) gets
 * its own write method called. */
static PyObject *
module_write(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    static PyObject *name = NULL;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "write() takes 2 arguments: transport, data");
        return NULL;
    }
    if (Py_IS_TYPE(args[0], &TransportType))
        return Transport_write((Transport *)args[0], args[1]);
    if (name == NULL && (name = PyUnicode_InternFromString("write")) == NULL)
        return NULL;
    return PyObject_CallMethodOneArg(args[0], name, args[1]);
}

static PyMethodDef module_methods[] = {
    {"write", (PyCFunction)(void (*)(void))module_write, METH_FASTCALL,
     "write(transport, data): transport.write(data), without the lookup for a reactor's."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "proxyworker._reactor",
    .m_doc = "Socket transports on one epoll instance, polled from the asyncio loop.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__reactor(void)
{
    if (PyType_Ready(&ReactorType) < 0 || PyType_Ready(&TransportType) < 0)
        return NULL;

    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Reactor", (PyObject *)&ReactorType) < 0 ||
        PyModule_AddObjectRef(m, "Transport", (PyObject *)&TransportType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

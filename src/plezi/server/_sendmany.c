/* plezi.server._sendmany: one buffer each to many sockets, in as few system calls as the kernel
 * allows.
 *
 * The server's end-of-iteration flush (server/state.py) has, after a publish, one buffer for each
 * of many connections. Written through their transports, that is one write() system call per
 * connection; here it is one io_uring_enter() for the whole batch (IORING_OP_SEND, MSG_DONTWAIT),
 * where the kernel has io_uring and lets this process use it, or else one send() per socket.
 * Measured on loopback (bench/README): a batch of 16 or more costs about 20% less kernel time per
 * buffer than write(); a batch of 1 costs more through io_uring than through send(), so small
 * batches take send().
 *
 * Nothing here blocks or waits for a socket: a send that would block comes back as -EAGAIN, a
 * short one as the count sent, and the caller hands what is left to the transport, which then
 * owns the socket's ordering again. The GIL is held throughout (the sends do not sleep, and one
 * ring per process then needs no lock).
 *
 * The ring is made on first use, per process: a child after fork() makes its own, since the
 * parent's queues are shared memory. PLEZI_NO_IO_URING=1 in the environment at import makes it
 * send() always (the fallback's own tests, and A/B runs).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <linux/io_uring.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Batches smaller than this take send(): io_uring_enter() plus the queue entries costs more than
 * one or two send() calls (measured: a batch of 1 through the ring, 4.7 us a buffer; send(),
 * 4.1 us; from 4 the ring is ahead). */
#define RING_MIN 4
/* Submission queue entries: a batch larger than this goes in several io_uring_enter() calls. */
#define RING_ENTRIES 1024
#define SEND_FLAGS (MSG_DONTWAIT | MSG_NOSIGNAL)

typedef struct {
    int fd; /* -1: not made yet; -2: io_uring is not available here */
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    void *map; /* both queues: one mapping (IORING_FEAT_SINGLE_MMAP) */
    size_t map_size, sqes_size;
    unsigned sq_entries;
} Ring;

static Ring ring = {.fd = -1};
static int ring_disabled = 0;

static void ring_unmap(void) {
    if (ring.sqes) munmap(ring.sqes, ring.sqes_size);
    if (ring.map) munmap(ring.map, ring.map_size);
    ring.sqes = NULL;
    ring.map = NULL;
}

/* A forked child must not touch its parent's queues: it drops them and makes its own. */
static void after_fork_in_child(void) {
    if (ring.fd >= 0) {
        ring_unmap();
        close(ring.fd);
        ring.fd = -1;
    }
}

static int ring_setup(void) {
    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    /* SUBMIT_ALL: one failed entry does not stop the rest of the batch (5.18); without it a
     * failed entry would end a submission early, so a kernel that refuses it gets send().
     * COOP_TASKRUN: no interrupting the task to run completions (5.19), optional. */
    params.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN;
    int fd = (int)syscall(__NR_io_uring_setup, RING_ENTRIES, &params);
    if (fd < 0 && errno == EINVAL) {
        memset(&params, 0, sizeof params);
        params.flags = IORING_SETUP_SUBMIT_ALL;
        fd = (int)syscall(__NR_io_uring_setup, RING_ENTRIES, &params);
    }
    if (fd < 0) return -1;
    /* Without NODROP a full completion queue could lose results; without SINGLE_MMAP the
     * queues need two mappings (kernels before 5.4, which lack SUBMIT_ALL anyway). */
    if (!(params.features & IORING_FEAT_NODROP) || !(params.features & IORING_FEAT_SINGLE_MMAP)) {
        close(fd);
        return -1;
    }
    size_t sq_size = params.sq_off.array + params.sq_entries * sizeof(unsigned);
    size_t cq_size = params.cq_off.cqes + params.cq_entries * sizeof(struct io_uring_cqe);
    size_t size = sq_size > cq_size ? sq_size : cq_size;
    void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                     IORING_OFF_SQ_RING);
    if (map == MAP_FAILED) {
        close(fd);
        return -1;
    }
    size_t sqes_size = params.sq_entries * sizeof(struct io_uring_sqe);
    void *sqes = mmap(NULL, sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                      IORING_OFF_SQES);
    if (sqes == MAP_FAILED) {
        munmap(map, size);
        close(fd);
        return -1;
    }
    char *base = map;
    ring.map = map;
    ring.map_size = size;
    ring.sqes = sqes;
    ring.sqes_size = sqes_size;
    ring.sq_head = (unsigned *)(base + params.sq_off.head);
    ring.sq_tail = (unsigned *)(base + params.sq_off.tail);
    ring.sq_mask = (unsigned *)(base + params.sq_off.ring_mask);
    ring.sq_array = (unsigned *)(base + params.sq_off.array);
    ring.cq_head = (unsigned *)(base + params.cq_off.head);
    ring.cq_tail = (unsigned *)(base + params.cq_off.tail);
    ring.cq_mask = (unsigned *)(base + params.cq_off.ring_mask);
    ring.cqes = (struct io_uring_cqe *)(base + params.cq_off.cqes);
    ring.sq_entries = params.sq_entries;
    ring.fd = fd;
    return 0;
}

/* Whether the ring can be used; made on first use. */
static int ring_ready(void) {
    if (ring.fd >= 0) return 1;
    if (ring.fd == -2 || ring_disabled) return 0;
    if (ring_setup() < 0) {
        ring.fd = -2;
        return 0;
    }
    return 1;
}

static ssize_t send_one(int fd, const char *buf, size_t len) {
    for (;;) {
        ssize_t sent = send(fd, buf, len, SEND_FLAGS);
        if (sent >= 0) return sent;
        if (errno != EINTR) return -errno;
    }
}

/* Sends items [start, start + count) through the ring: results[i] is what the kernel said of
 * item i (bytes sent, or -errno). Returns 0, or -1 when the ring failed as a whole (the caller
 * then sends what has no result yet with send()). */
static int ring_send(int *fds, const char **bufs, size_t *lens, Py_ssize_t start, Py_ssize_t count,
                     Py_ssize_t *results) {
    unsigned mask = *ring.sq_mask;
    unsigned tail = *ring.sq_tail;
    for (Py_ssize_t i = start; i < start + count; i++) {
        unsigned index = tail & mask;
        struct io_uring_sqe *sqe = &ring.sqes[index];
        memset(sqe, 0, sizeof *sqe);
        sqe->opcode = IORING_OP_SEND;
        sqe->fd = fds[i];
        sqe->addr = (uint64_t)(uintptr_t)bufs[i];
        sqe->len = (uint32_t)lens[i];
        sqe->msg_flags = SEND_FLAGS;
        sqe->user_data = (uint64_t)i;
        ring.sq_array[index] = index;
        tail++;
    }
    __atomic_store_n(ring.sq_tail, tail, __ATOMIC_RELEASE);
    unsigned expected = (unsigned)count; /* entries submitted or still to submit */
    unsigned to_submit = expected;
    unsigned done = 0;
    int failed = 0;
    while (done < expected) {
        /* MSG_DONTWAIT: each send completes during the submission (or fails with -EAGAIN), so
         * the wait for all completions returns at once. */
        int rc = (int)syscall(__NR_io_uring_enter, ring.fd, to_submit, expected - done,
                              IORING_ENTER_GETEVENTS, NULL, 0);
        if (rc >= 0) {
            to_submit -= (unsigned)rc < to_submit ? (unsigned)rc : to_submit;
        } else if (to_submit && errno != EINTR && errno != EAGAIN && errno != EBUSY) {
            /* The rest cannot be submitted: take those entries back; the caller sends them
             * with send(), once what was submitted has completed. */
            tail -= to_submit;
            __atomic_store_n(ring.sq_tail, tail, __ATOMIC_RELEASE);
            expected -= to_submit;
            to_submit = 0;
            failed = 1;
        }
        unsigned head = *ring.cq_head;
        unsigned cq_tail = __atomic_load_n(ring.cq_tail, __ATOMIC_ACQUIRE);
        while (head != cq_tail) {
            struct io_uring_cqe *cqe = &ring.cqes[head & *ring.cq_mask];
            results[cqe->user_data] = cqe->res;
            head++;
            done++;
        }
        __atomic_store_n(ring.cq_head, head, __ATOMIC_RELEASE);
    }
    return failed ? -1 : 0;
}

PyDoc_STRVAR(send_all_doc,
             "send_all(fds, payloads, /)\n--\n\n"
             "Send ``payloads[i]`` to socket ``fds[i]`` for each i, without blocking.\n\n"
             "Returns ``None`` when every payload went out whole; otherwise a list with, for each\n"
             "i, the number of bytes sent (maybe fewer, maybe 0) or a negative errno.");

static PyObject *send_all(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "send_all(fds: list[int], payloads: list[bytes])");
        return NULL;
    }
    PyObject *fd_list = args[0], *payload_list = args[1];
    Py_ssize_t n = PyList_GET_SIZE(fd_list);
    if (PyList_GET_SIZE(payload_list) != n) {
        PyErr_SetString(PyExc_ValueError, "send_all: fds and payloads differ in length");
        return NULL;
    }
    if (n == 0) Py_RETURN_NONE;
    /* The lists are read before anything is sent: a bad item sends nothing. */
    int *fds = PyMem_Malloc(n * sizeof(int));
    const char **bufs = PyMem_Malloc(n * sizeof(char *));
    size_t *lens = PyMem_Malloc(n * sizeof(size_t));
    Py_ssize_t *results = PyMem_Malloc(n * sizeof(Py_ssize_t));
    PyObject *answer = NULL;
    if (!fds || !bufs || !lens || !results) {
        PyErr_NoMemory();
        goto end;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *payload = PyList_GET_ITEM(payload_list, i);
        long fd = PyLong_AsLong(PyList_GET_ITEM(fd_list, i));
        if (fd == -1 && PyErr_Occurred()) goto end;
        if (fd < 0 || fd > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "send_all: not a file descriptor");
            goto end;
        }
        if (!PyBytes_CheckExact(payload)) {
            PyErr_SetString(PyExc_TypeError, "send_all: payloads must be bytes");
            goto end;
        }
        fds[i] = (int)fd;
        bufs[i] = PyBytes_AS_STRING(payload);
        lens[i] = (size_t)PyBytes_GET_SIZE(payload);
        results[i] = PY_SSIZE_T_MIN;
    }
    Py_ssize_t start = 0;
    if (n >= RING_MIN && ring_ready()) {
        while (start < n) {
            Py_ssize_t count = n - start;
            if (count > (Py_ssize_t)ring.sq_entries) count = (Py_ssize_t)ring.sq_entries;
            if (ring_send(fds, bufs, lens, start, count, results) < 0) break;
            start += count;
        }
    }
    int whole = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (results[i] == PY_SSIZE_T_MIN) results[i] = send_one(fds[i], bufs[i], lens[i]);
        if (results[i] != (Py_ssize_t)lens[i]) whole = 0;
    }
    if (whole) {
        answer = Py_NewRef(Py_None);
        goto end;
    }
    answer = PyList_New(n);
    if (!answer) goto end;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *result = PyLong_FromSsize_t(results[i]);
        if (!result) {
            Py_CLEAR(answer);
            goto end;
        }
        PyList_SET_ITEM(answer, i, result);
    }
end:
    PyMem_Free(fds);
    PyMem_Free(bufs);
    PyMem_Free(lens);
    PyMem_Free(results);
    return answer;
}

PyDoc_STRVAR(mechanism_doc,
             "mechanism()\n--\n\n"
             "How a batch is sent in this process: ``\"io_uring\"`` or ``\"send\"``.");

static PyObject *mechanism(PyObject *module, PyObject *unused) {
    return PyUnicode_FromString(ring_ready() ? "io_uring" : "send");
}

static PyMethodDef methods[] = {
    {"send_all", (PyCFunction)(void (*)(void))send_all, METH_FASTCALL, send_all_doc},
    {"mechanism", mechanism, METH_NOARGS, mechanism_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "plezi.server._sendmany",
    "One buffer each to many sockets in few system calls (io_uring, or send()).", -1, methods,
};

PyMODINIT_FUNC PyInit__sendmany(void) {
    static int hooked = 0;
    const char *off = getenv("PLEZI_NO_IO_URING");
    ring_disabled = off != NULL && off[0] != '\0' && strcmp(off, "0") != 0;
    if (!hooked) {
        if (pthread_atfork(NULL, NULL, after_fork_in_child) != 0) ring_disabled = 1;
        hooked = 1;
    }
    return PyModule_Create(&module_def);
}

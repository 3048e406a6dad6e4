/* ownvol._entries: the walk's per-entry loop (ownvol/ownership.py, _fix_listed) compiled, for its cost.

   The same syscalls in the same order as the Python loop, one entry after another: openat(O_PATH|O_NOFOLLOW),
   fstat, fchownat(fd, "", AT_EMPTY_PATH|AT_SYMLINK_NOFOLLOW), close; with `needs`, chmod through the fd's
   /proc/self/fd link. The inode checked is the inode changed, a symlink is re-owned itself, an entry with more
   than one hard link or on another filesystem is left alone. Python's own loop costs about 2 us of interpreter
   a file on top of the kernel's 6 (BENCHMARKS.md, repair_vs_chown_ratio). The GIL is released while a
   directory's entries are walked; Python objects are made once the walk of the directory is over. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

enum outcome { NOT_WALKED, SUBDIR, VANISHED, OTHER_FS, KEPT, HARDLINK, CHANGED, FAILED, OPEN_FAILED };

struct entry {
    size_t name;        /* offset of its NUL-terminated name in the names buffer */
    int listed_dir;     /* d_type said DT_DIR: a subdirectory, not opened here */
    int outcome;
    int err;            /* FAILED, OPEN_FAILED: errno */
    unsigned int old_mode, new_mode;  /* new_mode != 0: the mode was changed */
};

struct listing {
    char *names;
    size_t names_len, names_cap;
    struct entry *entries;
    size_t count, cap;
};

static int add(struct listing *l, const char *name, int listed_dir) {
    size_t len = strlen(name) + 1;
    if (l->names_len + len > l->names_cap) {
        size_t cap = l->names_cap ? l->names_cap * 2 : 16384;
        while (cap < l->names_len + len) cap *= 2;
        char *grown = realloc(l->names, cap);
        if (!grown) return -1;
        l->names = grown;
        l->names_cap = cap;
    }
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        struct entry *grown = realloc(l->entries, cap * sizeof(struct entry));
        if (!grown) return -1;
        l->entries = grown;
        l->cap = cap;
    }
    memcpy(l->names + l->names_len, name, len);
    l->entries[l->count++] = (struct entry){.name = l->names_len, .listed_dir = listed_dir};
    l->names_len += len;
    return 0;
}

/* The directory's entries but . and .., read through a dup of dir_fd (rewound after, as os.scandir(fd) does).
   Returns 0 or an errno. */
static int list_directory(int dir_fd, struct listing *l) {
    int fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return errno;
    DIR *dir = fdopendir(fd);
    if (!dir) {
        int err = errno;
        close(fd);
        return err;
    }
    int err = 0;
    for (;;) {
        errno = 0;
        struct dirent *d = readdir(dir);
        if (!d) {
            err = errno;
            break;
        }
        if (d->d_name[0] == '.' && (!d->d_name[1] || (d->d_name[1] == '.' && !d->d_name[2]))) continue;
        if (add(l, d->d_name, d->d_type == DT_DIR) != 0) {
            err = ENOMEM;
            break;
        }
    }
    rewinddir(dir);
    closedir(dir);
    return err;
}

/* The O_PATH fds of entries done, closed HELD at a time: close_range(2) on each run of consecutive numbers
   (all of a run's numbers are held here, so no other thread's fd is among them), close(2) where the kernel
   has no close_range (before Linux 5.9). A close is about 0.9 us of a file's 6 in the kernel, a seventh of it
   the syscall's own entry and exit. */
#define HELD 64
struct held {
    int fds[HELD];
    int count;
};

static void close_held(struct held *h) {
    for (int i = 1; i < h->count; i++) {
        int fd = h->fds[i], j = i - 1;
        for (; j >= 0 && h->fds[j] > fd; j--) h->fds[j + 1] = h->fds[j];
        h->fds[j + 1] = fd;
    }
    for (int i = 0; i < h->count;) {
        int j = i;
        while (j + 1 < h->count && h->fds[j + 1] == h->fds[j] + 1) j++;
#ifdef SYS_close_range
        if (syscall(SYS_close_range, (unsigned int)h->fds[i], (unsigned int)h->fds[j], 0) == 0) {
            i = j + 1;
            continue;
        }
#endif
        for (; i <= j; i++) close(h->fds[i]);
    }
    h->count = 0;
}

static void hold(struct held *h, int fd) {
    h->fds[h->count++] = fd;
    if (h->count == HELD) close_held(h);
}

/* One entry not listed as a directory; returns 0, or -1 with errno for an open that failed otherwise than
   ENOENT (the walk stops there, as the Python loop's OSError does). The entry's fd goes to held. */
static int fix_entry(int dir_fd, const char *name, struct entry *e, uid_t uid, gid_t gid, dev_t dev,
                     unsigned int needs, struct held *held) {
    int fd = openat(dir_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            e->outcome = VANISHED;
            return 0;
        }
        e->outcome = OPEN_FAILED;
        e->err = errno;
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        e->outcome = FAILED;
        e->err = errno;
    } else {
        int lacks = needs && (st.st_mode & needs) != needs && S_ISREG(st.st_mode);
        int wrong_owner = st.st_uid != uid || st.st_gid != gid;
        if (S_ISDIR(st.st_mode)) {
            e->outcome = SUBDIR;
        } else if (st.st_dev != dev) {
            e->outcome = OTHER_FS;
        } else if (!wrong_owner && !lacks) {
            e->outcome = KEPT;
        } else if (st.st_nlink > 1) {
            e->outcome = HARDLINK;
        } else if (wrong_owner && fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
            e->outcome = FAILED;
            e->err = errno;
        } else if (lacks) {
            /* a chown just made may have cleared setuid/setgid: the mode is read again */
            char link[64];
            struct stat now;
            snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
            if (fstat(fd, &now) != 0) {
                e->outcome = FAILED;
                e->err = errno;
            } else if (chmod(link, (now.st_mode & 07777) | needs) != 0) {
                e->outcome = FAILED;
                e->err = errno;
            } else {
                e->outcome = CHANGED;
                e->old_mode = now.st_mode & 07777;
                e->new_mode = (now.st_mode & 07777) | needs;
            }
        } else {
            e->outcome = CHANGED;
        }
    }
    hold(held, fd);
    return 0;
}

static PyObject *build_result(struct listing *l, int listing_err) {
    Py_ssize_t counts[5] = {0};  /* visited, changed, vanished, hardlinks, other_fs */
    PyObject *subdirs = PyList_New(0), *errors = PyList_New(0), *modes = PyList_New(0), *result = NULL;
    if (!subdirs || !errors || !modes) goto done;
    for (size_t i = 0; i < l->count; i++) {
        struct entry *e = &l->entries[i];
        const char *name = l->names + e->name;
        PyObject *item = NULL;
        int status = 0;
        if (e->outcome == NOT_WALKED) continue;
        if (e->outcome != VANISHED) counts[0]++;
        switch (e->outcome) {
        case SUBDIR:
            item = PyUnicode_DecodeFSDefault(name);
            status = item ? PyList_Append(subdirs, item) : -1;
            break;
        case VANISHED: counts[2]++; break;
        case OTHER_FS: counts[4]++; break;
        case HARDLINK: counts[3]++; break;
        case CHANGED:
            counts[1]++;
            if (e->new_mode) {
                PyObject *decoded = PyUnicode_DecodeFSDefault(name);
                item = decoded ? Py_BuildValue("(NII)", decoded, e->old_mode, e->new_mode) : NULL;
                status = item ? PyList_Append(modes, item) : -1;
            }
            break;
        case FAILED:
            {
                PyObject *decoded = PyUnicode_DecodeFSDefault(name);
                item = decoded ? Py_BuildValue("(Ni)", decoded, e->err) : NULL;
            }
            status = item ? PyList_Append(errors, item) : -1;
            break;
        default: break;
        }
        Py_XDECREF(item);
        if (status != 0) goto done;
    }
    result = Py_BuildValue("(O(nnnnn)OOi)", subdirs, counts[0], counts[1], counts[2], counts[3], counts[4],
                           errors, modes, listing_err);
done:
    Py_XDECREF(subdirs);
    Py_XDECREF(errors);
    Py_XDECREF(modes);
    return result;
}

static int listing_from(PyObject *names, struct listing *l) {
    PyObject *seq = PySequence_Fast(names, "names must be a sequence of str");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *encoded = NULL;
        if (!PyUnicode_FSConverter(PySequence_Fast_GET_ITEM(seq, i), &encoded)) {
            Py_DECREF(seq);
            return -1;
        }
        int failed = add(l, PyBytes_AS_STRING(encoded), 0);
        Py_DECREF(encoded);
        if (failed) {
            Py_DECREF(seq);
            PyErr_NoMemory();
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

PyDoc_STRVAR(fix_doc,
"fix(dir_fd, uid, gid, dev, needs, names=None) -> (subdirs, (visited, changed, vanished, hardlinks, other_fs),\n"
"    errors, modes, listing_errno)\n\n"
"Re-own (and with needs, chmod u+needs) the entries of the directory dir_fd not listed as directories, as\n"
"ownvol.ownership._fix_listed does. names: the entries to take, all as listed non-directories (None: list the\n"
"directory). subdirs: names of subdirectories (listed so, or found so when opened); errors: (name, errno);\n"
"modes: (name, old, new); listing_errno: 0, or why the directory could not be listed (nothing else done).\n"
"Raises OSError for an open that fails otherwise than ENOENT (the entries before it are changed, uncounted).");

static PyObject *fix(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"dir_fd", "uid", "gid", "dev", "needs", "names", NULL};
    int dir_fd;
    unsigned int uid, gid, needs;
    unsigned long long dev;
    PyObject *names = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iIIKI|O", keywords, &dir_fd, &uid, &gid, &dev, &needs, &names))
        return NULL;
    (void)self;
    struct listing l = {0};
    PyObject *result = NULL;
    int listing_err = 0, open_err = 0;
    const char *open_failed = NULL;
    if (names != Py_None && listing_from(names, &l) != 0) goto done;
    Py_BEGIN_ALLOW_THREADS
    if (names == Py_None) listing_err = list_directory(dir_fd, &l);
    if (listing_err) {
        l.count = 0;
    } else {
        struct held held = {.count = 0};
        for (size_t i = 0; i < l.count; i++) {
            struct entry *e = &l.entries[i];
            if (e->listed_dir) {
                e->outcome = SUBDIR;
            } else if (fix_entry(dir_fd, l.names + e->name, e, (uid_t)uid, (gid_t)gid, (dev_t)dev, needs,
                                 &held) != 0) {
                open_err = e->err;
                open_failed = l.names + e->name;
                break;
            }
        }
        close_held(&held);
    }
    Py_END_ALLOW_THREADS
    if (open_failed) {
        errno = open_err;
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, open_failed);
        goto done;
    }
    result = build_result(&l, listing_err);
done:
    free(l.names);
    free(l.entries);
    return result;
}

static PyMethodDef methods[] = {
    {"fix", (PyCFunction)(void (*)(void))fix, METH_VARARGS | METH_KEYWORDS, fix_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ownvol._entries",
    "The walk's per-entry loop compiled (ownvol.ownership uses it when it is built).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__entries(void) { return PyModule_Create(&module); }

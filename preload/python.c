/* See python.h. States: UNSET until the constructor ran, ABSENT when the
 * process has no Python or no package to load (final), WAITING for
 * Py_IsInitialized(), SCHEDULED once the pending call is queued (final;
 * a forked child inherits it, and the parent's hooks with it). */
#include "python.h"
#include "log.h"
#include "options.h"
#include "recorder.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifndef MT_PYTHON_INSTALL_REL
#define MT_PYTHON_INSTALL_REL "../share/memtrace/python"
#endif

enum { PY_UNSET, PY_ABSENT, PY_WAITING, PY_SCHEDULED };

static atomic_int py_state;

static struct {
    int (*is_initialized)(void);
    int (*add_pending_call)(int (*)(void *), void *);
    int (*run_string_flags)(const char *, void *);
} py;

static char pkg_dir[PATH_MAX];  /* holds memtrace/_autoload.py */
static char boot_code[2 * PATH_MAX + 4096];

/* Sets pkg_dir to lib_dir/rel when it holds the package; true then. */
static bool try_dir(const char *lib_dir, size_t lib_len, const char *rel)
{
    char probe[PATH_MAX];
    int n = snprintf(pkg_dir, sizeof(pkg_dir), "%.*s/%s", (int)lib_len, lib_dir, rel);
    if (n <= 0 || (size_t)n >= sizeof(pkg_dir))
        return false;
    if (rel[0] == '/')
        snprintf(pkg_dir, sizeof(pkg_dir), "%s", rel);
    n = snprintf(probe, sizeof(probe), "%s/memtrace/_autoload.py", pkg_dir);
    return n > 0 && (size_t)n < sizeof(probe) && access(probe, R_OK) == 0;
}

__attribute__((constructor)) static void python_constructor(void)
{
    int state = PY_ABSENT;
    mti_self.guard++;
    py.is_initialized = (int (*)(void))dlsym(RTLD_DEFAULT, "Py_IsInitialized");
    py.add_pending_call = (int (*)(int (*)(void *), void *))dlsym(RTLD_DEFAULT, "Py_AddPendingCall");
    py.run_string_flags = (int (*)(const char *, void *))dlsym(RTLD_DEFAULT, "PyRun_SimpleStringFlags");
    Dl_info info;
    if (py.is_initialized && py.add_pending_call && py.run_string_flags &&
        dladdr((void *)python_constructor, &info) && info.dli_fname) {
        /* Build tree first (preload/ beside python/), then the installed
         * layout (libdir to datadir, set by meson). */
        const char *slash = strrchr(info.dli_fname, '/');
        const char *dir = slash ? info.dli_fname : ".";
        size_t len = slash ? (size_t)(slash - info.dli_fname) : 1;
        if (try_dir(dir, len, "../python") || try_dir(dir, len, MT_PYTHON_INSTALL_REL))
            state = PY_WAITING;
    }
    mti_self.guard--;
    atomic_store(&py_state, state);
}

/* The pending call: main thread, GIL held. The code binds no name in
 * __main__ (one exec() with a namespace of its own) and swallows every
 * exception, printing one line only with MEMTRACE_VERBOSE=1. Always 0:
 * nothing of ours may surface as an exception in the program. */
static int run_boot(void *arg)
{
    (void)arg;
    py.run_string_flags(boot_code, NULL);
    return 0;
}

/* The bootstrap, with the directory as hex (no quoting to get wrong).
 * The call may come while the interpreter is still starting (site, os
 * half imported): while a standard library module is being imported, the
 * package's own imports could find it half done, so loading then waits
 * for the next import at which none is (a finder at the front of
 * sys.meta_path that otherwise answers None, and then removes itself). */
static bool make_boot_code(void)
{
    char hex[2 * PATH_MAX + 1];
    size_t n = strlen(pkg_dir);
    for (size_t i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", (unsigned char)pkg_dir[i]);
    hex[2 * n] = 0;
    int len = snprintf(boot_code, sizeof(boot_code),
        "exec('''\n"
        "import sys\n"
        "def say(e):\n"
        "    if DEBUG:\n"
        "        try:\n"
        "            sys.stderr.write('memtrace: python integration not loaded: %%r\\\\n' %% (e,))\n"
        "        except Exception:\n"
        "            pass\n"
        "def busy():\n"
        "    std = getattr(sys, 'stdlib_module_names', None) or {'os', 'site', 'importlib',\n"
        "        'encodings', 'codecs', 'io', 'abc', 'ctypes', 'contextlib', 'collections',\n"
        "        'functools', 'weakref', 'threading', 'atexit', 're', 'types', 'struct'}\n"
        "    for k, m in list(sys.modules.items()):\n"
        "        if getattr(getattr(m, '__spec__', None), '_initializing', False) and (\n"
        "                k.partition('.')[0] in std or k in ('sitecustomize', 'usercustomize')):\n"
        "            return True\n"
        "    return False\n"
        "def load():\n"
        "    import importlib.util\n"
        "    d = bytes.fromhex(HEX).decode('utf-8', 'surrogateescape') + '/memtrace'\n"
        "    m = sys.modules.get('_memtrace')\n"
        "    if m is None:\n"
        "        s = importlib.util.spec_from_file_location('_memtrace', d + '/__init__.py',\n"
        "                                                   submodule_search_locations=[d])\n"
        "        m = importlib.util.module_from_spec(s)\n"
        "        sys.modules['_memtrace'] = m\n"
        "        try:\n"
        "            s.loader.exec_module(m)\n"
        "        except BaseException:\n"
        "            del sys.modules['_memtrace']\n"
        "            raise\n"
        "    return importlib.import_module('_memtrace._autoload').install(DEBUG)\n"
        "class Later:\n"
        "    done = False\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if self.done or busy():\n"
        "            return None\n"
        "        self.done = True\n"
        "        try:\n"
        "            sys.meta_path.remove(self)\n"
        "        except ValueError:\n"
        "            pass\n"
        "        try:\n"
        "            f = load()\n"
        "            return f.find_spec(name, path, target) if f is not None else None\n"
        "        except Exception as e:\n"
        "            say(e)\n"
        "        return None\n"
        "    def invalidate_caches(self):\n"
        "        pass\n"
        "try:\n"
        "    if busy():\n"
        "        sys.meta_path.insert(0, Later())\n"
        "    else:\n"
        "        load()\n"
        "except Exception as e:\n"
        "    say(e)\n"
        "''', {'__name__': '_memtrace_boot', 'HEX': '%s', 'DEBUG': %d})\n",
        hex, mti_opt.verbose ? 1 : 0);
    return len > 0 && (size_t)len < sizeof(boot_code);
}

void mti_python_tick(void)
{
    if (atomic_load_explicit(&py_state, memory_order_relaxed) != PY_WAITING)
        return;
    if (!py.is_initialized())
        return;
    int expected = PY_WAITING;
    if (!atomic_compare_exchange_strong(&py_state, &expected, PY_SCHEDULED))
        return;
    if (!mti_opt.torch || !make_boot_code())
        return;
    /* -1 only when the queue is full: try again at a later tick. */
    if (py.add_pending_call(run_boot, NULL) != 0)
        atomic_store(&py_state, PY_WAITING);
}

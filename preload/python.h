/* The PyTorch integration's way in: loading python/memtrace into a traced
 * Python process without changing the program.
 *
 * When the process is a Python interpreter (its global scope has the
 * Python C API), the first RSS tick after Py_IsInitialized() schedules one
 * pending call; the interpreter runs it in the main thread with the GIL
 * held, and it loads memtrace's Python package from the directory beside
 * the library (python/ in the build tree, <datadir>/memtrace/python when
 * installed) under a private module name, without touching sys.path. The
 * package then waits for `import torch` (see python/memtrace/_autoload.py
 * and docs/PHASES.md). MEMTRACE_TORCH=0 switches it off.
 *
 * The C API is looked up once, in this file's constructor, while the
 * process has one thread: dlsym takes the loader's lock, which a thread
 * that allocates inside a library constructor could be waiting behind,
 * so the tick itself never calls into the loader. A Python loaded later
 * with dlopen is therefore not seen. Non-Python programs pay one load of
 * an atomic per tick.
 *
 * Thread safety: mti_python_tick() from any thread, guard raised.
 */
#ifndef MEMTRACE_PRELOAD_PYTHON_H
#define MEMTRACE_PRELOAD_PYTHON_H

/* Schedules the load once Python is up; a no-op afterwards, and always in
 * a process without Python. */
void mti_python_tick(void);

#endif

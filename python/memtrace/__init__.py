"""memtrace: what a Python program can tell memtrace about itself.

The calls of include/memtrace.h, reached through ctypes: phases (forward,
backward, optimizer, or any name), the training step, the module a piece of
work belongs to (scopes), and the category of an allocation (tags). The
entry point, memtrace_api_get, is looked up once in the process's global
scope, where LD_PRELOAD put libmemtrace.so; without memtrace every call
does nothing, so the same program runs with and without it.

Semantics are those of the C header (see docs/PHASES.md): phases and
scopes are process-wide and nest; tag() names the category of the live
allocation that starts at addr (for a CPU tensor, the data pointer of its
storage), tag_gpu() the same for a device address. Names are str (UTF-8)
or bytes.

This module does not import torch; memtrace's PyTorch integration lives in
torch_phases.
"""

import contextlib
import ctypes

__all__ = [
    "active", "phase", "phase_push", "phase_pop", "step", "scope", "scope_push", "scope_pop",
    "tag", "tag_gpu", "gpu_tensor_alloc", "gpu_tensor_free",
]

API_VERSION = 1

# The functions are called with the GIL held (PYFUNCTYPE): each is a few
# stores into memtrace's buffer, shorter than a GIL hand-over.
_F = ctypes.PYFUNCTYPE


class _Api(ctypes.Structure):
    """memtrace_api_t, member for member."""
    _fields_ = [
        ("version", ctypes.c_int),
        ("phase_push", _F(None, ctypes.c_char_p)),
        ("phase_pop", _F(None)),
        ("step", _F(None, ctypes.c_uint64)),
        ("scope_push", _F(None, ctypes.c_char_p)),
        ("scope_pop", _F(None)),
        ("tag", _F(None, ctypes.c_void_p, ctypes.c_char_p)),
        ("tag_gpu", _F(None, ctypes.c_uint64, ctypes.c_char_p)),
        ("gpu_tensor_alloc", _F(None, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int, ctypes.c_uint64)),
        ("gpu_tensor_free", _F(None, ctypes.c_uint64, ctypes.c_int)),
        ("active", _F(ctypes.c_int)),
    ]


def _load():
    try:
        get = ctypes.CDLL(None).memtrace_api_get
    except (AttributeError, OSError):
        return None
    get.restype = ctypes.POINTER(_Api)
    get.argtypes = [ctypes.c_int]
    ptr = get(API_VERSION)
    return ptr.contents if ptr else None


_api = _load()


def _b(name):
    return name if isinstance(name, bytes) else str(name).encode("utf-8", "surrogateescape")


def _noop(*args):
    pass


if _api is None:
    loaded = False
    phase_push = phase_pop = step = scope_push = scope_pop = _noop
    tag = tag_gpu = gpu_tensor_alloc = gpu_tensor_free = _noop

    def active():
        """True when memtrace is loaded and recording this process."""
        return False
else:
    loaded = True
    _phase_push, _phase_pop = _api.phase_push, _api.phase_pop
    _step, _scope_push, _scope_pop = _api.step, _api.scope_push, _api.scope_pop
    _tag, _tag_gpu = _api.tag, _api.tag_gpu
    _gpu_alloc, _gpu_free, _active = _api.gpu_tensor_alloc, _api.gpu_tensor_free, _api.active

    def active():
        """True when memtrace is loaded and recording this process."""
        return bool(_active())

    def phase_push(name):
        """Enters phase name (nested in the current one)."""
        _phase_push(_b(name))

    def phase_pop():
        """Leaves the innermost phase."""
        _phase_pop()

    def step(n):
        """Marks the start of training step n."""
        _step(int(n))

    def scope_push(path):
        """Enters a module scope (a dotted path such as blocks.3.fc1)."""
        _scope_push(_b(path))

    def scope_pop():
        """Leaves the innermost scope."""
        _scope_pop()

    def tag(addr, category):
        """Names the category of the live host allocation starting at addr."""
        _tag(int(addr), _b(category))

    def tag_gpu(addr, category):
        """Names the category of the GPU allocation at device address addr."""
        _tag_gpu(int(addr), _b(category))

    def gpu_tensor_alloc(addr, size, device, stream=0):
        """A framework allocator handed out size bytes at addr on device."""
        _gpu_alloc(int(addr), int(size), int(device), int(stream))

    def gpu_tensor_free(addr, device):
        """A framework allocator took back the memory at addr on device."""
        _gpu_free(int(addr), int(device))


@contextlib.contextmanager
def phase(name):
    """with memtrace.phase("eval"): ... is a phase, popped on any exit."""
    phase_push(name)
    try:
        yield
    finally:
        phase_pop()


@contextlib.contextmanager
def scope(path):
    """with memtrace.scope("encoder"): ... is a scope, popped on any exit."""
    scope_push(path)
    try:
        yield
    finally:
        scope_pop()

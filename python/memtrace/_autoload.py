"""Run the PyTorch integration as soon as torch is imported.

libmemtrace.so (preload/python.c) loads this package into every traced
Python process, under the private name _memtrace, once the interpreter is
up, and calls install(). That moment is arbitrary: before, during or after
the program's `import torch`. So:

- torch fully imported: the integration starts now;
- torch being imported (in sys.modules, its spec still _initializing):
  its spec gets a subclass that notices the import machinery's final
  `spec._initializing = False`, and the integration starts then;
- not imported yet: a finder at the front of sys.meta_path waits for the
  top-level `torch` import, takes the spec the other finders give and
  hooks it the same way. The finder answers None for every other name,
  and for torch returns exactly the spec the rest of sys.meta_path found.

Every failure is swallowed; with debug, one line goes to stderr. A program
that never imports torch only ever has the finder on sys.meta_path.
"""

import sys

_state = {"debug": False, "done": False}


def _say(msg):
    if _state["debug"]:
        try:
            sys.stderr.write("memtrace: python integration: %s\n" % msg)
        except Exception:
            pass


def _start():
    """Runs the integration once torch is importable as a whole."""
    if _state["done"]:
        return
    torch = sys.modules.get("torch")
    if torch is None or getattr(getattr(torch, "__spec__", None), "_initializing", False):
        return
    _state["done"] = True
    _remove_finder()
    try:
        from . import torch_phases
        torch_phases.install(torch, debug=_state["debug"])
    except Exception as e:
        _say("not installed: %r" % (e,))


def _hook_spec(spec):
    """Calls _start() when the import machinery finishes with spec."""
    base = type(spec)

    class _Spec(base):
        def __setattr__(self, name, value):
            base.__setattr__(self, name, value)
            if name == "_initializing" and not value:
                try:
                    object.__setattr__(self, "__class__", base)
                except Exception:
                    pass
                _start()

    try:
        object.__setattr__(spec, "__class__", _Spec)
        return True
    except Exception as e:
        _say("cannot watch torch's import: %r" % (e,))
        return False


class _TorchFinder:
    """A meta path finder that only watches for `import torch`."""

    def __init__(self):
        self.busy = False

    def find_spec(self, name, path=None, target=None):
        if name != "torch" or self.busy or path is not None:
            return None
        self.busy = True
        try:
            spec = None
            found = False
            for finder in list(sys.meta_path):
                if finder is self:
                    found = True
                    continue
                if not found:
                    continue
                fs = getattr(finder, "find_spec", None)
                if fs is None:
                    continue
                spec = fs(name, path, target)
                if spec is not None:
                    break
            if spec is not None:
                _hook_spec(spec)
            return spec
        finally:
            self.busy = False

    def invalidate_caches(self):
        pass


_finder = None


def _remove_finder():
    global _finder
    if _finder is not None:
        try:
            sys.meta_path.remove(_finder)
        except ValueError:
            pass
        _finder = None


def install(debug=False):
    """Starts the integration now or at torch's import. Returns the finder
    that waits for that import (its find_spec may be called for an import
    already under way), or None."""
    global _finder
    _state["debug"] = bool(debug)
    from . import active
    if not active():
        return None
    torch = sys.modules.get("torch")
    if torch is not None:
        spec = getattr(torch, "__spec__", None)
        if spec is not None and getattr(spec, "_initializing", False):
            _hook_spec(spec)
        else:
            _start()
        return None
    if _finder is None:
        _finder = _TorchFinder()
        sys.meta_path.insert(0, _finder)
    return _finder

"""Phases, steps, module scopes and categories for an unmodified PyTorch
training script (PyTorch 1.13 and 2.x).

install(torch) hooks the places every training loop passes through, and
turns them into memtrace markers (docs/PHASES.md has the user's view):

- forward: a global module forward pre-hook. A call at depth 0 (no module
  call in progress) starts the `forward` phase unless one is current; it
  lasts until backward or the optimizer begins (nothing marks the end of a
  forward pass). The first forward, and the first after an optimizer step,
  also marks a new training step: step k starts after k optimizer steps
  (0, 1, ...).
- backward: torch.autograd.backward is wrapped (Tensor.backward calls it
  through the module attribute), so `backward` is a phase from its entry to
  its return, exceptions included. Autograd's worker threads are covered:
  phases are process-wide.
- optimizer: the step method of every Optimizer subclass is wrapped once
  per class (the classes existing at install, and any constructed later
  through Optimizer.__init__), a phase from entry to return.
- scopes: during forward, each module call pushes its dotted path from the
  root module's named_modules() (the root itself: its class name) and pops
  it at return. In backward, a hook on each module output's gradient makes
  that module the current scope when autograd reaches it (innermost module
  wins), so backward work is attributed to the module whose backward is
  running; the hook returns None and changes no gradient.
- tags: parameters (their storages, first time seen), gradients (each new
  .grad, at accumulation with register_post_accumulate_grad_hook on 2.1+,
  else at the end of backward and before the optimizer step), optimizer
  state (tensors in optimizer.state after each step, once per tensor).
  Host tags name the storage's data pointer (the block the CPU allocator
  malloc'd); CUDA tensors are tagged with tag_gpu.

Hooks do their work only in the thread that ran the first root forward
(or backward, or optimizer step), so DataParallel's replica threads add
nothing. Everything pushed is popped: scoped phases in finally blocks, the
open forward phase and scopes at interpreter exit. Costs: two Python calls
per module call and per module output one tensor hook; per step, a pass
over the parameters and the optimizer state (weak sets, no copies).
"""

import atexit
import functools
import threading
import weakref

from . import active, phase_pop, phase_push, scope_pop, scope_push, tag, tag_gpu
from . import step as mark_step

_FORWARD, _BACKWARD, _OPTIMIZER = b"forward", b"backward", b"optimizer"
_PARAMS, _GRADS, _STATE = b"parameters", b"gradients", b"optimizer_state"

_tracker = None


class _IdSet:
    """A weak set by identity. weakref.WeakSet compares members with ==,
    which a tensor answers elementwise."""

    def __init__(self):
        self.refs = {}

    def __contains__(self, obj):
        r = self.refs.get(id(obj))
        return r is not None and r() is obj

    def add(self, obj):
        key = id(obj)
        refs = self.refs

        def gone(r):
            if refs.get(key) is r:
                del refs[key]

        refs[key] = weakref.ref(obj, gone)

    def __iter__(self):
        for r in list(self.refs.values()):
            obj = r()
            if obj is not None:
                yield obj


class _Tracker:
    def __init__(self, torch):
        self.torch = torch
        self.Tensor = torch.Tensor
        self.phases = []            # pushed phase names, innermost last
        self.sticky = False         # the innermost is a forward begun by a module call
        self.next_step = 0
        self.stepped = False        # a step marker was written
        self.opt_since_step = False
        self.frames = []            # module calls in progress: (id, scope pushed)
        self.paths = weakref.WeakKeyDictionary()  # root -> {id(module): path}
        self.cur_paths = {}
        self.bwd_scope = False      # a backward scope is pushed
        self.in_backward = 0
        self.in_opt = 0
        self.owner = None
        self.params = _IdSet()
        self.grads = _IdSet()
        self.state = _IdSet()
        self.hooked_outputs = _IdSet()
        if hasattr(torch.Tensor, "untyped_storage"):
            self.storage_ptr = lambda t: t.untyped_storage().data_ptr()
        else:
            self.storage_ptr = lambda t: t.storage().data_ptr()
        self.accumulate_hook = hasattr(torch.Tensor, "register_post_accumulate_grad_hook")

    # ---- threads, phases ------------------------------------------------

    def mine(self):
        ident = threading.get_ident()
        if self.owner is None:
            self.owner = ident
        return ident == self.owner

    def begin(self, name):
        if self.sticky:
            self.sticky = False
            self.phases.pop()
            phase_pop()
        phase_push(name)
        self.phases.append(name)

    def end(self):
        if self.phases:
            self.phases.pop()
            phase_pop()

    def unwind_frames(self):
        """Scopes of module calls that never returned (an exception)."""
        while self.frames:
            if self.frames.pop()[1]:
                scope_pop()

    def close(self):
        self.unwind_frames()
        if self.bwd_scope:
            self.bwd_scope = False
            scope_pop()
        while self.phases:
            self.end()
        self.sticky = False

    # ---- tags --------------------------------------------------------------

    def tag_tensor(self, t, category):
        try:
            ptr = self.storage_ptr(t)
            kind = t.device.type
        except Exception:
            return
        if not ptr:
            return
        if kind == "cpu":
            tag(ptr, category)
        elif kind == "cuda":
            tag_gpu(ptr, category)

    def see_param(self, p):
        if p in self.params:
            return
        self.params.add(p)
        self.tag_tensor(p, _PARAMS)
        if self.accumulate_hook and p.requires_grad:
            try:
                p.register_post_accumulate_grad_hook(self.on_accumulated)
            except Exception:
                pass

    def see_grad(self, p):
        g = p.grad
        if g is not None and g not in self.grads:
            self.grads.add(g)
            self.tag_tensor(g, _GRADS)

    def on_accumulated(self, p):
        self.see_grad(p)

    def scan_optimizer(self, opt):
        for group in opt.param_groups:
            for p in group["params"]:
                self.see_param(p)
                self.see_grad(p)

    def scan_state(self, opt):
        Tensor = self.Tensor
        for st in opt.state.values():
            if not isinstance(st, dict):
                continue
            for v in st.values():
                if isinstance(v, Tensor) and v not in self.state:
                    self.state.add(v)
                    self.tag_tensor(v, _STATE)

    # ---- forward -----------------------------------------------------------

    def root_paths(self, root):
        paths = self.paths.get(root)
        if paths is None:
            paths = {}
            for name, m in root.named_modules():
                paths.setdefault(id(m), name.encode("utf-8", "surrogateescape"))
            paths[id(root)] = type(root).__name__.encode("utf-8", "surrogateescape")
            self.paths[root] = paths
        return paths

    def root_enter(self, root):
        # A module of the current root's tree keeps its path (a block
        # recomputed by checkpointing in backward is still blocks.3).
        if id(root) not in self.cur_paths:
            self.cur_paths = self.root_paths(root)
        if self.in_backward or self.sticky:
            return  # recomputation inside backward, or another model in this forward
        if not self.phases and (not self.stepped or self.opt_since_step):
            mark_step(self.next_step)
            self.next_step += 1
            self.stepped = True
            self.opt_since_step = False
        phase_push(_FORWARD)
        self.phases.append(_FORWARD)
        self.sticky = True
        for p in root.parameters():
            self.see_param(p)

    def pre_hook(self, module, args):
        if not self.mine():
            return None
        frames = self.frames
        if not frames:
            self.root_enter(module)
        path = self.cur_paths.get(id(module))
        if path is None:
            # Added after the root's first call, or another root's module.
            path = type(module).__name__.encode("utf-8", "surrogateescape")
        scope_push(path)
        frames.append((id(module), True))
        return None

    def post_hook(self, module, args, output):
        frames = self.frames
        if not frames or threading.get_ident() != self.owner:
            return None
        mid = id(module)
        if frames[-1][0] != mid:
            if not any(f[0] == mid for f in frames):
                return None
            while frames[-1][0] != mid:
                if frames.pop()[1]:
                    scope_pop()
        pushed = frames.pop()[1]
        if pushed:
            scope_pop()
        if output is not None and not self.in_backward:
            path = self.cur_paths.get(mid)
            if path is not None:
                self.watch_output(output, path)
        return None

    def watch_output(self, output, path):
        """Backward scopes: the gradient of output names path's module."""
        Tensor = self.Tensor
        if not isinstance(output, Tensor):
            if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
                output = output[0]
            else:
                return
        if not output.requires_grad or output in self.hooked_outputs:
            return
        try:
            output.register_hook(functools.partial(self.on_grad, path))
        except Exception:
            return
        self.hooked_outputs.add(output)

    def on_grad(self, path, grad):
        if self.frames or not self.in_backward:
            return None  # a forward recomputation is running, or autograd.grad
        if self.bwd_scope:
            scope_pop()
        scope_push(path)
        self.bwd_scope = True
        return None

    # ---- backward and optimizer ---------------------------------------------

    def wrap_backward(self, fn):
        tracker = self

        @functools.wraps(fn)
        def backward(*args, **kwargs):
            if tracker.in_backward or not tracker.mine():
                return fn(*args, **kwargs)
            tracker.begin(_BACKWARD)
            tracker.in_backward += 1
            try:
                return fn(*args, **kwargs)
            finally:
                tracker.in_backward -= 1
                if tracker.bwd_scope:
                    tracker.bwd_scope = False
                    scope_pop()
                if not tracker.accumulate_hook:
                    for p in tracker.params:
                        tracker.see_grad(p)
                tracker.end()

        backward.__memtrace__ = True
        return backward

    def wrap_step(self, cls):
        fn = cls.__dict__.get("step")
        if fn is None or not callable(fn) or getattr(fn, "__memtrace__", False):
            return
        tracker = self

        @functools.wraps(fn)
        def step(opt, *args, **kwargs):
            if tracker.in_opt or not tracker.mine():
                return fn(opt, *args, **kwargs)
            tracker.in_opt += 1
            if not tracker.in_backward:
                tracker.unwind_frames()
            tracker.begin(_OPTIMIZER)
            try:
                tracker.scan_optimizer(opt)
                return fn(opt, *args, **kwargs)
            finally:
                tracker.in_opt -= 1
                tracker.scan_state(opt)
                tracker.end()
                tracker.opt_since_step = True

        step.__memtrace__ = True
        cls.step = step

    def wrap_optimizers(self, Optimizer):
        classes = [Optimizer]
        while classes:
            cls = classes.pop()
            classes.extend(cls.__subclasses__())
            self.wrap_step(cls)
        init = Optimizer.__init__
        tracker = self

        @functools.wraps(init)
        def __init__(opt, *args, **kwargs):
            init(opt, *args, **kwargs)
            for cls in type(opt).__mro__:
                if cls is Optimizer:
                    break
                tracker.wrap_step(cls)

        __init__.__memtrace__ = True
        Optimizer.__init__ = __init__


def install(torch, debug=False):
    """Installs the hooks once per process; a no-op when memtrace does not
    record this process. Returns True when hooks are in place."""
    global _tracker
    if _tracker is not None:
        return True
    if not active():
        return False
    from torch.nn.modules import module as nn_module
    t = _Tracker(torch)
    try:
        nn_module.register_module_forward_hook(t.post_hook, always_call=True)
    except TypeError:
        nn_module.register_module_forward_hook(t.post_hook)
    nn_module.register_module_forward_pre_hook(t.pre_hook)
    if not getattr(torch.autograd.backward, "__memtrace__", False):
        torch.autograd.backward = t.wrap_backward(torch.autograd.backward)
    t.wrap_optimizers(torch.optim.Optimizer)
    atexit.register(t.close)
    _tracker = t
    return True

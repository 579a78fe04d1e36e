"""AdamW variants for examples/train_gpt.py: 8-bit moments, moments on the host.

Plain PyTorch (1.13 and 2.x), no fused kernels: what matters here is what
each optimizer keeps in memory, so that a re-run of the trainer with one of
them can be held against what `memtrace simulate` predicts from a baseline
trace. Both are torch.optim.Optimizer subclasses, so memtrace's PyTorch
integration marks their step() as the `optimizer` phase and tags every
tensor in `optimizer.state` as `optimizer_state`, as it does for AdamW.

Int8AdamW (--int8-adamw [--int8-block B])
    The update is torch.optim.AdamW's (decoupled weight decay, bias
    correction, eps added to sqrt(v) after correction; the step counter is
    the same fp32 0-dim tensor `state["step"]`). What is stored differs.
    For a parameter of n >= SMALL_NUMEL (4096) elements, per block of B
    consecutive values (default 128; the last block may be shorter):
      exp_avg_codes      int8  n    round(m / (absmax_m / 127))
      exp_avg_absmax     fp32  ceil(n / B)
      exp_avg_sq_codes   uint8 n    ceil(sqrt(v) / (absmax_sqrt_v / 255))
      exp_avg_sq_absmax  fp32  ceil(n / B)
    so 2 * (1 + 4 / B) bytes per value instead of AdamW's 8 (B = 128:
    2.0625 bytes, -74.2%). The second moment is stored as sqrt(v), rounded
    up, so that a small v is never stored as 0 (which would blow up the
    update). A parameter under SMALL_NUMEL elements (biases, LayerNorm
    weights, as bitsandbytes does) keeps fp32 `exp_avg` and `exp_avg_sq`
    exactly as AdamW does. During step(), one parameter at a time, the
    dequantized fp32 m and v of that parameter and a few fp32 temporaries of
    its size exist, and are freed before the next parameter: the optimizer
    phase's peak holds the 8-bit state plus those transients of the largest
    parameter.

HostAdamW (--optimizer-host)
    AdamW with its state on the host (ZeRO-Offload's split, without the
    master copy of the weights). What lives where, for a parameter on a GPU:
      device: the parameter and its .grad (as with AdamW), nothing else
              persistent; no device memory is allocated by step().
      host:   state["step"] (fp32 0-dim), state["exp_avg"] and
              state["exp_avg_sq"] (fp32, the parameter's shape), kept across
              steps; during step(), one parameter at a time, a host copy of
              the gradient and of the parameter (pageable memory, blocking
              copies), updated there and copied back into the device
              parameter in place, then freed.
    On the CPU nothing moves: `.to("cpu")` of a CPU tensor is the tensor,
    so the update is AdamW's, computed one tensor at a time in place.
"""

import math

import torch

SMALL_NUMEL = 4096
"""Parameters with fewer elements keep fp32 moments in Int8AdamW."""


def _blocks(flat, block):
    """flat (1-D) as (nblocks, block), zero-padded at the end (a copy only then)."""
    n = flat.numel()
    pad = (-n) % block
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, block)


def quantize_signed(x, block):
    """int8 codes (x's numel) and fp32 absmax per block of x."""
    b = _blocks(x.reshape(-1), block)
    absmax = b.abs().amax(dim=1)
    scale = (absmax / 127.0).clamp_min(1e-30).unsqueeze(1)
    codes = torch.round(b / scale).clamp_(-127, 127).to(torch.int8)
    return codes.view(-1)[: x.numel()].clone(), absmax


def dequantize_signed(codes, absmax, block, like):
    n = like.numel()
    c = _blocks(codes.to(torch.float32), block)
    out = c * (absmax / 127.0).unsqueeze(1)
    return out.view(-1)[:n].view_as(like)


def quantize_unsigned_up(x, block):
    """uint8 codes of x >= 0, rounded up, and fp32 absmax per block."""
    b = _blocks(x.reshape(-1), block)
    absmax = b.amax(dim=1)
    scale = (absmax / 255.0).clamp_min(1e-30).unsqueeze(1)
    codes = torch.ceil(b / scale).clamp_(0, 255).to(torch.uint8)
    return codes.view(-1)[: x.numel()].clone(), absmax


def dequantize_unsigned(codes, absmax, block, like):
    n = like.numel()
    c = _blocks(codes.to(torch.float32), block)
    out = c * (absmax / 255.0).unsqueeze(1)
    return out.view(-1)[:n].view_as(like)


class Int8AdamW(torch.optim.Optimizer):
    """AdamW with block-wise 8-bit moments (see the module's text)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 block=128):
        if block < 1:
            raise ValueError("block must be at least 1")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, block=block)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd, block = group["lr"], group["eps"], group["weight_decay"], group["block"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                small = p.numel() < SMALL_NUMEL
                if not state:
                    state["step"] = torch.tensor(0.0)
                    if small:
                        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    else:
                        nb = (p.numel() + block - 1) // block
                        dev = p.device
                        state["exp_avg_codes"] = torch.zeros(p.numel(), dtype=torch.int8, device=dev)
                        state["exp_avg_absmax"] = torch.zeros(nb, dtype=torch.float32, device=dev)
                        state["exp_avg_sq_codes"] = torch.zeros(p.numel(), dtype=torch.uint8, device=dev)
                        state["exp_avg_sq_absmax"] = torch.zeros(nb, dtype=torch.float32, device=dev)
                state["step"] += 1
                step = state["step"].item()
                p.mul_(1 - lr * wd)
                if small:
                    m, v = state["exp_avg"], state["exp_avg_sq"]
                else:
                    m = dequantize_signed(state["exp_avg_codes"], state["exp_avg_absmax"], block, p)
                    s = dequantize_unsigned(state["exp_avg_sq_codes"], state["exp_avg_sq_absmax"],
                                            block, p)
                    v = s.mul_(s)
                    del s
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                bias1 = 1 - beta1 ** step
                bias2 = 1 - beta2 ** step
                denom = (v.sqrt() / math.sqrt(bias2)).add_(eps)
                p.addcdiv_(m, denom, value=-lr / bias1)
                del denom
                if not small:
                    codes, absmax = quantize_signed(m, block)
                    state["exp_avg_codes"].copy_(codes)
                    state["exp_avg_absmax"].copy_(absmax)
                    del codes, absmax
                    codes, absmax = quantize_unsigned_up(v.sqrt_(), block)
                    state["exp_avg_sq_codes"].copy_(codes)
                    state["exp_avg_sq_absmax"].copy_(absmax)
                    del codes, absmax
                del m, v
        return loss


class HostAdamW(torch.optim.Optimizer):
    """AdamW whose moments live on the host (see the module's text)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        host = torch.device("cpu")
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros(p.shape, dtype=p.dtype, device=host)
                    state["exp_avg_sq"] = torch.zeros(p.shape, dtype=p.dtype, device=host)
                g = p.grad.to(host)
                w = p.detach().to(host)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                step = state["step"].item()
                w.mul_(1 - lr * wd)
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                bias1 = 1 - beta1 ** step
                bias2 = 1 - beta2 ** step
                denom = (v.sqrt() / math.sqrt(bias2)).add_(eps)
                w.addcdiv_(m, denom, value=-lr / bias1)
                del denom, g
                if w.data_ptr() != p.data_ptr():
                    p.copy_(w)
                del w
        return loss

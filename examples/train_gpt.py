#!/usr/bin/env python3
"""Small GPT-style decoder-only transformer trainer in plain PyTorch.

A deterministic workload for memtrace: it trains a tiny language model on
synthetic data for a handful of steps and prints the loss of each step.
Works with PyTorch 1.13 and 2.x, on the CPU by default (``--device cuda``
optional).  Uses nothing outside PyTorch and the standard library.

Output (one line each):
    step N loss X.XXXXXX        for N = 1..steps (deterministic given
                                --seed and --threads on the same machine)
    params N param_bytes B      parameter count and their total size
    time_per_step_ms X          median over the steps after the first
    startup_s X                 from the start of this script (before
                                importing torch) to the first step

GPU switches (--device cuda): --checkpoint (activation checkpointing of
each block), --bf16 (autocast to bfloat16), --alloc-backend
cudaMallocAsync and --expandable-segments (PyTorch's allocator settings,
put into PYTORCH_CUDA_ALLOC_CONF before torch is imported). --cuda-phase-stats also prints, per step and
phase, the peaks PyTorch itself measured:
    cuda_phase STEP PHASE reserved_peak R allocated_peak A
with phases as memtrace marks them: forward from the model call to the
start of backward, backward, optimizer (the optimizer step). It resets
PyTorch's peak statistics at each phase boundary to do so.

Memory techniques, each really applied, so that a re-run can be held
against what `memtrace simulate` predicts from a baseline trace (none is on
by default; without them the run is the plain one):
    --checkpoint            torch.utils.checkpoint (use_reentrant=False) on
                            every block: only each block's input is kept
                            for backward, its inside is recomputed there
    --checkpoint-every K    the same on blocks 0, K, 2K, ... (index % K == 0)
    --checkpoint-segment L  the blocks in segments of L consecutive blocks,
                            each segment checkpointed as one (only its input
                            kept); L = floor(sqrt(layers)) is Chen et al.'s
                            sqrt(n) scheme (`memtrace simulate --checkpoint
                            sqrt`)
    --int8-adamw            AdamW with both moments stored as 8-bit codes
                            and one fp32 absmax per --int8-block values
                            (default 128); parameters under 4096 elements
                            keep fp32 moments (examples/optimizers.py)
    --grad-accum K          the same batch as K micro-batches of batch/K,
                            each loss scaled by 1/K, gradients accumulated,
                            one optimizer step per K micro-batches; the
                            printed loss is the mean of the micro-batches'
    --optimizer-host        AdamW moments on the host: gradients copied to
                            the host, the update done there, parameters
                            copied back (examples/optimizers.py says exactly
                            what lives where); for --device cuda, on the CPU
                            it is AdamW computed tensor by tensor
"""

import time

_T_IMPORT = time.perf_counter()

import argparse  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402


def _allocator_conf(argv):
    """PYTORCH_CUDA_ALLOC_CONF for --alloc-backend/--expandable-segments.

    PyTorch reads the backend when it is imported, so this runs before the
    import (the argument parser checks the values later)."""
    conf = []
    for i, arg in enumerate(argv):
        if arg.startswith("--alloc-backend="):
            value = arg.split("=", 1)[1]
        elif arg == "--alloc-backend" and i + 1 < len(argv):
            value = argv[i + 1]
        else:
            value = None
        if value and value != "native":
            conf.append("backend:" + value)
        if arg == "--expandable-segments":
            conf.append("expandable_segments:True")
    return ",".join(conf)


if __name__ == "__main__" and _allocator_conf(sys.argv[1:]):
    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = _allocator_conf(sys.argv[1:])

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model, heads, seq):
        super().__init__()
        assert d_model % heads == 0
        self.heads = heads
        self.head_dim = d_model // heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        mask = torch.tril(torch.ones(seq, seq, dtype=torch.bool))
        self.register_buffer("mask", mask.view(1, 1, seq, seq), persistent=False)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        # (b, heads, t, head_dim)
        q = q.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        att = att.masked_fill(~self.mask[:, :, :t, :t], float("-inf"))
        att = F.softmax(att, dim=-1)
        y = att @ v
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, d_model):
        super().__init__()
        self.fc1 = nn.Linear(d_model, 4 * d_model)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * d_model, d_model)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, d_model, heads, seq):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, heads, seq)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return x


class GPT(nn.Module):
    def __init__(self, vocab, seq, layers, d_model, heads):
        super().__init__()
        self.seq = seq
        self.tok_emb = nn.Embedding(vocab, d_model)
        self.pos_emb = nn.Embedding(seq, d_model)
        self.blocks = nn.ModuleList([Block(d_model, heads, seq) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    # 0: no checkpointing; K: checkpoint the blocks whose index % K == 0.
    checkpoint = 0
    # 0: none; L: checkpoint segments of L consecutive blocks.
    checkpoint_segment = 0

    def _segment(self, x, start, end):
        for block in self.blocks[start:end]:
            x = block(x)
        return x

    def forward(self, idx):
        b, t = idx.shape
        pos = torch.arange(t, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        if self.checkpoint_segment and self.training:
            from torch.utils.checkpoint import checkpoint
            n = self.checkpoint_segment
            for start in range(0, len(self.blocks), n):
                x = checkpoint(self._segment, x, start, start + n, use_reentrant=False)
            return self.head(self.ln_f(x))
        for i, block in enumerate(self.blocks):
            if self.checkpoint and self.training and i % self.checkpoint == 0:
                from torch.utils.checkpoint import checkpoint
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.head(self.ln_f(x))


def make_batch(gen, batch, seq, vocab, device):
    """Arithmetic sequences mod vocab: random start, stride in 1..3.

    The next token is predictable from the previous two, so the loss falls
    quickly from ln(vocab); the data are fully determined by the generator.
    """
    start = torch.randint(0, vocab, (batch, 1), generator=gen)
    stride = torch.randint(1, 4, (batch, 1), generator=gen)
    steps = torch.arange(seq + 1).view(1, seq + 1)
    tokens = (start + stride * steps) % vocab
    x = tokens[:, :-1].contiguous().to(device)
    y = tokens[:, 1:].contiguous().to(device)
    return x, y


def parse_args(argv):
    p = argparse.ArgumentParser(description="Train a tiny GPT on synthetic data.")
    p.add_argument("--steps", type=int, default=20, help="training steps (default 20)")
    p.add_argument("--layers", type=int, default=4, help="transformer blocks (default 4)")
    p.add_argument("--d-model", type=int, default=64, help="model width (default 64)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    p.add_argument("--seq", type=int, default=64, help="sequence length (default 64)")
    p.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    p.add_argument("--vocab", type=int, default=256, help="vocabulary size (default 256)")
    p.add_argument("--lr", type=float, default=5e-3, help="AdamW learning rate (default 5e-3)")
    p.add_argument("--seed", type=int, default=1234, help="random seed (default 1234)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch.set_num_threads value (default 2; 0 keeps torch's default)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--checkpoint", action="store_true", help="activation checkpointing per block")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="K",
                   help="activation checkpointing of blocks 0, K, 2K, ...")
    p.add_argument("--checkpoint-segment", type=int, default=0, metavar="L",
                   help="activation checkpointing of segments of L consecutive blocks")
    p.add_argument("--int8-adamw", action="store_true",
                   help="AdamW with 8-bit block-wise moments (examples/optimizers.py)")
    p.add_argument("--int8-block", type=int, default=128, metavar="B",
                   help="values per fp32 absmax for --int8-adamw (default 128)")
    p.add_argument("--grad-accum", type=int, default=1, metavar="K",
                   help="split each batch into K micro-batches, one optimizer step (default 1)")
    p.add_argument("--optimizer-host", action="store_true",
                   help="AdamW moments on the host; parameters updated there (GPU runs)")
    p.add_argument("--bf16", action="store_true", help="autocast to bfloat16")
    p.add_argument("--alloc-backend", choices=("native", "cudaMallocAsync"), default="native",
                   help="PyTorch CUDA allocator backend (default native)")
    p.add_argument("--expandable-segments", action="store_true",
                   help="PyTorch CUDA allocator with expandable_segments:True")
    p.add_argument("--cuda-phase-stats", action="store_true",
                   help="print PyTorch's own reserved/allocated peaks per step and phase")
    a = p.parse_args(argv)
    for name in ("steps", "layers", "d_model", "heads", "seq", "batch", "vocab"):
        if getattr(a, name) < 1:
            p.error("--%s must be at least 1" % name.replace("_", "-"))
    if a.d_model % a.heads != 0:
        p.error("--d-model must be a multiple of --heads")
    if a.threads < 0:
        p.error("--threads must be 0 or more")
    if a.checkpoint_every < 0:
        p.error("--checkpoint-every must not be negative")
    if a.checkpoint and a.checkpoint_every > 1:
        p.error("--checkpoint is --checkpoint-every 1; give one of them")
    if a.checkpoint_segment < 0:
        p.error("--checkpoint-segment must not be negative")
    if a.checkpoint_segment and (a.checkpoint or a.checkpoint_every):
        p.error("--checkpoint-segment does not combine with --checkpoint/--checkpoint-every")
    if a.int8_block < 1:
        p.error("--int8-block must be at least 1")
    if a.grad_accum < 1 or a.batch % a.grad_accum != 0:
        p.error("--grad-accum must be at least 1 and divide --batch")
    if a.int8_adamw and a.optimizer_host:
        p.error("--int8-adamw and --optimizer-host do not combine")
    return a


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("train_gpt.py: CUDA is not available", file=sys.stderr)
        return 2

    torch.manual_seed(a.seed)
    model = GPT(a.vocab, a.seq, a.layers, a.d_model, a.heads).to(device)
    model.checkpoint = 1 if a.checkpoint else a.checkpoint_every
    model.checkpoint_segment = a.checkpoint_segment
    stats = a.cuda_phase_stats and device.type == "cuda"

    def phase_mark(step, name):
        """Ends phase `name` (None: none was open) and starts the next."""
        if not stats:
            return
        torch.cuda.synchronize()
        if name is not None:
            print("cuda_phase %d %s reserved_peak %d allocated_peak %d" % (
                step, name, torch.cuda.max_memory_reserved(), torch.cuda.max_memory_allocated()))
        torch.cuda.reset_peak_memory_stats()
    if a.int8_adamw or a.optimizer_host:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import optimizers
        if a.int8_adamw:
            opt = optimizers.Int8AdamW(model.parameters(), lr=a.lr, weight_decay=0.01,
                                       block=a.int8_block)
        else:
            opt = optimizers.HostAdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    gen = torch.Generator()
    gen.manual_seed(a.seed)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    model.train()
    step_ms = []
    startup_s = None
    for step in range(1, a.steps + 1):
        t0 = time.perf_counter()
        if startup_s is None:
            startup_s = t0 - _T_IMPORT
        x, y = make_batch(gen, a.batch, a.seq, a.vocab, device)
        phase_mark(step, None)
        if a.grad_accum == 1:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=a.bf16):
                logits = model(x)
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), y.view(-1))
            opt.zero_grad(set_to_none=True)
            phase_mark(step, "forward")
            loss.backward()
            phase_mark(step, "backward")
        else:
            # Micro-batch i is rows [i*mb, (i+1)*mb) of the same batch. As
            # in the plain run, the gradients of the step before are dropped
            # after the first forward, and logits stay referenced until the
            # next forward has made its own.
            mb = a.batch // a.grad_accum
            losses = []
            for i in range(a.grad_accum):
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=a.bf16):
                    logits = model(x[i * mb:(i + 1) * mb])
                    loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(),
                                           y[i * mb:(i + 1) * mb].reshape(-1))
                if i == 0:
                    opt.zero_grad(set_to_none=True)
                phase_mark(step, "forward")
                (loss / a.grad_accum).backward()
                phase_mark(step, "backward")
                losses.append(loss.detach())
            loss = torch.stack(losses).mean()
        opt.step()
        phase_mark(step, "optimizer")
        value = loss.item()
        sync()
        step_ms.append((time.perf_counter() - t0) * 1000.0)
        print("step %d loss %.6f" % (step, value), flush=True)

    params = sum(p.numel() for p in model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    later = step_ms[1:] if len(step_ms) > 1 else step_ms
    print("params %d param_bytes %d" % (params, param_bytes))
    print("time_per_step_ms %.3f" % statistics.median(later))
    print("startup_s %.3f" % startup_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())

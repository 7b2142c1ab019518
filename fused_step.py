"""The training step as one function of device tensors: compiled whole (`--compile step`) or
captured once in a CUDA graph and replayed (`--compile graphs`).

engine.train_step drives the model, the optimizer and the schedule from Python: a couple of
hundred kernel launches a step that the host issues one at a time, and a schedule that writes a
Python float into the optimizer after every step. Here the same work -- batch mixing, forward,
loss, backward, clipping, the optimizer update with its learning rate, EMA and the epoch's metric
sums -- is one function whose inputs and state all live on the device:

- the learning rate of every step is computed once, on the host, from the scheduler's own
  lambdas (so the rates are the eager run's) into a table on the device; the optimizer reads a
  0-dim lr tensor per parameter group, which the step fills from the table at a device step
  counter. The scheduler object only counts steps, for checkpoints and --resume;
- loss sums, correct counts and the first non-finite step accumulate in device buffers
  (engine.accumulate, the same arithmetic as the eager loop).

"step": torch.compile of that function. Dynamo splits it into a few graphs (at `backward()`,
which AOTAutograd compiles with the forward, and around the optimizer's `step` and `zero_grad`,
which are compiled as graphs of their own; TORCH_LOGS=graph_breaks lists them); the tensor lr
means a new rate never recompiles. "graphs" (CUDA only): the function runs three times on a side
stream (cuBLAS handles, the optimizer's state tensors), every piece of state is put back, and it
is captured into one CUDA graph; each step copies the batch into the graph's static inputs and
replays it: a few launches a step, whatever the model. Its optimizer is Adam/AdamW with
fused=True, capturable=True (build.make_optimizer). Random draws inside the graph (dropout,
mixing) come from the default CUDA generator, which graphs support. By default the graph keeps
its gradient buffers and zeroes them after each step, so each replay's backward adds into zeros;
`fresh_grads=True` captures with no gradients instead, as PyTorch's whole-network capture
example does, so each replay's backward writes them anew: one zeroing and one add per parameter
fewer in every replay. Both train the same numbers; which is faster is for a GPU to measure
(`bench.py --graph-grads`, tools/gpu_check.py).

Same numbers as eager up to float rounding: the compiled kernels fuse and reorder float
arithmetic, and the rate is a float32 tensor instead of a Python double (tests/test_fused_step.py).
"""
import torch

from engine import accumulate, train_step

MODES = ("step", "graphs")  # --compile's; FusedStep also takes "eager": the body as is (audits, tests)


def lr_table(scheduler, total_steps):
    """(total_steps + 1, groups) float64 on the CPU: the rate of every parameter group at every
    step, the values a LambdaLR sets (base_lr * lambda(step)), from step 0 of the run."""
    rows = [[base * fn(step) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
            for step in range(total_steps + 1)]
    return torch.tensor(rows, dtype=torch.float64)


class FusedStep:
    """One optimizer step per call on a batch (x, y); the epoch's sums stay in `self.sums`
    (loss sum, correct) and `self.first_bad` (first non-finite step of the epoch, -1 if none)."""

    def __init__(self, model, criterion, optimizer, scheduler, device, *, total_steps, mode="step", amp_dtype=None,
                 mixer=None, grad_clip=0.0, ema=None, fresh_grads=False):
        if mode not in MODES + ("eager",):
            raise ValueError(f"mode must be one of {MODES + ('eager',)}, got {mode!r}")
        if mode == "graphs" and device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.model, self.criterion, self.optimizer, self.scheduler = model, criterion, optimizer, scheduler
        self.device, self.mode, self.amp_dtype = device, mode, amp_dtype
        self.mixer, self.grad_clip, self.ema = mixer, grad_clip, ema
        if fresh_grads and mode != "graphs":
            raise ValueError("fresh_grads is a way of capturing a CUDA graph: it needs mode 'graphs'")
        self.captured = None if mode != "graphs" else "fresh" if fresh_grads else "zeroed"
        self.host_table = lr_table(scheduler, total_steps)  # exact doubles, for the log and the checkpoint
        self.table = self.host_table.to(device=device, dtype=torch.float32)  # fused Adam reads float32
        self.last_row = total_steps
        self.global_step = torch.tensor(scheduler.last_epoch, device=device)
        self.index = torch.zeros((), dtype=torch.long, device=device)  # the step within the epoch
        self.sums = torch.zeros(2, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        # The optimizer reads its rate from these tensors; each step writes the next step's rate
        # into them in place, as LambdaLR.step() does with its floats.
        for group, lr in zip(optimizer.param_groups, self.table[min(scheduler.last_epoch, total_steps)]):
            group["lr"] = lr.clone()
        self._compiled = torch.compile(self._body) if mode == "step" else None
        self._graph = None

    def _body(self, x, y):
        # engine.train_step's work, with the next rate set here from the table, not by the scheduler.
        loss, n_correct, finite = train_step(self.model, x, y, self.criterion, self.optimizer, None, self.device,
                                             amp_dtype=self.amp_dtype, mixer=self.mixer, grad_clip=self.grad_clip,
                                             ema=self.ema, captured=self.captured)
        accumulate(self.sums, self.first_bad, self.index, loss, n_correct, finite, y.shape[0])
        self.index += 1
        self.global_step += 1
        # index_select, not table[global_step]: indexing with a 0-dim tensor reads it on the host.
        row = self.table.index_select(0, self.global_step.clamp(max=self.last_row).view(1))[0]
        for group, lr in zip(self.optimizer.param_groups, row):
            group["lr"].copy_(lr)

    def begin_epoch(self):
        """Zeroes the epoch's sums; the device step counter follows the scheduler (a resumed run)."""
        self.sums.zero_()
        self.first_bad.fill_(-1)
        self.index.zero_()
        self.global_step.fill_(self.scheduler.last_epoch)

    def rates(self):
        """The rates the next step trains at, per group, from the host's table (no device read)."""
        return self.host_table[min(self.scheduler.last_epoch, self.last_row)].tolist()

    def lr(self):
        return self.rates()[0]

    def __call__(self, x, y):
        if self.mode == "eager":
            self._body(x, y)
        elif self.mode == "step":
            self._compiled(x, y)
        else:
            if self._graph is None:
                self._capture(x, y)
            self._x.copy_(x)
            self._y.copy_(y)
            self._graph.replay()
        self.scheduler.last_epoch += 1  # the host's count of steps, for checkpoints

    def end_epoch(self):
        """Leaves the scheduler as eager stepping would (its last rates, which the checkpoint
        stores as the optimizer's), so that any step mode can resume from the checkpoint."""
        self.scheduler._last_lr = self.rates()

    # -- CUDA graphs
    def _state(self):
        tensors = [*self.model.parameters(), *self.model.buffers()]
        if self.ema is not None:
            tensors += [*self.ema.parameters(), *self.ema.buffers()]
        return tensors + [self.sums, self.first_bad, self.index, self.global_step]

    def _capture(self, x, y):
        self._x, self._y = x.clone(), y.clone()
        # Warm-up changes the weights, the optimizer's moments and the RNG; put all of it back so
        # that the captured run trains exactly the steps the eager one does.
        saved = [t.detach().clone() for t in self._state()]
        had_state = {id(p) for p in self.optimizer.state}
        opt_saved = {id(p): {k: v.clone() for k, v in s.items() if torch.is_tensor(v)}
                     for p, s in self.optimizer.state.items()}
        rng = torch.cuda.get_rng_state(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self._body(self._x, self._y)
        torch.cuda.current_stream(self.device).wait_stream(side)
        with torch.no_grad():
            for t, v in zip(self._state(), saved):
                t.copy_(v)
            for p, s in self.optimizer.state.items():
                for k, v in s.items():
                    if torch.is_tensor(v):  # a state the warm-up created starts from zero, as Adam's does
                        v.copy_(opt_saved[id(p)][k]) if id(p) in had_state else v.zero_()
        torch.cuda.set_rng_state(rng, self.device)
        # "fresh": the capture starts with no gradients (the warm-up's added up; they are thrown
        # away), so the backward inside the graph allocates them from its pool and every replay
        # writes them there anew.
        if self.captured == "fresh":
            self.optimizer.zero_grad(set_to_none=True)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._body(self._x, self._y)

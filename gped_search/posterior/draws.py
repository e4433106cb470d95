"""The chain's random draws per iteration, optionally produced ahead on a second CPU thread.

Each SGLD iteration draws, from the sampler's one generator and in this order, the minibatch
indices of every chain and then one standard normal tensor per parameter tensor. On the CPU the
normal draws cost about as much as the minibatch gradient itself (~1.2 ms of ~4 ms for the paper's
478,410-parameter MLP on an AMD EPYC, 3-4 ms on an Intel Xeon), so :class:`Draws` can produce them
one or two iterations ahead on a background thread (``teacher.noise_thread``) while the main thread
computes the gradient. The producer uses the same generator in the same order, so the chain is
**bitwise the same** with or without the thread; only the wall time differs. ``get_state`` is the
generator state before the next draw the chain has not consumed (what a checkpoint must store).
"""

from __future__ import annotations

import queue
import threading

import torch

__all__ = ["Draws"]


class Draws:
    """Minibatch indices and noise for each iteration (see the module docstring)."""

    def __init__(
        self,
        gen: torch.Generator,
        n: int,
        chains: int,
        batch: int,
        shapes: list[torch.Size],
        *,
        noisy: bool = True,
        ahead: bool = False,
        depth: int = 2,
    ):
        self.gen, self.n, self.chains, self.batch = gen, n, chains, batch
        self.shapes, self.noisy = list(shapes), noisy
        self.device = gen.device
        self.ahead = bool(ahead) and self.device.type == "cpu"
        self.depth = depth
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._last: torch.Tensor | None = None  # generator state before the last consumed draw

    # ------------------------------------------------------------------ drawing
    def _draw(self, gen: torch.Generator):
        idx = torch.randint(0, self.n, (self.chains, self.batch), device=self.device, generator=gen)
        noise = [torch.randn(s, device=self.device, generator=gen) for s in self.shapes] if self.noisy else None
        return idx, noise

    def _produce(self) -> None:
        q = self._queue
        try:
            while not self._stop.is_set():
                state = self.gen.get_state()
                item = (state, *self._draw(self.gen))
                while not self._stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # surfaced to the consumer by next()
            q.put(e)

    def next(self) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """The next iteration's (indices (chains, batch), noise per parameter tensor or None)."""
        if not self.ahead:
            return self._draw(self.gen)
        if self._thread is None:
            self._queue = queue.Queue(maxsize=self.depth)
            self._stop.clear()
            self._thread = threading.Thread(target=self._produce, name="sgld-draws", daemon=True)
            self._thread.start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        self._last, idx, noise = item
        return idx, noise

    # ------------------------------------------------------------------ state
    def close(self) -> None:
        """Stop the producer; draws made ahead and not consumed are dropped (the state rewinds)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._queue = None
        if self._last is not None:
            self.gen.set_state(self._after(self._last))
            self._last = None

    def _after(self, state: torch.Tensor) -> torch.Tensor:
        """The generator state after one iteration's draws starting from ``state``."""
        g = torch.Generator(device=self.device)
        g.set_state(state)
        self._draw(g)
        return g.get_state()

    def get_state(self) -> torch.Tensor:
        """The generator state before the next unconsumed draw (checkpoint this)."""
        if self._thread is None:
            return self.gen.get_state()
        if self._last is None:  # started, nothing consumed: the producer began from the current state
            raise RuntimeError("Draws.get_state: producer started but nothing consumed")  # pragma: no cover
        return self._after(self._last)

    def set_state(self, state: torch.Tensor) -> None:
        self.close()
        self.gen.set_state(state)

    def __del__(self):  # pragma: no cover - interpreter shutdown order varies
        try:
            self._stop.set()
        except Exception:
            pass

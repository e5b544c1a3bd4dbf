"""The stage abstraction: a small lifecycle, driven by :meth:`Stage.run`.

Modelled on Savant's ``PipelineElement`` / pyfunc: a stage is built once per process from the
typed config (``from_config``, the only place that maps config to arguments: ``__init__`` takes
plain typed values and config sections), then

- :meth:`Stage.setup`: bind sockets, load models, open outputs;
- :meth:`Stage.on_message`: one message from the stage's input (:mod:`pipeline.protocol`);
- :meth:`Stage.on_tick`: the input was idle for :attr:`Stage.poll_ms`;
- :meth:`Stage.on_end`: the input is over (:attr:`Stage.finished`): flush, send the last words;
- :meth:`Stage.close`: always, also after an error: release what ``setup`` opened.
"""

from __future__ import annotations

from typing import Any

import zmq

from pipeline.graph.context import StageContext


class Stage:
    """Base of the graph's stages (:mod:`pipeline.stages`)."""

    #: The stage's input socket (bound by :meth:`setup`).
    inp: zmq.Socket

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx

    @classmethod
    def from_config(cls, ctx: StageContext, cfg: Any, *args: Any) -> Stage:
        raise NotImplementedError

    @property
    def finished(self) -> bool:
        """True once the stage has had all its input."""
        raise NotImplementedError

    @property
    def poll_ms(self) -> int | None:
        """How long to wait for input before :meth:`on_tick` (None: as long as it takes)."""
        return None

    def setup(self) -> None:
        """Bind sockets, load models, open outputs."""

    def on_message(self, header: dict[str, Any], arrays: dict[str, Any]) -> None:
        raise NotImplementedError

    def on_tick(self) -> None:
        """The input was idle for :attr:`poll_ms`."""

    def on_end(self) -> None:
        """The input is over: flush what is pending."""

    def close(self) -> None:
        """Release what :meth:`setup` opened (also after an error)."""

    def run(self) -> None:
        """The stage's whole life in its process."""
        try:
            self.setup()
            while not self.finished:
                got = self.ctx.recv(self.inp, timeout_ms=self.poll_ms)
                if got is None:
                    self.on_tick()
                    continue
                self.on_message(*got)
            self.on_end()
        finally:
            self.close()

"""The client side of one sandboxed kernel: its manager, its notebook client and its process.

* :func:`sandbox_kernel_manager` -- a jupyter_client kernel manager whose kernel command is the sandbox's command
  line (:func:`course_utils.grader.sandbox.kernel_argv`), interrupted by message;
* :func:`capped_client` -- nbclient's ``NotebookClient`` with an output budget that counts every output type
  (a submission cannot fill the coordinator's disk or memory through display data), no widget front end, and
  an error reply recorded even when the student switched the traceback display off;
* :func:`kernel_pid` -- which process of the sandbox is the kernel (for CPU accounting and interrupts).

:class:`course_utils.grader.kernel.KernelSession` puts them together.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from course_utils.cells import error_output, stream_output
from course_utils.grader import sandbox

RECEIVE_QUEUE = 64     # messages a socket of ours queues before dropping (zmq's default is 1000)


def capped_client(nb: Any, km: Any, workdir: Path, max_output_bytes: int, startup_timeout: int) -> Any:
    """nbclient's NotebookClient with an output budget (``max_output_bytes``) that counts every output type."""
    from nbclient import NotebookClient  # noqa: PLC0415 - slow import

    class CappedClient(NotebookClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.output_bytes = 0
            self.truncated: set[int] = set()

        def output(self, outs: list, msg: dict, display_id: str | None, cell_index: int) -> Any:
            self.output_bytes += _size(msg.get("content", {}))
            if self.output_bytes > max_output_bytes:
                if cell_index not in self.truncated:
                    self.truncated.add(cell_index)
                    outs.append(stream_output("\n[output truncated by the grader: too much output]\n"))
                if msg.get("msg_type") == "error":
                    content = msg.get("content", {})
                    outs.append(error_output(str(content.get("ename", "Error"))[:200],
                                             str(content.get("evalue", ""))[:2000]))
                return None
            return super().output(outs, msg, display_id, cell_index)

        def _update_display_id(self, display_id: str, msg: dict) -> None:
            # ``update_display`` (and a display with a known id) rewrites earlier outputs without passing through
            # ``output``: it counts once per output it rewrites, and past the budget it rewrites nothing.
            targets = sum(len(indices) for indices in self._display_id_map.get(display_id, {}).values())
            self.output_bytes += _size(msg.get("content", {})) * targets
            if targets and self.output_bytes > max_output_bytes:
                self.truncated.add(-1)   # the session reports it: an update was dropped
                return None
            return super()._update_display_id(display_id, msg)

        def on_comm_open_jupyter_widget(self, msg: dict) -> None:
            return None   # no widget front end is emulated: a widget's outputs stay in its cell, as text

    return CappedClient(nb, km=km, timeout=None, startup_timeout=startup_timeout, allow_errors=True,
                        interrupt_on_timeout=False, raise_on_iopub_timeout=False, iopub_timeout=5,
                        record_timing=False, shutdown_kernel="immediate", store_widget_state=False,
                        skip_cells_with_tag=f"never-skip-{uuid.uuid4().hex}",
                        on_cell_executed=_record_silent_error, resources={"metadata": {"path": str(workdir)}})


def sandbox_kernel_manager(mode: str, runtime: Path, workdir: Path, limits: sandbox.Limits, uid: int,
                           max_message_bytes: int) -> Any:
    """The kernel's manager; its sockets (and its client's) take at most ``max_message_bytes`` per message and
    queue few messages, and no stdin channel is opened (nothing reads it: a kernel could fill it without end)."""
    import zmq  # noqa: PLC0415
    import zmq.asyncio  # noqa: PLC0415
    from jupyter_client.asynchronous import AsyncKernelClient  # noqa: PLC0415
    from jupyter_client.kernelspec import KernelSpec  # noqa: PLC0415
    from jupyter_client.manager import AsyncKernelManager  # noqa: PLC0415
    from traitlets import List, Unicode  # noqa: PLC0415

    class NoStdinClient(AsyncKernelClient):
        def start_channels(self, shell: bool = True, iopub: bool = True, stdin: bool = True, hb: bool = True,
                           control: bool = True) -> None:
            super().start_channels(shell=shell, iopub=iopub, stdin=False, hb=hb, control=control)

    class SandboxKernelManager(AsyncKernelManager):
        """A kernel manager whose kernel command is the sandbox command line (interrupts go by message)."""

        sandbox_argv = List(Unicode())

        @property
        def kernel_spec(self) -> KernelSpec:  # type: ignore[override]
            return KernelSpec(argv=list(self.sandbox_argv), display_name="Python 3 (grading sandbox)",
                              language="python", interrupt_mode="message", env={}, metadata={})

        def client(self, **kwargs: Any) -> Any:
            kwargs.setdefault("context", self.context)   # the capped context, not a fresh one
            return super().client(**kwargs)

    # Socket options set on the context apply to every socket made from it, before it connects (an option set
    # on a connected socket is not applied to that connection).
    context = zmq.asyncio.Context()
    context.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)   # a larger message drops the connection, not memory
    context.setsockopt(zmq.RCVHWM, RECEIVE_QUEUE)
    return SandboxKernelManager(transport="ipc", connection_file=str(runtime / "kernel.json"), context=context,
                                client_factory=NoStdinClient,
                                sandbox_argv=sandbox.kernel_argv(mode, runtime, workdir, limits, uid=uid))


def close_context(km: Any) -> None:
    """Close the manager's zmq context (its sockets first); the manager did not create it, so it would not."""
    context = getattr(km, "context", None)
    if context is not None and not context.closed:
        context.destroy(linger=0)


class DropWatch:
    """Notices when the kernel's iopub connection was dropped: a message over the size cap, or a broken peer.

    libzmq closes a connection that delivers a message larger than ``MAXMSGSIZE`` and connects again; the message
    is lost, and so may be the few that followed. Reading the socket's monitor after a cell says it happened."""

    def __init__(self, socket_: Any) -> None:
        import zmq  # noqa: PLC0415

        self._zmq = zmq
        self.monitor = zmq.Socket.shadow(socket_.get_monitor_socket(zmq.EVENT_DISCONNECTED).underlying)

    def dropped(self) -> int:
        """How many times the connection was dropped since the last call."""
        count = 0
        while True:
            try:
                self.monitor.recv_multipart(self._zmq.NOBLOCK)
            except self._zmq.Again:
                return count
            except self._zmq.ZMQError:
                return count
            count += 1


def kernel_pid(procs: list[sandbox.Process]) -> int | None:
    """The ipykernel process of a sandbox: the first process whose own command is ``python -m ipykernel_launcher``
    (bubblewrap and the launcher carry that command as arguments; the kernel runs it)."""
    for proc in sorted(procs, key=lambda p: p.pid):
        try:
            with open(f"/proc/{proc.pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if argv[1:3] == [b"-m", b"ipykernel_launcher"]:
            return proc.pid
    return None


def _size(content: Any) -> int:
    try:
        return len(json.dumps(content, default=str))
    except (TypeError, ValueError):
        return 1_000_000


def as_text(kind: str, content: dict) -> str:
    if kind == "stream":
        return str(content.get("text", ""))
    if kind == "error":
        return f"{content.get('ename', 'Error')}: {content.get('evalue', '')}\n"
    data = content.get("data", {})
    text = data.get("text/plain", "") if isinstance(data, dict) else ""
    return (text if isinstance(text, str) else "") + "\n"


def _record_silent_error(cell: Any, execute_reply: dict, **_: Any) -> None:
    """An error reply without an error output (traceback display switched off) still counts as an error."""
    content = execute_reply.get("content", {})
    if content.get("status") == "error" and not any(o.get("output_type") == "error" for o in cell.outputs):
        cell.outputs.append(error_output(content.get("ename", "Error"), content.get("evalue", "")
                                         or "an error was raised while error display was switched off"))

"""Bokeh in the notebook: BokehJS loading, and a BokehModel that batches what it sends.

The model also learns from the page how much of it was applied (browser -> kernel flow
control), see :class:`BatchedBokehModel`.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from bokeh.core.properties import Int
from bokeh.core.serialization import Serializer
from bokeh.document import Document
from bokeh.document.events import DocumentPatchedEvent
from bokeh.embed.elements import div_for_render_item
from bokeh.embed.util import standalone_docs_json_and_render_items
from bokeh.model import DataModel
from bokeh.models import CustomJS
from bokeh.protocol.messages.patch_doc import patch_doc
from jupyter_bokeh import BokehModel

__all__ = ["BatchedBokehModel", "PageAck", "ensure_bokehjs", "in_kernel"]

#: The page copies ``sent`` to ``applied`` once it has applied the change of ``sent`` (and so
#: every message sent before it). Deferred to a microtask: jupyter_bokeh 4.0.5's front end
#: cannot send a change made while it applies a PATCH-DOC (its ``_change_event`` throws then,
#: ``this._events`` is undefined), and a CustomJS may run synchronously in the future.
_ACK_JS = """
const seq = cb_obj.sent;
Promise.resolve().then(() => {
    if (cb_obj.applied < seq) {
        cb_obj.applied = seq;
    }
});
"""

_bokehjs_loaded = False


def in_kernel() -> bool:
    """True inside a Jupyter kernel (where display and comms work)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def ensure_bokehjs() -> None:
    """Load BokehJS into the notebook page once per kernel, inline (works offline).

    The default CDN resources fail without internet and then nothing renders; inline resources
    make executed notebooks large, which is why notebooks are committed without outputs.
    """
    global _bokehjs_loaded
    if _bokehjs_loaded or not in_kernel():
        return
    from bokeh.io import output_notebook
    from bokeh.resources import INLINE

    output_notebook(INLINE, hide_banner=True)
    _bokehjs_loaded = True


class PageAck(DataModel):
    """How far the page got: the kernel numbers its updates (``sent``), the page acknowledges.

    A root of every rtnb Bokeh document. The kernel sets ``sent`` after an update; a
    ``CustomJS`` in the page sets ``applied`` to it when the page has applied that change,
    and jupyter_bokeh syncs ``applied`` back to the kernel. Every page showing the document
    acknowledges (the kernel reads the latest value).
    """

    sent = Int(0, help="Number of the kernel's latest update")
    applied = Int(0, help="Number of the latest update the page has applied")


class BatchedBokehModel(BokehModel):  # type: ignore[misc]
    """A ``jupyter_bokeh.BokehModel`` that collects a view's changes and counts what it sends.

    Inside :meth:`batch`, document changes are held and sent together when the block ends, so
    one coalesced update of a view leaves the kernel at one moment. Each change still travels
    as its own PATCH-DOC message: the jupyter_bokeh 4.0.5 front end applies only the first
    event of a multi-event PATCH-DOC (seen in chromium on 2026-11-29: of three streamed
    sources only the first grew, and legend items added with new lines never showed).
    ``messages_sent`` and ``bytes_sent`` count what left the kernel.

    Flow control: after each batch that sent something the model numbers it (``ack.sent``,
    one more small PATCH-DOC) and the page acknowledges the numbers it has applied
    (:class:`PageAck`). Once a first acknowledgement came back (a page shows the document),
    :meth:`may_send` says no while more than ``max_unacked`` PATCH-DOCs are unacknowledged,
    so the views hold and coalesce their updates instead of queueing them in the browser.
    Until then (no page, a page that has not rendered yet, headless runs) batches are
    numbered at most once per ``probe_every`` seconds and nothing is held; when the
    acknowledgements stop for ``ack_timeout`` seconds (page closed) the model stops holding
    until the next one arrives.

    Parameters
    ----------
    model
        The Bokeh layout to show.
    max_unacked
        PATCH-DOCs the page may have outstanding before updates are held (about a second of
        what a loaded chromium applies).
    ack_timeout
        Seconds without acknowledgement after which updates flow again, unheld.
    probe_every
        Seconds between numbered batches while no page has acknowledged.
    """

    #: Send one PATCH-DOC per coalesced update (all its events) instead of one per event.
    #: jupyter_bokeh 4.0.5's front end hands the whole message to ``apply_json_patch``; an
    #: earlier build of rtnb saw only the first event applied (at the time, held events were
    #: encoded late, see ``_document_patched``), so this stays off until the browser tests
    #: show it safe.
    combine_events = False

    def __init__(self, model: Any, *, max_unacked: int = 100, ack_timeout: float = 5.0,
                 probe_every: float = 0.25, **kwargs: Any) -> None:
        self._held: list[tuple[str, str, str]] | None = None
        self._held_events: list[Any] = []
        self._serializer: Serializer | None = None
        self.messages_sent = 0
        self.bytes_sent = 0
        self.max_unacked = max_unacked
        self.ack_timeout = ack_timeout
        self.probe_every = probe_every
        #: Batches numbered, and (number, messages sent up to and with it) not yet acked.
        self.seq = 0
        self._marks: deque[tuple[int, int]] = deque(maxlen=4096)
        self._last_mark = time.monotonic()  # the first probe a period after construction
        self._acked_seq = 0
        self._acked_messages = 0
        self._ack_time = 0.0
        self._engaged = False
        #: Times the acknowledgements stopped for ``ack_timeout`` while updates were held.
        self.ack_timeouts = 0
        #: Batches :meth:`may_send` held back.
        self.held_ticks = 0
        self.ack: Any = PageAck()  # Any: mypy sees Bokeh's property descriptors
        self.ack.js_on_change("sent", CustomJS(code=_ACK_JS))
        doc = model.document
        if doc is None:
            doc = Document()
            doc.add_root(model)
        doc.add_root(self.ack)
        super().__init__(model, **kwargs)

    @classmethod
    def _model_to_traits(cls, model: Any) -> dict[str, Any]:
        """The render bundle of the whole document: the layout and the :class:`PageAck`."""
        doc = model.document
        roots = list(doc.roots) if doc is not None else [model]
        docs_json, [render_item] = standalone_docs_json_and_render_items(
            roots, suppress_callback_warning=True)
        return {"docs_json": docs_json, "render_items": [render_item.to_json()],
                "div": div_for_render_item(render_item)}

    # -- flow control ----------------------------------------------------------------------
    def _read_acks(self, now: float) -> None:
        applied = int(self.ack.applied)
        if applied <= self._acked_seq:
            return
        messages = None
        while self._marks and self._marks[0][0] <= applied:
            messages = self._marks.popleft()[1]
        if messages is not None:
            self._acked_messages = messages
        self._acked_seq = applied
        self._ack_time = now
        self._engaged = True

    @property
    def engaged(self) -> bool:
        """Whether a page acknowledges (flow control engaged)."""
        self._read_acks(time.monotonic())
        return self._engaged

    @property
    def unacked(self) -> int:
        """PATCH-DOCs sent that the page has not acknowledged (0 before any page did)."""
        self._read_acks(time.monotonic())
        return self.messages_sent - self._acked_messages if self._engaged else 0

    @property
    def page_lag(self) -> tuple[int, int] | None:
        """(numbered batches, PATCH-DOCs) the page is behind; None while no page acknowledges."""
        self._read_acks(time.monotonic())
        if not self._engaged:
            return None
        return self.seq - self._acked_seq, self.messages_sent - self._acked_messages

    def may_send(self, now: float | None = None) -> bool:
        """Whether an update may be sent now (no page, or the page keeps up, or went silent).

        No while a page acknowledges and is more than ``max_unacked`` PATCH-DOCs behind,
        until its acknowledgements have stopped for ``ack_timeout`` seconds.
        """
        now = time.monotonic() if now is None else now
        self._read_acks(now)
        if not self._engaged or self.messages_sent - self._acked_messages <= self.max_unacked:
            return True
        if now - self._ack_time > self.ack_timeout:
            self._engaged = False  # the page went away (or froze): flow until it acks again
            self.ack_timeouts += 1
            return True
        if not self._marks or self._marks[-1][1] < self.messages_sent:
            # Messages went out after the last number (sent before the page was known to
            # acknowledge, or outside a batch): number them, or the page could not say that
            # it has applied them and nothing would be sent until the timeout.
            self._mark(force=True)
        self.held_ticks += 1
        return False

    def _mark(self, *, force: bool = False) -> None:
        """Number the batch just sent, so that the page can acknowledge it."""
        now = time.monotonic()
        if not force and not self._engaged and now - self._last_mark < self.probe_every:
            return
        if self._engaged and not self._marks:
            self._ack_time = now  # nothing was outstanding: the wait starts now
        self._last_mark = now
        self.seq += 1
        self.ack.sent = self.seq  # one more PATCH-DOC (sent now: no batch is open)
        self._marks.append((self.seq, self.messages_sent))

    def close(self) -> None:
        """Close the widget once (jupyter_bokeh's close fails when called again, e.g. by GC)."""
        if getattr(self, "_rtnb_closed", False):
            return
        self._rtnb_closed = True
        super().close()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Collect the document changes made in the block and send them together."""
        if self._held is not None:
            yield
            return
        self._held = []
        self._held_events = []
        self._serializer = None
        before = self.messages_sent
        try:
            yield
        finally:
            held, self._held = self._held, None
            for payloads in held:
                self._send_payloads(payloads)
            if self._held_events:
                self._send_payloads(self._message(self._held_events))
            self._held_events, self._serializer = [], None
            if self.messages_sent > before:
                self._mark()

    def _document_patched(self, event: DocumentPatchedEvent) -> None:
        if event.setter is self:
            return
        # Encode now, send later: a held event encoded at the end of the block would carry
        # the state of that moment. A new line's source added by one event and streamed to by
        # the next would then reach the page with its rows twice (once inside the new source,
        # once in the stream event), and later patches would hit the wrong rows.
        if self._held is not None and self.combine_events:
            if self._serializer is None:
                doc = event.document
                assert doc is not None
                self._serializer = Serializer(references=doc.models.synced_references,
                                              deferred=False)
            self._held_events.append(self._serializer.encode(event))
            return
        payloads = self._message([self._encode_one(event)], event)
        if self._held is not None:
            self._held.append(payloads)
            return
        self._send_payloads(payloads)

    def _encode_one(self, event: DocumentPatchedEvent) -> Any:
        # Arrays are inlined (base64) instead of travelling as binary buffers: jupyter_bokeh
        # sends every buffer as two more comm messages (a line's x and y: 4 more per update),
        # and every comm message costs the page time. Inline, a patch is always 3 messages.
        doc = event.document
        assert doc is not None
        self._serializer = Serializer(references=doc.models.synced_references, deferred=False)
        return self._serializer.encode(event)

    def _message(self, encoded: list[Any],
                 event: DocumentPatchedEvent | None = None) -> tuple[str, str, str]:
        """One PATCH-DOC of the events encoded by ``self._serializer``."""
        serializer = self._serializer
        assert serializer is not None
        doc = self._document
        assert doc is not None
        doc.models.flush_synced(lambda model: not serializer.has_ref(model))
        content = {"events": encoded}
        msg = patch_doc(patch_doc.create_header(), {}, content)  # type: ignore[arg-type]
        return msg.header_json, msg.metadata_json, msg.content_json

    def _send_payloads(self, payloads: tuple[str, str, str]) -> None:
        self.messages_sent += 1
        for payload in payloads:
            self.bytes_sent += len(payload)
            self.send({"msg": "patch", "payload": payload})

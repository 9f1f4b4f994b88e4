"""Bokeh in the notebook: BokehJS loading and a BokehModel that sends one message per flush."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from bokeh.core.serialization import Serializer
from bokeh.document.events import DocumentPatchedEvent
from bokeh.protocol.messages.patch_doc import patch_doc
from jupyter_bokeh import BokehModel

__all__ = ["BatchedBokehModel", "ensure_bokehjs", "in_kernel"]

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


class BatchedBokehModel(BokehModel):  # type: ignore[misc]
    """A ``jupyter_bokeh.BokehModel`` that collects a view's changes and counts what it sends.

    Inside :meth:`batch`, document changes are held and sent together when the block ends, so
    one coalesced update of a view leaves the kernel at one moment. Each change still travels
    as its own PATCH-DOC message: the jupyter_bokeh 4.0.5 front end applies only the first
    event of a multi-event PATCH-DOC (seen in chromium on 2026-11-29: of three streamed
    sources only the first grew, and legend items added with new lines never showed).
    ``messages_sent`` and ``bytes_sent`` count what left the kernel.
    """

    #: Send one PATCH-DOC per coalesced update (all its events) instead of one per event.
    #: jupyter_bokeh 4.0.5's front end hands the whole message to ``apply_json_patch``; an
    #: earlier build of rtnb saw only the first event applied (at the time, held events were
    #: encoded late, see ``_document_patched``), so this stays off until the browser tests
    #: show it safe.
    combine_events = False

    def __init__(self, model: Any, **kwargs: Any) -> None:
        self._held: list[tuple[str, str, str]] | None = None
        self._held_events: list[Any] = []
        self._serializer: Serializer | None = None
        self.messages_sent = 0
        self.bytes_sent = 0
        super().__init__(model, **kwargs)

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
        try:
            yield
        finally:
            held, self._held = self._held, None
            for payloads in held:
                self._send_payloads(payloads)
            if self._held_events:
                self._send_payloads(self._message(self._held_events))
            self._held_events, self._serializer = [], None

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

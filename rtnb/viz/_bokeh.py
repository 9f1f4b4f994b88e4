"""Bokeh in the notebook: BokehJS loading, and a BokehModel that batches what it sends.

The model also learns from the page how much of it was applied (browser -> kernel flow
control), see :class:`BatchedBokehModel`.

jupyter_bokeh 4.0.5's front end loses every document change of a PATCH-DOC after the first:
its ``BokehView`` queues the changes made while it applies a patch in ``this._events``, which
on an ipywidgets view is Backbone's table of event handlers (an object, not an array). BokehJS
calls the view's change callback after applying each event of the patch; ``push`` throws
there and ends BokehJS's loop over the events (every PATCH-DOC throws, silently; a one-event
patch is applied before). The page script :data:`_FIX_JS` mends that view in the page, and
the model sends one PATCH-DOC per update only once the page reported the fix.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from bokeh.core.properties import Int, String
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
#: every message sent before it). Deferred to a microtask: a change made while the front end
#: applies a PATCH-DOC is queued behind it (or, without :data:`_FIX_JS`, lost), and a
#: CustomJS may run synchronously in a later BokehJS.
_ACK_JS = """
const seq = cb_obj.sent;
Promise.resolve().then(() => {
    if (cb_obj.applied < seq) {
        cb_obj.applied = seq;
    }
});
"""

#: Makes jupyter_bokeh 4.0.5's ``BokehView`` apply every event of a PATCH-DOC (see the module
#: docstring), and reports how in ``ack.fixed``. Runs in each page when its views are built
#: (``document_ready``) and again on each numbered update (``sent``); CustomJS runs
#: asynchronously, which is why the kernel combines events only after ``fixed`` came back.
#:
#: * ``"proto"`` (JupyterLab, Notebook 7): the ``BokehView`` class is taken from JupyterLab's
#:   module federation container (the instance the widget manager uses) and patched once per
#:   page: changes the kernel made (``sync === false``) are not sent back, changes the page
#:   makes during a patch wait in an array of their own and go out after it, Backbone's
#:   ``_events`` is never touched. It also takes ``{"msg": "rtnb_patch", "fragments": [header,
#:   metadata, content]}``: a whole PATCH-DOC in one comm message.
#: * ``"doc"`` (no container): per document, jupyter_bokeh's change callback is wrapped to drop
#:   the kernel's own changes, so nothing throws while a patch is applied.
#:
#: Anything missing (another jupyter_bokeh) reports ``"none"``: the kernel then keeps one
#: event per PATCH-DOC, as before.
_FIX_JS = r"""
const report = (how) => { if (ack.fixed !== how) { ack.fixed = how; } };
const doc = ack.document;
const viaDoc = () => {
    if (doc == null) { return "none"; }
    if (doc.__rtnbFixed) { return "doc"; }
    let found = 0;
    const wrapped = Array.from(doc._callbacks).map(([cb, batches]) => {
        if (String(cb).includes("_change_event")) {
            found += 1;
            return [(ev) => { if (ev.sync !== false) { cb(ev); } }, batches];
        }
        return [cb, batches];
    });
    if (found === 0) { return "none"; }
    doc._callbacks = new Map(wrapped);
    doc.__rtnbFixed = true;
    return "doc";
};
const viaProto = () => {
    if (window.__rtnbJbFix != null) { return Promise.resolve(window.__rtnbJbFix); }
    const container = window._JUPYTERLAB && window._JUPYTERLAB["@bokeh/jupyter_bokeh"];
    if (container == null) { return Promise.resolve(null); }
    return container.get("./index").then((factory) => {
        const mod = factory();
        const P = mod.BokehView && mod.BokehView.prototype;
        if (P == null || typeof P._change_event !== "function" ||
                typeof P._consume_patch !== "function") { return null; }
        if (!P.__rtnbFixed) {
            const change = P._change_event;
            P._change_event = function (ev) {
                if (ev.sync === false) { return; }  // the kernel's own change: no echo
                if (this._blocked) {
                    (this.__rtnbPending || (this.__rtnbPending = [])).push(ev);
                    return;
                }
                return change.call(this, ev);
            };
            P._consume_patch = function (content, buffers) {
                if (this._document == null) { return; }
                if (content.msg === "rtnb_patch") {
                    for (const fragment of content.fragments) { this._receiver.consume(fragment); }
                } else if (content.msg === "patch") {
                    const payload = content.payload;
                    this._receiver.consume(payload != null ? payload : buffers[0].buffer);
                } else {
                    return;
                }
                const msg = this._receiver.message;
                if (msg != null && Object.keys(msg.content).length > 0) {
                    this._blocked = true;
                    this.__rtnbPending = [];
                    try {
                        this._document.apply_json_patch(msg.content, msg.buffers);
                    } finally {
                        this._blocked = false;
                        const pending = this.__rtnbPending;
                        this.__rtnbPending = [];
                        for (const ev of pending) { this._change_event(ev); }
                    }
                }
            };
            P.__rtnbFixed = true;
        }
        window.__rtnbJbFix = "proto";
        return "proto";
    });
};
viaProto().then((how) => report(how != null ? how : viaDoc()))
          .catch((err) => { console.error("rtnb: jupyter_bokeh fix", err); report(viaDoc()); });
"""

#: Gives each plot of the document a view for every renderer it holds. BokehJS builds a
#: plot's view asynchronously and connects it to its model only at the end: a renderer
#: added meanwhile (the kernel already streams while the page renders the widget) never gets
#: a view, so its line is not drawn and its legend swatch stays blank while its data source
#: fills (issue 18, defect 3). Runs when the page's views are built (``document_ready``) and
#: on each numbered update; builds only what is missing.
_CATCH_UP_JS = r"""
const doc = ack.document;
const views = doc != null ? doc.views_manager : null;
if (views != null) {
    for (const view of views.all_views()) {
        const built = view.renderer_views;  // a plot's views by renderer (BokehJS 3 PlotView)
        if (built instanceof Map && typeof view._update_renderers === "function" &&
                view.model.renderers.some((r) => !built.has(r))) {
            view._update_renderers().catch((err) => console.error("rtnb: renderers", err));
        }
    }
}
"""

#: Colours the document's plots like the JupyterLab theme around them (issue 18): in a dark
#: theme, the backgrounds, grid lines, axes and texts that still have Bokeh's light default
#: take the theme's own colours (its CSS variables ``--jp-layout-color0`` and so on); back in
#: a light theme they get their defaults back. A colour the user set is never touched. The
#: change is made in the page only (``sync: false``: the kernel's document keeps its colours,
#: so a saved dashboard is as the user built it). Runs when the page's views are built, on
#: numbered updates when new models arrived, and whenever JupyterLab switches theme (a
#: ``MutationObserver`` on ``<body data-jp-theme-light>``). Outside JupyterLab (no
#: ``data-jp-theme-light``) nothing changes.
_THEME_JS = r"""
const doc = ack.document;
const body = (typeof document !== "undefined") ? document.body : null;
if (doc != null && body != null) {
    const ROLES = {
        background_fill_color: "bg", border_fill_color: "bg", inactive_fill_color: "bg",
        outline_line_color: "rule", grid_line_color: "rule", border_line_color: "rule",
        axis_line_color: "axis", major_tick_line_color: "axis", minor_tick_line_color: "axis",
        major_label_text_color: "text", axis_label_text_color: "text",
        label_text_color: "text", title_text_color: "text", text_color: "text",
    };
    const LIGHT = new Set(["#ffffff", "#fff", "white", "#e5e5e5", "black", "#000000",
                           "#444444"]);
    const apply = () => {
        if (body.dataset.jpThemeLight == null) { return; }  // not in JupyterLab
        const dark = body.dataset.jpThemeLight === "false";
        const css = getComputedStyle(body);
        const v = (name, fallback) => (css.getPropertyValue(name) || "").trim() || fallback;
        const colours = {
            bg: v("--jp-layout-color0", "#111111"), rule: v("--jp-border-color2", "#424242"),
            axis: v("--jp-ui-font-color2", "#9e9e9e"), text: v("--jp-ui-font-color1", "#e0e0e0"),
        };
        const models = doc.all_models;
        for (const model of models) {
            const light = model.__rtnbLight || (model.__rtnbLight = {});
            const changes = {};
            for (const [prop, role] of Object.entries(ROLES)) {
                const p = model.properties[prop];
                if (p == null) { continue; }
                if (!(prop in light)) {
                    const value = p.get_value();
                    if (typeof value !== "string" || !LIGHT.has(value.toLowerCase())) {
                        light[prop] = null;  // the user's colour (or none): never changed
                        continue;
                    }
                    light[prop] = value;
                }
                if (light[prop] == null) { continue; }
                const want = dark ? colours[role] : light[prop];
                if (p.get_value() !== want) { changes[prop] = want; }
            }
            if (Object.keys(changes).length > 0) { model.setv(changes, {sync: false}); }
        }
        doc.__rtnbThemed = models.size;
        doc.__rtnbDark = dark;
        body.dataset.rtnbTheme = dark ? "dark" : "light";
    };
    if (doc.__rtnbTheme == null) {
        doc.__rtnbTheme = new MutationObserver(apply);
        doc.__rtnbTheme.observe(body, {attributes: true,
                                       attributeFilter: ["data-jp-theme-light"]});
        apply();
    } else if (doc.__rtnbThemed !== doc._all_models.size) {
        apply();  // models arrived since (a new line's legend, a new plot)
    }
}
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


def _loaded_inline() -> bool:
    """Whether this kernel already loaded BokehJS inline, e.g. by ``output_notebook(INLINE)``.

    Bokeh keeps the resources of the last load in ``bokeh.io.notebook._NOTEBOOK_LOADED`` (no
    public accessor; missing in another Bokeh: ``False``, and BokehJS is loaded once more).
    """
    from bokeh.io import notebook

    loaded = getattr(notebook, "_NOTEBOOK_LOADED", None)
    return getattr(loaded, "mode", None) == "inline"


def ensure_bokehjs() -> None:
    """Load BokehJS into the notebook page once per kernel, inline (works offline).

    The default CDN resources fail without internet and then nothing renders; inline resources
    make executed notebooks large, which is why notebooks are committed without outputs.
    Nothing is loaded when the notebook already loaded BokehJS inline itself: a second load
    is another 8 MB in the notebook, and its evaluation in the page delays the rendering of
    the live view shown in the same cell until its lines are being added (issue 18, defect 3;
    see :data:`_CATCH_UP_JS`).
    """
    global _bokehjs_loaded
    if _bokehjs_loaded or not in_kernel():
        return
    if _loaded_inline():
        _bokehjs_loaded = True
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
    fixed = String("", help="How the page applies multi-event PATCH-DOCs: 'proto', 'doc' "
                            "or 'none' (see _FIX_JS); '' until a page reported")


class BatchedBokehModel(BokehModel):  # type: ignore[misc]
    """A ``jupyter_bokeh.BokehModel`` that sends each coalesced update of a view as one message.

    Inside :meth:`batch`, document changes are held and sent together when the block ends.
    Once the page reports that it applies multi-event PATCH-DOCs (``ack.fixed``, see
    :data:`_FIX_JS`), the whole update is one PATCH-DOC, its acknowledgement number included;
    with the ``"proto"`` fix it also travels as one comm message instead of jupyter_bokeh's
    three (header, metadata, content). Until then (and with a front end the fix does not
    know) each change travels as its own PATCH-DOC. ``messages_sent`` counts PATCH-DOCs,
    ``comm_messages_sent`` comm messages and ``bytes_sent`` what left the kernel.

    Flow control: batches that sent something are numbered (``ack.sent``) and the page
    acknowledges the numbers it has applied (:class:`PageAck`). Once a first
    acknowledgement came back (a page shows the document), :meth:`may_send` says no while
    the page is too far behind (``max_unacked`` PATCH-DOCs, or ``max_unacked_updates``
    numbered updates when they are combined), so the views hold and coalesce their updates
    instead of queueing them in the browser. Until then (no page, a page that has not
    rendered yet, headless runs) batches are numbered at most once per ``probe_every``
    seconds and nothing is held; when the acknowledgements stop for ``ack_timeout`` seconds
    (page closed) the model stops holding until the next one arrives.

    Parameters
    ----------
    model
        The Bokeh layout to show.
    max_unacked
        PATCH-DOCs the page may have outstanding before updates are held, while each change
        is its own PATCH-DOC (about a second of what a loaded chromium applies).
    max_unacked_updates
        Numbered updates the page may have outstanding while updates are combined (one
        PATCH-DOC each; 10 is a second at the default ``max_fps``).
    ack_timeout
        Seconds without acknowledgement after which updates flow again, unheld.
    probe_every
        Seconds between numbered batches while no page has acknowledged.
    """

    #: ``None``: one PATCH-DOC per update once a page reported the fix; ``True`` / ``False``
    #: force it (tests: a page replica applies every event).
    combine_patches: bool | None = None
    #: With the ``"proto"`` fix, send a PATCH-DOC as one comm message (``rtnb_patch``).
    one_comm_message = True

    def __init__(self, model: Any, *, max_unacked: int = 100, max_unacked_updates: int = 10,
                 ack_timeout: float = 5.0, probe_every: float = 0.25, **kwargs: Any) -> None:
        self._held: list[tuple[str, str, str]] | None = None
        self._held_events: list[Any] = []
        self._serializer: Serializer | None = None
        self.messages_sent = 0
        self.comm_messages_sent = 0
        self.bytes_sent = 0
        self.max_unacked = max_unacked
        self.max_unacked_updates = max_unacked_updates
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
        fix = CustomJS(args={"ack": self.ack}, code=_FIX_JS)
        self.ack.js_on_change("sent", fix)
        doc = model.document
        if doc is None:
            doc = Document()
            doc.add_root(model)
        doc.add_root(self.ack)
        doc.js_on_event("document_ready", fix)  # in each page, once its views are built
        catch_up = CustomJS(args={"ack": self.ack}, code=_CATCH_UP_JS)
        self.ack.js_on_change("sent", catch_up)
        doc.js_on_event("document_ready", catch_up)
        theme = CustomJS(args={"ack": self.ack}, code=_THEME_JS)
        self.ack.js_on_change("sent", theme)
        doc.js_on_event("document_ready", theme)
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

    @property
    def combining(self) -> bool:
        """Whether an update goes to the page as one PATCH-DOC (see ``combine_patches``)."""
        if self.combine_patches is not None:
            return self.combine_patches
        return str(self.ack.fixed) in ("proto", "doc")

    def may_send(self, now: float | None = None) -> bool:
        """Whether an update may be sent now (no page, or the page keeps up, or went silent).

        No while a page acknowledges and is more than ``max_unacked`` PATCH-DOCs (combined:
        ``max_unacked_updates`` updates) behind, until its acknowledgements have stopped for
        ``ack_timeout`` seconds.
        """
        now = time.monotonic() if now is None else now
        self._read_acks(now)
        behind = self.seq - self._acked_seq > self.max_unacked_updates if self.combining else \
            self.messages_sent - self._acked_messages > self.max_unacked
        if not self._engaged or not behind:
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

    def _may_number(self, *, force: bool = False) -> bool:
        """Whether to number the batch now (always, once a page acknowledges)."""
        now = time.monotonic()
        if not force and not self._engaged and now - self._last_mark < self.probe_every:
            return False
        if self._engaged and not self._marks:
            self._ack_time = now  # nothing was outstanding: the wait starts now
        self._last_mark = now
        return True

    def _mark(self, *, force: bool = False) -> None:
        """Number the batch just sent, so that the page can acknowledge it."""
        if not self._may_number(force=force):
            return
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
            # Decide once whether to number: asking again after sending could say yes (the
            # probe period ended meanwhile) and send the number as a PATCH-DOC of its own.
            combined = bool(self._held_events)
            numbered = combined and self._may_number()
            if numbered:  # combined: the number rides along
                self.seq += 1
                self.ack.sent = self.seq  # held: the update's last event
            held, self._held = self._held, None
            for payloads in held:
                self._send_payloads(payloads)
            if self._held_events:
                self._send_payloads(self._message(self._held_events))
            self._held_events, self._serializer = [], None
            if numbered:
                self._marks.append((self.seq, self.messages_sent))
            elif self.messages_sent > before and not combined:
                self._mark()

    def _document_patched(self, event: DocumentPatchedEvent) -> None:
        if event.setter is self:
            return
        # Encode now, send later: a held event encoded at the end of the block would carry
        # the state of that moment. A new line's source added by one event and streamed to by
        # the next would then reach the page with its rows twice (once inside the new source,
        # once in the stream event), and later patches would hit the wrong rows.
        if self._held is not None and self.combining:
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
        self.bytes_sent += sum(len(payload) for payload in payloads)
        if self.one_comm_message and str(self.ack.fixed) == "proto":
            self.comm_messages_sent += 1
            self.send({"msg": "rtnb_patch", "fragments": list(payloads)})
            return
        for payload in payloads:
            self.comm_messages_sent += 1
            self.send({"msg": "patch", "payload": payload})

"""The extra-networks panel under the prompt: cards for checkpoints, LoRAs and embeddings.

Clicking a LoRA card adds `<lora:name:1>` to the prompt (a second click takes it out again), an
embedding card adds its name, a checkpoint card switches to that checkpoint. A card shows the
picture saved beside the file (name.png or name.preview.png); the browser loads it lazily from the
server's preview route, so the page stays small however many models there are.
"""
from __future__ import annotations

import hashlib
import html
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from fastapi import HTTPException
from fastapi.responses import FileResponse

from modules.generation.worker import GenerationWorker
from modules.models.model_files import preview_image

PREVIEW_ROUTE = "extra-networks/preview"  # + "/{preview id}"; the cards use it relative to the page


@dataclass(frozen=True)
class Card:
    name: str
    detail: str  # second line: sub-folder, family, vector count...
    action: str  # "insert" (text into the prompt) or "checkpoint" (switch to the title in `value`)
    value: str
    preview: Path | None


class PreviewFiles:
    """The pictures on the cards of the latest listing of each kind, by an id that names no path.

    The preview route opens only the files kept here, which the program itself found beside a listed
    model file: a request can never choose what is opened. An id also changes with the file's
    modification time, so a browser never shows an old copy of a replaced picture.
    """

    def __init__(self):
        self._by_kind: dict[str, dict[str, Path]] = {}

    def publish(self, kind: str, cards: list[Card]) -> dict[Path, str]:
        """Serve these cards' pictures for `kind` from now on, instead of the last listing's; returns their ids."""
        ids = {}
        for card in cards:
            if card.preview is None:
                continue
            try:
                stamp = card.preview.stat().st_mtime_ns
            except OSError:  # gone since the listing: the card shows no picture
                continue
            key = os.fsencode(card.preview) + b"\0" + str(stamp).encode()
            ids[card.preview] = hashlib.sha256(key).hexdigest()[:24]
        self._by_kind[kind] = {preview_id: path for path, preview_id in ids.items()}
        return ids

    def find(self, preview_id: str) -> Path | None:
        return next((files[preview_id] for files in list(self._by_kind.values()) if preview_id in files), None)

    def response(self, preview_id: str) -> FileResponse:
        """The preview route: the picture's bytes as stored, or 404 for an id not in the current listings."""
        path = self.find(preview_id)
        if path is None or not path.is_file():
            raise HTTPException(status_code=404, detail="No such preview picture")
        return FileResponse(path, headers={"Cache-Control": "private, max-age=86400",
                                           "X-Content-Type-Options": "nosniff"})


def checkpoint_cards(worker: GenerationWorker) -> list[Card]:
    return [Card(Path(c.name).stem, str(Path(c.name).parent) if "/" in c.name else "", "checkpoint", c.title,
                 preview_image(c.path)) for c in worker.ctx.models.checkpoints]


def lora_cards(worker: GenerationWorker) -> list[Card]:
    loras = worker.ctx.loras
    if loras is None:
        return []
    cards = []
    for f in loras.refresh():
        folder = f.relative.rsplit("/", 1)[0] if "/" in f.relative else ""
        family = f.family.label if f.family else ""
        cards.append(Card(f.name, " · ".join(x for x in (folder, family) if x), "insert", f"<lora:{f.name}:1>",
                          f.preview))
    return cards


def embedding_cards(worker: GenerationWorker) -> list[Card]:
    db = worker.ctx.embeddings
    if db is None:
        return []
    db.reload()
    model = worker.ctx.models.current
    skipped = db.for_model(model.spec)[1] if model is not None else {}
    cards = []
    for name, e in sorted(db.all.items(), key=lambda kv: kv[0].lower()):
        vectors = f"{e.vector_count} vector{'s' if e.vector_count != 1 else ''}"
        note = f"not for this model: {skipped[name]}" if name in skipped else vectors
        cards.append(Card(name, note, "insert", name, preview_image(e.path)))
    return cards


def cards_html(cards: list[Card], tab: str, empty: tuple[str, Path | None], preview_ids: dict[Path, str]) -> str:
    """The cards, or `empty`: (what to do, the folder to put files in) in words split so that the sentence can
    be translated."""
    if not cards:
        text, folder = empty
        where = f" <code>{html.escape(str(folder))}</code>" if folder else ""
        return f"<p class='extra-network-empty'><span>{html.escape(text)}</span>{where}</p>"
    parts = []
    for c in cards:
        preview_id = preview_ids.get(c.preview)
        image = (f"<img src='{PREVIEW_ROUTE}/{preview_id}' alt='' loading='lazy'>" if preview_id
                 else f"<div class='extra-network-noimage'>{html.escape(c.name[:1].upper())}</div>")
        search = html.escape(f"{c.name} {c.detail}".lower(), quote=True)
        parts.append(
            f"<div class='extra-network-card' data-tab='{tab}' data-action='{c.action}' "
            f"data-value='{html.escape(c.value, quote=True)}' data-search='{search}' "
            f"title='{html.escape(c.value, quote=True)}'>{image}"
            f"<div class='extra-network-name'>{html.escape(c.name)}</div>"
            f"<div class='extra-network-detail'>{html.escape(c.detail)}</div></div>")
    return f"<div class='extra-network-cards'>{''.join(parts)}</div>"


def _first(folders) -> Path | None:
    return next(iter(folders), None)


# (id, tab label, cards, (what to do when there are none, the folder really searched first))
KINDS: tuple[tuple[str, str, Callable[[GenerationWorker], list[Card]],
                   Callable[[GenerationWorker], tuple[str, Path | None]]], ...] = (
    ("checkpoints", "Checkpoints", checkpoint_cards,
     lambda w: ("No checkpoints: put them into", _first(w.ctx.models.paths.checkpoint_dirs))),
    ("lora", "Lora", lora_cards,
     lambda w: ("No LoRAs: put them into", _first(w.ctx.loras.folders) if w.ctx.loras else None)),
    ("textual_inversion", "Textual Inversion", embedding_cards,
     lambda w: ("No embeddings: put them into", w.ctx.embeddings.folder if w.ctx.embeddings else None)),
)


def build(tab: str, worker: GenerationWorker, previews: PreviewFiles) -> gr.Textbox:
    """The panel for one tab; returns the hidden box a checkpoint card writes its title into."""

    def render_all() -> list[str]:
        panes = []
        for kind, _, make, empty in KINDS:
            cards = make(worker)
            panes.append(cards_html(cards, tab, empty(worker), previews.publish(kind, cards)))
        return panes

    with gr.Accordion("Extra networks", open=False, elem_id=f"{tab}_extra_networks"):
        with gr.Row():
            gr.Textbox(label="Search", placeholder="Search...", elem_id=f"{tab}_extra_search", scale=4,
                       elem_classes=["extra-network-search"])
            refresh = gr.Button("🔄 Refresh", elem_id=f"{tab}_extra_refresh", scale=0, min_width=100)
        panes = []
        with gr.Tabs(elem_id=f"{tab}_extra_tabs"):
            for (kind, label, _, _), pane_html in zip(KINDS, render_all()):
                with gr.Tab(label, id=f"{tab}_{kind}", elem_id=f"{tab}_{kind}_cards_tab"):
                    panes.append(gr.HTML(pane_html, elem_id=f"{tab}_{kind}_cards"))
        picked_checkpoint = gr.Textbox(visible="hidden", elem_id=f"{tab}_extra_checkpoint")

    def rescan():
        worker.ctx.models.refresh()
        return render_all()

    refresh.click(rescan, outputs=panes, api_visibility="private")
    return picked_checkpoint


def wire_checkpoint_cards(boxes: list[gr.Textbox], dropdown: gr.Dropdown, status: gr.Markdown,
                          switch_checkpoint: Callable[[str], tuple]) -> None:
    """A checkpoint card loads that checkpoint, exactly as picking it in the top bar does."""

    def switch(title: str):
        if not title:  # the box was just cleared
            return gr.skip(), gr.skip(), gr.skip()
        return (*switch_checkpoint(title), "")

    for box in boxes:
        box.change(switch, inputs=box, outputs=[dropdown, status, box], api_visibility="private")


CSS = """
.extra-network-cards { display: flex; flex-wrap: wrap; gap: 8px; }
.extra-network-card { width: 160px; cursor: pointer; border: 1px solid var(--border-color-primary);
                      border-radius: 6px; padding: 4px; background: var(--block-background-fill); }
.extra-network-card:hover { border-color: var(--color-accent); }
.extra-network-card img, .extra-network-noimage { width: 100%; height: 120px; object-fit: cover; border-radius: 4px; }
.extra-network-noimage { display: flex; align-items: center; justify-content: center; font-size: 48px;
                         background: var(--background-fill-secondary); color: var(--body-text-color-subdued); }
.extra-network-name { font-weight: 600; overflow-wrap: anywhere; }
.extra-network-detail { font-size: 0.85em; color: var(--body-text-color-subdued); overflow-wrap: anywhere; }
"""

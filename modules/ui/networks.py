"""The extra-networks panel under the prompt: cards for checkpoints, LoRAs and embeddings.

Clicking a LoRA card adds `<lora:name:1>` to the prompt (a second click takes it out again), an
embedding card adds its name, a checkpoint card switches to that checkpoint. A card shows the
picture saved beside the file (name.png or name.preview.png) as a small inline thumbnail, so no
extra route (and no way around the page's password) is needed.
"""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from PIL import Image

from modules.models.model_files import preview_image
from modules.generation.worker import GenerationWorker

THUMBNAIL = 160  # pixels, the longer side


@dataclass(frozen=True)
class Card:
    name: str
    detail: str  # second line: sub-folder, family, vector count...
    action: str  # "insert" (text into the prompt) or "checkpoint" (switch to the title in `value`)
    value: str
    preview: Path | None


class Thumbnails:
    """Small JPEG data URLs of preview pictures, remembered while the file is unchanged."""

    def __init__(self):
        self._cache: dict[Path, tuple[int, str]] = {}

    def data_url(self, path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            stamp = path.stat().st_mtime_ns
            cached = self._cache.get(path)
            if cached and cached[0] == stamp:
                return cached[1]
            with Image.open(path) as im:
                im.thumbnail((THUMBNAIL, THUMBNAIL))
                buf = io.BytesIO()
                im.convert("RGB").save(buf, format="JPEG", quality=85)
        except OSError:  # unreadable picture: the card just has no image
            return None
        url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        self._cache[path] = (stamp, url)
        return url


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


def cards_html(cards: list[Card], tab: str, empty: str, thumbnails: Thumbnails) -> str:
    if not cards:
        return f"<p class='extra-network-empty'>{html.escape(empty)}</p>"
    parts = []
    for c in cards:
        url = thumbnails.data_url(c.preview)
        image = (f"<img src='{url}' alt='' loading='lazy'>" if url
                 else f"<div class='extra-network-noimage'>{html.escape(c.name[:1].upper())}</div>")
        search = html.escape(f"{c.name} {c.detail}".lower(), quote=True)
        parts.append(
            f"<div class='extra-network-card' data-tab='{tab}' data-action='{c.action}' "
            f"data-value='{html.escape(c.value, quote=True)}' data-search='{search}' "
            f"title='{html.escape(c.value, quote=True)}'>{image}"
            f"<div class='extra-network-name'>{html.escape(c.name)}</div>"
            f"<div class='extra-network-detail'>{html.escape(c.detail)}</div></div>")
    return f"<div class='extra-network-cards'>{''.join(parts)}</div>"


KINDS: tuple[tuple[str, str, Callable[[GenerationWorker], list[Card]], str], ...] = (
    ("checkpoints", "Checkpoints", checkpoint_cards, "No checkpoints: put them into models/Stable-diffusion."),
    ("lora", "Lora", lora_cards, "No LoRAs: put them into models/Lora."),
    ("textual_inversion", "Textual Inversion", embedding_cards, "No embeddings: put them into embeddings/."),
)


def build(tab: str, worker: GenerationWorker, thumbnails: Thumbnails) -> gr.Textbox:
    """The panel for one tab; returns the hidden box a checkpoint card writes its title into."""
    with gr.Accordion("Extra networks", open=False, elem_id=f"{tab}_extra_networks"):
        with gr.Row():
            gr.Textbox(label="Search", placeholder="Search...", elem_id=f"{tab}_extra_search", scale=4,
                       elem_classes=["extra-network-search"])
            refresh = gr.Button("🔄 Refresh", elem_id=f"{tab}_extra_refresh", scale=0, min_width=100)
        panes = []
        with gr.Tabs(elem_id=f"{tab}_extra_tabs"):
            for kind, label, make, empty in KINDS:
                with gr.Tab(label, id=f"{tab}_{kind}", elem_id=f"{tab}_{kind}_cards_tab"):
                    panes.append(gr.HTML(cards_html(make(worker), tab, empty, thumbnails),
                                         elem_id=f"{tab}_{kind}_cards"))
        picked_checkpoint = gr.Textbox(visible="hidden", elem_id=f"{tab}_extra_checkpoint")

    def render_all():
        return [cards_html(make(worker), tab, empty, thumbnails) for _, _, make, empty in KINDS]

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

# Clicks on cards (delegated, so re-rendered cards work too) and the search box filter.
JS = """
window.toggleInPrompt = (box, text) => {
  const value = box.value;
  if (value.includes(text)) {
    box.value = value.replace(text, '').replace(/ {2,}/g, ' ').replace(/,\\s*,/g, ',').replace(/^[\\s,]+|[\\s,]+$/g, '');
  } else {
    const sep = value.trim() === '' ? '' : (/[\\s,]$/.test(value) ? '' : ' ');
    box.value = value + sep + text;
  }
  box.dispatchEvent(new Event('input', {bubbles: true}));
};
document.addEventListener('click', (e) => {
  const card = e.target.closest('.extra-network-card');
  if (!card) return;
  const tab = card.dataset.tab;
  if (card.dataset.action === 'checkpoint') {
    const box = document.querySelector('#' + tab + '_extra_checkpoint textarea, #' + tab + '_extra_checkpoint input');
    if (!box) return;
    box.value = card.dataset.value;
    box.dispatchEvent(new Event('input', {bubbles: true}));
    return;
  }
  const prompt = document.querySelector('#' + tab + '_prompt textarea');
  if (prompt) window.toggleInPrompt(prompt, card.dataset.value);
});
document.addEventListener('input', (e) => {
  const search = e.target.closest('.extra-network-search');
  if (!search) return;
  const query = e.target.value.trim().toLowerCase();
  const panel = search.closest('[id$="_extra_networks"]');
  panel.querySelectorAll('.extra-network-card').forEach((card) => {
    card.style.display = !query || card.dataset.search.includes(query) ? '' : 'none';
  });
});
"""

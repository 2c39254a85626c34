"""The Extensions tab: what is installed in extensions/ (listed, not run)."""
from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from modules.extensions import list_extensions


def table_html(folder: Path) -> str:
    found = list_extensions(folder)
    if not found:
        return f"<p>No extensions in <code>{html.escape(str(folder))}</code>.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(e.name)}</td><td>{html.escape(e.url) or '—'}</td><td>{html.escape(e.branch)}</td>"
        f"<td>{html.escape(e.commit)}</td><td>{html.escape(e.modified)}</td></tr>" for e in found)
    return ("<table id='extensions_table'><thead><tr><th>Extension</th><th>URL</th><th>Branch</th><th>Version</th>"
            f"<th>Date</th></tr></thead><tbody>{rows}</tbody></table>")


def build(folder: Path) -> None:
    gr.Markdown("Extensions are listed here, but not run: A1111's extensions are written against A1111's own "
                "code, which this program does not share. Their features come here as built-in parts instead.",
                elem_id="extensions_note")
    refresh = gr.Button("🔄 Check the folder again", elem_id="extensions_refresh", size="sm")
    table = gr.HTML(table_html(folder), elem_id="extensions_installed")
    refresh.click(lambda: table_html(folder), outputs=table, api_visibility="private")

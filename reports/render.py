"""Rendering the report: one list of sections written as Markdown and as a self-contained HTML page (figures
embedded as data URIs, no script, no network)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass

from reports.figures import Plot
from reports.tables import Table


@dataclass(frozen=True)
class Bullets:
    """A headed list of short items (the summary)."""

    title: str
    items: list[str]


Block = str | Table | Plot | Bullets
Section = tuple[str, list[Block]]


def md_table(t: Table) -> str:
    """A table as a Markdown pipe table under its bold id, title and caption."""

    def line(cells: list[str]) -> str:
        """One table row; '|' inside a cell would end it, so it becomes '/'."""
        return "| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |"

    body = [line(t.header), "|" + "|".join("---" for _ in t.header) + "|", *map(line, t.rows)]
    return f"**{t.id}.** {t.title}. {t.caption}\n\n" + "\n".join(body)


def md_block(b: Block) -> str:
    """One block as Markdown; a figure links its PNG file beside the report."""
    if isinstance(b, Table):
        return md_table(b)
    if isinstance(b, Plot):
        return f"![{b.title}]({b.path.name})\n\n*{b.name}: {b.title}*"
    if isinstance(b, Bullets):
        return f"**{b.title}**\n\n" + "\n".join(f"- {item}" for item in (b.items or ["none"]))
    return b


def render_md(title: str, sections: Sequence[Section]) -> str:
    """The whole report as Markdown."""
    out = [f"# {title}"]
    for heading, blocks in sections:
        out += [f"## {heading}", *map(md_block, blocks)]
    return "\n\n".join(out) + "\n"


CSS = (
    "body{font-family:sans-serif;margin:1.5em;color:#111;max-width:1600px}table{border-collapse:collapse;"
    "margin:.4em 0 1.2em}td,th{border:1px solid #aaa;padding:2px 6px;font-size:12px;text-align:left;"
    "vertical-align:top}th{background:#eee}img{max-width:100%;border:1px solid #ddd}"
    "figcaption,.cap{font-size:13px;color:#333}li{margin:.2em 0}"
)


def html_block(b: Block) -> str:
    """One block as HTML; figures embedded as base64 PNG data URIs."""
    esc = html.escape
    if isinstance(b, Plot):
        data = base64.b64encode(b.path.read_bytes()).decode("ascii")
        return (f'<figure><img alt="{esc(b.title)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(b.name)} ({esc(b.path.name)}): {esc(b.title)}</figcaption></figure>")
    if isinstance(b, Table):
        head = "".join(f"<th>{esc(c)}</th>" for c in b.header)
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in b.rows)
        return (f'<p class="cap"><b>{esc(b.id)}.</b> {esc(b.title)}. {esc(b.caption).replace("`", "")}</p>'
                f"<table><tr>{head}</tr>{body}</table>")
    if isinstance(b, Bullets):
        items = "".join(f"<li>{esc(item)}</li>" for item in (b.items or ["none"]))
        return f"<p><b>{esc(b.title)}</b></p><ul>{items}</ul>"
    return f"<p>{esc(b).replace('`', '')}</p>"


def render_html(title: str, sections: Sequence[Section]) -> str:
    """The whole report as one HTML file with no external resources."""
    body = "".join(f"<h2>{html.escape(h)}</h2>" + "".join(map(html_block, blocks)) for h, blocks in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")

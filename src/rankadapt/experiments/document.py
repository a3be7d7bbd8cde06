"""A report as a list of blocks, rendered twice: Markdown (images as files) and self-contained HTML
(images inlined as base64 PNG, one file to mail or attach). No Markdown library needed."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Document:
    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append((f"h{level}", text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, table: Table) -> None:
        self.blocks.append(("table", table))

    def image(self, path: Path, caption: str) -> None:
        self.blocks.append(("img", (path, caption)))

    # ---------------------------------------------------------------------------------------------
    def markdown(self, relative_to: Path) -> str:
        out = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind.startswith("h"):
                out += ["#" * int(kind[1:]) + " " + str(value), ""]
            elif kind == "p":
                out += [str(value), ""]
            elif kind == "table":
                out += _markdown_table(value) + [""]
            else:
                path, caption = value
                out += [f"![{caption}]({Path(path).relative_to(relative_to).as_posix()})", ""]
        return "\n".join(out)

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind.startswith("h"):
                body.append(f"<{kind}>{html.escape(str(value))}</{kind}>")
            elif kind == "p":
                body.append(f"<p>{_inline(str(value))}</p>")
            elif kind == "table":
                body.append(_html_table(value))
            else:
                path, caption = value
                data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        return _PAGE.format(title=html.escape(self.title), body="\n".join(body))


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _markdown_table(table: Table) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in table.header) + " |",
             "|" + "|".join("---" for _ in table.header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    return lines


def _inline(text: str) -> str:
    """Markdown's `code` spans as <code>; everything else escaped."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    rows = "".join("<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in row) + "</tr>" for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.8em 0 1.6em; font-size: 0.92em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }} tr:nth-child(even) td {{ background: #fafafa; }}
td:not(:first-child) {{ font-variant-numeric: tabular-nums; }}
figure {{ margin: 1em 0 2em; }} img {{ max-width: 100%; }} figcaption {{ color: #555; font-size: 0.9em; }}
code {{ background: #f3f3f3; padding: 0 0.2em; }}
</style></head>
<body>
{body}
</body></html>
"""

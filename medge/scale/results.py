"""OUT/results.jsonl (one row per attempt, appended and fsynced) and the result table made from it:
printed, and written as results.md, results.json and results.png (models × targets heatmaps)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medge.common.fileio import atomic_path, write_bytes_atomic, write_json_atomic
from medge.common.reports import human_bytes

STATUS_MARK = {"ok": "✅", "gate_failed": "❎", "unsupported": "➖", "build_failed": "❌", "timeout": "⏱",
               "interrupted": "⏹", "skipped": "✅", "device_error": "⚠"}
COLUMNS = ("cell", "status", "metric", "drop", "size", "p50 ms", "p99 ms", "x fp32", "s", "try", "node")


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line and fsync it: a crash never loses a finished attempt nor leaves half a line."""
    line = json.dumps(row, sort_keys=True, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every complete row of results.jsonl (a torn last line from a crash is ignored)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def last_rows(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last row of each cell id."""
    return {row["cell"]: row for row in rows}


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def table_cells(row: dict[str, Any]) -> list[str]:
    """The printed columns of one row."""
    metric = row.get("metric") or {}
    size = (row.get("size_bytes") or {}).get("bundle")

    return [row["cell"], f"{STATUS_MARK.get(row['status'], '?')} {row['status']}",
            f"{metric.get('name', '')} {_num(metric.get('quantized'), '.4f')}".strip() if metric else "-",
            _num(metric.get("drop"), ".4f"), human_bytes(size) if size else "-", _num(row.get("p50_ms"), ".3f"),
            _num(row.get("p99_ms"), ".3f"), _num(row.get("latency_ratio"), ".2f"), _num(row.get("seconds"), ".1f"),
            str(row.get("attempt", "-")), str(row.get("node") or row.get("host") or "-")]


def render(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """The result table as aligned text or Markdown."""
    body = [table_cells(r) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        return "\n".join(lines + ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body])
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(COLUMNS)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(COLUMNS), line(["-" * w for w in widths]), *(line(b) for b in body)])


def _heatmap(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = sorted({r["model"] for r in rows})
    columns = sorted({f"{r['target']}\n{r['precision']}" + (f" p{r['prune']}" if r.get("prune", "none") != "none" else "")
                      for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.2 * len(columns) * 2), 1.2 + 0.7 * len(models)), squeeze=False)
    for ax, (field, label, cmap) in zip(axes[0], (("latency_ratio", "speed-up vs fp32 (x)", "viridis"),
                                                   ("drop", "metric drop", "magma_r"))):
        grid = np.full((len(models), len(columns)), np.nan)
        text = [["" for _ in columns] for _ in models]
        for r in rows:
            col = f"{r['target']}\n{r['precision']}" + (f" p{r['prune']}" if r.get("prune", "none") != "none" else "")
            i, j = models.index(r["model"]), columns.index(col)
            value = r.get(field) if field != "drop" else (r.get("metric") or {}).get("drop")
            if isinstance(value, (int, float)):
                grid[i, j] = value
            text[i][j] = (f"{value:.3g}" if isinstance(value, (int, float)) else "") + f"\n{r['status']}"
        ax.imshow(grid, cmap=cmap, aspect="auto")
        for i in range(len(models)):
            for j in range(len(columns)):
                ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7, color="white",
                        bbox={"facecolor": "black", "alpha": 0.35, "pad": 1, "linewidth": 0})
        ax.set_xticks(range(len(columns)), columns, fontsize=7)
        ax.set_yticks(range(len(models)), models, fontsize=7)
        ax.set_title(label, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_tables(out: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, str]:
    """results.md, results.json and results.png in `out` (each written atomically); returns their paths."""
    files = {"markdown": str(out / "results.md"), "json": str(out / "results.json"), "chart": str(out / "results.png")}
    counts = ", ".join(f"{k} {v}" for k, v in summary.get("counts", {}).items())
    write_bytes_atomic(out / "results.md", f"# medge matrix: {summary.get('matrix', '')}\n\n{counts}\n\n"
                                           f"{render(rows, markdown=True)}\n".encode())
    write_json_atomic(out / "results.json", {"summary": summary, "rows": rows})
    _heatmap(rows, out / "results.png", f"medge matrix {summary.get('matrix', '')}")
    return files

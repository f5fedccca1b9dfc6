"""What the radiographer looks at: the worklist ranked, with state, flags and scores, no PHI.

A study is shown by the first 8 hex digits of its salted study hash (or its accession number with
``--show-accession``).  A queued or running study older than ``--max-wait`` shows as ``overdue``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from medge.apps.xray.priority import PRIORITY_NAMES
from medge.apps.xray.worker import STAGES, stage_summary
from medge.apps.xray.worklist import Worklist
from medge.common.reports import Report, _fmt


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def study_entries(rows: list[dict[str, Any]], *, show_accession: bool = False, max_wait_s: float = 1800.0,
                  now: float | None = None) -> list[dict[str, Any]]:
    """Turn worklist rows (already ranked) into display objects, one per study instance."""
    now = time.time() if now is None else now
    entries = []
    for rank, row in enumerate(rows, start=1):
        waiting = row["state"] in ("received", "running")
        overdue = bool(row["overdue"]) or (waiting and now - row["received_at"] > max_wait_s)
        scores = json.loads(row["scores"])
        flags = json.loads(row["flags"])
        entries.append({
            "rank": rank,
            "study": row["accession"] if show_accession and row["accession"] else row["study_hash"][:8],
            "study_hash": row["study_hash"],
            "sop_instance_uid_hash": row["sop_hash"],
            "state": "overdue" if waiting and overdue else row["state"],
            "queue_state": row["state"],
            "reason": row["reason"],
            "priority": PRIORITY_NAMES.get(row["priority"], str(row["priority"])),
            "priority_level": row["priority"],
            "overdue": overdue,
            "flags": [{"finding": name, "score": round(scores.get(name, float("nan")), 4)} for name in flags],
            "scores": {k: round(v, 4) for k, v in scores.items()},
            "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["received_at"])),
            "age_s": round(now - row["received_at"], 1),
            "attempts": row["attempts"],
            "model_sha256": row["model_sha256"],
            "thresholds_version": row["thresholds_version"],
            "sr": "sent" if row["sr_sent"] and not row["sr_pending"] else
                  ("pending" if row["sr_pending"] else ("to write" if row["sr_state"] == "pending" else
                                                        ("written" if row["sr_path"] else ""))),
            "wait_s": round((now - row["received_at"]) if waiting else
                            json.loads(row["timings"] or "{}").get("queue_ms", 0.0) / 1e3, 3),
            "timings_ms": json.loads(row["timings"] or "{}"),
        })
    return entries


@dataclass
class WorklistReport(Report):
    """The ranked worklist."""

    title: ClassVar[str] = "worklist"
    db: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    stages_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    studies: list[dict[str, Any]] = field(default_factory=list)

    def to_table(self) -> str:
        if not self.studies:
            return f"worklist {self.db}: no studies"
        cols = ("rank", "study", "age", "state", "priority", "flags", "sr")
        cells = []
        for s in self.studies:
            flags = ", ".join(f"{f['finding']} {f['score']:.2f}" for f in s["flags"])
            if s["overdue"] and s["state"] != "overdue":
                flags = ", ".join(x for x in (flags, "overdue") if x)
            if s["reason"]:
                flags = ", ".join(x for x in (flags, s["reason"]) if x)
            cells.append([str(s["rank"]), s["study"], _age(s["age_s"]), s["state"], s["priority"], flags or "-",
                          s["sr"] or "-"])
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
        line = lambda vals: "  ".join(_fmt(v).ljust(w) for v, w in zip(vals, widths)).rstrip()
        summary = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        stages = ", ".join(f"{k.removesuffix('_ms')} {v['p50']:.0f}/{v['p95']:.0f}" for k, v in self.stages_ms.items())
        return "\n".join([f"worklist ({summary})", *([f"ms p50/p95: {stages}"] if stages else []), line(cols),
                          line(["-" * w for w in widths]), *(line(r) for r in cells)])


def worklist_report(worklist: Worklist, *, show_accession: bool = False, max_wait_s: float = 1800.0) -> WorklistReport:
    """Read the ranked worklist from the database."""
    studies = study_entries(worklist.rows(), show_accession=show_accession, max_wait_s=max_wait_s)
    counts: dict[str, int] = {}
    for s in studies:
        counts[s["state"]] = counts.get(s["state"], 0) + 1
    return WorklistReport(db=str(worklist.path), counts=counts, studies=studies, stages_ms=stage_summary(
        {name: [s["timings_ms"][name] for s in studies if s["queue_state"] == "analysed" and name in s["timings_ms"]]
         for name in STAGES}))


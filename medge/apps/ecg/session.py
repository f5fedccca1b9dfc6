"""The end of a live session: the 12-lead paper plot and the report, its gap table summarised.

The JSON report keeps every gap (``gaps``); the printed table shows ``gap_summary`` instead: how
many gaps, the samples and seconds missing, and the `LONGEST_GAPS` longest (a noisy link can
have hundreds).
"""

from __future__ import annotations

from typing import Any

from medge.apps.ecg.provenance import Provenance
from medge.apps.ecg.reconstruct import STANDARD_LEADS
from medge.apps.ecg.stream import StreamResult
from medge.common.reports import DictReport
from medge.apps.ecg.plot import paper_plot

LONGEST_GAPS = 10
PLOT_SECONDS = 10.0


def gap_summary(gaps: list[dict[str, int]], rate_hz: float, longest: int = LONGEST_GAPS) -> dict[str, Any]:
    """``{count, missing_samples, missing_s, longest: [{start, length, seconds}]}`` (longest first)."""
    top = sorted(gaps, key=lambda g: (-g["length"], g["start"]))[:longest]
    missing = sum(g["length"] for g in gaps)
    return {"count": len(gaps), "missing_samples": missing, "missing_s": round(missing / rate_hz, 3),
            "longest": [{**g, "seconds": round(g["length"] / rate_hz, 3)} for g in top]}


class StreamReport(DictReport):
    """`medge ecg stream`'s report: the full gap list in the JSON, its summary in the table."""

    def to_table(self) -> str:
        count = len(self.data.get("gaps") or [])
        shown = f"{count} (every gap in the JSON report: --report/--json)" if count else "none"
        return DictReport(name=self.name, data={**self.data, "gaps": shown}).to_table()


def plot_session(path: str, result: StreamResult, rate_hz: float, provenance: Provenance) -> None:
    """Paper plot of the session's last `PLOT_SECONDS`."""
    start = max(0.0, result.twelve_mv.shape[1] / rate_hz - PLOT_SECONDS)
    paper_plot(path, STANDARD_LEADS, result.twelve_mv, rate_hz, title="medge ecg stream, not for diagnosis",
               reconstructed=provenance.reconstructed, derived=provenance.derived, start_s=start)


def stream_report(result: StreamResult, stats: Any, *, port: str, protocol: str, rate_hz: float, hop_s: float,
                  model_info: dict[str, Any], provenance: Provenance, record: dict[str, str], plot: str | None,
                  view_url: str | None) -> StreamReport:
    """The report of a finished session (`stats`: the receiver's `ReceiverStats`)."""
    link = result.link
    assert link is not None
    data = {
        "port": port, "protocol": protocol, "rate_hz": rate_hz, "model": model_info,
        "provenance": provenance.to_dict(),
        "frames": stats.frames(),
        "samples": {"received": stats.received, "missing": stats.missing, "first_sample_index": result.first_index},
        "gap_summary": gap_summary(stats.gaps, rate_hz),
        "gaps": stats.gaps, "lead_off": stats.lead_off,
        "link": {"losses": [loss.to_dict() for loss in link.losses], "reopens": link.reopens,
                 "lost_s": round(sum(loss.seconds for loss in link.losses), 3)},
        "signal_lost": [loss.describe() for loss in link.losses],
        "device_flags": {"saturation_frames": stats.saturation_frames, "low_battery_frames": stats.low_battery_frames},
        "latency_ms": result.latency_ms, "reconstruct_ms": result.reconstruct_ms, "windows": result.windows,
        "hop_s": hop_s, "derived_leads": result.extra["derived_leads"], "record": record, "plot": plot,
        "view": view_url,
        "pipeline": {k: result.pipeline.get(k) for k in ("frames", "drops", "fps", "elapsed_s")},
        "stopped_by": (type(result.error).__name__ if result.error else "give_up" if link.gave_up
                       else "signal" if result.pipeline.get("stopped_early") else "end"),
    }
    return StreamReport(name="ecg stream", data=data)

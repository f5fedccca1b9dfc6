"""Which leads of a 12-lead output were measured and which were computed, by what: said everywhere.

A reconstructed ECG must never pass for a measured one.  `Provenance` names, for every lead, its
role -- measured (an input lead, kept as recorded), reconstructed (computed by the model) or
derived (III, aVR, aVL, aVF from I and II) -- and the model by name and sha256.  Its texts go into
the DICOM (channel labels, derivations, annotations, Series Description), the WFDB header comments
and the NPZ keys, each with "not for diagnosis".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medge.apps.ecg.reconstruct import DERIVED_LEADS, STANDARD_LEADS, LeadModel
from medge.common.fileio import sha256_file

MEASURED, RECONSTRUCTED, DERIVED = "measured", "reconstructed", "derived"
NOT_FOR_DIAGNOSIS = "not for diagnosis"
LO_MAX = 64  # DICOM LO (Series Description, Channel Derivation Description)


@dataclass(frozen=True)
class Provenance:
    """The role of each of the 12 standard leads and the model that computed the others."""

    model: str  # the name the user gave (file, bundle folder or zoo name)
    sha256: str  # of the artifact that ran
    measured: tuple[str, ...]
    derived: tuple[str, ...]
    tool: str = "medge ecg reconstruct"

    @classmethod
    def of(cls, model: LeadModel, artifact: str | Path, tool: str = "medge ecg reconstruct") -> "Provenance":
        """Provenance of `model`'s output; `artifact` is the file that ran (hashed here)."""
        measured = tuple(lead for lead in STANDARD_LEADS if lead in model.input_leads)
        derived = DERIVED_LEADS if model.derive_limb_leads else ()
        return cls(model.name, sha256_file(artifact), measured, derived, tool)

    def role(self, lead: str) -> str:
        """measured, reconstructed or derived."""
        return MEASURED if lead in self.measured else DERIVED if lead in self.derived else RECONSTRUCTED

    @property
    def computed(self) -> tuple[str, ...]:
        """Every lead that was not measured, in standard order."""
        return tuple(lead for lead in STANDARD_LEADS if lead not in self.measured)

    @property
    def reconstructed(self) -> tuple[str, ...]:
        """The leads the model computed."""
        return tuple(lead for lead in self.computed if lead not in self.derived)

    def _by_model(self) -> str:
        return f"model {self.model} (sha256 {self.sha256})"

    def derivation(self, lead: str) -> str:
        """How `lead` came to be, in full (per-channel annotation, WFDB comment)."""
        role = self.role(lead)
        if role == MEASURED:
            return f"Lead {lead}: measured (recorded input lead, not computed)"
        if role == DERIVED:
            via = [f"{src} computed by {self._by_model()}" for src in ("I", "II") if src not in self.measured]
            how = f"derived from I and II (Einthoven/Goldberger){'; ' + '; '.join(via) if via else ''}"
            return f"Lead {lead}: COMPUTED, {how}; {NOT_FOR_DIAGNOSIS}"
        return (f"Lead {lead}: COMPUTED by {self._by_model()} from the measured leads "
                f"{', '.join(self.measured)}; {NOT_FOR_DIAGNOSIS}")

    def short_derivation(self, lead: str) -> str:
        """`derivation` within a DICOM LO (64 chars): the model name (16 chars at most) and as much of
        its sha256 as fits (at least 26 hex digits; the full one is in the channel's annotation)."""
        head = "from I,II; " if self.role(lead) == DERIVED else ""
        text = f"{head}by {self.model[:16]} sha256:"
        return text + self.sha256[:LO_MAX - len(text)]

    def label(self, lead: str) -> str:
        """A DICOM Channel Label (SH, 16 chars): ``V2 computed`` / ``II measured``."""
        return f"{lead} {'measured' if self.role(lead) == MEASURED else 'computed'}"

    def statement(self) -> str:
        """The one-paragraph notice (top-level annotation, first WFDB comment, NPZ ``note``)."""
        n = len(self.computed)
        text = (f"COMPUTED ECG, {NOT_FOR_DIAGNOSIS.upper()}: {n} of 12 leads ({', '.join(self.computed)}) are computed "
                f"by {self._by_model()} from the measured leads {', '.join(self.measured)}")
        if self.derived:
            text += f"; {', '.join(self.derived)} are derived from I and II"
        return f"{text} ({self.tool})"

    def series_description(self) -> str:
        """A Series Description (LO, 64 chars) naming the computed leads, the model and 'not for diagnosis'."""
        tail = f", {NOT_FOR_DIAGNOSIS}"
        for leads in (",".join(self.computed), _ranges(self.computed), f"{len(self.computed)} leads"):
            head = f"{leads} computed by "
            room = LO_MAX - len(head) - len(tail)
            if room >= min(len(self.model), 12):
                return f"{head}{self.model[:room]}{tail}"
        return f"{len(self.computed)} leads computed{tail}"[:LO_MAX]

    def comments(self) -> list[str]:
        """WFDB header comment lines."""
        return [self.statement(), f"measured leads: {', '.join(self.measured)}",
                f"computed leads: {', '.join(self.computed)}", f"model: {self.model} sha256 {self.sha256}"]

    def npz_keys(self, leads: tuple[str, ...] = STANDARD_LEADS) -> dict[str, Any]:
        """Keys an NPZ output carries beside ``signal``, ``leads`` and ``rate_hz``."""
        return {"lead_roles": [self.role(lead) for lead in leads], "model": self.model,
                "model_sha256": self.sha256, "note": self.statement()}

    def to_dict(self) -> dict[str, Any]:
        """The report's ``provenance`` block."""
        return {"model": self.model, "model_sha256": self.sha256, "measured": list(self.measured),
                "computed": list(self.computed), "derived": list(self.derived), "note": self.statement()}


def _ranges(leads: tuple[str, ...]) -> str:
    """Runs of consecutive standard leads as ``III-aVF``: ``I,III-aVF,V2-V4,V6``."""
    idx = [STANDARD_LEADS.index(lead) for lead in leads]
    parts, start = [], 0
    for k in range(1, len(idx) + 1):
        if k == len(idx) or idx[k] != idx[k - 1] + 1:
            a, b = leads[start], leads[k - 1]
            parts.append(a if a == b else f"{a}-{b}" if k - start > 2 else f"{a},{b}")
            start = k
    return ",".join(parts)

"""Rolling-element bearing geometry and the fault frequencies it implies (BPFO, BPFI, BSF, FTF)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

#: fault frequency names, in the order features and events use them
FAULT_FREQUENCIES = ("ftf", "bsf", "bpfo", "bpfi")
#: which fault frequency points to which fault type
FAULT_TYPES = {"bpfo": "outer_race", "bpfi": "inner_race", "bsf": "rolling_element", "ftf": "cage"}


@dataclass(frozen=True)
class BearingGeometry:
    """Geometry of one bearing; the default is the Rexnord ZA-2115 of the IMS run-to-failure rig."""

    n_elements: int = 16
    element_diameter: float = 0.331
    pitch_diameter: float = 2.815
    contact_angle_deg: float = 15.17

    def __post_init__(self) -> None:
        if self.n_elements < 3 or not 0 < self.element_diameter < self.pitch_diameter:
            raise ValueError(f"implausible bearing geometry {self}")

    def orders(self) -> dict[str, float]:
        """Fault frequencies as multiples of the shaft frequency (outer race fixed, inner rotating).

        BSF is the rolling element's spin frequency; a spall on an element strikes both races once
        per spin, so its impacts come at 2 x BSF.
        """
        ratio = self.element_diameter / self.pitch_diameter * math.cos(math.radians(self.contact_angle_deg))
        return {
            "ftf": 0.5 * (1 - ratio),
            "bsf": self.pitch_diameter / (2 * self.element_diameter) * (1 - ratio**2),
            "bpfo": 0.5 * self.n_elements * (1 - ratio),
            "bpfi": 0.5 * self.n_elements * (1 + ratio),
        }

    def frequencies(self, shaft_hz: float) -> dict[str, float]:
        """Fault frequencies in Hz at a shaft speed of ``shaft_hz``."""
        return {name: order * shaft_hz for name, order in self.orders().items()}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

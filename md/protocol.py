"""MD protocols: the study's AIMD protocol by default, every number configurable.

study: start at 100 K, velocity-scaling ramp to the target over 5 ps, then Nosé–Hoover NVT;
2 fs step, 50 ps in total, the first 15 ps discarded from analysis.  Times in fs, temperatures K.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from common.config import check_fields, param
from common.errors import InputError

THERMOSTATS = ("nose-hoover", "langevin", "nve")


@dataclass(frozen=True)
class Protocol:
    """How one MD run integrates: time step, thermostat, length, equilibration, stride.  Times fs, K."""
    timestep_fs: float = param(2.0, "integration time step", unit="fs", gt=0)
    total_fs: float = param(50_000.0, "length of the run", unit="fs", gt=0)
    start_temperature_K: float = param(100.0, "temperature of the initial velocities when there is a ramp",
                                       unit="K", gt=0)
    ramp_fs: float = param(5_000.0, "velocity-scaling ramp from the start temperature to the target; 0 = none",
                           unit="fs", ge=0)
    discard_fs: float = param(15_000.0, "equilibration dropped before analysis", unit="fs", ge=0)
    thermostat: str = param("nose-hoover", "NVT thermostat after the ramp (nve: none)", choices=THERMOSTATS)
    nh_tau_fs: float = param(100.0, "Nosé-Hoover relaxation time", unit="fs", gt=0)
    nh_chain_length: int = param(3, "Nosé-Hoover chain length", gt=0)
    langevin_friction_per_fs: float = param(0.01, "Langevin friction", unit="1/fs", gt=0)
    rescale_every: int = param(1, "steps between velocity rescalings during the ramp", gt=0)
    stride: int = param(10, "steps between stored frames", gt=0)
    skin_A: float = param(1.0, "Verlet-list skin", unit="Å", ge=0)
    checkpoint_every: int = param(1000, "steps between checkpoints", gt=0)

    def __post_init__(self):
        check_fields(self)

    @classmethod
    def study(cls, **overrides) -> "Protocol":
        """The reference study's protocol (overrides change single numbers)."""
        return replace(cls(), **overrides)

    @classmethod
    def nvt(cls, **overrides) -> "Protocol":
        """Straight NVT at the target (no ramp, velocities drawn at the target)."""
        return replace(cls(ramp_fs=0.0, discard_fs=0.0), **overrides)

    @classmethod
    def nve(cls, **overrides) -> "Protocol":
        return replace(cls(ramp_fs=0.0, discard_fs=0.0, thermostat="nve"), **overrides)

    @classmethod
    def named(cls, name: str, **overrides) -> "Protocol":
        makers = {"study": cls.study, "nvt": cls.nvt, "nve": cls.nve,
                  "langevin": lambda **o: cls.nvt(thermostat="langevin", **o)}
        if name not in makers:
            raise InputError(f"unknown protocol {name!r}; choose one of {', '.join(makers)}")
        return makers[name](**overrides)

    def with_steps(self, n_steps: int) -> "Protocol":
        return replace(self, total_fs=n_steps * self.timestep_fs)

    @property
    def n_steps(self) -> int:
        return int(round(self.total_fs / self.timestep_fs))

    @property
    def ramp_steps(self) -> int:
        return int(round(self.ramp_fs / self.timestep_fs))

    @property
    def discard_frames(self) -> int:
        """Stored frames to drop before analysis (frames are every ``stride`` steps)."""
        return int(round(self.discard_fs / (self.timestep_fs * self.stride)))

    @property
    def initial_temperature_K(self) -> float | None:
        """Temperature of the initial velocities (None: each system's target)."""
        return self.start_temperature_K if self.ramp_fs > 0 else None

    def to_dict(self) -> dict:
        return asdict(self)

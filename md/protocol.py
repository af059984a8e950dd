"""MD protocols: the study's AIMD protocol by default, every number configurable.

study: start at 100 K, velocity-scaling ramp to the target over 5 ps, then Nosé–Hoover NVT;
2 fs step, 50 ps in total, the first 15 ps discarded from analysis.  Times in fs, temperatures K.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from common.errors import InputError

THERMOSTATS = ("nose-hoover", "langevin", "nve")


@dataclass(frozen=True)
class Protocol:
    timestep_fs: float = 2.0
    total_fs: float = 50_000.0
    start_temperature_K: float = 100.0
    ramp_fs: float = 5_000.0            # velocity-scaling ramp from start to target; 0 = none
    discard_fs: float = 15_000.0        # equilibration dropped before analysis
    thermostat: str = "nose-hoover"     # after the ramp: nose-hoover | langevin | nve
    nh_tau_fs: float = 100.0
    nh_chain_length: int = 3
    langevin_friction_per_fs: float = 0.01
    rescale_every: int = 1              # steps between velocity rescalings during the ramp
    stride: int = 10                    # steps between stored frames
    skin_A: float = 1.0                 # Verlet-list skin
    checkpoint_every: int = 1000        # steps between checkpoints

    def __post_init__(self):
        if self.timestep_fs <= 0 or self.total_fs <= 0:
            raise InputError(f"timestep ({self.timestep_fs} fs) and length ({self.total_fs} fs) must be positive")
        if self.thermostat not in THERMOSTATS:
            raise InputError(f"unknown thermostat {self.thermostat!r}; choose one of {', '.join(THERMOSTATS)}")
        if self.stride < 1 or self.checkpoint_every < 1:
            raise InputError("stride and checkpoint_every must be >= 1 step")
        if self.ramp_fs < 0 or self.discard_fs < 0:
            raise InputError("ramp_fs and discard_fs must be >= 0")

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

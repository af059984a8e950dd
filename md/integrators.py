"""Stateless integrators: functions of (state, forces, dt_fs, params) -> state; ``params`` is the run's
``md.protocol.Protocol`` (Langevin friction, Nosé-Hoover period, rescaling interval).

Every integrator is a pair of half steps around the one force evaluation per step::

    state = integ.first_half(state, dt_fs, params)     # uses state.forces (at current positions)
    state.forces = force_field(state.positions)         # the runner's single model call
    state = integ.second_half(state, dt_fs, params)

All per-system quantities (target temperature, chain variables, random streams) are rows of the
state, so one call advances every system in the batch.  Units: Å, fs, eV, amu, K.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from md.protocol import Protocol
from md.random import atom_normals, lanewise
from md.state import AMU_A2_FS2_IN_EV, KB_EV_PER_K, MDState

STREAM_INIT = 1
STREAM_LANGEVIN = 2


class Integrator(NamedTuple):
    name: str
    first_half: Callable[[MDState, float, Protocol], MDState]
    second_half: Callable[[MDState, float, Protocol], MDState]


# ---- building blocks ---------------------------------------------------------------------------
def _accel(state: MDState) -> torch.Tensor:
    return state.forces / (state.masses[:, None] * AMU_A2_FS2_IN_EV)


def kick(state: MDState, dt_fs: float) -> MDState:
    """v += a dt."""
    return state.replace(velocities=state.velocities + dt_fs * _accel(state))


def drift(state: MDState, dt_fs: float) -> MDState:
    """x += v dt."""
    return state.replace(positions=state.positions + dt_fs * state.velocities)


def remove_com_velocity(state: MDState) -> MDState:
    """Zero each system's total momentum."""
    return state.replace(velocities=state.velocities - state.com_velocity()[state.system_index])


def scale_to_temperature(state: MDState, temperature_K: torch.Tensor) -> MDState:
    """Rescale velocities so every system's instantaneous temperature equals ``temperature_K`` [S]."""
    current = state.temperature_K()
    factor = torch.where(current > 0, torch.sqrt(temperature_K / current.clamp(min=1e-30)), torch.zeros_like(current))
    return state.replace(velocities=state.velocities * factor[state.system_index, None])


def maxwell_boltzmann(state: MDState, temperature_K: torch.Tensor | None = None, exact: bool = True) -> MDState:
    """Maxwell–Boltzmann velocities from each system's own random stream, zero total momentum.

    With ``exact`` the velocities are rescaled so the instantaneous temperature equals the target.
    """
    temperature_K = state.target_temperature_K if temperature_K is None else temperature_K
    z = atom_normals(state.seed, state.step, state.atom_in_system, state.system_index, STREAM_INIT,
                     dtype=state.positions.dtype)
    kT = (KB_EV_PER_K * temperature_K)[state.system_index]
    sigma = torch.sqrt(kT / (state.masses * AMU_A2_FS2_IN_EV))
    state = remove_com_velocity(state.replace(velocities=z * sigma[:, None]))
    return scale_to_temperature(state, temperature_K) if exact else state


# ---- NVE: velocity Verlet ------------------------------------------------------------------------
def verlet_first(state, dt_fs, params=None):
    return drift(kick(state, 0.5 * dt_fs), dt_fs)


def verlet_second(state, dt_fs, params=None):
    return kick(state, 0.5 * dt_fs).replace(step=state.step + 1)


VELOCITY_VERLET = Integrator("nve", verlet_first, verlet_second)


# ---- Langevin NVT, BAOAB splitting ------------------------------------------------------------------
def langevin_first(state, dt_fs, params: Protocol):
    """B A O A: half kick, half drift, exact Ornstein–Uhlenbeck step (own stream), half drift."""
    state = drift(kick(state, 0.5 * dt_fs), 0.5 * dt_fs)
    c1 = torch.exp(torch.tensor(-params.langevin_friction_per_fs * dt_fs, dtype=state.positions.dtype))
    kT = (KB_EV_PER_K * state.target_temperature_K)[state.system_index]
    sigma = torch.sqrt((1 - c1 ** 2) * kT / (state.masses * AMU_A2_FS2_IN_EV))
    z = atom_normals(state.seed, state.step, state.atom_in_system, state.system_index, STREAM_LANGEVIN,
                     dtype=state.positions.dtype)
    state = state.replace(velocities=c1 * state.velocities + sigma[:, None] * z)
    state = remove_com_velocity(state)   # like ASE's fixcm: exact OU on the zero-momentum subspace
    return drift(state, 0.5 * dt_fs)


LANGEVIN = Integrator("langevin", langevin_first, verlet_second)


# ---- Nosé–Hoover chain NVT (Martyna–Tuckerman–Klein, one chain per system) ------------------------
def nose_hoover_masses(state: MDState, tau_fs: float) -> torch.Tensor:
    """[S,M] chain masses Q (eV fs^2): Q1 = Nf kT tau^2, Qj = kT tau^2."""
    kT = KB_EV_PER_K * state.target_temperature_K.clamp(min=1e-6)
    m = state.nh_eta.shape[1]
    q = (kT * tau_fs ** 2)[:, None].expand(-1, m).clone()
    q[:, 0] = q[:, 0] * state.degrees_of_freedom
    return q


def nose_hoover_half(state: MDState, dt_fs: float, params: Protocol) -> MDState:
    """Propagate every system's chain by dt/2 and scale its velocities (loop over chain links only)."""
    q = nose_hoover_masses(state, params.nh_tau_fs)
    kT = KB_EV_PER_K * state.target_temperature_K
    nf = state.degrees_of_freedom
    ke2 = 2.0 * state.kinetic_energy()
    v = [state.nh_veta[:, j] for j in range(q.shape[1])]
    eta = [state.nh_eta[:, j] for j in range(q.shape[1])]
    m = len(v)
    dt2, dt4, dt8 = dt_fs / 2, dt_fs / 4, dt_fs / 8

    def g(j, ke2_now):
        if j == 0:
            return (ke2_now - nf * kT) / q[:, 0]
        return (q[:, j - 1] * v[j - 1] ** 2 - kT) / q[:, j]

    v[m - 1] = v[m - 1] + dt4 * g(m - 1, ke2)
    for j in range(m - 2, -1, -1):
        e = lanewise(torch.exp, -dt8 * v[j + 1])
        v[j] = (v[j] * e + dt4 * g(j, ke2)) * e
    scale = lanewise(torch.exp, -dt2 * v[0])
    ke2 = ke2 * scale ** 2
    for j in range(m):
        eta[j] = eta[j] + dt2 * v[j]
    for j in range(m - 1):
        e = lanewise(torch.exp, -dt8 * v[j + 1])
        v[j] = (v[j] * e + dt4 * g(j, ke2)) * e
    v[m - 1] = v[m - 1] + dt4 * g(m - 1, ke2)
    return state.replace(velocities=state.velocities * scale[state.system_index, None],
                         nh_veta=torch.stack(v, 1), nh_eta=torch.stack(eta, 1))


def nose_hoover_first(state, dt_fs, params: Protocol):
    return verlet_first(nose_hoover_half(state, dt_fs, params), dt_fs)


def nose_hoover_second(state, dt_fs, params: Protocol):
    return nose_hoover_half(verlet_second(state, dt_fs), dt_fs, params)


NOSE_HOOVER = Integrator("nose-hoover", nose_hoover_first, nose_hoover_second)


def nose_hoover_energy(state: MDState, tau_fs: float) -> torch.Tensor:
    """[S] eV: the chain's energy; PE + KE + this is conserved by Nosé–Hoover-chain dynamics."""
    q = nose_hoover_masses(state, tau_fs)
    kT = KB_EV_PER_K * state.target_temperature_K
    kin = 0.5 * (q * state.nh_veta ** 2).sum(1)
    pot = state.degrees_of_freedom * kT * state.nh_eta[:, 0] + kT * state.nh_eta[:, 1:].sum(1)
    return kin + pot


# ---- velocity-scaling ramp -------------------------------------------------------------------------
def rescale_second(state, dt_fs, params: Protocol):
    """Verlet second half, then rescale to the (possibly ramped) target every ``rescale_every`` steps."""
    state = verlet_second(state, dt_fs)
    due = (state.step % max(1, params.rescale_every) == 0)
    if bool(due.all()):
        return scale_to_temperature(state, state.target_temperature_K)
    scaled = scale_to_temperature(state, state.target_temperature_K)
    return state.replace(velocities=torch.where(due[state.system_index, None], scaled.velocities, state.velocities))


VELOCITY_SCALING = Integrator("velocity-scaling", verlet_first, rescale_second)

INTEGRATORS = {i.name: i for i in (VELOCITY_VERLET, LANGEVIN, NOSE_HOOVER, VELOCITY_SCALING)}


def ramp_temperature_K(start_K: torch.Tensor, end_K: torch.Tensor, time_fs: torch.Tensor, ramp_fs: float) -> torch.Tensor:
    """Linear ramp from ``start_K`` to ``end_K`` over ``ramp_fs``; ``end_K`` afterwards."""
    if ramp_fs <= 0:
        return end_K
    frac = (time_fs / ramp_fs).clamp(0.0, 1.0)
    return start_K + (end_K - start_K) * frac

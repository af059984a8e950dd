"""Trajectory files in the layouts VASP and LAMMPS write them (the tests' stand-ins for a user's AIMD).

Each writer takes one trajectory: ``cell`` [3,3] Å, ``symbols`` [N], ``positions`` [F,N,3] Å (Cartesian),
optional ``energies`` [F] eV and ``forces`` [F,N,3] eV/Å, and, for vasprun.xml and OUTCAR, the INCAR
settings POTIM (fs) and TEBEG (K) that say the time step and the temperature.
"""
from __future__ import annotations

import numpy as np


def _v(rows) -> str:
    return "".join(f"    <v> {' '.join(f'{x:.8f}' for x in r)} </v>\n" for r in rows)


def _types(symbols) -> list[tuple[str, int]]:
    """(element, count) in order of first appearance (VASP groups atoms by type)."""
    out: list[tuple[str, int]] = []
    for s in symbols:
        if out and out[-1][0] == s:
            out[-1] = (s, out[-1][1] + 1)
        else:
            out.append((s, 1))
    return out


def vasprun_text(cell, symbols, positions, energies, forces=None, potim=None, tebeg=None, complete=True) -> str:
    cell = np.asarray(cell, float)
    inv = np.linalg.inv(cell)
    calcs = []
    for k, pos in enumerate(positions):
        e = energies[k]
        frc = f'   <varray name="forces">\n{_v(forces[k])}   </varray>\n' if forces is not None else ""
        calcs.append(f"""  <calculation>
   <scstep>
    <energy><i name="e_fr_energy"> {e:.6f} </i><i name="e_wo_entrp"> {e:.6f} </i><i name="e_0_energy"> {e:.6f} </i></energy>
   </scstep>
   <structure>
    <crystal><varray name="basis">
{_v(cell)}    </varray></crystal>
    <varray name="positions">
{_v(np.asarray(pos) @ inv)}    </varray>
   </structure>
{frc}   <varray name="stress">
{_v(np.eye(3) * 1.5)}   </varray>
   <energy><i name="e_fr_energy"> {e:.6f} </i><i name="e_wo_entrp"> {e:.6f} </i><i name="e_0_energy"> {e:.6f} </i></energy>
  </calculation>
""")
    params = f'<i name="NSW"> {len(positions)} </i>'
    if potim is not None:
        params += f'\n  <i name="POTIM">      {potim:.8f}</i>'
    if tebeg is not None:
        params += f'\n  <i name="TEBEG">   {tebeg:.8f}</i>'
    rc = "".join(f"    <rc><c>{s:<2}</c><c>{[t for t, _ in _types(symbols)].index(s) + 1:4d}</c></rc>\n" for s in symbols)
    text = f"""<?xml version="1.0" encoding="ISO-8859-1"?>
<modeling>
 <generator><i name="program" type="string">vasp </i></generator>
 <kpoints>
  <varray name="kpointlist">
   <v>       0.00000000       0.00000000       0.00000000 </v>
  </varray>
  <varray name="weights">
   <v>       1.00000000 </v>
  </varray>
 </kpoints>
 <parameters>{params}</parameters>
 <atominfo>
  <atoms> {len(symbols)} </atoms>
  <types> {len(_types(symbols))} </types>
  <array name="atoms">
   <dimension dim="1">ion</dimension>
   <field type="string">element</field>
   <field type="int">atomtype</field>
   <set>
{rc}   </set>
  </array>
 </atominfo>
 <structure name="initialpos">
  <crystal><varray name="basis">
{_v(cell)}  </varray></crystal>
  <varray name="positions">
{_v(np.asarray(positions[0]) @ inv)}  </varray>
 </structure>
{''.join(calcs)}"""
    return text + ("</modeling>\n" if complete else "")


def outcar_text(cell, symbols, positions, energies, forces, potim=None, tebeg=None, complete=True) -> str:
    cell = np.asarray(cell, float)
    recip = np.linalg.inv(cell).T
    types = _types(symbols)
    pot = "".join(f" POTCAR:    PAW_PBE {t} 06Sep2000\n" for t, _ in types)
    head = (" vasp.6.3.0 (fake, written by the matscreen tests)\n" + pot + pot
            + "   ISPIN  =      1    spin polarized calculation?\n"
            + (f"   POTIM  =   {potim:.4f}    time-step for ionic-motion\n" if potim is not None else "")
            + (f"   TEBEG  =  {tebeg:.1f};   TEEND  =  {tebeg:.1f} temperature during run\n" if tebeg is not None else "")
            + f"   ions per type =  {'  '.join(str(n) for _, n in types)}\n")
    lattice = "".join(f"  {a[0]:14.9f}{a[1]:14.9f}{a[2]:14.9f}   {b[0]:14.9f}{b[1]:14.9f}{b[2]:14.9f}\n"
                      for a, b in zip(cell, recip))
    chunks = []
    for k, pos in enumerate(positions):
        rows = "".join(f" {p[0]:12.5f} {p[1]:12.5f} {p[2]:12.5f} {f[0]:14.6f} {f[1]:14.6f} {f[2]:14.6f}\n"
                       for p, f in zip(pos, forces[k]))
        e = energies[k]
        chunks.append(f"""--------------------------------------- Iteration      {k + 1}(   1)  ---------------------------------------
  in kB       1.50000     1.50000     1.50000     0.00000     0.00000     0.00000
      direct lattice vectors                 reciprocal lattice vectors
{lattice} POSITION                                       TOTAL-FORCE (eV/Angst)
 -----------------------------------------------------------------------------------
{rows} -----------------------------------------------------------------------------------
  FREE ENERGIE OF THE ION-ELECTRON SYSTEM (eV)
  ---------------------------------------------------
  free  energy   TOTEN  =       {e:.8f} eV

  energy  without entropy=      {e:.8f}  energy(sigma->0) =      {e:.8f}
""")
    tail = "\n General timing and accounting informations for this job:\n" if complete else ""
    return head + "".join(chunks) + tail


def xdatcar_text(cell, symbols, positions, title="matscreen test") -> str:
    """VASP 5 XDATCAR: header once (constant cell), then ``Direct configuration= k`` blocks of fractions."""
    cell = np.asarray(cell, float)
    inv = np.linalg.inv(cell)
    types = _types(symbols)
    out = [f"{title}\n", "           1\n", *(f"    {a[0]:11.6f} {a[1]:11.6f} {a[2]:11.6f}\n" for a in cell),
           "   " + "".join(f"{t:>5}" for t, _ in types) + "\n", "   " + "".join(f"{n:5d}" for _, n in types) + "\n"]
    for k, pos in enumerate(positions, 1):
        out.append(f"Direct configuration= {k:5d}\n")
        out.extend(f"  {f[0]:.8f}  {f[1]:.8f}  {f[2]:.8f}\n" for f in (np.asarray(pos) @ inv) % 1.0)
    return "".join(out)


def lammps_dump_text(cell, type_ids, positions, every=10) -> str:
    """LAMMPS ``dump atom custom id type x y z`` of an orthorhombic box (types only, no elements)."""
    lengths = np.diag(np.asarray(cell, float))
    out = []
    for k, pos in enumerate(positions):
        out.append(f"ITEM: TIMESTEP\n{k * every}\nITEM: NUMBER OF ATOMS\n{len(pos)}\nITEM: BOX BOUNDS pp pp pp\n")
        out.extend(f"0.0 {x:.10f}\n" for x in lengths)
        out.append("ITEM: ATOMS id type x y z\n")
        wrapped = np.asarray(pos) % lengths
        out.extend(f"{i + 1} {t} {p[0]:.8f} {p[1]:.8f} {p[2]:.8f}\n" for i, (t, p) in enumerate(zip(type_ids, wrapped)))
    return "".join(out)

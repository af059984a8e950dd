"""ASE io plugin entry point (group ``ase.ioformats``, name ``matscreen-h5``).

Kept tiny: ASE loads it whenever ``ase.io`` is imported; the reader lives in
:func:`md.trajectory.read_matscreen_h5` and is imported only when a file is read.
"""
from ase.utils.plugins import ExternalIOFormat

matscreen_h5 = ExternalIOFormat(
    desc="matscreen MD trajectory (HDF5)",
    code="+S",
    module="md.trajectory",
    ext="h5",
    magic=b"\x89HDF\r\n\x1a\n",
)

"""Units and conversions. eV, Å, eV/Å, GPa at every user-facing boundary."""

from ase.units import GPa as _ASE_GPA

#: 1 GPa in eV/Å³ (= 0.0062415091...). Pressure enters the code in eV/Å³.
GPA = float(_ASE_GPA)
#: 1 eV/Å³ in GPa.
EV_PER_A3_IN_GPA = 1.0 / GPA


def gpa_to_ev_per_a3(p_gpa: float) -> float:
    return p_gpa * GPA


def ev_per_a3_to_gpa(p: float) -> float:
    return p / GPA

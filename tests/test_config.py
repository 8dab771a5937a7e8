"""Campaign config (alcsp.config): the demo parses, and every kind of bad input is refused
with a message that names the table and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from alcsp.config import TABLES, ConfigError, load_config, parse_config
from alcsp.units import GPA

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo-cuau-emt.toml"

MINIMAL = """
[campaign]
name = "t"

[compositions]
elements = ["Cu", "Au"]
max_formula_atoms = 2

[oracle]
name = "emt"
"""


def test_demo_config_parses_into_typed_objects():
    cfg = load_config(DEMO)
    assert cfg.elements == ("Cu", "Au")
    assert cfg.model.species == ("Cu", "Au")  # species come from [compositions]
    assert cfg.campaign.name == "cuau-emt-demo"
    assert cfg.campaign.max_iterations == 5
    assert cfg.campaign.initial_structures == 40
    assert cfg.model.embedding == (32, 32) and cfg.model.fitting == (64, 64)
    assert cfg.train.dtype == "float64" and cfg.train.steps == 1500
    assert cfg.oracle.name == "emt"
    assert cfg.final.structures == 7
    assert cfg.relax.fmax == pytest.approx(0.005)
    sel = cfg.selection.for_iteration(1)
    assert (sel.c_max, sel.l_max, sel.b_max) == (7, 2, 64)
    assert cfg.text == DEMO.read_text()


def test_minimal_config_gets_defaults_and_pressure_reaches_the_generator():
    cfg = parse_config(MINIMAL + "\n")
    assert cfg.campaign.pressure == 0.0
    assert cfg.final.structures == 5
    cfg = parse_config(MINIMAL.replace('name = "t"', 'name = "t"\npressure = 300.0'))
    assert cfg.campaign.pressure == 300.0
    assert cfg.generate.pressure_gpa == 300.0
    assert 300.0 * GPA == pytest.approx(1.87245, rel=1e-4)  # eV/Å³ used internally


def test_selection_schedule_from_iteration():
    text = (
        MINIMAL
        + """
[[selection]]
c_max = 4
l_max = 1

[[selection]]
from_iteration = 3
c_max = 9
l_max = 2
"""
    )
    cfg = parse_config(text)
    assert cfg.selection.for_iteration(1).c_max == 4
    assert cfg.selection.for_iteration(2).c_max == 4
    assert cfg.selection.for_iteration(3).c_max == 9
    assert cfg.selection.for_iteration(10).l_max == 2


def test_unknown_table_is_named():
    with pytest.raises(ConfigError, match=r"unknown tables \['modle'\]"):
        parse_config(MINIMAL + "\n[modle]\nembedding = [8]\n")


@pytest.mark.parametrize(
    "table",
    [
        "campaign",
        "compositions",
        "generate",
        "relax",
        "selection",
        "dedup",
        "model",
        "train",
        "oracle",
        "final",
        "executor",
    ],
)
def test_unknown_field_in_each_table_is_named(table):
    assert table in TABLES
    if table in ("campaign", "compositions", "oracle"):
        text = MINIMAL.replace(f"[{table}]\n", f"[{table}]\nbogus_field = 1\n")
    elif table == "selection":
        text = MINIMAL + "\n[[selection]]\nbogus_field = 1\n"
    else:
        text = MINIMAL + f"\n[{table}]\nbogus_field = 1\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    msg = str(err.value)
    assert "bogus_field" in msg
    assert table in msg


def test_unknown_field_in_dedup_fingerprint_is_named():
    with pytest.raises(ConfigError, match="dedup.fingerprint.*bogus"):
        parse_config(MINIMAL + "\n[dedup.fingerprint]\nbogus = 1\n")


@pytest.mark.parametrize("table", ["oracle", "compositions", "campaign"])
def test_required_tables(table):
    lines = MINIMAL.split("\n")
    start = lines.index(f"[{table}]")
    end = next((k for k in range(start + 1, len(lines)) if lines[k].startswith("[")), len(lines))
    text = "\n".join(lines[:start] + lines[end:])
    with pytest.raises(ConfigError, match=rf"\[{table}\] table is required"):
        parse_config(text)


@pytest.mark.parametrize(
    ("replace", "pattern"),
    [
        ("pressure = -2.0", r"\[campaign\] pressure .* > -1"),
        ("pressure = -1.0", r"\[campaign\] pressure .* > -1"),
        ("pressure = nan", r"\[campaign\] pressure must be a finite"),
        ("max_iterations = 0", r"\[campaign\] max_iterations must be an integer >= 1"),
        ("max_iterations = 2.5", r"\[campaign\] max_iterations must be an integer >= 1"),
        ("max_iterations = true", r"\[campaign\] max_iterations must be an integer >= 1"),
        ("relax_chunk = 0", r"\[campaign\] relax_chunk"),
        ("initial_structures = -1", r"\[campaign\] initial_structures must be an integer >= 0"),
        ("hull_tolerance = 0.0", r"\[campaign\] hull_tolerance must be > 0"),
        ("report_ehull = -0.1", r"\[campaign\] report_ehull"),
        ('name = "a/b"', r"\[campaign\] name must be a plain"),
        ('decorations = ["diamond"]', r"\[campaign\] decorations must be a list of lattices"),
        ('decorations = "fcc"', r"\[campaign\] decorations must be a list of lattices"),
        ("oracle_per_iteration = -5", r"\[campaign\] oracle_per_iteration must be an integer"),
        ("failure_share = 1.5", r"\[campaign\] failure_share must be a number in \[0, 1\]"),
        ("stop_window = -0.01", r"\[campaign\] stop_window must be a number >= 0"),
        (
            "stop_window = 0.001",
            r"\[campaign\] stop_window = 0.001 eV/atom is below "
            r"hull_tolerance = 0.005.*set stop_window >= hull_tolerance",
        ),
    ],
)
def test_bad_campaign_values(replace, pattern):
    key = replace.split(" = ")[0]
    text = MINIMAL.replace('name = "t"', replace if key == "name" else f'name = "t"\n{replace}')
    with pytest.raises(ConfigError, match=pattern):
        parse_config(text)


def test_a_negative_pressure_above_minus_one_gpa_is_allowed():
    assert parse_config(MINIMAL.replace('name = "t"', 'name = "t"\npressure = -0.5'))


@pytest.mark.parametrize(
    ("tables", "pattern"),
    [
        ("[[selection]]\nfrom_iteration = 0\n", "from_iteration = an integer >= 1"),
        ('[[selection]]\nfrom_iteration = "2"\n', "from_iteration = an integer >= 1"),
        ("[[selection]]\nfrom_iteration = 2\n", "first table applies from iteration 1"),
        ("[[selection]]\nc_max = 1\n[[selection]]\nc_max = 2\n", r"table 2 needs from_iteration"),
        (
            "[[selection]]\nc_max = 1\n[[selection]]\nfrom_iteration = 1\n",
            "from_iteration values must be distinct",
        ),
        ("[[selection]]\nc_max = -1\n", r"\[selection\].*c_max must be an integer >= 0"),
        (
            '[[selection]]\nrule = "greedy"\n',
            r"\[selection\] rule must be one of \['paper', 'committee'\]",
        ),
        ("[[selection]]\nkappa = -0.5\n", r"\[selection\] kappa must be a finite number >= 0"),
        ("[[selection]]\nforce_deviation = -1.0\n", r"\[selection\] force_deviation must be"),
    ],
)
def test_bad_selection_schedule(tables, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_config(MINIMAL + "\n" + tables)


@pytest.mark.parametrize(
    ("table", "line", "pattern"),
    [
        ("final", "structures = -1", r"\[final\] structures must be an integer >= 0"),
        ("final", "fmax = 0.0", r"\[final\] fmax must be > 0"),
        ("model", "harmonic_degree = 7", r"\[model\].*harmonic_degree must be in 0..4"),
        ("train", 'dtype = "float16"', r"\[train\].*dtype must be one of"),
        ("train", "steps = 0", r"\[train\].*steps must be >= 1"),
        ("oracle", 'name = "nosuchcode"', "unknown oracle 'nosuchcode'"),
        ("oracle", 'name = "emt"\nparameters = {ecut = 300}', r"unknown parameters \['ecut'\]"),
        ("compositions", 'elements = ["Cu", "Xx"]', "Xx"),
        ("executor", 'kind = "carrier-pigeon"', "carrier-pigeon"),
    ],
)
def test_bad_values_name_their_table(table, line, pattern):
    """Bad values are refused by parse_config itself, before any campaign directory exists."""
    current = {"oracle": 'name = "emt"', "compositions": 'elements = ["Cu", "Au"]'}
    if table in current:
        text = MINIMAL.replace(current[table], line)
    else:
        text = MINIMAL + f"\n[{table}]\n{line}\n"
    with pytest.raises(ConfigError, match=pattern):
        parse_config(text)


@pytest.fixture
def fresh_notices(monkeypatch):
    """The config's notices as if none had been given yet in this process."""
    import alcsp.config

    monkeypatch.setattr(alcsp.config, "_noticed", set())


def test_model_l_max_is_the_old_name_of_harmonic_degree_with_a_notice(fresh_notices, caplog):
    """[model] l_max (the descriptor's degree) shared its name with [[selection]] l_max (the
    paper's L_max): now harmonic_degree; the old name is read, with a one-line notice."""
    text = MINIMAL + "\n[[selection]]\nl_max = 3\n\n[model]\nl_max = 2\n"
    with caplog.at_level("WARNING", logger="alcsp.config"):
        cfg = parse_config(text)
        parse_config(text)  # once per process, however often a command parses it
    assert cfg.model.harmonic_degree == 2
    assert cfg.selection.for_iteration(1).l_max == 3  # the selection's L_max keeps its name
    assert cfg == parse_config(text.replace("[model]\nl_max", "[model]\nharmonic_degree"))
    (record,) = caplog.records
    line = record.getMessage()
    assert "\n" not in line and "[model] l_max" in line and "harmonic_degree = 2" in line
    assert "[[selection]] l_max" in line  # says which l_max stays


def test_model_l_max_and_harmonic_degree_together_is_one_error(fresh_notices):
    text = MINIMAL + "\n[model]\nl_max = 2\nharmonic_degree = 2\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    message = str(err.value)
    assert "\n" not in message
    assert "[model]" in message and "l_max" in message and "harmonic_degree" in message


def test_old_name_notice_on_the_command_line_is_one_line(tmp_path):
    """What `alcsp run` prints for an old name: the notice, then (here) the config's error."""
    import subprocess
    import sys

    cfg = tmp_path / "c.toml"
    cfg.write_text(MINIMAL + "\n[model]\nl_max = 2\n\n[train]\nsteps = 0\n")
    out = subprocess.run(
        [sys.executable, "-m", "alcsp.cli", "run", str(cfg), "--dir", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    notice, error = out.stderr.splitlines()
    assert notice.startswith("alcsp: notice: [model] l_max is now called harmonic_degree")
    assert error.startswith("alcsp run: error: [train]")
    assert not (tmp_path / "x").exists()


def test_species_in_model_is_refused_and_points_to_compositions():
    with pytest.raises(ConfigError) as err:
        parse_config(MINIMAL + '\n[model]\nspecies = ["Cu", "Au"]\n')
    msg = str(err.value)
    assert "[model]" in msg and "species" in msg
    assert "[compositions] elements" in msg


def test_pressure_in_generate_is_refused_and_points_to_campaign():
    with pytest.raises(ConfigError) as err:
        parse_config(MINIMAL + "\n[generate]\npressure_gpa = 10.0\n")
    msg = str(err.value)
    assert "pressure_gpa" in msg and "[campaign] pressure" in msg


def test_not_toml_and_missing_file():
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[campaign\nname = 1", source="x.toml")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config("/nonexistent/config.toml")

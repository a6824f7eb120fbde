"""The analysts' notebooks run end to end: four on the generated city, one on real Den Haag data."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "notebooks"


def execute(name: str, monkeypatch, database_url: str, data_dir: Path, shared_data: Path) -> nbformat.NotebookNode:
    monkeypatch.setenv("CITYTWIN_DATABASE_URL", database_url)
    monkeypatch.setenv("CITYTWIN_DATA_DIR", str(data_dir))
    monkeypatch.setenv("CITYTWIN_SHARED_DATA", str(shared_data))
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    nbformat.write(book, ARTIFACTS / name)  # executed copies with their plots, for looking at
    return book


def outputs(book: nbformat.NotebookNode) -> list[dict]:
    return [out for cell in book.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


@pytest.mark.parametrize("name", ["01_city_overview.ipynb", "02_storm_what_if.ipynb",
                                  "03_energy_and_feeder_peaks.ipynb", "04_telemetry_analysis.ipynb"])
def test_notebook_on_generated_city(name: str, demo_twin, monkeypatch, shared_data: Path) -> None:
    url, data_dir = demo_twin
    book = execute(name, monkeypatch, url, data_dir, shared_data)
    produced = outputs(book)
    assert not [o for o in produced if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in produced), "every notebook draws at least one plot"


def test_notebook_on_real_den_haag_data(database_url: str, tmp_path: Path, monkeypatch, shared_data: Path) -> None:
    book = execute("05_real_data_den_haag.ipynb", monkeypatch, database_url, tmp_path, shared_data)
    text = "".join(o.get("text", "") for o in outputs(book))
    assert "844 buildings imported in EPSG:28992" in text
    assert any("image/png" in o.get("data", {}) for o in outputs(book))

"""A model trained on an image folder read with ``size``/``channels`` records those options, so
that ``predict`` and ``evaluate`` read a field folder as its training images were read without
being told again (an option given explicitly still wins); a model file without the record
refuses as before, naming the option, and a crafted record is refused on loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import transferkit as tk
from conftest import FAST, CliRunner, error_line
from transferkit.data.files import FileOptions, load_file_pair
from transferkit.data.inputs import IMAGE_READ_ATTR
from transferkit.errors import CheckpointError, DataError
from transferkit.model_file import image_read_options

RUN = {**FAST, "steps_per_epoch": 2, "batch_size": 4}
TRAIN = {**RUN, "model_options": {"widths": [8]}}
NOTE = "as the model's training images were"


def save_images(folder: Path, count: int, size: tuple[int, int], seed: int) -> Path:
    """``count`` colour PNGs of ``size`` (width, height) in ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"{i}.png")
    return folder


def image_folder(root: Path, count: int, size: tuple[int, int]) -> Path:
    for seed, name in enumerate(("ant", "bee")):
        save_images(root / name, count, size, seed + len(root.name))
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A run trained on 10x12 images read with size=8, its training folder, and field photos
    of another size (14x9) that need size=8 to fit the model."""
    root = tmp_path_factory.mktemp("images")
    train = image_folder(root / "train", 6, (10, 12))
    photos = image_folder(root / "photos", 3, (14, 9))
    tk.train("mlp", str(train), data_options={"size": 8}, out=root / "run", **TRAIN)
    return root / "run", train, photos


def test_the_run_records_only_the_options_given(trained: tuple[Path, Path, Path]) -> None:
    run, _, _ = trained
    assert getattr(tk.load_model(run), IMAGE_READ_ATTR) == {"size": 8}
    assert torch.load(run / "model.pt", weights_only=False)["image_read"] == {"size": 8}


def test_predict_and_evaluate_read_a_folder_as_the_training_images_were(
    trained: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run, _, photos = trained
    capsys.readouterr()
    found = tk.predict(run, str(photos))
    err = capsys.readouterr().err
    assert f"{photos}: images read with size=8 {NOTE}" in err
    given = tk.predict(run, str(photos), data_options={"size": 8})
    assert NOTE not in capsys.readouterr().err  # nothing added: no note
    assert found.rows == given.rows and len(found) == 6
    assert torch.equal(found.predicted, given.predicted)
    assert torch.allclose(found.probs, given.probs)
    scores = tk.evaluate(run, str(photos))
    assert any(f"images read with size=8 {NOTE}" in n for n in scores.notes)
    assert NOTE in capsys.readouterr().err
    alike = tk.evaluate(run, str(photos), data_options={"size": 8})
    assert scores["test"] == alike["test"]
    # a pair's target is read alike by predict
    assert torch.equal(tk.predict(run, f"{photos}->{photos}").predicted, found.predicted)


def test_the_cli_reads_the_folder_alike_and_says_so(
    trained: tuple[Path, Path, Path], cli: CliRunner, tmp_path: Path
) -> None:
    run, _, photos = trained
    code, out, err = cli("predict", run, "--data", photos, "--out", tmp_path / "p.csv")
    assert code == 0 and "wrote 6 predictions" in out
    assert [line for line in err.splitlines() if NOTE in line] == [
        f"{photos}: images read with size=8 {NOTE} (its record; --data-opt, data_options in "
        "Python, reads them otherwise)"]
    code, out, err = cli("evaluate", run, "--data", photos)
    assert code == 0 and NOTE in err


def test_an_option_given_explicitly_wins(trained: tuple[Path, Path, Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    run, _, photos = trained
    capsys.readouterr()
    with pytest.raises(DataError, match=r"photos: images 3x6x6, the model takes inputs 3x8x8: "
                       r"pass --data-opt size=8$"):
        tk.predict(run, str(photos), data_options={"size": 6})
    assert "images read with size=6 as given, not with size=8 " + NOTE in capsys.readouterr().err
    with pytest.raises(DataError, match=r"images 3x6x6, the model takes inputs 3x8x8"):
        tk.evaluate(run, str(photos), data_options={"size": "6"})
    # an option the record lacks is taken as given, beside the recorded one
    grey = tk.predict(run, str(photos), data_options={"channels": 3})
    assert f"images read with size=8 {NOTE}" in capsys.readouterr().err and len(grey) == 6
    with pytest.raises(DataError, match=r"images 1x8x8, the model takes inputs 3x8x8: pass "
                       r"--data-opt channels=3$"):
        tk.predict(run, str(photos), data_options={"channels": 1})


def test_a_model_file_without_the_record_still_names_the_option(
    trained: tuple[Path, Path, Path], tmp_path: Path, cli: CliRunner
) -> None:
    run, _, photos = trained
    saved = torch.load(run / "model.pt", weights_only=False)
    del saved["image_read"]
    old = tmp_path / "old.pt"
    torch.save(saved, old)
    assert getattr(tk.load_model(old), IMAGE_READ_ATTR) is None
    with pytest.raises(DataError, match=r"photos: images 3x9x14, the model takes inputs 3x8x8: "
                       r"pass --data-opt size=8$"):
        tk.predict(old, str(photos))
    with pytest.raises(DataError, match=r"pass --data-opt size=8$"):
        tk.evaluate(old, str(photos))
    code, _, err = cli("predict", old, "--data", photos, "--out", tmp_path / "p.csv")
    assert code == 2 and "pass --data-opt size=8" in error_line(err)
    assert len(tk.predict(old, str(photos), data_options={"size": 8})) == 6


@pytest.mark.parametrize("record", [{"size": -1}, {"size": 10**9}, {"size": "abc"},
                                    {"channels": 7}, [8], {"size": 8, "colour": 1},
                                    {"size": True}, {}, {"size": 6}, {"channels": 1}])
def test_a_crafted_record_is_refused_naming_the_file(
    trained: tuple[Path, Path, Path], tmp_path: Path, cli: CliRunner, record: object
) -> None:
    run, _, photos = trained
    saved = torch.load(run / "model.pt", weights_only=False)
    saved["image_read"] = record
    crafted = tmp_path / "crafted.pt"
    torch.save(saved, crafted)
    with pytest.raises(CheckpointError, match=r"crafted\.pt: its image read record is damaged"):
        tk.load_model(crafted)
    code, _, err = cli("predict", crafted, "--data", photos, "--out", tmp_path / "p.csv")
    assert code == 2 and "crafted.pt: its image read record is damaged" in error_line(err)


def test_data_without_image_options_records_nothing(
    trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, train, _ = trained
    rng = np.random.default_rng(0)
    arrays = tk.from_arrays(rng.random((12, 3, 8, 8), dtype=np.float32), np.arange(12) % 2)
    for data, options in ((arrays, None), (str(train), None)):  # arrays; a folder as it is
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        model = tk.train("mlp", data, data_options=options, out=out, **TRAIN).model
        assert getattr(model, IMAGE_READ_ATTR) is None
        assert "image_read" not in torch.load(out / "model.pt", weights_only=False)
        assert getattr(tk.load_model(out), IMAGE_READ_ATTR) is None


def test_a_student_and_a_pair_record_their_own_reading(trained: tuple[Path, Path, Path],
                                                       tmp_path: Path) -> None:
    run, train, photos = trained
    student = tk.distill(run, "mlp", str(train), data_options={"size": 8, "channels": 3},
                         student_options={"widths": [8]}, out=tmp_path / "student", **RUN)
    assert getattr(student.model, IMAGE_READ_ATTR) == {"size": 8, "channels": 3}
    assert getattr(tk.load_model(tmp_path / "student"), IMAGE_READ_ATTR) == {
        "size": 8, "channels": 3}
    pair = load_file_pair(train, photos, FileOptions(size=8))
    assert image_read_options(pair) == {"size": 8}
    assert pair.target.image_read == pair.source.image_read == {"size": 8}


def test_an_exported_file_carries_the_record(trained: tuple[Path, Path, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run, _, photos = trained
    report = tk.export(run, "torchscript", rows=8)
    exported = tk.load_model(report["file"])
    assert getattr(exported, IMAGE_READ_ATTR) == {"size": 8}
    capsys.readouterr()
    found = tk.predict(report["file"], str(photos))
    assert NOTE in capsys.readouterr().err
    assert torch.equal(found.predicted, tk.predict(run, str(photos)).predicted)

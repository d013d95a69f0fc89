import shutil

import yaml
from typer.testing import CliRunner

from autolabel.cli.app import app
from autolabel.store import Store
from tests.builders import bad_corpus, rgb

runner = CliRunner()


def test_init_registers_images_and_records_bad_files(tmp_path):
    expected = bad_corpus(tmp_path / "raw")
    result = runner.invoke(app, ["init", "--images", str(tmp_path / "raw"), "-w", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "5 files skipped" in result.output
    store = Store.open(tmp_path / ".autolabel" / "state.db")
    images = {im.path: im for im in store.images(include_errors=True)}
    assert set(images) == set(expected)
    for name, outcome in expected.items():
        if outcome == "ok":
            assert images[name].status == "unlabeled" and images[name].note is None
        elif images[name].status == "error":
            assert outcome in images[name].error
            assert name in result.output
        else:
            assert outcome in images[name].note
    assert (images["rotated.jpg"].width, images["rotated.jpg"].height) == (20, 60)


def test_rerun_on_grown_folder_registers_only_new_images(tmp_path):
    rgb(tmp_path / "raw" / "a" / "1.jpg")
    args = ["init", "--images", str(tmp_path / "raw"), "-w", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    rgb(tmp_path / "raw" / "b" / "2.jpg", seed=1)
    shutil.copy(tmp_path / "raw" / "a" / "1.jpg", tmp_path / "raw" / "b" / "copy.jpg")
    result = runner.invoke(app, args)
    assert "3 images found, 2 new" in result.output
    images = {im.path: im for im in Store.open(tmp_path / ".autolabel" / "state.db").images()}
    assert images["b/2.jpg"].source_group == "b"
    # an exact copy joins the original's group so the two can never straddle train and val
    assert images["b/copy.jpg"].source_group == "a"


def test_bad_config_key_is_one_line(tmp_path):
    rgb(tmp_path / "raw" / "1.jpg")
    assert runner.invoke(app, ["init", "--images", str(tmp_path / "raw"), "-w", str(tmp_path)]).exit_code == 0
    config = yaml.safe_load((tmp_path / "autolabel.yaml").read_text())
    config["proposer"]["box_treshold"] = 0.2
    (tmp_path / "autolabel.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["propose", "--prompt", "bolt", "-w", str(tmp_path)])
    assert result.exit_code == 2
    assert "proposer.box_treshold: unknown key" in result.output
    assert "Traceback" not in result.output


def test_missing_images_folder_is_one_line(tmp_path):
    result = runner.invoke(app, ["init", "--images", str(tmp_path / "nope"), "-w", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: images folder not found")


def test_a_file_name_that_is_not_utf8_is_reported_and_the_rest_registered(tmp_path):
    import os

    from autolabel.workspace import Workspace

    raw = tmp_path / "raw"
    rgb(raw / "good.jpg")
    rgb(raw / "other.jpg", seed=1)
    bad = os.path.join(os.fsencode(raw), b"caf\xe9.jpg")  # Latin-1 bytes: not UTF-8
    with open(bad, "wb") as fh:
        fh.write((raw / "good.jpg").read_bytes())
    result = CliRunner().invoke(app, ["init", "--images", str(raw), "-w", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "not valid UTF-8" in result.output
    with Workspace.load(tmp_path / "ws").open_store() as store:
        assert sorted(im.path for im in store.images()) == ["good.jpg", "other.jpg"]


def test_a_symlink_out_of_the_image_folder_is_refused_at_init_and_one_inside_kept(tmp_path):
    from autolabel.workspace import Workspace

    raw = tmp_path / "raw"
    rgb(raw / "good.jpg")
    rgb(tmp_path / "elsewhere.jpg", seed=3)
    (raw / "outside.jpg").symlink_to(tmp_path / "elsewhere.jpg")
    (raw / "inside.jpg").symlink_to(raw / "good.jpg")
    result = CliRunner().invoke(app, ["init", "--images", str(raw), "-w", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    assert "outside.jpg: a symbolic link to a file outside the image folder" in result.output
    with Workspace.load(tmp_path / "ws").open_store() as store:
        assert sorted(im.path for im in store.images(include_errors=True)) == ["good.jpg", "inside.jpg"]

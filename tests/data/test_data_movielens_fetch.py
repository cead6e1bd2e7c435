"""fetch_movielens_100k without the network: a fake wheel in the real layout, and a faked pip."""

import subprocess
import sys
import zipfile

import pytest
from data_sources import write_movielens

from crossadapt.data import movielens, read_movielens_100k


def fake_wheel(path, folder):
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("ml-100k.inter", "ml-100k.user", "ml-100k.item"):
            archive.write(folder / name, f"recbole/dataset_example/ml-100k/{name}")
        archive.writestr("recbole/__init__.py", "")
    return path


def test_fetch_from_a_downloaded_wheel_extracts_the_three_files(tmp_path):
    wheel = fake_wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl", write_movielens(tmp_path / "src"))
    dest = movielens.fetch_movielens_100k(tmp_path / "out", wheel=wheel, verify=False)
    assert sorted(p.name for p in dest.iterdir()) == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]
    assert read_movielens_100k(dest).table.num_rows == 6
    with pytest.raises(RuntimeError, match="sha256"):
        movielens.fetch_movielens_100k(tmp_path / "out2", wheel=wheel)  # not the published files


def test_fetch_runs_pip_download_for_recbole(tmp_path, monkeypatch):
    source = write_movielens(tmp_path / "src")
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        target = command[command.index("-d") + 1]
        fake_wheel(tmp_path / "x.whl", source).rename(f"{target}/recbole-1.2.1-py3-none-any.whl")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(movielens.subprocess, "run", fake_run)
    movielens.fetch_movielens_100k(tmp_path / "out", verify=False)
    assert commands[0][:6] == [sys.executable, "-m", "pip", "download", "--no-deps", "recbole==1.2.1"]
    assert (tmp_path / "out" / "ml-100k.inter").read_bytes() == (source / "ml-100k.inter").read_bytes()

    monkeypatch.setattr(movielens.subprocess, "run", lambda c, **k: subprocess.CompletedProcess(c, 1, "", "no network"))
    with pytest.raises(RuntimeError, match="no network"):
        movielens.fetch_movielens_100k(tmp_path / "out3")


def test_missing_files_and_duplicate_keys(tmp_path):
    with pytest.raises(FileNotFoundError, match="fetch-movielens"):
        read_movielens_100k(tmp_path)
    folder = write_movielens(tmp_path / "ml")
    with open(folder / "ml-100k.user", "a") as f:
        f.write("1\t30\tF\tartist\t12345\n")
    from crossadapt.data import DataFormatError

    with pytest.raises(DataFormatError, match="user_id '1' appears more than once"):
        read_movielens_100k(folder)
    (folder / "ml-100k.item").write_text("item_id:token\tclass:token_seq\n10\tComedy\n")
    with pytest.raises(DataFormatError, match="release_year") as info:
        read_movielens_100k(folder)
    assert info.value.line == 1

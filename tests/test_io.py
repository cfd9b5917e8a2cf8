"""Atomic writes leave files and folders with the permissions any plain write by this user gets (the umask), not
the private 0600/0700 of their temp files: checkpoints, pipelines and shipped assets in a lab's shared folder stay
readable by its group."""

from __future__ import annotations

import stat

from style_tailoring.io import atomic_dir, atomic_write_bytes, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_files_and_folders_get_the_permissions_of_a_plain_write(tmp_path):
    plain_file, plain_dir = tmp_path / "plain.txt", tmp_path / "plain"
    plain_file.write_text("x")
    plain_dir.mkdir()

    atomic_write_bytes(tmp_path / "weights.bin", b"\0" * 16)
    atomic_write_text(tmp_path / "metrics.json", "{}")
    with atomic_dir(tmp_path / "pipeline") as folder:
        (folder / "config.json").write_text("{}")

    assert _mode(tmp_path / "weights.bin") == _mode(tmp_path / "metrics.json") == _mode(plain_file)
    assert _mode(tmp_path / "pipeline") == _mode(plain_dir)
    assert _mode(plain_file) & stat.S_IRUSR and _mode(plain_dir) & stat.S_IXUSR
    # Replacing an existing file keeps the rule (the temp file, not the old file, becomes it).
    atomic_write_bytes(tmp_path / "weights.bin", b"\1" * 16)
    assert _mode(tmp_path / "weights.bin") == _mode(plain_file)

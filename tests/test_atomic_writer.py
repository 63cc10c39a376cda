"""AtomicFolderWriter: a folder written piece by piece appears whole or not at all."""

from pathlib import Path

import pytest

from scicontrast.io import AtomicFolderWriter


class NotesWriter(AtomicFolderWriter):
    """Writes ``notes.txt``; its finish refuses an empty folder, as the real writers do."""

    def __init__(self, target: Path) -> None:
        super().__init__(target)
        self.lines: list[str] = []
        self.closed = False

    def add(self, line: str) -> None:
        self.lines.append(line)
        (self.folder_being_written / "part.txt").write_text("\n".join(self.lines))

    def _finish(self) -> None:
        if not self.lines:
            raise ValueError("nothing was noted")
        (self.folder_being_written / "part.txt").rename(self.folder_being_written / "notes.txt")

    def _close(self) -> None:
        self.closed = True


def test_a_finished_folder_replaces_the_target(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with NotesWriter(tmp_path / "out") as writer:
        writer.add("a")
        writer.add("b")
    assert writer.closed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["notes.txt"]
    assert (tmp_path / "out" / "notes.txt").read_text() == "a\nb"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("fail_in", ["block", "finish"])
def test_a_failure_in_the_block_or_the_finish_keeps_the_old_target(tmp_path, fail_in):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    writer = NotesWriter(tmp_path / "out")
    with pytest.raises(ValueError, match="bad line" if fail_in == "block" else "nothing"):
        with writer:
            if fail_in == "block":
                writer.add("a")
                raise ValueError("bad line")
    assert writer.closed
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left


def test_writing_outside_the_with_block_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="NotesWriter writes inside a with block"):
        NotesWriter(tmp_path / "out").add("a")

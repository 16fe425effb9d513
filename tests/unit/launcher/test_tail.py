from pathlib import Path

from launcher.views.tail import last_line, tail_lines


def test_a_read_that_starts_mid_line_drops_that_line(tmp_path: Path) -> None:
    path = tmp_path / "rank0.log"
    path.write_text("first line\nsecond\nthird\n")
    assert tail_lines(path, 1000) == ["first line", "second", "third"]
    assert tail_lines(path, 10) == ["third"]  # the 10 bytes start inside "second"


def test_one_long_line_is_kept_when_it_is_all_there_is(tmp_path: Path) -> None:
    path = tmp_path / "rank0.log"
    path.write_text("x" * 20_000 + " worker failed\n")
    assert tail_lines(path, 100) == ["x" * 85 + " worker failed"]  # 100 bytes with the newline


def test_last_line_skips_blank_lines_and_a_missing_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    path.write_text("start\n  done  \n\n\n")
    assert last_line(path) == "done"
    assert last_line(tmp_path / "none.log") == "" and tail_lines(tmp_path / "none.log", 10) == []

"""Project files: atomic writes, JSON and JSONL with errors that name the file, append logs that survive a
torn line, file digests."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from distill.files import (DataError, append_log, atomic_write_text, file_digest, log_lines, read_json, read_jsonl,
                           read_log, write_json, write_jsonl)


def test_atomic_write_creates_folders_and_leaves_no_temporary_file(tmp_path):
    path = atomic_write_text(tmp_path / "a" / "b" / "out.txt", "hello")
    assert path.read_text() == "hello"
    assert os.listdir(path.parent) == ["out.txt"]


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.json"
    write_json(path, {"old": 1})
    with pytest.raises(TypeError):
        write_json(path, {"new": object()})  # not serialisable: fails before the rename
    assert json.loads(path.read_text()) == {"old": 1}
    assert os.listdir(tmp_path) == ["out.json"]


def test_a_crash_at_the_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = atomic_write_text(tmp_path / "out.txt", "old")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_write_json_is_sorted_and_keeps_unicode(tmp_path):
    path = write_json(tmp_path / "x.json", {"b": "Janet’s", "a": 1})
    text = path.read_text(encoding="utf-8")
    assert text.index('"a"') < text.index('"b"') and "Janet’s" in text and text.endswith("\n")


def test_jsonl_round_trips(tmp_path):
    rows = [{"id": 1, "q": "−3"}, {"id": 2, "q": "x"}]
    assert read_jsonl(write_jsonl(tmp_path / "r.jsonl", rows)) == rows


def test_read_jsonl_names_file_and_line_of_a_truncated_record(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": 1}\n\n{"id": 2, "q": "tru\n')
    with pytest.raises(DataError, match=rf"{path}:3: not valid JSON .*Run distill verify") as err:
        read_jsonl(path, hint="Run distill verify first.")
    assert "Run distill verify first." in str(err.value)


def test_read_jsonl_names_the_missing_field_and_its_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": 1, "gold": 3}\n{"id": 2}\n')
    with pytest.raises(DataError, match=rf"{path}:2: missing field 'gold'"):
        read_jsonl(path, required=("id", "gold"))


def test_read_jsonl_refuses_a_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=rf"{path}:1: expected a JSON object, got list"):
        read_jsonl(path)


def test_read_jsonl_of_a_missing_file_says_how_to_make_it(tmp_path):
    with pytest.raises(DataError, match="file not found. Run distill mix first."):
        read_jsonl(tmp_path / "nope.jsonl", hint="Run distill mix first.")


def test_an_append_log_survives_a_torn_last_line_and_resumes_cleanly(tmp_path):
    path = tmp_path / "log.jsonl"
    with append_log(path) as log:
        log.write({"i": 1})
        log.write({"i": 2})
    with path.open("a") as fh:
        fh.write('{"i": 3, "half')  # a crash mid-write
    assert [r["i"] for r in read_log(path)] == [1, 2]
    with append_log(path) as log:
        log.write({"i": 3})
    assert [r["i"] for r in read_log(path)] == [1, 2, 3]
    assert path.read_text().count("\n") == 3


def test_read_log_of_a_missing_file_is_empty(tmp_path):
    assert list(read_log(tmp_path / "none.jsonl")) == []


def test_write_jsonl_streams_a_generator_and_a_failure_midway_keeps_the_old_file(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", ({"i": i} for i in range(3)))
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}, {"i": 2}]

    def broken():
        yield {"i": 9}
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError, match="source failed"):
        write_jsonl(path, broken())
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}, {"i": 2}] and os.listdir(tmp_path) == ["r.jsonl"]


def test_read_json_names_the_file_and_the_fix_of_a_missing_or_malformed_file(tmp_path):
    with pytest.raises(DataError, match=rf"^{tmp_path / 'none.json'} not found; run distill mix$"):
        read_json(tmp_path / "none.json", "run distill mix")
    (tmp_path / "bad.json").write_text('{"a": ')
    with pytest.raises(DataError, match=rf"^{tmp_path / 'bad.json'} is not valid JSON \(.*\); delete it$"):
        read_json(tmp_path / "bad.json", "delete it")
    with pytest.raises(DataError, match="is not valid JSON"):
        read_json(tmp_path / "bad.json", default={})  # a default stands in for a missing file only
    with pytest.raises(DataError, match="cannot be read"):
        read_json(tmp_path)  # a folder


def test_read_json_of_a_missing_file_with_a_default_returns_it(tmp_path):
    assert read_json(tmp_path / "none.json", default=None) is None
    assert read_json(write_json(tmp_path / "x.json", {"a": "é"}), default={}) == {"a": "é"}


def test_the_file_digest_is_the_start_of_the_sha256_of_its_bytes(tmp_path):
    data = os.urandom(3 << 20)  # several read chunks
    (tmp_path / "blob").write_bytes(data)
    assert file_digest(tmp_path / "blob") == hashlib.sha256(data).hexdigest()[:16]


def test_log_lines_resume_at_an_offset_and_wait_for_an_unfinished_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes('{"i": "é"}\n{"i": 2}\n{"i": 3'.encode())
    lines = list(log_lines(path))
    assert [line for _, line in lines] == ['{"i": "é"}\n', '{"i": 2}\n']
    assert lines[-1][0] == len('{"i": "é"}\n{"i": 2}\n'.encode())  # byte offsets, past each line
    with path.open("a") as fh:
        fh.write("}\n")  # its writer was live: the line is finished now
    assert [line for _, line in log_lines(path, lines[-1][0])] == ['{"i": 3}\n']


def test_read_log_skips_a_complete_line_that_is_not_json(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"i": 1}\n{"i": 2, "tor\n{"i": 3}\n')
    assert [r["i"] for r in read_log(path)] == [1, 3]


@pytest.mark.parametrize("content", ["", "no newline at all", '{"i": 1}\n' + "x" * 200_000])
def test_the_next_writer_cuts_an_unfinished_last_line_of_any_length(tmp_path, content):
    path = tmp_path / "log.jsonl"
    path.write_text(content)
    with append_log(path) as log:
        log.write({"i": 2})
    assert path.read_text() == ('{"i": 1}\n' if content.startswith("{") else "") + '{"i": 2}\n'


def test_an_append_log_keeps_the_json_options_it_is_given(tmp_path):
    with append_log(tmp_path / "a.jsonl") as log:
        log.write({"m": "Zoë"})
    with append_log(tmp_path / "b.jsonl", ensure_ascii=True) as log:
        log.write_all([{"m": "Zoë"}, {"m": "x"}])
    assert (tmp_path / "a.jsonl").read_text(encoding="utf-8") == '{"m": "Zoë"}\n'
    assert (tmp_path / "b.jsonl").read_text() == '{"m": "Zo\\u00eb"}\n{"m": "x"}\n'


def test_an_append_log_synced_every_n_seconds_fsyncs_once_a_window_and_at_the_end(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    with append_log(tmp_path / "per-write.jsonl") as log:
        for i in range(3):
            log.write({"i": i})
    assert len(synced) == 3  # the default: every write, and nothing left for the end
    synced.clear()
    with append_log(tmp_path / "windowed.jsonl", sync_every=3600) as log:
        for i in range(3):
            log.write_all([{"i": i}])
        assert synced == [] and len(list(read_log(tmp_path / "windowed.jsonl"))) == 3  # flushed, not synced
    assert len(synced) == 1


# --- one writer per folder ---------------------------------------------------------------------------

HOLD = """
import sys, time
from distill.files import folder_lock
with folder_lock(sys.argv[1], "distill train --preset smoke"):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(tmp_path):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_of_a_folder_is_refused_with_the_holders_pid_command_and_start(tmp_path):
    from distill.files import FolderBusy, folder_lock

    proc = _holder(tmp_path)
    try:
        with pytest.raises(FolderBusy, match=rf"pid {proc.pid} \(`distill train --preset smoke`, since 20"):
            with folder_lock(tmp_path, "distill evaluate"):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    import signal

    from distill.files import folder_lock

    proc = _holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with folder_lock(tmp_path, "distill evaluate") as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_process_enters_its_own_lock_again_and_a_forked_child_does_not_inherit_it(tmp_path):
    import multiprocessing

    from distill.files import FolderBusy, folder_lock

    def try_lock(folder, out):
        try:
            with folder_lock(folder, "child"):
                out.put("locked")
        except FolderBusy:
            out.put("busy")

    with folder_lock(tmp_path, "distill reproduce"):
        with folder_lock(tmp_path, "distill train"):  # reproduce calling a stage: nests, no deadlock
            pass
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        # a forked child is another process: the parent's lock excludes it (it is not inherited by it)
        child = ctx.Process(target=try_lock, args=(tmp_path, out))
        child.start()
        child.join()
        assert out.get(timeout=5) == "busy"


def test_shard_writers_share_a_folder_but_exclude_a_whole_folder_writer(tmp_path):
    from distill.files import FolderBusy, run_folder_lock
    from distill.shards import parse_shard

    script = ("import sys, time\nfrom distill.files import run_folder_lock\nfrom distill.shards import parse_shard\n"
              "with run_folder_lock(sys.argv[1], 'distill evaluate --shard 0/2', parse_shard('0/2')):\n"
              "    print('held', flush=True)\n    time.sleep(600)\n")
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    try:
        assert proc.stdout.readline().strip() == "held"
        with run_folder_lock(tmp_path, "distill evaluate --shard 1/2", parse_shard("1/2")):
            pass  # the other shard runs beside it
        with pytest.raises(FolderBusy, match=rf"pid {proc.pid} \(`distill evaluate --shard 0/2`"):
            with run_folder_lock(tmp_path, "distill evaluate"):
                pass
    finally:
        proc.kill()
        proc.wait()


# --- fingerprints ------------------------------------------------------------------------------------

def test_a_mismatch_names_the_missing_emptied_or_changed_file(tmp_path):
    from distill.files import fingerprints, mismatch

    files = {"a.jsonl": tmp_path / "a.jsonl", "b.jsonl": tmp_path / "b.jsonl"}
    files["a.jsonl"].write_text('{"x": 1}\n{"x": 2}\n')
    files["b.jsonl"].write_text('{"y": 1}\n')
    recorded = fingerprints(files)
    assert mismatch(recorded, files) is None
    files["a.jsonl"].write_text('{"x": 1}\n')
    assert mismatch(recorded, files) == "a.jsonl changed (18 bytes recorded, 9 now)"
    files["a.jsonl"].write_text('{"x": 3}\n{"x": 2}\n')
    assert mismatch(recorded, files).startswith("a.jsonl changed (digest ")
    files["a.jsonl"].write_text('{"x": 1}\n{"x": 2}\n')
    files["b.jsonl"].unlink()
    assert mismatch(recorded, files) == "b.jsonl is missing"
    assert mismatch(None, files) == "nothing was recorded about its files"


def test_an_input_emptied_or_cut_is_refused_naming_its_producers_command(tmp_path):
    from distill.files import check_input, fingerprint

    path = tmp_path / "pot.jsonl"
    path.write_text('{"x": 1}\n{"x": 2}\n')
    recorded = fingerprint(path)
    check_input(path, recorded, "distill verify --preset smoke")
    path.write_text('{"x": 1}\n')
    with pytest.raises(DataError, match=r"9 bytes, but its producer wrote 18 bytes .*`distill verify --preset smoke`"):
        check_input(path, recorded, "distill verify --preset smoke")
    path.write_text("")
    with pytest.raises(DataError, match="is empty, but its producer wrote 18 bytes"):
        check_input(path, recorded, "distill verify --preset smoke")


def test_the_settings_digest_is_the_sha256_of_the_parts_canonical_json_so_recorded_digests_stay_valid():
    import hashlib
    import json

    from distill.files import settings_digest

    settings = {"mix": [0.1, True, 13, 0], "inputs": {"eot": "0123abcd"}, "test_sets": ("gsm8k", "svamp")}
    # how the mix stage fingerprinted its inputs before the helper: sorted keys, a tuple as a list
    assert settings_digest(settings) == hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    assert settings_digest({"b": 1, "a": 2}) == settings_digest({"a": 2, "b": 1}) != settings_digest({"a": 2, "b": 2})
    # verify's way: a header, then one JSON text per row, non-ASCII text as UTF-8
    rows = [["p1", 0, "x = 3 · 2 ✓", 6.0, "correct"], ["p2", 1, "é", 2, "wrong_answer"]]
    h = hashlib.sha256(json.dumps({"version": 1, "stats": 2}, sort_keys=True).encode())
    for row in rows:
        h.update(json.dumps(row, ensure_ascii=False).encode())
    assert settings_digest({"version": 1, "stats": 2}, *rows, ensure_ascii=False) == h.hexdigest()[:16]
    assert settings_digest({"version": 1, "stats": 2}, *rows) != h.hexdigest()[:16]  # escaped text is other bytes

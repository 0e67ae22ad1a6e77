from __future__ import annotations

import errno
import io
import os
import random
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fitlens.core import files
from fitlens.safety.checkpoint import (
    CheckpointStore,
    CorruptCheckpointError,
    NoLoadableCheckpointError,
    UnsafeCheckpointError,
    decode,
    encode,
    frame,
    load_checkpoint,
    save_checkpoint,
    write_atomic,
)


class _Exploit:
    """Unpickling this runs code (creates a file): what weights_only loading must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_checkpoint_round_trips_tensors_arrays_and_rng_states(tmp_path: Path) -> None:
    state = {
        "model": torch.nn.Linear(3, 2).state_dict(),
        "window": np.arange(5, dtype=np.float64),
        "python_rng": random.getstate(),
        "numpy_rng": list(np.random.get_state()),
        "nested": {"a": [1, 2.5, None, "x"], "b": (np.float64(0.5), True)},
    }
    loaded = load_checkpoint(save_checkpoint(tmp_path / "c.pt", state))
    assert torch.equal(loaded["model"]["weight"], state["model"]["weight"])
    assert isinstance(loaded["window"], np.ndarray)
    np.testing.assert_array_equal(loaded["window"], state["window"])
    assert loaded["python_rng"] == state["python_rng"]
    np.testing.assert_array_equal(loaded["numpy_rng"][1], state["numpy_rng"][1])
    assert loaded["nested"] == {"a": [1, 2.5, None, "x"], "b": (0.5, True)}


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=5),
        st.one_of(
            st.floats(allow_nan=False),
            st.integers(-(2**62), 2**62),
            st.lists(st.floats(allow_nan=False, width=64), max_size=8).map(np.array),
        ),
        max_size=6,
    )
)
def test_encode_decode_is_lossless(state: dict[str, Any]) -> None:
    back = decode(encode(state))
    assert set(back) == set(state)
    for k, v in state.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(back[k], v)
        else:
            assert back[k] == v


def test_truncated_checkpoint_is_detected_by_its_checksum(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(100)})
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CorruptCheckpointError, match="truncated or corrupted"):
        load_checkpoint(path)


def test_flipped_byte_is_detected_by_its_checksum(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(100)})
    data = bytearray(path.read_bytes())
    data[-50] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="checksum does not match"):
        load_checkpoint(path)


def test_a_plain_torch_file_is_not_taken_for_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(CorruptCheckpointError, match="not a fitlens checkpoint"):
        load_checkpoint(path)


def test_checkpoint_with_arbitrary_pickles_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = _torch_bytes({"model": _Exploit(marker)})
    path = tmp_path / "evil.pt"
    path.write_bytes(frame(payload))  # a valid checksum: only the unpickler can stop it
    with pytest.raises(UnsafeCheckpointError, match="Nothing in it was executed"):
        load_checkpoint(path)
    assert not marker.exists()
    torch.load(io.BytesIO(payload), weights_only=False)  # the payload really is an exploit
    assert marker.exists()


def test_failed_write_leaves_the_previous_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.zeros(3)})

    def disk_full(f: Any, data: bytes) -> None:
        f.write(data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_write_bytes", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"w": torch.ones(3)})
    assert torch.equal(load_checkpoint(path)["w"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_write_atomic_replaces_the_whole_file(tmp_path: Path) -> None:
    write_atomic(tmp_path / "f", b"old content, longer")
    write_atomic(tmp_path / "f", b"new")
    assert (tmp_path / "f").read_bytes() == b"new"


def test_store_keeps_the_newest_checkpoints(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=3)
    for i in range(5):
        store.save({"i": i})
    assert [p.name for p in store.paths()] == [f"ckpt-0000000{i}.pt" for i in (3, 4, 5)]
    found = store.latest()
    assert found is not None and found[1]["i"] == 4


def test_resume_falls_back_naming_the_checkpoint_used_and_keeps_the_bad_one(
    tmp_path: Path,
) -> None:
    store = CheckpointStore(tmp_path)
    first = store.save({"i": 0})
    newest = store.save({"i": 1})
    damaged = newest.read_bytes()[:30]
    newest.write_bytes(damaged)
    with pytest.warns(RuntimeWarning, match=f"resuming from {re.escape(str(first))}"):
        found = store.resume_from()
    assert found is not None and found[0] == first and found[1]["i"] == 0
    aside = tmp_path / "ckpt-00000002.pt.unreadable"
    assert aside.read_bytes() == damaged
    for i in (2, 3):  # later saves never delete the file set aside
        store.save({"i": i})
    assert aside.read_bytes() == damaged


def test_resume_with_no_loadable_checkpoint_stops_listing_each_file_and_deletes_nothing(
    tmp_path: Path,
) -> None:
    store = CheckpointStore(tmp_path)
    older, newest = store.save({"i": 0}), store.save({"i": 1})
    newest.write_bytes(newest.read_bytes()[:30])
    data = bytearray(older.read_bytes())
    data[-5] ^= 0xFF
    older.write_bytes(bytes(data))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(NoLoadableCheckpointError, match='resume="allow_fresh"') as caught:
        store.resume_from()
    message = str(caught.value)
    assert str(older) in message and str(newest) in message
    assert [p for p, _ in caught.value.failures] == [newest, older]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    with pytest.warns(RuntimeWarning, match="starting afresh"):
        assert store.resume_from(allow_fresh=True) is None
    kept = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert kept == {f"{name}.unreadable": data for name, data in before.items()}


def test_store_refuses_an_unsafe_newest_checkpoint_instead_of_skipping_it(
    tmp_path: Path,
) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"i": 0})
    (tmp_path / "ckpt-00000002.pt").write_bytes(frame(_torch_bytes([_Exploit(tmp_path / "x")])))
    with pytest.raises(UnsafeCheckpointError):
        store.latest()
    assert not (tmp_path / "x").exists()


def test_store_ignores_and_removes_temporary_files(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    (tmp_path / ".ckpt-00000001.pt.tmp-123").write_bytes(b"half")  # an earlier version's name
    (tmp_path / ".ckpt-00000002.pt.0123456789abcdef.fitlens-tmp").write_bytes(b"half")
    assert store.latest() is None
    store.remove_temporaries()
    assert list(tmp_path.iterdir()) == []


def test_store_needs_at_least_two_checkpoints_kept(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`keep` to be an integer >= 2"):
        CheckpointStore(tmp_path, keep=1)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of the user's that a planted link points to."""
    path = tmp_path / "victim"
    path.write_bytes(b"precious")
    return path


def test_write_atomic_never_writes_through_a_link_planted_at_a_temporary_name(
    tmp_path: Path, victim: Path
) -> None:
    target = tmp_path / "summary.json"
    for name in (f".summary.json.tmp-{os.getpid()}", ".summary.json.tmp"):  # guessable names
        (tmp_path / name).symlink_to(victim)
    write_atomic(target, b"new")
    assert victim.read_bytes() == b"precious"
    assert target.read_bytes() == b"new" and not target.is_symlink()


def test_write_atomic_replaces_a_link_at_the_target_instead_of_following_it(
    tmp_path: Path, victim: Path
) -> None:
    target = tmp_path / "ckpt-00000001.pt"
    target.symlink_to(victim)
    save_checkpoint(target, {"i": 1})
    assert victim.read_bytes() == b"precious"
    assert not target.is_symlink() and load_checkpoint(target) == {"i": 1}


def test_written_files_get_the_usual_permissions_not_the_temporary_files_0600(
    tmp_path: Path,
) -> None:
    umask = os.umask(0o022)
    try:
        path = write_atomic(tmp_path / "epochs.csv", b"a,b\n")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_loading_refuses_a_link_to_a_device_without_reading_it(tmp_path: Path) -> None:
    link = tmp_path / "ckpt-00000001.pt"
    link.symlink_to("/dev/zero")
    with pytest.raises(CorruptCheckpointError, match="symbolic link"):
        load_checkpoint(link)


def test_loading_refuses_a_fifo_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "ckpt-00000001.pt"
    os.mkfifo(fifo)
    with pytest.raises(CorruptCheckpointError, match="not a regular file"):
        load_checkpoint(fifo)


def test_loading_reads_no_more_than_the_header_announces(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", {"i": 1})
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\0" * 1000)
    with pytest.raises(
        CorruptCheckpointError, match=f"{size + 1000} bytes, its header says {size}"
    ):
        load_checkpoint(path)


def test_resume_sets_aside_a_checkpoint_that_is_a_link(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"i": 0})
    (tmp_path / "ckpt-00000002.pt").symlink_to("/dev/zero")
    with pytest.warns(RuntimeWarning, match="symbolic link"):
        found = store.resume_from()
    assert found is not None and found[1] == {"i": 0}
    assert (tmp_path / "ckpt-00000002.pt.unreadable").is_symlink()

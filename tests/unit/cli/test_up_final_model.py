"""``fedswarm up``'s report finds the final model in a node's data folder whether the node stopped (the model is a
file in ``blobs/``) or was killed before it stopped (the model is held only in ``progress.json``), checks the
digest of what it read, and names the digest and the folders when no node holds it."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fedswarm.cli.up import final_model
from fedswarm.codec import tensors
from fedswarm.core.errors import VerificationError
from fedswarm.core.parameters import Parameters
from fedswarm.node.persist import NodeStore, Progress
from fedswarm.node.up import LocalFederation

NAMES = ("member-00000", "member-00001")
LIMIT = 1 << 20  # blobs up to 1 MiB are copied into progress.json (the nodes' inline limit)


def _model(seed: int) -> Parameters:
    rng = np.random.default_rng(seed)
    return Parameters({"w": rng.normal(size=(5, 3)), "b": np.arange(3, dtype=np.float32)})


def _federation(tmp: Path) -> LocalFederation:
    kits = {name: tmp / "federation" / name for name in NAMES}
    for kit in kits.values():
        (kit / "state").mkdir(parents=True)
    return LocalFederation(out_dir=tmp, kits=kits, logs=tmp / "logs")


def _save_round(state: Path, model: Parameters) -> str:
    """Commit round 1 of ``model`` as a node does (staged, then written with the progress), without stopping."""
    store = NodeStore(state)
    data = tensors.encode(model)
    digest = store.put_staged(data, limit=LIMIT)
    store.save_round(
        Progress(job="j" * 64, round=1, model_digest=digest, state_digest=digest, leader=NAMES[0], commit=""),
        blobs=[digest],
        inline_limit=LIMIT,
    )
    return digest


KILLED = """
import os, signal, sys
from pathlib import Path
import numpy as np
from fedswarm.core.parameters import Parameters
from fedswarm.codec import tensors
from fedswarm.node.persist import NodeStore, Progress
store = NodeStore(Path(sys.argv[1]))
rng = np.random.default_rng(int(sys.argv[2]))
data = tensors.encode(Parameters({"w": rng.normal(size=(5, 3)), "b": np.arange(3, dtype=np.float32)}))
digest = store.put_staged(data, limit=1 << 20)
progress = Progress(job="j" * 64, round=1, model_digest=digest, state_digest=digest, leader="m", commit="")
store.save_round(progress, blobs=[digest], inline_limit=1 << 20)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_node_sigkilled_before_it_stopped_gives_the_model_from_its_progress(tmp_path: Path) -> None:
    fed = _federation(tmp_path)
    expected = _model(11)
    digest = hashlib.sha256(tensors.encode(expected)).hexdigest()
    state = fed.state_dir(NAMES[1])
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED), str(state), "11"], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode(errors="replace")
    assert not (state / "blobs" / digest).exists(), "the model must live only in progress.json"
    assert digest in (state / "progress.json").read_text(encoding="utf-8")

    found = final_model(fed, digest)

    assert set(found) == set(expected)
    for name in expected:
        np.testing.assert_array_equal(found[name], expected[name])
        assert found[name].dtype == expected[name].dtype
    assert tensors.digest(found) == digest


def test_a_stopped_node_gives_the_model_from_its_blobs_folder(tmp_path: Path) -> None:
    fed = _federation(tmp_path)
    state = fed.state_dir(NAMES[0])
    expected = _model(3)
    digest = _save_round(state, expected)
    NodeStore(state).progress(job="j" * 64)  # a restart writes the copy out as a file ...
    (state / "progress.json").unlink()  # ... which alone must be enough
    assert (state / "blobs" / digest).is_file()
    assert tensors.digest(final_model(fed, digest)) == digest


def test_a_copy_that_does_not_hash_to_the_digest_is_skipped(tmp_path: Path) -> None:
    fed = _federation(tmp_path)
    expected = _model(5)
    bad, good = fed.state_dir(NAMES[0]), fed.state_dir(NAMES[1])
    digest = _save_round(good, expected)
    (bad / "blobs").mkdir()
    (bad / "blobs" / digest).write_bytes(tensors.encode(_model(6)))  # another model under the digest's name
    assert tensors.digest(final_model(fed, digest)) == digest

    (good / "progress.json").unlink()
    with pytest.raises(VerificationError) as info:
        final_model(fed, digest)
    message = str(info.value)
    assert digest in message and str(bad / "blobs" / digest) in message
    assert tensors.digest(_model(6))[:16] in message  # what the wrong copy hashes to


def test_no_node_holding_the_model_is_an_error_naming_the_digest_and_the_folders(tmp_path: Path) -> None:
    fed = _federation(tmp_path)
    _save_round(fed.state_dir(NAMES[0]), _model(1))  # a round, but of another model
    missing = tensors.digest(_model(2))
    with pytest.raises(VerificationError) as info:
        final_model(fed, missing)
    message = str(info.value)
    assert missing in message
    for name in NAMES:
        assert str(fed.state_dir(name)) in message


def test_an_unreadable_progress_file_is_skipped_and_named(tmp_path: Path) -> None:
    fed = _federation(tmp_path)
    torn, good = fed.state_dir(NAMES[0]), fed.state_dir(NAMES[1])
    digest = _save_round(good, _model(8))
    _save_round(torn, _model(8))
    text = (torn / "progress.json").read_text(encoding="utf-8")
    (torn / "progress.json").write_text(text[: len(text) // 2], encoding="utf-8")  # a torn write
    assert tensors.digest(final_model(fed, digest)) == digest

    (good / "progress.json").unlink()
    with pytest.raises(VerificationError, match="unreadable") as info:
        final_model(fed, digest)
    assert digest in str(info.value) and str(torn) in str(info.value)

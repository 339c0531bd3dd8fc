"""A lying leader over real processes: the star aggregator's commit of the last round omits (or alters the
digest of) a member's accepted update; that member refuses the commit, logging the leader and the update,
and does not adopt the model, while the honest members (one of them started from an encrypted kit with
``--password-file``) adopt it. The liar is a real node process started from ``lying_node.py``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from network_harness import HERE, history, log_text, wait_for, write_spec

from fedswarm.node.persist import read_history
from fedswarm.node.provisioning import provision_from_spec
from fedswarm.node.status import query_status
from fedswarm.node.up import LocalFederation, free_ports

pytestmark = pytest.mark.integration

LIAR, VICTIM, HONEST = "member-00000", "member-00001", "member-00002"
ROUNDS = 2  # the lie is in the last round, so no later commit muddies what the victim adopted
PASSWORD = "honest member's kit password"


def _start_liar(fed: LocalFederation, mode: str) -> None:
    fed.logs.mkdir(parents=True, exist_ok=True)
    with open(fed.logs / f"{LIAR}.log", "ab") as log:
        fed.processes[LIAR] = subprocess.Popen(
            [sys.executable, str(HERE / "lying_node.py"), mode, VICTIM, str(ROUNDS),
             "start", "--kit", str(fed.kits[LIAR].resolve())],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=fed.out_dir,
        )  # fmt: skip


def _run(tmp_path: Path, mode: str) -> tuple[LocalFederation, float]:
    """Provision (the honest member's kit encrypted), start the liar and the members, wait for the refusal."""
    _, spec = write_spec(tmp_path, name=f"liar-{mode}", rounds=ROUNDS)
    # every member must be in the round the leader lies about, however slowly a loaded machine starts them
    spec = spec.model_copy(update={"network": spec.network.model_copy(update={"gather_timeout": 120.0})})
    out = tmp_path / "up"
    out.mkdir()
    provisioned = provision_from_spec(
        spec,
        out / "federation",
        ports=free_ports(spec.federation.members),
        kit_passwords={HONEST: PASSWORD.encode()},
    )
    fed = LocalFederation(out_dir=out, kits=dict(provisioned.kits), logs=out / "logs")
    password_file = tmp_path / "honest.pw"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    _start_liar(fed, mode)
    fed.start(VICTIM)
    fed.start(HONEST, extra=["--password-file", str(password_file)])
    wait_for(
        lambda: fed.rounds_done()[HONEST] >= ROUNDS, timeout=150, what="the honest member adopting the lie", fed=fed
    )
    wait_for(
        lambda: f"refusing the aggregate of round {ROUNDS} from {LIAR}" in log_text(fed, VICTIM),
        timeout=60,
        what="the victim's refusal",
        fed=fed,
    )
    s = spec.network
    slot = s.round_timeout + s.evaluate_timeout + 2 * s.rpc_timeout + s.takeover_grace
    return fed, slot


def _lie(fed: LocalFederation, pattern: str) -> re.Match[str]:
    found = re.search(pattern, log_text(fed, LIAR))
    assert found is not None, f"the liar did not lie:\n{fed.log_tail(LIAR, 30)}"
    return found


def _assert_not_adopted(fed: LocalFederation) -> None:
    lie = history(fed, LIAR)[-1]
    assert lie["round"] == ROUNDS and history(fed, HONEST)[-1]["model_digest"] == lie["model_digest"]
    status = query_status(fed.kits[VICTIM])  # the running node's own view, not only its files
    assert status["round"] == ROUNDS - 1, status
    assert status["model_digest"] != lie["model_digest"]
    assert [r["round"] for r in read_history(fed.state_dir(VICTIM))] == list(range(1, ROUNDS))
    assert (fed.progress(VICTIM) or {})["round"] == ROUNDS - 1


@pytest.fixture(scope="module")
def omitted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalFederation, float]]:
    fed, slot = _run(tmp_path_factory.mktemp("omit"), "omit")
    try:
        yield fed, slot
    finally:
        fed.stop()


def test_member_refuses_a_commit_that_omits_its_update(omitted: tuple[LocalFederation, float]) -> None:
    fed, _ = omitted
    digest = _lie(fed, rf"LYING: round {ROUNDS} commit omits the update ([0-9a-f]{{64}}) of {VICTIM}").group(1)
    refusal = next(line for line in log_text(fed, VICTIM).splitlines() if "refusing the aggregate" in line)
    assert f"round {ROUNDS} from {LIAR}" in refusal  # names the leader
    assert f"the update {digest[:16]} that {VICTIM} delivered is not among the commit's inputs" in refusal
    _assert_not_adopted(fed)
    assert "refusing" not in log_text(fed, HONEST)  # the honest member, with its encrypted kit, adopted it
    # `fedswarm node status` opens the encrypted kit with the same password file, and refuses without it
    kit, password_file = fed.kits[HONEST], fed.out_dir.parent / "honest.pw"
    env = {k: v for k, v in os.environ.items() if k != "FEDSWARM_KIT_PASSWORD"}
    command = [sys.executable, "-m", "fedswarm", "node", "status", "--kit", str(kit), "--json"]
    shown = subprocess.run([*command, "--password-file", str(password_file)], capture_output=True, env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr.decode(errors="replace")
    assert json.loads(shown.stdout)["round"] == ROUNDS
    refused = subprocess.run(command, capture_output=True, env=env, stdin=subprocess.DEVNULL, timeout=60)
    assert refused.returncode != 0 and b"encrypted" in refused.stderr, refused.stderr


def test_refused_commit_is_not_adopted_later_by_catching_up(omitted: tuple[LocalFederation, float]) -> None:
    fed, slot = omitted
    end = time.monotonic() + slot + 30.0  # well past the slot after which a lagging member catches up from peers
    while time.monotonic() < end and "caught up to round" not in log_text(fed, VICTIM):
        time.sleep(0.2)
    _assert_not_adopted(fed)


def test_member_refuses_a_commit_that_alters_its_update_digest(tmp_path: Path) -> None:
    fed, _ = _run(tmp_path, "alter")
    try:
        found = _lie(
            fed, rf"LYING: round {ROUNDS} commit declares ([0-9a-f]{{64}}) for {VICTIM}, which sent ([0-9a-f]{{64}})"
        )
        forged, sent = found.group(1), found.group(2)
        refusal = next(line for line in log_text(fed, VICTIM).splitlines() if "refusing the aggregate" in line)
        assert f"round {ROUNDS} from {LIAR}" in refusal
        assert f"the commit declares update {forged[:16]} from {VICTIM}, which sent {sent[:16]}" in refusal
        _assert_not_adopted(fed)
    finally:
        fed.stop()

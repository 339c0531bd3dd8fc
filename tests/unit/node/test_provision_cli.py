"""``fedswarm provision`` with passwords and CKKS keys, and ``fedswarm node start`` with an encrypted kit:
passwords come from files, the environment or a terminal prompt, never from the command line."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedswarm.cli import passwords
from fedswarm.cli.main import app
from fedswarm.core.errors import ConfigurationError
from fedswarm.crypto.files import SEALED_MAGIC
from fedswarm.node import kit as kits

pytest.importorskip("tenseal")

SPEC = """
[federation]
name = "he-cli"
members = 3
rounds = 1
topology = "star"

[data]
dataset = "breast_cancer"

[task]
name = "numpy_softmax"

[strategy]
name = "fedavg"
min_members = 2

[privacy]
secure_aggregation = "ckks"

[privacy.ckks]
poly_modulus_degree = 4096
coeff_mod_bit_sizes = [40, 20, 40]
scale_bits = 20
"""

runner = CliRunner()


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``provision`` with a CA password and a password for member-00001's kit only."""
    tmp = tmp_path_factory.mktemp("cli")
    spec = _write(tmp / "he.toml", SPEC)
    ca_pw, kit_pw = _write(tmp / "ca.pw", "operator\n"), _write(tmp / "kit.pw", "member one\n")
    result = runner.invoke(
        app,
        ["provision", str(spec), "--out", str(tmp / "fed"), "--ca-password-file", str(ca_pw),
         "--kit-password-file", f"member-00001={kit_pw}"],
        env={"FEDSWARM_KIT_PASSWORD": ""},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return tmp


def test_provision_encrypts_what_it_was_told_and_places_the_ckks_contexts(provisioned: Path) -> None:
    fed = provisioned / "fed"
    assert b"ENCRYPTED PRIVATE KEY" in (fed / "ca" / "ca-key.pem").read_bytes()
    assert kits.kit_is_encrypted(fed / "member-00001")
    assert not kits.kit_is_encrypted(fed / "member-00002")
    assert kits.load_kit(fed / "member-00001", password=b"member one").name == "member-00001"
    assert not (fed / "member-00000" / "ckks-secret.ctx").exists()  # the star aggregator
    assert (fed / "member-00001" / "ckks-secret.ctx").read_bytes().startswith(SEALED_MAGIC)
    assert (fed / "ca" / "ckks-secret.ctx").read_bytes().startswith(SEALED_MAGIC)
    aggregator = kits.ckks_material(fed / "member-00000")
    member = kits.ckks_material(fed / "member-00002")
    assert aggregator is not None and member is not None
    assert aggregator == (member[0], None) and member[1] is not None
    assert kits.ckks_material(fed / "member-00001", password=b"member one") == member


def test_join_and_add_member_give_the_newcomer_the_same_contexts(provisioned: Path, tmp_path: Path) -> None:
    fed, newcomer = provisioned / "fed-join", tmp_path / "clinic-f"
    shutil.copytree(provisioned / "fed", fed)
    env = {"FEDSWARM_KIT_PASSWORD": "clinic f", "FEDSWARM_CA_PASSWORD": "operator"}
    steps = [
        ["provision", "join-request", str(newcomer), "--name", "clinic-f", "--address", "127.0.0.1:7705"],
        ["provision", "add-member", str(fed), str(newcomer / "join-request.json")],
        ["provision", "complete-join", str(newcomer), str(fed / "ca" / "admissions" / "clinic-f.json")],
    ]
    for args in steps:
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 0, (args, result.output)
    assert kits.kit_is_encrypted(newcomer)
    joined = kits.ckks_material(newcomer, password=b"clinic f")
    assert joined is not None and joined == kits.ckks_material(fed / "member-00002")
    assert kits.load_kit(fed / "member-00002").manifest.version == 2  # the local kits were updated


def test_add_member_with_a_wrong_ca_password_fails_naming_the_key(provisioned: Path, tmp_path: Path) -> None:
    request = tmp_path / "x"
    assert runner.invoke(app, ["provision", "join-request", str(request), "--name", "x", "--address", "127.0.0.1:7"],
                         env={"FEDSWARM_KIT_PASSWORD": ""}).exit_code == 0  # fmt: skip
    wrong = _write(tmp_path / "wrong.pw", "guess")
    result = runner.invoke(
        app,
        ["provision", "add-member", str(provisioned / "fed"), str(request / "join-request.json"),
         "--ca-password-file", str(wrong)],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "ca-key.pem: wrong password" in result.output


# ----------------------------------------------------------------------------------- node start


def _node_start(kit: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != passwords.KIT_PASSWORD_ENV}
    return subprocess.run(
        [sys.executable, "-m", "fedswarm.cli.node", "start", "--kit", str(kit), *extra],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, env={**environment, **(env or {})}, timeout=120,
        check=False,
    )  # fmt: skip


def test_node_start_with_a_wrong_password_fails_naming_the_file(provisioned: Path, tmp_path: Path) -> None:
    wrong = _write(tmp_path / "wrong.pw", "guess\n")
    done = _node_start(provisioned / "fed" / "member-00001", "--password-file", str(wrong))
    assert done.returncode != 0
    assert "member-00001/tls-key.pem: wrong password" in " ".join(done.stderr.split()), done.stderr
    assert "guess" not in done.stderr


def test_node_start_without_a_password_says_how_to_give_one(provisioned: Path) -> None:
    done = _node_start(provisioned / "fed" / "member-00001")
    assert done.returncode != 0
    message = " ".join(done.stderr.split())
    assert "tls-key.pem: the kit's keys are encrypted" in message and "--password-file" in message
    assert passwords.KIT_PASSWORD_ENV in message


def test_node_start_with_the_environment_password_for_a_wrong_kit_fails(provisioned: Path) -> None:
    done = _node_start(provisioned / "fed" / "member-00001", env={passwords.KIT_PASSWORD_ENV: "not it"})
    assert done.returncode != 0 and "wrong password" in done.stderr


# ------------------------------------------------------------------------------ password sources


def test_kit_password_sources(provisioned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encrypted, plain = provisioned / "fed" / "member-00001", provisioned / "fed" / "member-00002"
    file = _write(tmp_path / "pw", "from file\n")
    monkeypatch.setenv(passwords.KIT_PASSWORD_ENV, "from env")
    assert passwords.kit_password(encrypted, file) == b"from file"  # the file wins
    assert passwords.kit_password(encrypted, None) == b"from env"
    assert passwords.kit_password(plain, None) is None  # the ambient variable does not apply to a plain kit
    assert passwords.kit_password(plain, file) == b"from file"  # an explicit file does: load_kit refuses it
    monkeypatch.delenv(passwords.KIT_PASSWORD_ENV)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(getpass, "getpass", lambda prompt: "typed" if str(encrypted) in prompt else "")
    assert passwords.kit_password(encrypted, None) == b"typed"
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    with pytest.raises(ConfigurationError, match="--password-file PATH or set FEDSWARM_KIT_PASSWORD"):
        passwords.kit_password(encrypted, None)


@pytest.mark.parametrize(
    ("args", "env", "encrypted"),
    [
        (["--kit-password-file", "{pw}"], "", {"member-00000", "member-00001", "member-00002"}),
        ([], "from env", {"member-00000", "member-00001", "member-00002"}),
        (["--kit-password-file", "{pw}", "--kit-password-file", "member-00002={other}"], "", {"member-00000",
         "member-00001", "member-00002"}),
        ([], "", set()),
    ],
)  # fmt: skip
def test_kit_password_options(tmp_path: Path, args: list[str], env: str, encrypted: set[str]) -> None:
    plain = SPEC.split("[privacy]")[0]
    spec = _write(tmp_path / "plain.toml", plain)
    pw, other = _write(tmp_path / "pw", "every kit\n"), _write(tmp_path / "other", "kit two\n")
    argv = [a.format(pw=pw, other=other) for a in args]
    result = runner.invoke(
        app, ["provision", str(spec), "--out", str(tmp_path / "fed"), *argv], env={"FEDSWARM_KIT_PASSWORD": env}
    )
    assert result.exit_code == 0, result.output
    names = ["member-00000", "member-00001", "member-00002"]
    assert {n for n in names if kits.kit_is_encrypted(tmp_path / "fed" / n)} == encrypted
    for name in encrypted:
        expected = b"kit two" if "member-00002=" in " ".join(argv) and name == "member-00002" else b"every kit"
        expected = b"from env" if env else expected
        assert kits.load_kit(tmp_path / "fed" / name, password=expected).name == name


def test_kit_password_for_an_unknown_member_is_refused(tmp_path: Path) -> None:
    spec = _write(tmp_path / "plain.toml", SPEC.split("[privacy]")[0])
    result = runner.invoke(
        app, ["provision", str(spec), "--out", str(tmp_path / "fed"), "--kit-password-file", "bank-z=/nope"]
    )
    assert result.exit_code != 0 and "'bank-z' is not a member" in result.output
    assert not (tmp_path / "fed").exists()

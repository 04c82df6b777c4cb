"""Deployment: the coordinator and institution tooling, the Docker files, and a real federation on loopback.

Unit tests (fast) cover :mod:`common.pki`, ``seqwatch-coordinator`` (:mod:`server.cli`),
``seqwatch-node`` (:mod:`client.supernode`), the dropout record of the strategy and, when
Debian's ``docker-compose`` is installed, the syntax of ``docker/compose.yml`` + ``compose.tls.yml``.

The integration tests start what an operator starts, with the tooling an operator uses:
``server/scripts/start-superlink.sh`` (TLS + ``--enable-supernode-auth``), ``seqwatch-coordinator
register`` (``flwr supernode register``) and three ``seqwatch-node start`` SuperNodes on
synthetic data (three ``data-path`` folders), all on 127.0.0.1 with free ports and a temporary
``FLWR_HOME``. They check that an unregistered node and plain HTTP are refused, that a 3-round
run completes with every institution's local report, and (one run) that a killed ServerApp
resumes after its last committed round and that a SuperNode killed (SIGKILL) during a round
is recorded as a dropout while the others finish. Every process started here is stopped in
teardown. The model is tiny; wall time is dominated by Flower starting a ``flwr-clientapp``
process per message.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from client import supernode
from common.pki import Federation, PkiError, load_cert, ssh_fingerprint
from server import cli as coordinator

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
INSTITUTIONS = ("alpha", "beta", "gamma")
CONNECTION = "deploy"
USERS = 45  # synthetic users over the three institutions (about 15 train sequences per node)
TINY = (
    "model.hidden=16 model.embed-dim=8 model.layers=1 model.context-dim=4 model.dropout=0.0 "
    "train.epochs=1 train.threads=1 federation.histogram-bins=50 federation.local-epochs=1"
)
T = TypeVar("T")


# =========================================================================== unit: PKI and CLIs


@pytest.fixture
def fed(tmp_path: Path) -> Federation:
    f = Federation.at(tmp_path / "fed")
    assert coordinator.main(["--dir", str(f.root), "init-ca"]) == 0
    assert (
        coordinator.main(["--dir", str(f.root), "server-cert", "--san", "127.0.0.1", "--san", "link.example"])
        == 0
    )
    return f


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ca_and_server_certificate(fed: Federation, capsys: pytest.CaptureFixture[str]) -> None:
    from cryptography import x509

    ca, server = load_cert(fed.ca_cert), load_cert(fed.server_cert)
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["link.example"]
    assert _mode(fed.ca_key) == 0o600 and _mode(fed.server_key) == 0o600
    # a TLS server context accepts the pair; a client context with the CA verifies the chain
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(fed.server_cert, fed.server_key)
    ssl.create_default_context(cafile=str(fed.ca_cert))

    capsys.readouterr()
    before = fed.ca_cert.read_bytes()
    assert coordinator.main(["--dir", str(fed.root), "init-ca"]) == 2
    assert "already exist" in capsys.readouterr().err and fed.ca_cert.read_bytes() == before
    assert coordinator.main(["--dir", str(fed.root), "server-cert"]) == 2
    assert coordinator.main(["--dir", str(fed.root), "server-cert", "--san", "bad name!", "--force"]) == 2
    assert "neither an IP address nor a DNS name" in capsys.readouterr().err
    assert coordinator.main(["--dir", str(fed.root), "init-ca", "--force"]) == 0
    assert fed.ca_cert.read_bytes() != before
    # the SuperLink certificate of the old CA: marked by show, refused by superlink-command
    capsys.readouterr()
    assert coordinator.main(["--dir", str(fed.root), "show"]) == 0
    assert "server.pem" in (out := capsys.readouterr().out) and "** not signed by this ca.crt" in out
    assert coordinator.main(["--dir", str(fed.root), "superlink-command"]) == 2
    assert "not signed by this ca.crt" in capsys.readouterr().err
    assert coordinator.main(["--dir", str(fed.root), "server-cert", "--force"]) == 0
    assert coordinator.main(["--dir", str(fed.root), "superlink-command"]) == 0
    # a certificate cannot outlive its CA (3650 days): asked for more, it says where it ends
    capsys.readouterr()
    assert coordinator.main(["--dir", str(fed.root), "server-cert", "--force", "--days", "4000"]) == 0
    ca_ends = f"{load_cert(fed.ca_cert).not_valid_after_utc:%Y-%m-%d}"
    assert f"valid until {ca_ends}" in (captured := capsys.readouterr()).out
    assert f"warning: the certificate ends with the CA on {ca_ends}, before the 4000 days" in captured.err
    assert coordinator.main(["--dir", str(fed.root), "server-cert", "--force", "--days", "30"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_institution_keys_match_what_flower_reads(fed: Federation, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from flwr.cli.supernode.register import try_load_public_key

    assert coordinator.main(["--dir", str(fed.root), "add-institution", "alpha"]) == 0
    priv, pub = fed.private_key("alpha"), fed.public_key("alpha")
    assert _mode(priv) == 0o600 and priv.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    key = serialization.load_ssh_private_key(priv.read_bytes(), None)  # as flower-supernode loads it
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp384r1"
    assert pub.read_text().startswith("ecdsa-sha2-nistp384 ") and try_load_public_key(pub)
    entry = fed.read_registry()["institutions"]["alpha"]
    assert entry["fingerprint"] == ssh_fingerprint(key.public_key())
    # no silent overwrite; bad names refused
    assert coordinator.main(["--dir", str(fed.root), "add-institution", "alpha"]) == 2
    assert coordinator.main(["--dir", str(fed.root), "add-institution", "../x"]) == 2
    # an institution's own public key: nothing private is written
    other = Federation.at(tmp_path / "other")
    other.add_institution("own")
    assert (
        coordinator.main(
            ["--dir", str(fed.root), "add-institution", "beta", "--public-key", str(other.public_key("own"))]
        )
        == 0
    )
    assert not fed.private_key("beta").exists() and fed.public_key("beta").is_file()
    with pytest.raises(PkiError, match="not an OpenSSH public key"):
        fed.add_institution("gamma", public_key=fed.ca_cert)
    # register --print: the real flwr CLI syntax (PUBLIC_KEY [SUPERLINK] --name NAME)
    assert coordinator.register_argv(fed, "alpha", "prod")[:6] == [
        "flwr",
        "supernode",
        "register",
        str(pub),
        "prod",
        "--name",
    ]


def test_flwr_config_connection_is_read_by_flower(
    fed: Federation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flwr.cli.flower_config import read_superlink_connection

    home = tmp_path / "flwr-home"
    monkeypatch.setenv("FLWR_HOME", str(home))
    args = ["--dir", str(fed.root), "flwr-config", "--connection", "fed", "--address", "127.0.0.1:9093"]
    assert coordinator.main(args) == 0
    assert coordinator.main(args) == 2  # exists
    assert coordinator.main([*args[:-1], "127.0.0.1:9443", "--force", "--default"]) == 0
    conn = read_superlink_connection("fed")
    assert conn.address == "127.0.0.1:9443" and conn.root_certificates == str(fed.ca_cert)
    assert not conn.insecure
    assert read_superlink_connection(None).name == "fed"  # default
    assert read_superlink_connection("local").address == ":local:"  # kept
    assert coordinator.main([*args[:-1], "https://x:1"]) == 2


def test_superlink_command_and_script_flags(fed: Federation) -> None:
    from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink

    argv = coordinator.superlink_argv(fed, host="127.0.0.1", port=9443, database="state.db")
    args = _parse_args_run_superlink().parse_args(argv[1:])  # every flag exists in flwr 1.42
    assert args.enable_supernode_auth and not args.insecure and args.port == 9443
    assert args.ssl_certfile == str(fed.server_cert) and args.ssl_ca_certfile == str(fed.ca_cert)
    for script in ("start-superlink.sh", "run.sh", "follow.sh"):
        path = REPO / "server" / "scripts" / script
        assert os.access(path, os.X_OK), f"{path} is not executable"
        subprocess.run(["bash", "-n", str(path)], check=True)


def _error_lines(err: str) -> list[str]:
    """The ``error:`` lines of stderr; a traceback would fail the callers' one-line checks."""
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if "error:" in line]


def test_start_superlink_script_help_and_a_failing_subcommand(fed: Federation, tmp_path: Path) -> None:
    script = str(REPO / "server" / "scripts" / "start-superlink.sh")
    env = {**os.environ, "PYTHON": sys.executable, "SEQWATCH_FEDERATION_DIR": str(fed.root)}
    for flag in ("--help", "-h"):
        proc = subprocess.run(["bash", script, flag], env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0 and proc.stdout.startswith("usage: "), proc
        assert "--database FILE" in proc.stdout and not proc.stderr
    # a failing superlink-command stops the script with its one-line error: nothing is eval'ed or run
    for args, dir_, message in (
        (["--port", "99999"], fed.root, "argument --port: port '99999': not a port number (1-65535)"),
        (["--host", "not host"], fed.root, "argument --host: host 'not host': neither an IP address"),
        ([], tmp_path / "empty", "ca.crt: missing; run init-ca and server-cert first"),
    ):
        proc = subprocess.run(
            ["bash", script, *args],
            env={**env, "SEQWATCH_FEDERATION_DIR": str(dir_)},
            capture_output=True,
            text=True,
            check=False,
        )
        errors = _error_lines(proc.stderr)
        assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc
        assert "command not found" not in proc.stderr and "starting:" not in proc.stderr


@pytest.mark.parametrize("days", ["-5", "0", "1.5", "ten", "99999999"])
@pytest.mark.parametrize("command", ["init-ca", "server-cert"])
def test_days_must_be_a_positive_whole_number(
    fed: Federation, capsys: pytest.CaptureFixture[str], command: str, days: str
) -> None:
    capsys.readouterr()
    before = fed.ca_cert.read_bytes(), fed.server_cert.read_bytes()
    assert coordinator.main(["--dir", str(fed.root), command, "--force", "--days", days]) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and f"argument --days: days '{days}': give the validity" in errors[0]
    assert (fed.ca_cert.read_bytes(), fed.server_cert.read_bytes()) == before
    with pytest.raises(PkiError, match="whole number of days"):  # the library checks it too
        (fed.init_ca if command == "init-ca" else fed.server_cert_issue)(days=-5, force=True)


def test_expired_ca_signs_nothing_and_show_flags_expiry(
    fed: Federation, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime as dt

    from common import pki

    real_now = pki._now()
    d = ["--dir", str(fed.root)]
    capsys.readouterr()
    assert coordinator.main([*d, "show"]) == 0
    assert "**" not in capsys.readouterr().out  # a fresh CA and certificate: nothing to flag

    monkeypatch.setattr(pki, "_now", lambda: real_now + dt.timedelta(days=3651))  # the CA has expired
    before = fed.server_cert.read_bytes()
    assert coordinator.main([*d, "server-cert", "--force"]) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert (
        len(errors) == 1 and "the CA certificate expired on" in errors[0] and "refusing to sign" in errors[0]
    )
    assert fed.server_cert.read_bytes() == before
    assert coordinator.main([*d, "show"]) == 0
    ca_line, server_line = capsys.readouterr().out.splitlines()
    assert (
        ca_line.startswith("ca.crt:")
        and "** certificate expired on" in ca_line
        and "init-ca --force" in ca_line
    )
    assert server_line.startswith("server.pem:") and "** certificate expired on" in server_line

    monkeypatch.setattr(pki, "_now", lambda: real_now + dt.timedelta(days=3640))  # CA: 10 days left
    assert coordinator.main([*d, "show"]) == 0
    ca_line, server_line = capsys.readouterr().out.splitlines()
    assert "** certificate expires in 9 days" in ca_line and "expired on" in server_line

    monkeypatch.setattr(pki, "_now", lambda: real_now - dt.timedelta(days=1))  # a clock behind the CA
    assert coordinator.main([*d, "server-cert", "--force"]) == 2
    assert "the CA certificate is not valid before" in capsys.readouterr().err


def test_a_public_key_is_registered_under_one_name_only(
    fed: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ["--dir", str(fed.root)]
    assert coordinator.main([*d, "add-institution", "alpha"]) == 0
    own = tmp_path / "alpha-copy.pub"
    shutil.copy(fed.public_key("alpha"), own)
    capsys.readouterr()
    assert coordinator.main([*d, "add-institution", "delta", "--public-key", str(own)]) == 2
    errors = _error_lines(capsys.readouterr().err)
    fingerprint = fed.read_registry()["institutions"]["alpha"]["fingerprint"]
    assert len(errors) == 1 and f"({fingerprint}) is already registered as institution 'alpha'" in errors[0]
    assert fed.institution_names() == ["alpha"] and not fed.public_key("delta").exists()
    # a name that differs only in case would share its key files where case is ignored
    assert coordinator.main([*d, "add-institution", "Alpha"]) == 2
    assert "'Alpha' differs from it only in case" in capsys.readouterr().err
    assert fed.institution_names() == ["alpha"]
    # the same institution may re-register its own key (--force)
    assert coordinator.main([*d, "add-institution", "alpha", "--force", "--public-key", str(own)]) == 0
    # a new key for a registered node: the old key is still admitted, and the warning names its node
    fed.record_node_id("alpha", 4242)
    capsys.readouterr()
    assert coordinator.main([*d, "add-institution", "alpha", "--force"]) == 0
    err = capsys.readouterr().err
    assert f"the replaced key ({fingerprint}) is still registered on the SuperLink as node 4242" in err
    assert (
        "flwr supernode unregister 4242" in err
        and fed.read_registry()["institutions"]["alpha"]["node_id"] is None
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--connection", "bad name", "--address", "127.0.0.1:8000"], "connection name 'bad name': use"),
        (["--address", "127.0.0.1"], "address '127.0.0.1': expected HOST:PORT"),
        (["--address", "127.0.0.1:99999"], "port '99999': not a port number (1-65535)"),
        (["--address", "bad!host:8000"], "host 'bad!host': neither an IP address nor a host name"),
        (["--address", "https://x:1"], "without a scheme"),
    ],
)
def test_flwr_config_print_checks_what_writing_checks(
    fed: Federation,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    home = ["--flwr-home", str(tmp_path / "home")]
    capsys.readouterr()
    for extra in (["--print"], []):
        assert coordinator.main(["--dir", str(fed.root), "flwr-config", *home, *flags, *extra]) == 2
        out, err = capsys.readouterr()
        errors = _error_lines(err)
        assert not out and len(errors) == 1 and message in errors[0], (extra, err)
    assert not (tmp_path / "home").exists()
    good = ["--dir", str(fed.root), "flwr-config", *home, "--address", "[::1]:8000", "--print"]
    assert coordinator.main(good) == 2  # server.pem is not valid for ::1: TLS would refuse it
    assert "'::1' is not among the names server.pem is valid for (" in capsys.readouterr().err
    reissue = ["--dir", str(fed.root), "server-cert", "--force", "--san", "127.0.0.1", "--san", "::1"]
    assert coordinator.main(reissue) == 0
    capsys.readouterr()
    assert coordinator.main(good) == 0 and 'address = "[::1]:8000"' in capsys.readouterr().out


def test_hosts_and_ports_are_checked_alike_everywhere(
    fed: Federation, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ["--dir", str(fed.root)]
    cases = [
        (["superlink-command", "--port", "99999"], "port '99999': not a port number (1-65535)"),
        (["superlink-command", "--port", "0"], "port '0': not a port number (1-65535)"),
        (["flwr-config", "--address", "h:0", "--print"], "port '0': not a port number (1-65535)"),
        (["superlink-command", "--host", "not host"], "host 'not host': neither an IP address nor a host"),
        (["flwr-config", "--address", "a/b:80", "--print"], "expected HOST:PORT"),
        (["flwr-config", "--address", "a,b:80", "--print"], "host 'a,b': neither an IP address nor a host"),
        (["register", "--connection", "a b", "--print"], "connection name 'a b': use letters"),
    ]
    capsys.readouterr()
    for argv, message in cases:
        assert coordinator.main([*d, *argv]) == 2, argv
        out, err = capsys.readouterr()
        errors = _error_lines(err)
        assert not out and len(errors) == 1 and message in errors[0], (argv, err)
    assert coordinator.main([*d, "superlink-command", "--host", "::", "--port", "65535"]) == 0
    assert "--host :: --port 65535" in capsys.readouterr().out
    # one validator per value, shared by every subcommand's parser
    types = {
        (action.dest, action.type)
        for sub in _subparsers(coordinator.build_parser()).values()
        for action in sub._actions
        if action.dest in ("host", "port", "address", "connection", "days")
    }
    assert {t for _, t in types} == {
        coordinator.HOST,
        coordinator.PORT,
        coordinator.ADDRESS,
        coordinator.CONNECTION,
        coordinator.DAYS,
    }


def _subparsers(parser: Any) -> dict[str, Any]:
    import argparse

    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize(
    ("returncode", "output", "status", "problem"),
    [
        (
            0,
            '{"success": false, "error-message": "Connection to the SuperLink is unavailable."}',
            None,
            "register failed: Connection to the SuperLink is unavailable; check that the SuperLink is "
            "running and reachable through connection 'prod' (flwr supernode list prod)",
        ),
        (1, "Error: No such option: --format", "(exit status 1)", "No such option: --format"),
    ],
)
def test_register_failure_shows_the_real_exit_status(
    fed: Federation,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    returncode: int,
    output: str,
    status: str | None,
    problem: str,
) -> None:
    fed.add_institution("alpha")
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    # a connection flwr does not know: said once, before any flwr call, and not blamed on the network
    assert coordinator.main(["--dir", str(fed.root), "register", "--connection", "prod"]) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "--connection prod: no [superlink.prod] in " in errors[0]
    config = ["flwr-config", "--connection", "prod", "--address", "127.0.0.1:9443"]
    assert coordinator.main(["--dir", str(fed.root), *config]) == 0
    monkeypatch.setattr(coordinator, "_flwr_bin", lambda name: name)
    monkeypatch.setattr(
        subprocess,
        "run",
        lambda argv, **kw: subprocess.CompletedProcess(argv, returncode, stdout=output, stderr=""),
    )
    capsys.readouterr()
    assert coordinator.main(["--dir", str(fed.root), "register", "--connection", "prod"]) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and errors[0].startswith("seqwatch-coordinator: error: alpha: flwr supernode")
    assert problem in errors[0]
    assert ("exit" in errors[0]) == (status is not None) and (status is None or status in errors[0])
    assert fed.read_registry()["institutions"]["alpha"]["node_id"] is None


def test_dir_is_accepted_after_the_subcommand_and_shown_in_every_help(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert coordinator.main(["init-ca", "--dir", str(first), "--days", "30"]) == 0
    assert (first / "ca.crt").is_file()
    # given on both sides, the one after the subcommand wins
    assert coordinator.main(["--dir", str(first), "init-ca", "--dir", str(second)]) == 0
    assert (second / "ca.crt").is_file()
    assert coordinator.main(["server-cert", "--dir", str(second), "--san", "127.0.0.1"]) == 0
    capsys.readouterr()
    assert coordinator.main(["list", "--dir", str(second), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {}
    subs = _subparsers(coordinator.build_parser())
    assert set(subs) >= {"init-ca", "server-cert", "add-institution", "list", "flwr-config", "register"}
    for name, sub in subs.items():
        assert "--dir DIR" in sub.format_help(), name
    assert coordinator.main(["show", "--help"]) == 0
    assert "--dir DIR" in capsys.readouterr().out


def test_docker_docs_build_the_cuda_image_and_keep_keys_outside_the_app() -> None:
    import re

    import yaml

    docker = REPO / "docker"
    readme = (docker / "README.md").read_text()
    snippets = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", readme, re.S)]
    gpu = [
        svc
        for snippet in snippets
        for svc in (snippet.get("services") or snippet).values()
        if str(svc.get("image", "")).endswith("-cuda")
    ]
    assert gpu, "no GPU snippet in docker/README.md"
    for svc in gpu:  # the whole build replaced: the x-executor anchor builds the CPU Dockerfile
        build = svc["build"]
        assert build["dockerfile"] == "docker/Dockerfile.cuda" and build["context"] == ".."
        assert (REPO / build["dockerfile"]).is_file() and "AS superexec" in (
            REPO / build["dockerfile"]
        ).read_text()
    # the TLS walk-through and overlay use $SEQWATCH_FEDERATION_DIR (outside the app folder), as the runbook
    tls = (docker / "compose.tls.yml").read_text()
    assert "../federation" not in readme and "../federation" not in tls
    assert "${SEQWATCH_FEDERATION_DIR:-" not in tls and "${SEQWATCH_FEDERATION_DIR:?" in tls
    assert 'export SEQWATCH_FEDERATION_DIR="$HOME/seqwatch-federation"' in readme
    runbook = (REPO / "docs" / "runbook-coordinator.md").read_text()
    assert "export SEQWATCH_FEDERATION_DIR=$HOME/seqwatch-federation" in runbook


@pytest.fixture
def node_setup(tmp_path: Path, fed: Federation) -> dict[str, str]:
    fed.add_institution("alpha")
    assert (
        supernode.main(
            ["demo-data", "--institution", "0", "--of", "3", "--users", "30", "--out", str(tmp_path / "data")]
        )
        == 0
    )
    return {
        "--superlink": "127.0.0.1:9443",
        "--ca": str(fed.ca_cert),
        "--key": str(fed.private_key("alpha")),
        "--data-path": str(tmp_path / "data"),
        "--output-dir": str(tmp_path / "out"),
    }


def _node(cmd: str, opts: dict[str, str], *extra: str) -> list[str]:
    return [cmd, *(x for kv in opts.items() for x in kv), *extra]


def test_node_check_passes_on_a_good_setup(
    node_setup: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert supernode.main(_node("check", node_setup)) == 0
    out = capsys.readouterr().out
    assert "matches the private key" in out and "data train.parquet" in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--ca": "{fed}/server.pem"}, "is not a CA certificate"),
        ({"--ca": "{tmp}/none.crt"}, "CA certificate {tmp}/none.crt: no such file"),
        ({"--key": "{fed}/institutions/alpha.pub"}, "this is a public key"),
        ({"--key": "{fed}/ca.key"}, "not an unencrypted OpenSSH private key"),
        ({"--data-path": "{tmp}/nowhere"}, "no such folder"),
        ({"--data-path": "{tmp}"}, "no train table"),
        ({"--superlink": "https://127.0.0.1:9443"}, "give host:port without a scheme"),
        ({"--superlink": "127.0.0.1"}, "expected HOST:PORT"),
        ({"--superlink": "localhost:99999"}, "port '99999': not a port number (1-65535)"),
        ({"--public-key": "{other}"}, "does not belong to the registered public key"),
        ({"--registry": "{fed}/institutions.json", "--name": "zeta"}, "no institution 'zeta'"),
        ({"chmod": "0o644"}, "lets every user read it"),
    ],
)
def test_node_check_names_each_problem(
    node_setup: dict[str, str],
    fed: Federation,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, str],
    message: str,
) -> None:
    other = Federation.at(tmp_path / "other")
    other.add_institution("x")
    fmt = {"fed": str(fed.root), "tmp": str(tmp_path), "other": str(other.public_key("x"))}
    opts = dict(node_setup)
    for k, v in change.items():
        if k == "chmod":
            os.chmod(opts["--key"], int(v, 0))
        else:
            opts[k] = v.format(**fmt)
    assert supernode.main(_node("check", opts)) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and message.format(**fmt) in errors[0], errors


def test_node_check_refuses_a_busy_port(
    node_setup: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert supernode.main(_node("check", node_setup, "--port", str(port))) == 2
    assert f"--port {port}: cannot listen" in capsys.readouterr().err


def test_node_start_dry_run_builds_the_supernode_command(
    node_setup: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flwr.common.config import parse_config_args
    from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

    key_file = tmp_path / "hash.key"
    key_file.write_text('it\'s a "secret" key\n')
    key_file.chmod(0o600)  # a world-readable hash key file is refused, as a private key is
    opts = {**node_setup, "--hash-key-file": str(key_file)}
    assert supernode.main(_node("start", opts, "--dry-run", "--port", "9555")) == 2  # both quote kinds
    assert "must not contain both" in capsys.readouterr().err
    key_file.write_text("it's secret\n")
    assert (
        supernode.main(_node("start", opts, "--dry-run", "--port", "9555", "--", "--max-retries", "3")) == 0
    )
    shown = capsys.readouterr().out
    assert "it's secret" not in shown  # the key is masked on screen
    args = supernode.build_parser().parse_args(_node("start", opts, "--port", "9555"))
    args.extra = ["--max-retries", "3"]  # what main() splits off after '--'
    argv = supernode.supernode_argv(args, 9555, supernode.inline_node_config(supernode.node_config(args)))
    parsed = _parse_args_run_supernode().parse_args(argv[1:])  # every flag exists in flwr 1.42
    assert parsed.port == 9555 and parsed.max_retries == 3 and not parsed.insecure
    assert parsed.root_certificates == str(Path(node_setup["--ca"]).resolve())
    conf = parse_config_args([parsed.node_config])
    assert conf == {
        "data-path": str(Path(node_setup["--data-path"]).resolve()),
        "output-dir": str(Path(node_setup["--output-dir"]).resolve()),
        "hash-key": "it's secret",
    }
    # the TOML variant keeps the key out of the process list and parses to the same config
    toml = supernode.write_node_config_toml(tmp_path / "node.toml", supernode.node_config(args))
    assert _mode(toml) == 0o600 and parse_config_args([str(toml)]) == conf


@pytest.fixture
def no_env_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seqwatch-node tests below read no SEQWATCH_* settings of whoever runs them."""
    for name in list(os.environ):
        if name.startswith("SEQWATCH_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("content", "mode", "flags", "env", "message"),
    [
        (" \n", 0o600, ["--hash-key-file", "{key}"], {}, "hash key file {key} (--hash-key-file) is empty"),
        ("", 0o600, [], {"SEQWATCH_HASH_KEY_FILE": "{key}"}, "({dollar}SEQWATCH_HASH_KEY_FILE) is empty"),
        (None, None, ["--hash-key", ""], {}, "--hash-key is empty"),
        (None, None, [], {"SEQWATCH_HASH_KEY": " "}, "{dollar}SEQWATCH_HASH_KEY is empty"),
        ("k\n", 0o644, ["--hash-key-file", "{key}"], {}, "mode 0644 lets every user read the shared secret"),
        ("k\n", 0o600, ["--hash-key", "k", "--hash-key-file", "{key}"], {}, "both given; give one"),
        ("k\n", 0o600, [], {"SEQWATCH_HASH_KEY": "k", "SEQWATCH_HASH_KEY_FILE": "{key}"}, "are both set"),
        (None, None, ["--hash-key-file", "{key}"], {}, "hash key file {key} (--hash-key-file): no such file"),
    ],
)
@pytest.mark.usefixtures("no_env_defaults")
def test_node_hash_key_given_but_unusable_is_an_error(
    node_setup: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    mode: int | None,
    flags: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    key = tmp_path / "hash.key"
    if content is not None and mode is not None:
        key.write_text(content)
        key.chmod(mode)
    fmt = {"key": str(key), "dollar": "$"}
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(**fmt))
    args = [x.format(**fmt) for x in flags]
    for cmd, extra in (("check", ()), ("start", ("--dry-run",))):
        assert supernode.main(_node(cmd, node_setup, *args, *extra)) == 2
        captured = capsys.readouterr()
        errors = [line for line in captured.err.splitlines() if ": error: " in line]
        assert len(errors) == 1 and message.format(**fmt) in errors[0], errors
        assert "would run" not in captured.out and "Traceback" not in captured.err


@pytest.mark.usefixtures("no_env_defaults")
def test_node_hash_key_flag_wins_over_the_environment(
    node_setup: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "hash.key"
    key.write_text("from the file\n")
    key.chmod(0o640)  # group-readable, as the private key may be
    monkeypatch.setenv("SEQWATCH_HASH_KEY", "from the environment")
    args = supernode.build_parser().parse_args(_node("start", node_setup, "--hash-key-file", str(key)))
    assert supernode.node_config(args)["hash-key"] == "from the file"
    monkeypatch.delenv("SEQWATCH_HASH_KEY")
    monkeypatch.setenv("SEQWATCH_HASH_KEY_FILE", str(key))
    args = supernode.build_parser().parse_args(_node("start", node_setup, "--hash-key", "the flag"))
    assert supernode.node_config(args)["hash-key"] == "the flag"
    assert supernode.main(_node("check", node_setup, "-q")) == 0  # the 0640 file from the environment


@pytest.mark.usefixtures("no_env_defaults")
def test_node_start_dry_run_writes_no_node_config_file(
    node_setup: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "hash.key"
    key.write_text("top secret\n")
    key.chmod(0o600)
    conf = tmp_path / "node.toml"
    opts = {**node_setup, "--hash-key-file": str(key), "--node-config-file": str(conf)}
    assert supernode.main(_node("start", opts, "--dry-run", "--port", "9555")) == 0
    out = capsys.readouterr().out
    assert not conf.exists()
    assert f"would write (mode 0600) {conf}: " in out and "hash-key=***" in out
    assert f"--node-config {conf}" in out and "top secret" not in out


@pytest.mark.usefixtures("no_env_defaults")
def test_node_ports_are_checked_when_parsed(
    node_setup: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for port in ("70000", "0", "http"):
        assert supernode.main(_node("check", node_setup, "--port", port)) == 2
        err = capsys.readouterr().err
        assert "argument --port: " in err and "not a port number (1-65535)" in err and "Traceback" not in err
    monkeypatch.setenv("SEQWATCH_NODE_PORT", "abc")
    assert supernode.main(["check", "--help"]) == 0  # a mistyped variable does not break --help
    assert "$SEQWATCH_NODE_PORT" in capsys.readouterr().out
    for cmd in ("check", "start"):
        assert supernode.main(_node(cmd, node_setup, "--dry-run" if cmd == "start" else "-q")) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines == [
            "seqwatch-node: error: $SEQWATCH_NODE_PORT: port 'abc': not a port number (1-65535); "
            "fix or unset it (unset: a free port)"
        ]
    monkeypatch.setenv("SEQWATCH_NODE_PORT", "65536")
    assert supernode.main(_node("check", node_setup, "-q")) == 2
    assert "$SEQWATCH_NODE_PORT: port '65536': not a port number" in capsys.readouterr().err


@pytest.mark.usefixtures("no_env_defaults")
def test_node_check_says_which_label_column_the_node_reads(
    node_setup: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    from client.data import deployment_data

    data = tmp_path / "csv"
    demo = ["demo-data", "--institution", "0", "--of", "3", "--users", "30", "--format", "csv"]
    assert supernode.main([*demo, "--out", str(data)]) == 0
    col_map = data / "columns.json"
    col_map.write_text(json.dumps({"sequence": "sequence", "event": "event", "order": "order"}))
    opts = {**node_setup, "--data-path": str(data)}
    assert supernode.main(_node("check", opts)) == 0
    captured = capsys.readouterr()
    assert "data test.csv: sequence 'sequence', event 'event', label 'label' (by name" in captured.out
    assert "detection figures" not in captured.err
    test = deployment_data(str(data)).test
    assert test is not None and test.has_labels  # a map without "label" still reads the 'label' column
    frame = pd.read_csv(data / "test.csv")
    frame.drop(columns=["label", "attack_type"]).to_csv(data / "test.csv", index=False)
    assert supernode.main(_node("check", opts, "-q")) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if ": warning: data-path" in line]
    assert len(warnings) == 1 and "will report no detection figures" in warnings[0], warnings
    assert f'add "label": "COLUMN" to the column map {col_map}' in warnings[0]
    col_map.write_text(json.dumps({"sequence": "sequence", "event": "event", "label": "is_attack"}))
    assert supernode.main(_node("check", opts, "-q")) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(errors) == 2 and all("names column(s) ['is_attack'] that the file lacks" in e for e in errors)


def test_node_check_reads_the_data_as_the_node_will(
    node_setup: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every row read, the test table with the training table's columns: what would stop the node
    stops the check; a test table of other events is a warning."""
    import pandas as pd

    data = tmp_path / "csv"
    demo = ["demo-data", "--institution", "0", "--of", "3", "--users", "30", "--format", "csv"]
    assert supernode.main([*demo, "--out", str(data)]) == 0
    opts = {**node_setup, "--data-path": str(data)}
    assert supernode.main(_node("check", opts)) == 0
    assert "data read as the node reads it: " in capsys.readouterr().out
    train, test = pd.read_csv(data / "train.csv"), pd.read_csv(data / "test.csv")
    numeric = [c for c in train.columns if c not in ("sequence", "order", "event", "label", "attack_type")]
    broken = {  # demo-data writes a column map beside the tables: the check names what it lacks
        "test.csv": (test.drop(columns=numeric[:1]), f"names column(s) [{numeric[0]!r}] that the file lacks"),
        "train.csv": (train, "line 3 has"),
    }
    for name, (frame, message) in broken.items():
        frame.to_csv(data / name, index=False)
        if name == "train.csv":  # a stray value in one row
            lines = (data / name).read_text().splitlines()
            lines[2] += ",stray"
            (data / name).write_text("\n".join(lines) + "\n")
        assert supernode.main(_node("check", opts, "-q")) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
        assert len(errors) == 1 and message in errors[0], errors
        (train if name == "train.csv" else test).to_csv(data / name, index=False)
    test.assign(event="other-" + test["event"].astype(str)).to_csv(data / "test.csv", index=False)
    assert supernode.main(_node("check", opts, "-q")) == 0
    assert "100% of the test table's events never occur in the training table" in capsys.readouterr().err


def test_node_help_describes_commands_and_lists_every_environment_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import inspect
    import re

    names = set(re.findall(r"\"(SEQWATCH_[A-Z_]+)\"", inspect.getsource(supernode)))
    assert {"SEQWATCH_NODE_PUBLIC_KEY", "SEQWATCH_NODE_PORT", "SEQWATCH_HASH_KEY"} <= names
    described = {"check": "one line per problem", "start": "write nothing", "demo-data": "synthetic"}
    for cmd, words in described.items():
        assert supernode.main([cmd, "--help"]) == 0
        out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        assert words in out.split("options:")[0], out
        if cmd != "demo-data":
            assert not [n for n in sorted(names) if f"${n}" not in out], out


def test_dropout_record_counts_failed_and_missing_replies(tmp_path: Path) -> None:
    import numpy as np
    from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity
    from helpers import StubGrid, strategy_of

    from common.config import FederationConfig
    from server.rundir import RunDir
    from server.strategy import RecordingMixin

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1

    class Grid3(StubGrid):
        def get_node_ids(self) -> list[int]:
            return [11, 12, 13]

    run = RunDir(tmp_path / "r")
    run.reset()
    strategy = strategy_of(RecordingMixin, FederationConfig(min_nodes=2))
    init = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    strategy.setup_recording(run, initial_arrays=init)
    sent = list(strategy.configure_train(1, init, ConfigRecord({}), Grid3()))

    def ok(msg: Message, **metrics: Any) -> Message:
        content: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {
            "metrics": MetricRecord({"num-examples": 10, **metrics})
        }
        if msg.metadata.message_type == "train":
            content["arrays"] = ArrayRecord({"w": Array(np.ones(2, dtype=np.float32))})
        return Message(RecordDict(content), reply_to=msg)

    by_node = {m.metadata.dst_node_id: m for m in sent}
    # node 13 dies: the SuperLink answers with an error for it
    replies = [
        ok(by_node[11], **{"train-loss": 1.0}),
        ok(by_node[12], **{"train-loss": 2.0}),
        Message(Error(code=5, reason="node unavailable"), reply_to=by_node[13]),
    ]
    strategy.aggregate_train(1, replies)

    class Grid2(StubGrid):
        def get_node_ids(self) -> list[int]:
            return [11, 12]

    sent = list(strategy.configure_evaluate(1, init, ConfigRecord({"hist-bins": 4}), Grid2()))
    by_node = {m.metadata.dst_node_id: m for m in sent}
    strategy.aggregate_evaluate(1, [ok(by_node[11], **{"val-loss": 1.0})])  # node 12: no reply at all
    row = run.read_metrics()[-1]
    assert row["nodes-sampled"] == 3 and row["nodes-replied"] == 1 and row["nodes-failed"] == 2
    assert row["failed-node-ids"] == [12, 13] and row["train-failures"] == 1 and row["train-nodes"] == 2


# =========================================================================== docker files


def test_compose_files_are_valid(tmp_path: Path) -> None:
    import yaml

    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not installed (apt-get install -y docker-compose)")
    docker = REPO / "docker"
    env = {**os.environ, "SEQWATCH_FEDERATION_DIR": str(tmp_path / "fed"), "SEQWATCH_HASH_KEY": "k3y"}
    configs = {}
    for files in (("compose.yml",), ("compose.yml", "compose.tls.yml")):
        argv = [exe, *(x for f in files for x in ("-f", str(docker / f))), "config"]
        proc = subprocess.run(argv, cwd=docker, env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        configs[files[-1]] = yaml.safe_load(proc.stdout)["services"]
    institutions = [f"supernode-{n}" for n in INSTITUTIONS]
    plain, tls = configs["compose.yml"], configs["compose.tls.yml"]
    assert set(plain) == {
        "superlink",
        "serverapp",
        *institutions,
        *(f"clientapp-{n}" for n in INSTITUTIONS),
        *(f"data-{n}" for n in INSTITUTIONS),
    }
    assert plain["superlink"]["image"] == "flwr/superlink:1.42.0"
    assert all(plain[s]["image"] == "flwr/supernode:1.42.0" for s in institutions)
    for name, svc in tls.items():
        command = svc.get("command") or []
        assert "--plugin-type" not in command and not {"9091", "9092", "9093"} & set(map(str, command))
        if name in ("superlink", "serverapp", *institutions):
            assert "--insecure" not in command, name
            assert all(v.endswith(":ro") for v in svc["volumes"] if "/certs/" in v or "/keys/" in v), name
    assert "--enable-supernode-auth" in tls["superlink"]["command"]
    assert "0.0.0.0" in tls["superlink"]["command"] and "0.0.0.0" in tls["supernode-alpha"]["command"]
    node_conf = tls["supernode-alpha"]["command"][
        tls["supernode-alpha"]["command"].index("--node-config") + 1
    ]
    assert node_conf == "data-path='/data' output-dir='/output' hash-key='k3y'"
    assert f"{tmp_path / 'fed'}/institutions/alpha:/keys/node.key:ro" in tls["supernode-alpha"]["volumes"]
    # a missing hash key is an error, not an empty secret
    env.pop("SEQWATCH_HASH_KEY")
    proc = subprocess.run(
        [exe, "-f", "compose.yml", "config"], cwd=docker, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0 and "SEQWATCH_HASH_KEY" in proc.stderr
    for name in ("Dockerfile", "Dockerfile.cuda"):
        text = (docker / name).read_text()
        assert "ARG BASE_IMAGE=flwr/superexec:1.42.0" in text and "download.pytorch.org/whl/" in text
    assert '--extra-index-url "${TORCH_INDEX}"' in (docker / "Dockerfile").read_text()


# =========================================================================== integration: loopback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], T | None], timeout: float, every: float = 0.5) -> T:
    """``check()``'s first truthy value; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def _argv(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        return []


def pids_with(*args: str) -> list[int]:
    """Live processes whose argv holds every one of ``args`` as a whole argument."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and all(a in _argv(int(entry.name)) for a in args):
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop(pids: list[int], sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@dataclass
class Deployment:
    """A running loopback federation and the helpers the tests need."""

    root: Path
    env: dict[str, str]
    fed: Federation
    port: int
    superlink: subprocess.Popen[bytes]
    nodes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    node_ports: dict[str, int] = field(default_factory=dict)
    node_ids: dict[str, int] = field(default_factory=dict)
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def data(self, name: str) -> Path:
        return self.root / "data" / name

    def output(self, name: str) -> Path:
        return self.root / "out" / name

    def popen(self, argv: list[str], log: str, **kw: Any) -> subprocess.Popen[bytes]:
        fh = open(self.root / "logs" / log, "wb")  # noqa: SIM115 - the child keeps its own copy
        proc = subprocess.Popen(
            argv,
            cwd=kw.pop("cwd", REPO),
            env=self.env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kw,
        )
        fh.close()
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.root / "logs" / name
        return path.read_text(errors="replace") if path.is_file() else ""

    def flwr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "flwr"), *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start_node(self, name: str, index: int, *, key: str | None = None) -> subprocess.Popen[bytes]:
        port = _free_port()
        argv = [
            sys.executable,
            "-m",
            "client.supernode",
            "start",
            "-q",
            "--superlink",
            self.address,
            "--ca",
            str(self.fed.ca_cert),
            "--key",
            str(self.fed.private_key(key or name)),
            "--registry",
            str(self.fed.registry_path),
            "--name",
            key or name,
            "--data-path",
            str(self.data(f"n{index}")),
            "--output-dir",
            str(self.output(name)),
            "--hash-key-file",
            str(self.root / "hash.key"),
            "--port",
            str(port),
        ]
        proc = self.popen(argv, f"node-{name}.log")
        self.node_ports[name] = port
        return proc

    def online_nodes(self) -> set[int]:
        res = self.flwr("supernode", "list", CONNECTION, "--format", "json")
        if res.returncode != 0:
            return set()
        start = res.stdout.find("{")
        data = json.loads(res.stdout[start:]) if start >= 0 else {}
        return {int(n["node-id"]) for n in data.get("nodes", []) if n.get("status") == "online"}

    def run_argv(self, name: str, rounds: int, min_nodes: int) -> list[str]:
        config = (
            f"{TINY} federation.num-server-rounds={rounds} federation.min-nodes={min_nodes} "
            f"federation.run-dir='{self.root / 'runs'}' federation.run-name='{name}' "
            "federation.round-timeout=240.0"
        )
        return ["bash", str(REPO / "server" / "scripts" / "run.sh"), CONNECTION, "--run-config", config]

    def serverapps(self) -> list[int]:
        return [
            p
            for p in pids_with("--runtime-api-address", self.address)
            if _argv(p)[1:2] and _argv(p)[1].endswith("flwr-serverapp") and _alive(p)
        ]

    def kill_node(self, name: str) -> None:
        """SIGKILL a SuperNode with everything it started (a crashed machine)."""
        proc = self.nodes[name]
        children = pids_with("--runtime-api-address", f"127.0.0.1:{self.node_ports[name]}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stop(children, signal.SIGKILL, grace=5)
        proc.wait(timeout=10)

    def teardown(self) -> None:
        ports = [self.port, *self.node_ports.values()]
        spawned = [p for port in ports for p in pids_with("--runtime-api-address", f"127.0.0.1:{port}")]
        for proc in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        stop([p.pid for p in self.started if p.poll() is None] + spawned, grace=15)
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def _tls_ready(address: tuple[str, int], ca: Path) -> bool:
    try:
        ctx = ssl.create_default_context(cafile=str(ca))
        with (
            socket.create_connection(address, timeout=2) as s,
            ctx.wrap_socket(s, server_hostname=address[0]),
        ):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deploy")
    (root / "logs").mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHON": sys.executable,
        "FLWR_HOME": str(root / "flwr-home"),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "SEQWATCH_FEDERATION_DIR": str(root / "fed"),
    }
    fed = Federation.at(root / "fed")
    d = ["--dir", str(fed.root)]
    assert coordinator.main([*d, "init-ca"]) == 0
    assert coordinator.main([*d, "server-cert", "--san", "127.0.0.1", "--san", "localhost"]) == 0
    for name in (*INSTITUTIONS, "rogue"):
        assert coordinator.main([*d, "add-institution", name]) == 0
    assert (
        coordinator.main(
            [
                *d,
                "flwr-config",
                "--connection",
                CONNECTION,
                "--address",
                f"127.0.0.1:{port}",
                "--flwr-home",
                env["FLWR_HOME"],
            ]
        )
        == 0
    )
    for i in range(len(INSTITUTIONS)):
        out = str(root / "data" / f"n{i}")
        assert (
            supernode.main(
                ["demo-data", "--institution", str(i), "--of", "3", "--users", str(USERS), "--out", out]
            )
            == 0
        )
    (root / "hash.key").write_text("loopback federation key\n")
    os.chmod(root / "hash.key", 0o600)

    script = REPO / "server" / "scripts" / "start-superlink.sh"
    # superlink=None until dep.popen (a method of the Deployment) has started it, just below
    dep = Deployment(root=root, env=env, fed=fed, port=port, superlink=None)  # type: ignore[arg-type]
    try:
        dep.superlink = dep.popen(
            ["bash", str(script), "--host", "127.0.0.1", "--port", str(port)], "superlink.log", cwd=root
        )
        wait_for(
            "the SuperLink (TLS)",
            lambda: (
                (dep.superlink.poll() is None and _tls_ready(("127.0.0.1", port), fed.ca_cert))
                or _exited(dep.superlink, "superlink")
            ),
            timeout=90,
        )
        reg = subprocess.run(
            [sys.executable, "-m", "server.cli", *d, "register", *INSTITUTIONS, "--connection", CONNECTION],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert reg.returncode == 0, reg.stdout + reg.stderr
        registry = fed.read_registry()["institutions"]
        dep.node_ids = {n: int(registry[n]["node_id"]) for n in INSTITUTIONS}
        for i, name in enumerate(INSTITUTIONS):
            dep.nodes[name] = dep.start_node(name, i)
        want = set(dep.node_ids.values())
        wait_for("three SuperNodes online", lambda: want <= dep.online_nodes() or _nodes_died(dep), 120, 2)
        yield dep
    finally:
        dep.teardown()


def _exited(proc: subprocess.Popen[bytes], what: str) -> bool:
    if proc.poll() is not None:
        pytest.fail(f"{what} exited with {proc.returncode}")
    return False


def _nodes_died(dep: Deployment) -> bool:
    for name, proc in dep.nodes.items():
        if proc.poll() is not None:
            pytest.fail(
                f"SuperNode {name} exited with {proc.returncode}:\n{dep.log(f'node-{name}.log')[-3000:]}"
            )
    return False


def _rows(dep: Deployment, run: str) -> list[dict[str, Any]]:
    path = dep.root / "runs" / run / "metrics.jsonl"
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    )


@pytest.mark.integration
def test_unregistered_node_and_plain_http_are_refused(deployment: Deployment) -> None:
    dep = deployment
    # a key the coordinator never registered: the local check passes, the SuperLink refuses
    rogue = dep.start_node("rogue", 0)
    rogue.wait(timeout=90)
    log = dep.log("node-rogue.log")
    assert rogue.returncode != 0 and "Exit Code: 305" in log and "Failed to activate SuperNode" in log, log
    # plain HTTP: a SuperNode without TLS, the flwr CLI without TLS, a bare HTTP request
    plain = dep.popen(
        [
            str(BIN / "flower-supernode"),
            "--insecure",
            "--superlink",
            dep.address,
            "--port",
            str(_free_port()),
            "--max-retries",
            "0",
            "--max-wait-time",
            "5",
        ],
        "node-plain.log",
    )
    plain.wait(timeout=90)
    assert plain.returncode != 0 and "Exit Code: 305" in dep.log("node-plain.log")
    config = Path(dep.env["FLWR_HOME"]) / "config.toml"
    config.write_text(
        config.read_text() + f'\n[superlink.plain]\naddress = "{dep.address}"\ninsecure = true\n'
    )
    res = dep.flwr("ls", "plain")
    assert res.returncode != 0 and "unavailable" in (res.stdout + res.stderr)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{dep.address}/", timeout=10)
    assert dep.online_nodes() == set(dep.node_ids.values())  # nothing else joined


@pytest.mark.integration
def test_three_round_run_every_institution_reports(deployment: Deployment) -> None:
    dep = deployment
    t0 = time.monotonic()
    res = subprocess.run(
        dep.run_argv("full", rounds=3, min_nodes=3),
        cwd=dep.root,
        env=dep.env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    took = time.monotonic() - t0
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    run = dep.root / "runs" / "full"
    final = json.loads((run / "final.json").read_text())
    rows = _rows(dep, "full")
    assert [r["round"] for r in rows] == [1, 2, 3], out[-4000:]
    assert all(r["nodes-replied"] == 3 and r["nodes-failed"] == 0 for r in rows)
    assert final["rounds_completed"] == 3 and final["resumed_after_round"] is None
    assert final["report"]["nodes"] == 3
    assert {p["node_id"] for p in final["report"]["per_node"]} == set(dep.node_ids.values())
    for name in INSTITUTIONS:
        report = dep.output(name) / "metrics.json"
        assert report.is_file() and (dep.output(name) / "scores.csv").is_file(), name
    assert "final detection quality of run 'full'" in out
    print(f"deployment 3 rounds: {took:.1f} s wall; per round {[r['seconds'] for r in rows]}")


@pytest.mark.integration
def test_a_failed_run_makes_run_sh_exit_non_zero(deployment: Deployment) -> None:
    """flwr run exits 0 when the ServerApp fails; run.sh reads the run's status and does not."""
    dep = deployment
    argv = dep.run_argv("broken", rounds=1, min_nodes=3)
    argv[-1] += " model.kind='transformer'"  # the ServerApp refuses it when it parses the run config
    res = subprocess.run(
        argv, cwd=dep.root, env=dep.env, capture_output=True, text=True, timeout=300, check=False
    )
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-4000:]
    assert "model.kind" in res.stdout, out[-4000:]  # the ServerApp's error, streamed
    last = res.stderr.strip().splitlines()[-1]
    pattern = r"run\.sh: run \d+ ended finished:failed.*; its log: '.*flwr log \d+ .* --show'"
    assert re.fullmatch(pattern, last), last
    assert not (dep.root / "runs" / "broken" / "metrics.jsonl").exists()


@pytest.mark.integration
def test_serverapp_restart_resumes_and_a_killed_supernode_is_a_dropout(deployment: Deployment) -> None:
    """Attempt 1 is killed after round 1 is committed; attempt 2 resumes, loses gamma in its first round."""
    dep = deployment
    run = dep.root / "runs" / "resume"
    argv = dep.run_argv("resume", rounds=3, min_nodes=2)
    first = dep.popen(argv, "run-resume-1.log", cwd=dep.root)
    wait_for("round 1 committed", lambda: (run / "state.json").is_file() or _exited(first, "flwr run"), 300)
    apps = wait_for("the ServerApp process", dep.serverapps, 30)
    stop(apps, signal.SIGKILL)
    committed = json.loads((run / "state.json").read_text())["last_round"]
    assert committed >= 1
    stop([first.pid])  # its log stream would end by itself once the SuperLink misses the heartbeat

    second = dep.popen(argv, "run-resume-2.log", cwd=dep.root)
    wait_for(
        "the resumed round's train messages",
        lambda: (
            (
                f"resuming run 'resume' after round {committed}" in dep.log("run-resume-2.log")
                and "configure_train" in dep.log("run-resume-2.log")
            )
            or _exited(second, "flwr run")
        ),
        240,
    )
    dep.kill_node("gamma")
    second.wait(timeout=420)
    out = dep.log("run-resume-2.log")
    assert second.returncode == 0, out[-4000:]
    rows = _rows(dep, "resume")
    assert [r["round"] for r in rows] == [1, 2, 3], out[-4000:]  # every round exactly once
    dropped = rows[committed]  # the first round of attempt 2
    assert dropped["nodes-failed"] == 1 and dropped["failed-node-ids"] == [dep.node_ids["gamma"]], dropped
    assert dropped["nodes-replied"] == 2
    assert all(r["nodes-replied"] == 3 for r in rows[:committed])
    assert all(r["nodes-sampled"] == 2 and r["nodes-failed"] == 0 for r in rows[committed + 1 :])
    final = json.loads((run / "final.json").read_text())
    assert final["resumed_after_round"] == committed and final["rounds_completed"] == 3
    assert final["report"]["nodes"] == 2
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("round-*.safetensors"))
    assert ckpts == ["round-0001.safetensors", "round-0002.safetensors", "round-0003.safetensors"]
    print(f"resume/dropout per round: {[r['seconds'] for r in rows]}")

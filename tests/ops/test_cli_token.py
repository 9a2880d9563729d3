"""``livecommerce token``: signs with the very secret the server uses, and says which one."""

from __future__ import annotations

from pathlib import Path

import pytest

from livecommerce.core.errors import AuthError
from livecommerce.ops.cli import main
from livecommerce.ops.runner import dev_secret
from livecommerce.realtime import tokens


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LIVECOMMERCE_TOKEN_SECRET", "LIVECOMMERCE_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_token_signs_with_the_servers_dev_secret_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server_dir = tmp_path / "server-data"
    secret = dev_secret(server_dir, "token_secret").reveal()  # what `serve` made at its start
    assert main(["token", "alice", "--data-dir", str(server_dir), "--name", "Alice B."]) == 0
    out, err = capsys.readouterr()
    identity = tokens.identify(secret, out.strip())
    assert identity == tokens.Identity("alice", "Alice B.")
    assert str((server_dir / "token_secret").resolve()) in err


def test_token_without_the_servers_data_dir_refuses_instead_of_inventing_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["token", "alice"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "--data-dir" in err and "LIVECOMMERCE_TOKEN_SECRET" in err
    assert not (tmp_path / ".livecommerce").exists()


def test_token_with_an_explicit_secret_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVECOMMERCE_TOKEN_SECRET", "t" * 40)
    assert main(["token", "bob"]) == 0
    out, err = capsys.readouterr()
    assert tokens.verify("t" * 40, out.strip()) == "bob"
    assert "LIVECOMMERCE_TOKEN_SECRET" in err


def test_a_token_from_another_secret_gets_a_hint() -> None:
    with pytest.raises(AuthError, match="another secret"):
        tokens.verify("s" * 32, tokens.mint("x" * 32, "alice", 60))


def test_display_name_falls_back_to_the_viewer_id() -> None:
    assert tokens.display_name("  Ana   M. ", "ana") == "Ana M."
    assert tokens.display_name("", "ana") == "ana"
    assert tokens.display_name("x" * 41, "ana") == "ana"
    assert tokens.display_name("bad\x07bell", "ana") == "ana"
    assert tokens.display_name(42, "ana") == "ana"

"""Configuration: read once, typed, failing loudly with the variable's name; secrets masked."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from livecommerce.core.config import Secret, load
from livecommerce.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_without_environment() -> None:
    settings = load({})
    assert settings.redis.url is None
    assert settings.inventory.hold_ttl_s == 120
    assert settings.gateway.port == 8000


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LIVECOMMERCE_PORT", "eighty"),
        ("LIVECOMMERCE_PORT", "70000"),
        ("LIVECOMMERCE_HOLD_TTL", "0"),
        ("LIVECOMMERCE_WAIT_AOF", "maybe"),
        ("LIVECOMMERCE_APPENDFSYNC", "never"),
        ("LIVECOMMERCE_REDIS_URL", "http://example.invalid"),
        ("LIVECOMMERCE_KEY_PREFIX", "a b"),
        ("LIVECOMMERCE_RATE", "-1"),
        ("LIVECOMMERCE_TOKEN_SECRET", "short"),
    ],
)
def test_malformed_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load({variable: value})
    assert info.value.variable == variable
    assert variable in str(info.value)


def test_secrets_never_print() -> None:
    settings = load(
        {
            "LIVECOMMERCE_TOKEN_SECRET": "hunter2-secret-hunter2-secret-hunter2",
            "LIVECOMMERCE_REDIS_URL": "redis://:pw@127.0.0.1:1/0",
        }
    )
    assert isinstance(settings.gateway.token_secret, Secret)
    assert settings.gateway.token_secret.reveal() == "hunter2-secret-hunter2-secret-hunter2"
    text = repr(settings) + str(settings.describe())
    assert "hunter2" not in text
    assert ":pw@" not in text
    assert "***" in text


def test_settings_are_frozen() -> None:
    settings = load({})
    with pytest.raises(AttributeError):
        settings.gateway.port = 1  # type: ignore[misc]


def test_configuration_doc_is_generated_from_the_code() -> None:
    spec = importlib.util.spec_from_file_location("config_docs", ROOT / "scripts/config_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["config_docs"] = module
    spec.loader.exec_module(module)
    expected = module.render()
    actual = (ROOT / "docs/configuration.md").read_text()
    assert actual == expected, "run: python scripts/config_docs.py > docs/configuration.md"

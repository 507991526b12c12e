"""Templates compiled once at load (JSON bodies too), and secrets that stay typed until a
template is rendered into a request."""

from __future__ import annotations

import json

from aiohttp import web
from pydantic import TypeAdapter

from prober.config.load import load_config
from prober.config.model import Check, HttpCheck
from prober.config.secrets import REDACTED, Secret
from prober.config.templates import JsonTemplate, TemplateError, compile_json_template
from prober.config.templates import compile_url_template as url_template
from prober.engine.runner import run_check
from tests.support.checks import WriteConfig, http_check, run_environment
from tests.support.servers import serve_app

BODY = {"user": "${USER}", "tags": ["a", "${TAG:-none}"], "fixed": {"n": 1, "deep": [True]}}


def test_a_json_body_is_compiled_once_and_rendered_per_request() -> None:
    body = compile_json_template(BODY)
    assert body.render({"USER": "ann"}) == {
        "user": "ann",
        "tags": ["a", "none"],
        "fixed": {"n": 1, "deep": [True]},
    }
    assert body.render({"USER": "bob", "TAG": "x"})["tags"] == ["a", "x"]
    # What holds no placeholder is the value as written, not a copy made per request.
    assert body.render({"USER": "ann"})["fixed"] is BODY["fixed"]
    assert [(path, t.source) for path, t in body.templates()] == [
        (("user",), "${USER}"),
        (("tags", 1), "${TAG:-none}"),
    ]


def test_a_body_without_placeholders_renders_as_written() -> None:
    body = compile_json_template([1, {"a": "b"}])
    assert body.render({}) is body.source
    assert list(body.templates()) == []


def test_a_missing_value_fails_the_render() -> None:
    body = compile_json_template({"user": "${USER}"})
    try:
        body.render({})
    except TemplateError as exc:
        assert "USER" in str(exc)
    else:
        raise AssertionError("rendered without a value")


def test_checks_hold_compiled_bodies_and_compare_as_values() -> None:
    check = http_check("http://127.0.0.1:1/", method="POST", json=BODY)
    assert isinstance(check.json_body, JsonTemplate)
    assert check == http_check("http://127.0.0.1:1/", method="POST", json=BODY)
    assert check != http_check("http://127.0.0.1:1/", method="POST", json={"user": "x"})


def test_secrets_stay_typed_in_the_template_values(write_config: WriteConfig) -> None:
    path = write_config("""
        secrets: {token: {env: API_TOKEN}}
        checks:
          - {name: a, url: "http://127.0.0.1:1/", headers: {Authorization: "Bearer ${token}"}}
    """)
    config = load_config(path, env={"API_TOKEN": "tok-123456", "REGION": "eu"})
    values = config.template_values()
    assert values["REGION"] == "eu"
    assert isinstance(values["token"], Secret)
    assert str(values["token"]) == REDACTED
    check = config.checks[0]
    assert isinstance(check, HttpCheck)
    assert check.headers["Authorization"].render(values) == "Bearer tok-123456"


def test_rendering_reveals_a_secret_and_encodes_it_where_it_lands() -> None:
    url = url_template("http://h/login?password=${pw}")
    assert url.render({"pw": Secret("a&b/c")}) == "http://h/login?password=a%26b%2Fc"


async def test_a_secret_reaches_the_target_and_nothing_the_run_reports() -> None:
    secret = "pw-sekrit-81f3"
    received: list[tuple[str, bytes]] = []

    async def login(request: web.Request) -> web.Response:
        received.append((request.headers["X-Key"], await request.read()))
        return web.json_response({"echo": (await request.read()).decode()}, status=403)

    app = web.Application()
    app.router.add_post("/login", login)
    runner, base = await serve_app(app)
    check = TypeAdapter(Check).validate_python(
        {
            "name": "login",
            "url": f"{base}/login",
            "method": "POST",
            "headers": {"X-Key": "${pw}"},
            "json": {"user": "ann", "password": "${pw}"},
            "expected_status": [403],
            "assert": ['$.echo contains "nothing-like-it"'],
        }
    )
    try:
        async with run_environment({"pw": Secret(secret)}, frozenset({secret})) as env:
            result = await run_check(check, env)
    finally:
        await runner.cleanup()
    assert received == [(secret, json.dumps({"user": "ann", "password": secret}).encode())]
    (assertion,) = result.steps[0].assertions
    assert not assertion.passed
    assert REDACTED in assertion.actual
    assert secret not in repr(result)

"""deploy.yaml: typed settings, environments merged over serve, hosts, and one clear error each."""

from __future__ import annotations

import argparse
import textwrap
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from cxml.core.errors import EXIT_INPUT, ConfigError
from cxml.deploy.config import (
    DeployConfig,
    Host,
    ServeSettings,
    SshSettings,
    deploy_config_from_mapping,
    load_deploy_config,
    parse_host,
)
from cxml.deploy.host.command import parse_args as host_parse_args
from cxml.deploy.host.settings import DEFAULTS, HostSettings, add_arguments

UPSTREAM = "/etc/nginx/cxml/upstream.conf"


def minimal(**serve: Any) -> dict[str, Any]:
    """The smallest document that loads, with serve keys added."""
    return {
        "serve": {"proxy": {"upstream_file": UPSTREAM}, **serve},
        "environments": {"production": {"hosts": ["prod-1.example.com"]}},
    }


def load_text(tmp_path: Path, text: str) -> DeployConfig:
    path = tmp_path / "deploy.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_deploy_config(path)


def error_of(document: object) -> str:
    with pytest.raises(ConfigError) as caught:
        deploy_config_from_mapping(document)
    assert caught.value.exit_code == EXIT_INPUT
    message = str(caught.value)
    assert message.startswith("deploy.yaml: ")
    assert "\n" not in message
    return message


def host_settings_parsed_from(argv: list[str]) -> HostSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return HostSettings.from_args(parser.parse_args(argv))


# --- good documents -------------------------------------------------------------------------


def test_the_smallest_document_has_hostsettings_defaults() -> None:
    config = deploy_config_from_mapping(minimal())
    production = config.environment("production")
    assert config.service == "cxml"
    assert production.hosts == (Host("prod-1.example.com", 22, None),)
    assert production.host_settings() == HostSettings(proxy_config=Path(UPSTREAM))
    assert production.connection().remote_python == ("python3",)
    assert production.connection().ssh == SshSettings(user=None, port=22)
    assert config.serve == ServeSettings(
        proxy=config.serve.proxy  # the only key given
    )


def test_every_key_maps_onto_hostsettings(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """\
        service: digits
        serve:
          mode: process
          root: /opt/cxml
          remote_python: /opt/cxml/venv/bin/python -X utf8
          ssh: {user: deploy, port: 2222}
          proxy:
            upstream_file: /etc/nginx/cxml/upstream.conf
            reload: "sudo nginx -s reload"
            check: [sudo, nginx, -t, -c, "/etc/nginx/my conf.conf"]
            public_url: https://digits.example.com
          docker: {command: podman, image: "localhost:5000/cxml:1"}
          health_timeout: 1e-1
          drain: 0
          lock_timeout: 30
          keep: 3
          serve_args: ["--workers", 2, "--max-batch=64"]
        environments:
          production:
            hosts: [prod-1.example.com]
        """,
    )
    production = config.environment("production")
    assert production.host_settings() == HostSettings(
        root=Path("/opt/cxml"),
        mode="process",
        keep=3,
        health_timeout_s=0.1,
        lock_timeout_s=30.0,
        drain_s=0.0,
        public_url="https://digits.example.com",
        proxy_config=Path("/etc/nginx/cxml/upstream.conf"),
        proxy_reload=("sudo", "nginx", "-s", "reload"),
        proxy_check=("sudo", "nginx", "-t", "-c", "/etc/nginx/my conf.conf"),
        docker=("podman",),
        image="localhost:5000/cxml:1",
        serve_args=("--workers", "2", "--max-batch=64"),
    )
    assert production.connection().remote_python == ("/opt/cxml/venv/bin/python", "-X", "utf8")
    assert production.hosts == (Host("prod-1.example.com", 2222, "deploy"),)
    assert config.service == "digits"


def test_an_environment_overrides_serve_and_merges_sections_key_by_key(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """\
        serve:
          keep: 4
          serve_args: [--workers, "4"]
          ssh: {user: deploy, port: 2200}
          proxy: {upstream_file: /etc/nginx/up.conf, reload: nginx -s reload, check: none}
          docker: {build_args: [BASE_IMAGE=base:1]}
        environments:
          staging:
            hosts: [staging-1]
            keep: 2
            serve_args: []
            ssh: {port: 22}
            proxy: {public_url: "http://staging.example.com:8080/"}
          production:
            hosts: [prod-1, prod-2]
            proxy: {check: auto}
            docker: {build_args: {BASE_IMAGE: "base:2", EXTRA: "x=y"}}
        """,
    )
    staging, production = config.environment("staging"), config.environment("production")
    assert staging.settings.keep == 2 and production.settings.keep == 4
    assert staging.settings.serve_args == () and production.settings.serve_args == (
        "--workers",
        "4",
    )
    # ssh: the port from staging, the user from serve
    assert staging.settings.ssh == SshSettings(user="deploy", port=22)
    assert staging.hosts == (Host("staging-1", 22, "deploy"),)
    assert production.hosts == (Host("prod-1", 2200, "deploy"), Host("prod-2", 2200, "deploy"))
    # proxy: public_url added, the upstream file, reload and check kept
    assert staging.settings.proxy.public_url == "http://staging.example.com:8080/"
    assert staging.settings.proxy.upstream_file == "/etc/nginx/up.conf"
    assert staging.host_settings().proxy_check == ()
    assert production.host_settings().proxy_check is None
    assert production.settings.proxy.public_url is None
    # lists and mappings of build args are replaced, not concatenated
    assert staging.host_settings().docker_build_args == ("BASE_IMAGE=base:1",)
    assert production.host_settings().docker_build_args == ("BASE_IMAGE=base:2", "EXTRA=x=y")
    # serve alone is untouched by the environments
    assert config.serve.keep == 4 and config.serve.ssh.port == 2200


def test_the_upstream_file_may_be_set_per_environment_only() -> None:
    config = deploy_config_from_mapping(
        {
            "environments": {
                "staging": {"hosts": ["s"], "proxy": {"upstream_file": "/etc/nginx/s.conf"}},
                "production": {"hosts": ["p"], "proxy": {"upstream_file": "/etc/nginx/p.conf"}},
            }
        }
    )
    assert config.environment("staging").host_settings().proxy_config == Path("/etc/nginx/s.conf")
    assert config.serve.proxy.upstream_file is None


def test_null_means_not_set() -> None:
    document = minimal(keep=None, ssh=None, proxy={"upstream_file": UPSTREAM, "reload": None})
    document["service"] = None
    document["environments"]["production"]["drain"] = None
    config = deploy_config_from_mapping(document)
    assert config.environment("production").host_settings() == HostSettings(
        proxy_config=Path(UPSTREAM)
    )


def test_the_template_loads_with_staging_and_production() -> None:
    template = resources.files("cxml").joinpath("templates", "deploy.yaml")
    with resources.as_file(template) as path:
        config = load_deploy_config(path)
    assert {"staging", "production"} <= set(config.environments)
    for environment in config.environments.values():
        assert environment.hosts
        assert environment.host_settings().proxy_config is not None
    assert len(config.environment("production").hosts) == 2


def test_the_default_path_is_deploy_yaml_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^deploy\.yaml: file not found; run `cxml init`"):
        load_deploy_config()
    (tmp_path / "deploy.yaml").write_text(
        f"serve: {{proxy: {{upstream_file: {UPSTREAM}}}}}\nenvironments: {{staging: {{hosts: h}}}}\n"
    )
    assert load_deploy_config().environment("staging").hosts == (Host("h"),)


# --- the round trip to the host -------------------------------------------------------------


@pytest.mark.parametrize(
    "serve",
    [
        {},
        {"mode": "process", "keep": 2, "drain": 0.25, "health_timeout": 123456789.5},
        {
            "root": "/srv/cxml dir",
            "proxy": {
                "upstream_file": "/etc/nginx/odd name.conf",
                "reload": ["sudo", "nginx", "-p", "/srv/px dir", "-s", "reload"],
                "check": "none",
                "public_url": "https://digits.example.com/base",
            },
            "docker": {
                "command": "podman --runtime runc",
                "image": "localhost:5000/team/cxml-serve:test",
                "build_context": "/srv/cxml-src",
                "build_args": ["BASE_IMAGE=localhost/base:2", "-X=1"],
            },
            "serve_args": ["--host", "127.0.0.2", "--workers=2", "-v", "with space"],
        },
        {"proxy": {"upstream_file": UPSTREAM, "check": "nginx -t -q"}},
    ],
)
def test_host_settings_survive_to_argv_and_from_args(serve: dict[str, Any]) -> None:
    document = minimal()
    document["serve"] = {**document["serve"], **serve}
    built = deploy_config_from_mapping(document).environment("production").host_settings()
    assert host_settings_parsed_from(built.to_argv()) == built
    host_args = host_parse_args(["activate", *built.to_argv()])
    assert HostSettings.from_args(host_args) == built


def test_serve_defaults_are_the_host_defaults() -> None:
    built = deploy_config_from_mapping(minimal()).environment("production").host_settings()
    for name in ("root", "mode", "keep", "health_timeout_s", "lock_timeout_s", "drain_s"):
        assert getattr(built, name) == getattr(DEFAULTS, name), name
    assert (built.proxy_reload, built.proxy_check) == (DEFAULTS.proxy_reload, DEFAULTS.proxy_check)
    assert (built.docker, built.image, built.serve_args) == (
        DEFAULTS.docker,
        DEFAULTS.image,
        DEFAULTS.serve_args,
    )


# --- hosts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "host"),
    [
        ("prod-1.example.com", Host("prod-1.example.com", 22, None)),
        ("prod-1.example.com:2222", Host("prod-1.example.com", 2222, None)),
        ("deploy@prod-1:2222", Host("prod-1", 2222, "deploy")),
        ("deploy@prod-1", Host("prod-1", 22, "deploy")),
        ("10.0.0.5:22", Host("10.0.0.5", 22, None)),
        ("[::1]:2222", Host("::1", 2222, None)),
        ("deploy@[fe80::1]", Host("fe80::1", 22, "deploy")),
        ("2001:db8::7", Host("2001:db8::7", 22, None)),
        ({"host": "prod-2", "port": 2022, "user": "ops"}, Host("prod-2", 2022, "ops")),
        ({"host": "prod-2"}, Host("prod-2", 22, None)),
        ({"host": "::1", "port": None}, Host("::1", 22, None)),
    ],
)
def test_host_entries(entry: object, host: Host) -> None:
    assert parse_host(entry) == host


def test_a_host_falls_back_on_the_ssh_settings_field_by_field() -> None:
    ssh = SshSettings(user="deploy", port=2200)
    assert parse_host("h", ssh) == Host("h", 2200, "deploy")
    assert parse_host("ops@h:22", ssh) == Host("h", 22, "ops")
    assert parse_host({"host": "h", "port": 7}, ssh) == Host("h", 7, "deploy")
    assert Host("::1", 2200, "deploy").label == "deploy@[::1]:2200"
    assert Host("h", 22, None).destination == "h"


@pytest.mark.parametrize(
    ("entry", "phrase"),
    [
        ("", "an empty host"),
        ("host name", "not a host name"),
        ("host;reboot", "not a host name"),
        ("$(reboot)", "not a host name"),
        ("-oProxyCommand=sh", "not a host name"),
        ("`id`", "not a host name"),
        ("h:0", "between 1 and 65535"),
        ("h:65536", "between 1 and 65535"),
        ("h:ssh", "port in 'h:ssh' is not a number"),
        ("h:", "is not a number"),
        ("@h", "nothing before @"),
        ("bad user@h", "not a user name"),
        ("-l@h", "not a user name"),
        ("[::1", "expected [address]"),
        ("[::1]x", "expected [address]"),
        ("[nothost]:22", "in brackets is not an IPv6 address"),
        ("[1:2]:22", "not a host name or an IPv6 address"),
        ("h\n", "control character"),
        (22, "expected `user@host:port`"),
        (["h"], "expected `user@host:port`"),
        ({"port": 22}, "host: a host entry needs"),
        ({"host": "h", "port": "22"}, "host.port: expected a port number, got '22'"),
        ({"host": "h", "port": True}, "host.port: expected a port number"),
        ({"host": "h", "addr": "x"}, "host.addr: unknown key"),
        ({"host": "h", "key": "x"}, "looks like a secret"),
    ],
)
def test_bad_host_entries(entry: object, phrase: str) -> None:
    with pytest.raises(ConfigError, match=r"^host") as caught:
        parse_host(entry)
    assert phrase in str(caught.value)


def test_a_host_twice_in_one_environment_is_an_error() -> None:
    document = minimal()
    document["environments"]["production"]["hosts"] = ["a", "b", "deploy@A:22"]
    assert error_of(document) == (
        "deploy.yaml: environments.production.hosts[2]: deploy@A:22 is listed twice (also at [0])"
    )
    document["environments"]["production"]["hosts"] = ["a", "a:2222"]  # another sshd: fine
    assert len(deploy_config_from_mapping(document).environment("production").hosts) == 2


def test_the_same_host_in_two_environments_is_allowed() -> None:
    document = minimal()
    document["environments"]["staging"] = {"hosts": ["prod-1.example.com"]}
    assert len(deploy_config_from_mapping(document).environments) == 2


# --- bad documents: one line naming the key and the fix -----------------------------------------


def with_serve(**serve: Any) -> dict[str, Any]:
    document = minimal()
    document["serve"] = {**document["serve"], **serve}
    return document


def with_env(**keys: Any) -> dict[str, Any]:
    document = minimal()
    document["environments"]["production"] = {"hosts": ["p"], **keys}
    return document


BAD_DOCUMENTS: list[tuple[object, str]] = [
    (None, "deploy.yaml: empty; it needs `serve:` and `environments:`"),
    (["serve"], "deploy.yaml: expected a mapping with serve and environments, got a list"),
    ("text", "expected a mapping with serve and environments, got 'text'"),
    ({**minimal(), "environment": {}}, "environment: unknown key (did you mean environments?)"),
    ({**minimal(), "srve": {}}, "srve: unknown key (did you mean serve?); known keys in the top"),
    ({"serve": {}}, "environments: at least one environment is needed"),
    ({**minimal(), "environments": {}}, "environments: at least one environment is needed"),
    ({**minimal(), "environments": ["production"]}, "environments: expected a mapping of environ"),
    ({**minimal(), "service": "Digits!"}, "service: expected a name of lower-case letters"),
    ({**minimal(), "service": 7}, "service: expected a string, got 7"),
    ({**minimal(), "serve": "docker"}, "serve: expected a mapping of serving settings, got 'docker'"),
    (with_serve(mode="kubernetes"), "serve.mode: expected one of docker or process, got 'kuber"),
    (with_serve(keep=1), "serve.keep: must be at least 2 (the current and the previous release)"),
    (with_serve(keep="5"), "serve.keep: expected an integer, got '5'"),
    (with_serve(keep=2.5), "serve.keep: expected an integer, got 2.5"),
    (with_serve(health_timeout="fast"), "serve.health_timeout: expected a number of seconds, got 'fast'"),
    (with_serve(health_timeout=0), "serve.health_timeout: must be a finite number greater than 0"),
    (with_serve(health_timeout=float("inf")), "serve.health_timeout: must be a finite number"),
    (with_serve(drain=-1), "serve.drain: must be a finite number not negative, got -1"),
    (with_serve(drain=True), "serve.drain: expected a number of seconds, got True"),
    (with_serve(lock_timeout=float("nan")), "serve.lock_timeout: must be a finite number"),
    (with_serve(root="srv/cxml"), "serve.root: expected an absolute path on the host"),
    (with_serve(root=["/srv"]), "serve.root: expected a string, got a list"),
    (with_serve(remote_python=""), "serve.remote_python: needs a command"),
    (with_serve(remote_python="python3 'x"), "serve.remote_python: No closing quotation"),
    (with_serve(remote_python={"a": 1}), "serve.remote_python: expected a command (a string or a list"),
    (with_serve(serve_args=[["--x"]]), "serve.serve_args[0]: expected a string, got a list"),
    (with_serve(serve_args=[True]), "serve.serve_args[0]: expected a string, got True"),
    (with_serve(ssh={"port": 0}), "serve.ssh.port: a port is between 1 and 65535, got 0"),
    (with_serve(ssh={"user": "root;id"}), "serve.ssh.user: not a user name"),
    (with_serve(ssh={"usr": "x"}), "serve.ssh.usr: unknown key (did you mean user?); known keys in serve.ssh: user, port"),
    (with_serve(ssh=["deploy"]), "serve.ssh: expected a mapping with user or port, got a list"),
    (with_serve(proxy={"upstream": UPSTREAM}), "serve.proxy.upstream: unknown key (did you mean upstream_file?)"),
    (with_serve(proxy={"upstream_file": "upstream.conf"}), "serve.proxy.upstream_file: expected an absolute path"),
    (with_serve(proxy={"upstream_file": UPSTREAM, "reload": ""}), "serve.proxy.reload: needs a command"),
    (with_serve(proxy={"upstream_file": UPSTREAM, "check": ""}), "serve.proxy.check: needs a command, or auto or none"),
    (with_serve(proxy={"upstream_file": UPSTREAM, "check": False}), "serve.proxy.check: expected a command"),
    (with_serve(proxy={"upstream_file": UPSTREAM, "public_url": "digits.example.com"}), "serve.proxy.public_url: expected an http:// or https:// URL"),
    (with_serve(proxy={"upstream_file": UPSTREAM, "public_url": "ftp://x"}), "serve.proxy.public_url: expected an http:// or https:// URL"),
    (with_serve(docker={"image": "-x"}), "serve.docker.image: expected an image name"),
    (with_serve(docker={"build_args": ["NOEQUALS"]}), "serve.docker.build_args[0]: expected KEY=VALUE, got 'NOEQUALS'"),
    (with_serve(docker={"build_args": "A=1"}), "serve.docker.build_args: expected a list of KEY=VALUE or a mapping"),
    (with_serve(mode="process", docker={"build_context": "/src"}), "environments.production.docker.build_context: only used with mode docker"),
    (with_serve(hosts=["h"]), "serve.hosts: unknown key; known keys in serve: mode, root"),
    (with_serve(proxy=None), "environments.production: a deploy must switch a proxy; set serve.proxy.upstream_file"),
    ({"serve": {}, "environments": {"Production": {"hosts": ["p"]}}}, "environments.Production: not an environment name"),
    ({"serve": {}, "environments": {True: {"hosts": ["p"]}}}, "environments.True: not an environment name"),
    ({"serve": {}, "environments": {"9x": {"hosts": ["p"]}}}, "environments.9x: not an environment name"),
    (with_env(hosts=None), "environments.production.hosts: needs at least one host"),
    (with_env(hosts=[]), "environments.production.hosts: needs at least one host"),
    (with_env(hosts={"host": "p"}), "environments.production.hosts: expected a list of hosts, got a mapping"),
    (with_env(hosts=["p", "bad host"]), "environments.production.hosts[1]: 'bad host' is not a host name"),
    (with_env(hots=["p"]), "environments.production.hots: unknown key (did you mean hosts?)"),
    (with_env(overrides={"keep": 3}), "environments.production.overrides: unknown key"),
    (with_env(keep=0), "environments.production.keep: must be at least 2"),
    (with_env(proxy={"public_url": 80}), "environments.production.proxy.public_url: expected a string, got 80"),
    ({**minimal(), "environments": {"production": None}}, "environments.production: needs hosts"),
    ({**minimal(), "environments": {"production": ["p"]}}, "environments.production: expected a mapping of serving settings"),
    (
        {"serve": {}, "environments": {"staging": {"hosts": ["s"], "proxy": {"upstream_file": UPSTREAM}}, "production": {"hosts": ["p"]}}},
        "environments.production: a deploy must switch a proxy; set serve.proxy.upstream_file (or environments.production.proxy.upstream_file)",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("document", "expected"), BAD_DOCUMENTS)
def test_bad_documents(document: object, expected: str) -> None:
    assert expected in error_of(document)


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ({**minimal(), "ssh_key": "x"}, "ssh_key"),
        (with_serve(ssh={"user": "deploy", "key": "x"}), "serve.ssh.key"),
        (with_serve(ssh={"identity_file": "~/.ssh/id"}), "serve.ssh.identity_file"),
        (with_serve(ssh={"Known-Hosts": "h ssh-ed25519 AAAA"}), "serve.ssh.Known-Hosts"),
        (with_serve(password="hunter2"), "serve.password"),
        (with_env(token="ghp_x"), "environments.production.token"),
        (with_env(hosts=[{"host": "p", "private_key": "x"}]), "environments.production.hosts[0].private_key"),
        (with_env(proxy={"api_token": "x"}), "environments.production.proxy.api_token"),
    ],
)  # fmt: skip
def test_secrets_are_refused_by_key(document: object, key: str) -> None:
    message = error_of(document)
    assert message.startswith(f"deploy.yaml: {key}: looks like a secret; secrets never go in")
    assert "CXML_SSH_KEY" in message and "CXML_KNOWN_HOSTS" in message


def test_a_private_key_pasted_as_a_value_is_refused_without_echoing_it() -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH"
    message = error_of(with_serve(serve_args=["--x", key]))
    assert message.startswith("deploy.yaml: serve.serve_args[1]: holds a private key")
    assert "b3BlbnNzaC1rZXktdjEAAAAA" not in message


def test_an_environment_named_like_a_secret_is_still_an_environment() -> None:
    document = minimal()
    document["environments"]["token"] = {"hosts": ["t"]}
    assert "token" in deploy_config_from_mapping(document).environments


def test_an_unknown_environment_lists_the_known_ones() -> None:
    config = deploy_config_from_mapping(minimal())
    with pytest.raises(ConfigError) as caught:
        config.environment("prodution")
    assert str(caught.value) == (
        "deploy.yaml: no environment 'prodution' (did you mean production?); "
        "the environments are: production"
    )


# --- bad files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\xff\xfeserve: {}\n", "not UTF-8 text (byte 0); save the file as UTF-8"),
        (b"serve: {mode: docker\n", "not valid YAML at line 2"),
        (b"serve:\n  mode: docker\n   root: /x\n", "not valid YAML at line 3"),
        (b"serve: !!python/object:os.system {}\n", "not valid YAML at line 1"),
        (
            b"- serve\n- environments\n",
            "expected a mapping with serve and environments, got a list",
        ),
        (b"", "empty; it needs `serve:` and `environments:`"),
        (b"# only a comment\n", "empty; it needs"),
        (b"[" * 5000 + b"]" * 5000, "nested more than 16 levels deep"),
        (b"a: " + b"{b: " * 100 + b"1" + b"}" * 100 + b"\n", "nested more than 16 levels deep"),
        (
            b"environments:\n  production: {hosts: [a]}\n  production: {hosts: [b]}\n",
            "line 3: 'production' appears twice in the same mapping; keep one",
        ),
        (b"? [a, b]\n: c\n", "line 1: a key must be a plain name"),
        (b"serve: {keep: 1}\nenvironments: {p: {hosts: [h]}}\n", "serve.keep: must be at least 2"),
    ],
)
def test_bad_files_give_one_clear_line(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_deploy_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_a_directory_or_a_huge_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_deploy_config(tmp_path)
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"# x\n" * 300_000)
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        load_deploy_config(huge)


def test_yaml_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """\
        serve:
          proxy: {upstream_file: /etc/nginx/up.conf}
        environments:
          staging: &base
            hosts: &hosts [a, b]
            keep: 3
          production:
            <<: *base
            hosts: *hosts
            drain: 5
        """,
    )
    production = config.environment("production")
    assert production.settings.keep == 3 and production.settings.drain == 5.0
    assert [host.address for host in production.hosts] == ["a", "b"]


# --- canary: and checks: numbers, each message pinned ---------------------------------------

FRACTION = "expected a fraction between 0 and 1 (0.01 is one point)"
FRACTION_RANGE = "a fraction is between 0 and 1 (0.01 is one point)"
RATIO = "expected a ratio to the current release like 1.5"
RATIO_RANGE = "a ratio to the current release is at least 1 (1.5: 50% slower)"
POSITIVE = "expected a number greater than 0"
POSITIVE_RANGE = "must be a finite number greater than 0"
SECONDS = "expected a number of seconds"


def section_error(section: str, values: dict[str, object]) -> str:
    document = minimal()
    document["environments"]["production"][section] = values
    return error_of(document).removeprefix(f"deploy.yaml: environments.production.{section}.")


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("canary", "weight", "10", "expected a whole percent of the traffic like 10, got '10'"),
        ("canary", "weight", 10.0, "expected a whole percent of the traffic like 10, got 10.0"),
        ("canary", "weight", True, "expected a whole percent of the traffic like 10, got True"),
        ("canary", "weight", 0, "a canary takes 1 to 99 percent of the traffic, got 0"),
        ("canary", "weight", 100, "a canary takes 1 to 99 percent of the traffic, got 100"),
        ("canary", "window", "1m", f"{SECONDS}, got '1m'"),
        ("canary", "window", 0, "must be a finite number greater than 0, got 0"),
        ("canary", "interval", float("inf"), "must be a finite number greater than 0, got inf"),
        ("canary", "min_requests", 2.5, "expected a whole number of requests of at least 1, got 2.5"),
        ("canary", "min_requests", 0, "expected a whole number of requests of at least 1, got 0"),
        ("canary", "min_requests", [], "expected a whole number of requests of at least 1, got a list"),
        ("canary", "max_error_rate_increase", "1%", f"{FRACTION}, got '1%'"),
        ("canary", "max_error_rate_increase", -0.1, f"{FRACTION_RANGE}, got -0.1"),
        ("canary", "max_error_rate_increase", 2, f"{FRACTION_RANGE}, got 2"),
        ("canary", "max_error_rate_increase", float("nan"), f"{FRACTION_RANGE}, got nan"),
        ("canary", "max_p95_ratio", False, f"{RATIO}, got False"),
        ("canary", "max_p95_ratio", 0.9, f"{RATIO_RANGE}, got 0.9"),
        ("canary", "max_p99_ratio", float("inf"), f"{RATIO_RANGE}, got inf"),
        ("canary", "max_class_shift", 1.5, f"{FRACTION_RANGE}, got 1.5"),
        ("checks", "sample", "64", "expected a whole number of images from 1 to 10000, got '64'"),
        ("checks", "sample", 0, "expected a whole number of images from 1 to 10000, got 0"),
        ("checks", "sample", 10_001, "expected a whole number of images from 1 to 10000, got 10001"),
        ("checks", "rate", "fast", f"{POSITIVE}, got 'fast'"),
        ("checks", "rate", 0, f"{POSITIVE_RANGE}, got 0"),
        ("checks", "duration", -1.5, f"{POSITIVE_RANGE}, got -1.5"),
        ("checks", "max_p99_ms", float("nan"), f"{POSITIVE_RANGE}, got nan"),
        ("checks", "max_error_rate", True, f"{FRACTION}, got True"),
        ("checks", "max_error_rate", 1.01, f"{FRACTION_RANGE}, got 1.01"),
        ("checks", "min_rps", 0.0, f"{POSITIVE_RANGE}, got 0.0"),
    ],
)  # fmt: skip
def test_each_canary_and_checks_number_names_its_problem(
    section: str, key: str, value: object, message: str
) -> None:
    assert section_error(section, {key: value}) == f"{key}: {message}"


@pytest.mark.parametrize(
    ("section", "values"),
    [
        ("canary", {"weight": 1, "window": 0.5, "interval": 0.5, "min_requests": 1}),
        ("canary", {"weight": 99, "max_error_rate_increase": 0, "max_class_shift": 1}),
        ("canary", {"max_p95_ratio": 1, "max_p99_ratio": 1}),
        ("checks", {"sample": 1, "rate": 0.1, "duration": 1, "max_error_rate": 0}),
        ("checks", {"sample": 10_000, "max_error_rate": 1, "min_rps": 1e-9, "max_p99_ms": 1}),
    ],
)
def test_canary_and_checks_numbers_at_their_limits_load(
    section: str, values: dict[str, object]
) -> None:
    document = minimal()
    document["environments"]["production"][section] = values
    environment = deploy_config_from_mapping(document).environment("production")
    loaded = environment.canary if section == "canary" else environment.checks
    for key, value in values.items():
        assert getattr(loaded, key) == value
        assert type(getattr(loaded, key)) is (
            int if key in ("weight", "min_requests", "sample") else float
        )

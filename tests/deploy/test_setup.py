"""`cxml host setup`: a real sshd and a real nginx on 127.0.0.1, provisioned from nothing."""

from __future__ import annotations

import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from cxml.core.errors import ConfigError
from cxml.deploy.config import deploy_config_from_mapping
from cxml.deploy.setup import (
    InstallOptions,
    install_spec,
    plan_setup,
    server_block_argv,
    server_snippet_path,
)
from tests.support.deploy import (
    NGINX,
    PYTHON,
    SshServer,
    deploy_env,
    free_port,
    ssh_server,
    stop_process,
    wait_for_port,
)

__all__ = ["ssh_server"]  # a fixture used by name below

DEFAULT_SITE = "welcome to the default site\n"


@dataclass
class Nginx:
    """A real nginx with a default site on its port (like Debian's) that includes DIR/*.conf."""

    port: int
    prefix: Path
    config: Path
    include_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, *extra: str) -> list[str]:
        return [NGINX, "-p", str(self.prefix), "-c", str(self.config), *extra]

    def test_config(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=60)


def nginx_config(prefix: Path, port: int, include: str) -> str:
    temp = prefix / "temp"
    return f"""user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
        listen 127.0.0.1:{port} default_server;
        location / {{ return 200 "{DEFAULT_SITE.strip()}\\n"; }}
    }}
    {include}
}}
"""


@pytest.fixture
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    prefix = tmp_path_factory.mktemp("nginx")
    for name in ("logs", "temp", "cxml"):
        (prefix / name).mkdir()
    port = free_port()
    config = prefix / "nginx.conf"
    config.write_text(nginx_config(prefix, port, f"include {prefix}/cxml/*.conf;"))
    with (prefix / "nginx.out").open("wb") as out:
        process = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(config), "-g", "daemon off;"], stderr=out
        )
    try:
        wait_for_port(port)
        yield Nginx(port=port, prefix=prefix, config=config, include_dir=prefix / "cxml")
    finally:
        stop_process(process, signal.SIGQUIT)


def settled_status(url: str, *, in_a_row: int = 3, timeout_s: float = 15) -> int:
    """The status the proxy answers once a reload has settled: `nginx -s reload` only signals
    the master, and for a moment an old worker may still answer with the old config."""
    deadline = time.monotonic() + timeout_s
    codes: list[int] = []
    while time.monotonic() < deadline:
        codes.append(httpx.get(url, timeout=5).status_code)
        if len(codes) >= in_a_row and len(set(codes[-in_a_row:])) == 1:
            return codes[-1]
        time.sleep(0.2)
    raise AssertionError(f"the proxy never settled: {codes}")


def write_deploy_yaml(
    directory: Path, server: SshServer, nginx: Nginx, root: Path, **serve: object
) -> Path:
    proxy = {
        "upstream_file": str(nginx.include_dir / "cxml-upstream.conf"),
        "reload": [*nginx.command("-s", "reload")],
        "public_url": nginx.url,
    }
    proxy.update(serve.pop("proxy", {}))  # type: ignore[call-overload]
    config = {
        "serve": {
            "mode": "process",
            "root": str(root),
            "remote_python": PYTHON,
            "ssh": {"user": server.user},
            "proxy": proxy,
            **serve,
        },
        "environments": {"production": {"hosts": [f"{server.host}:{server.port}"]}},
    }
    path = directory / "deploy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def host_setup(
    config: Path, server: SshServer | None, *extra: str, timeout_s: float = 240
) -> subprocess.CompletedProcess[str]:
    argv = [PYTHON, "-m", "cxml", "host", "setup", "--env", "production", "--config", str(config)]
    if server is not None:
        argv += ["--ssh-key-file", str(server.key_file), "--known-hosts", server.known_hosts]
    return subprocess.run(
        [*argv, *extra],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=deploy_env(),
    )


def refused_setup(
    directory: Path, server: SshServer, nginx: Nginx, root: Path, **serve: object
) -> subprocess.CompletedProcess[str]:
    """`cxml host setup` with `write_deploy_yaml`'s deploy.yaml, which must end in exit 3 (a
    runtime error on the host)."""
    result = host_setup(write_deploy_yaml(directory, server, nginx, root, **serve), server)
    assert result.returncode == 3, result.stdout + result.stderr
    return result


def status_lines(stdout: str) -> list[str]:
    return [line.strip() for line in stdout.splitlines() if line.startswith("  ")]


# --- with a real sshd and nginx -------------------------------------------------------------


@pytest.mark.slow
def test_setup_from_nothing_serves_the_placeholder_and_a_second_run_changes_nothing(
    tmp_path: Path, ssh_server: SshServer, nginx: Nginx
) -> None:
    root = tmp_path / "host" / "cxml"
    config = write_deploy_yaml(tmp_path, ssh_server, nginx, root)

    first = host_setup(config, ssh_server)
    assert first.returncode == 0, first.stderr
    created = [line for line in status_lines(first.stdout) if line.startswith("created")]
    assert len(created) == 7, first.stdout  # root, 4 directories, upstream, server snippet
    assert "cxml 0.1.0" in first.stdout and "already there" in first.stdout
    modes = {name: stat.S_IMODE((root / name).stat().st_mode) for name in ("releases", "incoming")}
    assert modes == {"releases": 0o755, "incoming": 0o700}
    assert nginx.test_config().returncode == 0
    # the placeholder: nothing deployed yet, so the proxy answers 502 for cxml's server name...
    assert settled_status(nginx.url) == 502
    # ...while the default site keeps every other name (no default_server collision)
    other = httpx.get(nginx.url, headers={"Host": "other.example"}, timeout=5)
    assert (other.status_code, other.text) == (200, DEFAULT_SITE)

    snapshot = {path: path.stat().st_mtime_ns for path in nginx.include_dir.iterdir()}
    second = host_setup(config, ssh_server)
    assert second.returncode == 0, second.stderr
    lines = status_lines(second.stdout)
    assert lines and all(line.startswith(("already there", "checked")) for line in lines), lines
    assert "no changes" in second.stdout
    assert {path: path.stat().st_mtime_ns for path in nginx.include_dir.iterdir()} == snapshot

    # a deploy's own upstream is never replaced by the placeholder
    upstream = nginx.include_dir / "cxml-upstream.conf"
    upstream.write_text("upstream cxml_serving {\n    server 127.0.0.1:9;\n}\n")
    (root / "incoming").chmod(0o755)
    third = host_setup(config, ssh_server)
    assert third.returncode == 0, third.stderr
    assert "server 127.0.0.1:9;" in upstream.read_text()
    assert any(
        line.startswith("changed") and "incoming" in line for line in status_lines(third.stdout)
    )


@pytest.mark.slow
def test_broken_reload_command_is_refused_and_the_files_stay_valid(
    tmp_path: Path, ssh_server: SshServer, nginx: Nginx
) -> None:
    root = tmp_path / "host" / "cxml"
    proxy = {"reload": "/bin/false", "check": [*nginx.command("-t")]}
    result = refused_setup(tmp_path, ssh_server, nginx, root, proxy=proxy)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert f"127.0.0.1:{ssh_server.port}" in errors[0]
    assert "proxy reload `/bin/false` failed" in errors[0] and "set proxy.reload" in errors[0]
    assert nginx.test_config().returncode == 0


@pytest.mark.slow
def test_nginx_that_does_not_include_the_files_is_refused_and_nothing_is_left_behind(
    tmp_path: Path, ssh_server: SshServer, nginx: Nginx
) -> None:
    nginx.config.write_text(nginx_config(nginx.prefix, nginx.port, ""))
    result = refused_setup(tmp_path, ssh_server, nginx, tmp_path / "host" / "cxml")
    assert "nginx does not include" in result.stderr and "include " in result.stderr
    assert list(nginx.include_dir.iterdir()) == []


@pytest.mark.slow
def test_host_without_cxml_is_refused_with_the_fix(
    tmp_path: Path, ssh_server: SshServer, nginx: Nginx
) -> None:
    root = tmp_path / "host" / "cxml"
    result = refused_setup(tmp_path, ssh_server, nginx, root, remote_python="/usr/bin/python3 -I")
    assert "cxml is not installed" in result.stderr and "--install" in result.stderr
    assert not root.exists()


@pytest.mark.slow
def test_install_puts_the_clients_version_in_a_venv_once(
    tmp_path: Path, ssh_server: SshServer, nginx: Nginx
) -> None:
    root = tmp_path / "host" / "cxml"
    config = write_deploy_yaml(tmp_path, ssh_server, nginx, root, mode="docker")
    repository = Path(__file__).resolve().parents[2]
    install = ("--install", "--install-from", str(repository))
    first = host_setup(config, ssh_server, *install, timeout_s=600)
    assert first.returncode == 0, first.stdout + first.stderr
    venv_python = root / "venv" / "bin" / "python"
    assert f"created       cxml 0.1.0: {venv_python}" in first.stdout
    assert f"set remote_python: {venv_python}" in first.stdout
    version = subprocess.run(
        [str(venv_python), "-m", "cxml", "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.stdout.strip() == "cxml 0.1.0"

    second = host_setup(config, ssh_server, *install)
    assert second.returncode == 0, second.stderr
    assert f"already there cxml 0.1.0: {venv_python}" in second.stdout
    assert "no changes" in second.stdout


# --- without a host -------------------------------------------------------------------------


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "host" / "cxml"
    config = {
        "serve": {
            "root": str(root),
            "proxy": {
                "upstream_file": str(tmp_path / "nginx" / "cxml-upstream.conf"),
                "public_url": "http://digits.example.com",
            },
        },
        "environments": {"production": {"hosts": ["deploy@prod-1.example.com:2222", "prod-2"]}},
    }
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump(config))
    result = host_setup(path, None, "--dry-run", "--install")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("plan (dry run, nothing is done)")
    assert "host deploy@prod-1.example.com:2222:" in out and "host prod-2:22:" in out
    assert "-m cxml.deploy.host setup" in out and "--listen=80" in out
    assert "--server-name=digits.example.com" in out
    assert f"--server-snippet={tmp_path / 'nginx' / 'cxml-server.conf'}" in out
    assert f"{root}/venv/bin/python -m pip install" in out and "cxml==0.1.0" in out
    assert not root.exists() and not (tmp_path / "nginx").exists()


def test_unknown_environment_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "serve": {"proxy": {"upstream_file": "/etc/nginx/conf.d/cxml-upstream.conf"}},
                "environments": {"production": {"hosts": ["h1"]}},
            }
        )
    )
    result = subprocess.run(
        [PYTHON, "-m", "cxml", "host", "setup", "--env", "prodution", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=deploy_env(),
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: no environment 'prodution' (did you mean production?); "
        "the environments are: production"
    ]


def test_server_block_follows_the_public_url() -> None:
    assert server_block_argv("http://digits.example.com", "p") == [
        "--listen=80",
        "--server-name=digits.example.com",
    ]
    assert server_block_argv("http://127.0.0.1:8080/", "p") == [
        "--listen=127.0.0.1:8080",
        "--server-name=127.0.0.1",
    ]
    assert server_block_argv("http://[::1]:81", "p")[0] == "--listen=[::1]:81"
    with pytest.raises(ConfigError, match="public_url"):
        server_block_argv(None, "production")
    with pytest.raises(ConfigError, match="plain-HTTP"):
        server_block_argv("https://digits.example.com", "production")


def test_snippet_lives_next_to_the_upstream_file() -> None:
    assert server_snippet_path("/etc/nginx/conf.d/cxml-upstream.conf") == (
        "/etc/nginx/conf.d/cxml-server.conf"
    )
    assert server_snippet_path("/etc/nginx/cxml/upstream.conf") == "/etc/nginx/cxml/server.conf"
    assert server_snippet_path("/etc/nginx/cxml.inc") == "/etc/nginx/cxml.inc-server.conf"


def test_install_spec_and_plan_per_host() -> None:
    assert install_spec(None, "0.1.0", "docker") == "cxml==0.1.0"
    assert install_spec(None, "0.1.0", "process") == "cxml[serve]==0.1.0"
    assert install_spec("/opt/cxml.whl", "0.1.0", "docker") == "/opt/cxml.whl"
    config = deploy_config_from_mapping(
        {
            "serve": {
                "proxy": {
                    "upstream_file": "/etc/nginx/conf.d/cxml-upstream.conf",
                    "public_url": "http://a.example",
                }
            },
            "environments": {"production": {"hosts": ["h1", "h2"]}},
        }
    )
    plans = plan_setup(config.environment("production"), InstallOptions(), "0.1.0")
    assert [plan.host.address for plan in plans] == ["h1", "h2"]
    assert plans[0].install == () and plans[0].python == ("python3",)
    assert plans[0].version_probe.argv == ("python3", "-m", "cxml", "--version")


@pytest.mark.parametrize(
    ("listen", "server_name"),
    [("80; include /etc/passwd", "a.example"), ("80", "a.example; }"), ("80", "-x")],
)
def test_host_side_refuses_a_server_block_that_is_not_a_name_and_a_port(
    tmp_path: Path, listen: str, server_name: str
) -> None:
    from cxml.deploy.host.command import main

    argv = ["setup", f"--root={tmp_path / 'root'}", f"--proxy-config={tmp_path / 'up.conf'}",
            f"--server-snippet={tmp_path / 'server.conf'}", f"--listen={listen}",
            f"--server-name={server_name}"]  # fmt: skip
    with pytest.raises(ConfigError):
        main(argv)
    assert not (tmp_path / "root").exists() and not (tmp_path / "server.conf").exists()

"""The worker image, checked without Docker: deploy/Dockerfile is parsed, and what it
promises is checked against Pulse itself. The process runs as a non-root user, the data
dir it writes to is created and owned by that user, the entrypoint is a real `pulse`
command, and the settings of the image (alone, and with the compose file's worker
environment) are valid Settings."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path, PurePosixPath

import pytest
import yaml

from streams.cli import _parser
from streams.config import Settings

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(x for x in text.splitlines() if not x.lstrip().startswith("#"))
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _env_of(args: str) -> dict[str, str]:
    """ENV key=value pairs (also the legacy ``ENV key value`` form)."""
    words = shlex.split(args)
    if "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words)


class Image:
    """What the Dockerfile leaves for the running container."""

    def __init__(self, text: str) -> None:
        self.steps = _instructions(text)
        self.env: dict[str, str] = {}
        self.user = "root"
        self.workdir = PurePosixPath("/")
        self.workdir_as_user: dict[PurePosixPath, str] = {}
        self.entrypoint: list[str] = []
        self.cmd: list[str] = []
        self.run = ""
        for word, args in self.steps:
            if word == "ENV":
                self.env.update(_env_of(args))
            elif word == "USER":
                self.user = args.split(":")[0]
            elif word == "WORKDIR":
                self.workdir = self.workdir / args
            elif word == "ENTRYPOINT":
                self.entrypoint = json.loads(args)
            elif word == "CMD":
                self.cmd = json.loads(args)
            elif word == "RUN":
                self.run += args + "\n"

    def created_users(self) -> dict[str, str]:
        """name -> uid of the users a RUN step creates with useradd."""
        users = {}
        for match in re.finditer(r"useradd\s+([^&;\n]+)", self.run):
            words = shlex.split(match.group(1))
            uid = words[words.index("--uid") + 1] if "--uid" in words else "?"
            users[words[-1]] = uid
        return users

    def owned_dirs(self) -> dict[PurePosixPath, str]:
        """path -> user of each chown in a RUN step, for paths also created with mkdir."""
        made = {
            PurePosixPath(p)
            for m in re.finditer(r"mkdir\s+(?:-p\s+)?([^&;\n]+)", self.run)
            for p in shlex.split(m.group(1))
        }
        owned = {}
        for m in re.finditer(r"chown\s+(?:-R\s+)?(\S+)\s+([^&;\n]+)", self.run):
            for path in shlex.split(m.group(2)):
                if PurePosixPath(path) in made:
                    owned[PurePosixPath(path)] = m.group(1).split(":")[0]
        return owned

    def data_dir(self) -> PurePosixPath:
        """Where Pulse writes in the container: PULSE_DATA_DIR, relative to WORKDIR."""
        configured = self.env.get("PULSE_DATA_DIR", Settings().data_dir)
        return self.workdir / configured


@pytest.fixture(scope="module")
def image() -> Image:
    return Image((DEPLOY / "Dockerfile").read_text())


def test_a_non_root_user_owns_the_data_dir(image: Image) -> None:
    """The container starts as an unprivileged user that can write where Pulse writes."""
    users = image.created_users()
    assert image.user not in {"root", "0", ""}, image.user
    assert image.user in users or image.user in users.values(), (image.user, users)
    uid = users.get(image.user, image.user)
    assert uid.isdigit() and int(uid) >= 1000  # not a system uid shared with the host
    data = image.data_dir()
    assert data.is_absolute()
    owners = image.owned_dirs()
    owner = next((u for path, u in owners.items() if data == path or path in data.parents), None)
    assert owner is not None, f"{data} is not created and chowned by a RUN step ({owners})"
    assert owner == image.user or users.get(owner) == image.user


def test_the_entrypoint_is_a_pulse_command(image: Image) -> None:
    assert image.entrypoint == ["pulse"]
    args = _parser().parse_args(image.cmd)
    assert args.command == "worker"


def test_the_image_settings_are_valid(image: Image) -> None:
    settings = Settings.from_env(image.env)
    assert settings.data_dir == str(image.data_dir())
    assert settings.metrics_host == "0.0.0.0"  # Prometheus scrapes it from another container


def _substitute(value: str, values: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} interpolation."""

    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in values:
            return values[name]
        if op == ":?":
            raise KeyError(f"compose needs {name}: {rest}")
        return rest

    return re.sub(r"\$\{(\w+)(:-|:\?)?([^}]*)\}", one, value)


def test_a_compose_worker_has_valid_settings(image: Image) -> None:
    """The image's environment plus the compose worker's, as a deployment sets them."""
    worker = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["pulse-worker"]
    raw = {k: str(v) for k, v in worker["environment"].items()}
    with pytest.raises(KeyError, match="PULSE_PSEUDONYM_KEY"):  # compose refuses without it
        {k: _substitute(v, {}) for k, v in raw.items()}
    deployment = {"PULSE_PSEUDONYM_KEY": "k" * 64, "PULSE_REPLICATION_FACTOR": "3"}
    env = {**image.env, **{k: _substitute(v, deployment) for k, v in raw.items()}}
    settings = Settings.from_env(env)
    assert not settings.embedded_kafka and settings.replication_factor == 3
    assert settings.data_dir == str(image.data_dir())
    assert _substitute(str(worker["deploy"]["replicas"]), {"PULSE_WORKERS": "4"}) == "4"

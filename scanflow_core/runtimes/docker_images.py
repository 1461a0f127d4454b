"""The images container steps run in: the step's ``image``, or one built from its ``build``.

A built image is tagged ``scanflow/<workflow>-<step>:<digest12>``, where the digest covers everything
that goes into it: the base image's id, the Dockerfile's bytes (given, or the one written for a
requirements file), the requirements' bytes and every file of the build context. Changed code or
requirements give a new tag; an unchanged step finds its image and builds nothing.

- ``build.requirements``: ``FROM`` the base image (``build.base_image``, else ``$SCANFLOW_BASE_IMAGE``,
  else ``python:3.11-slim``), a venv at ``/opt/scanflow/venv`` that sees the base's packages, and
  ``pip install -r`` into it. The build uses the host network and the host's CA bundle, so pip
  reaches PyPI wherever the host does.
- ``build.dockerfile``: built in ``build.context`` (relative to the spec) with the build argument
  ``BASE_IMAGE`` set (``ARG BASE_IMAGE`` / ``FROM ${BASE_IMAGE}`` uses it). The context honours
  ``.dockerignore`` and leaves out ``.git``, ``.scanflow``, ``.venv`` and caches.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import threading
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Protocol

from scanflow_core.errors import StepFailed
from scanflow_core.runs import StepRun

__all__ = [
    "BASE_IMAGE_ENV",
    "DEFAULT_BASE_IMAGE",
    "IMAGE_LABEL",
    "BuildLog",
    "base_image",
    "build_image",
    "ensure_image",
    "image_tag",
    "run_build",
]

BASE_IMAGE_ENV = "SCANFLOW_BASE_IMAGE"
DEFAULT_BASE_IMAGE = "python:3.11-slim"
#: Images Scanflow built carry this label (with ``scanflow.digest``); they stay as a build cache.
IMAGE_LABEL = "scanflow.built"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
VENV = "/opt/scanflow/venv"
ALWAYS_IGNORED = (".git", ".scanflow", ".venv", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache")

_build_locks: dict[str, threading.Lock] = {}
_build_locks_guard = threading.Lock()


def base_image(step_run: StepRun) -> str:
    """The image a build starts from, or a ``runtime: docker`` step without an image runs in."""
    build = step_run.step.spec.build
    explicit = build.base_image if build is not None else None
    return explicit or os.environ.get(BASE_IMAGE_ENV) or DEFAULT_BASE_IMAGE


def image_tag(workflow: str, step: str, digest: str) -> str:
    """``scanflow/<workflow>-<step>:<digest12>``, in the lower-case a Docker repository name needs."""
    name = re.sub(r"[^a-z0-9]+", "-", f"{workflow}-{step}".lower()).strip("-") or "step"
    return f"scanflow/{name}:{digest.removeprefix('sha256:')[:12]}"


def ensure_image(client: Any, step_run: StepRun, image: str, what: str = "image") -> str:
    """The id of ``image`` on the engine, pulled first if the engine does not have it."""
    import docker.errors

    try:
        image_id: str = client.api.inspect_image(image)["Id"]
        return image_id
    except docker.errors.ImageNotFound:
        pass
    _log(step_run, f"scanflow: pulling {image}\n")
    try:
        client.images.pull(image)
        pulled: str = client.api.inspect_image(image)["Id"]
        return pulled
    except docker.errors.DockerException as exc:
        hint = ""
        if what == "base image":
            hint = (
                f"; set {BASE_IMAGE_ENV} (or build.base_image) to an image the engine has"
                " (scripts/base-image.sh builds scanflow-test/python:3.11-bookworm without a registry)"
            )
        raise StepFailed(
            step_run.name,
            step_run.run.run_id,
            f"the {what} {image!r} is not on the Docker engine and cannot be pulled: {_short(exc)}{hint}",
        ) from None


def build_image(client: Any, step_run: StepRun) -> tuple[str, bool]:
    """The tag of the step's built image, and whether this call built it (False: it was there)."""
    import docker.errors

    spec = step_run.step.spec
    build = spec.build
    assert build is not None
    directory = step_run.step.directory
    files: dict[str, bytes] = {}
    base = base_image(step_run)
    if build.requirements:
        dockerfile = "Dockerfile"
        files["requirements.txt"] = _read(step_run, directory / build.requirements, "requirements file")
        files[dockerfile] = _requirements_dockerfile(HOST_CA_BUNDLE.is_file()).encode()
        uses_base = True
    else:
        assert build.dockerfile is not None
        context = directory / build.context
        files.update(_context_files(step_run, context))
        dockerfile = ".scanflow.Dockerfile"
        files[dockerfile] = _read(step_run, directory / build.dockerfile, "Dockerfile")
        uses_base = b"BASE_IMAGE" in files[dockerfile]
    digest = hashlib.sha256()
    if uses_base:
        digest.update(b"base\0" + ensure_image(client, step_run, base, "base image").encode() + b"\0")
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    full = "sha256:" + digest.hexdigest()
    tag = image_tag(step_run.run.workflow.name, step_run.name, full)

    with _lock_for(tag):
        try:
            client.api.inspect_image(tag)
            return tag, False
        except docker.errors.ImageNotFound:
            pass
        if build.requirements and HOST_CA_BUNDLE.is_file():
            # Not in the digest: the CA bundle installs nothing.
            files["ca-certificates.crt"] = HOST_CA_BUNDLE.read_bytes()
        _log(step_run, f"scanflow: building {tag} from {base if uses_base else build.dockerfile}\n")
        _run_build(client, step_run, tag, full, dockerfile, files, base)
    return tag, True


def _requirements_dockerfile(with_ca: bool) -> str:
    cert = "PIP_CERT=/scanflow/ca-certificates.crt " if with_ca else ""
    lines = [
        "ARG BASE_IMAGE",
        "FROM ${BASE_IMAGE}",
        *(["COPY ca-certificates.crt /scanflow/ca-certificates.crt"] if with_ca else []),
        "COPY requirements.txt /scanflow/requirements.txt",
        f"RUN python3 -m venv --system-site-packages {VENV} && {cert}PIP_DISABLE_PIP_VERSION_CHECK=1"
        f" {VENV}/bin/python -m pip install --no-cache-dir -r /scanflow/requirements.txt",
        f"ENV VIRTUAL_ENV={VENV} PATH={VENV}/bin:$PATH",
    ]
    return "\n".join(lines) + "\n"


class BuildLog(Protocol):
    """Where :func:`run_build` writes the build's output (a text file, ``sys.stderr``, ...)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


def _run_build(
    client: Any, step_run: StepRun, tag: str, digest: str, dockerfile: str, files: dict[str, bytes], base: str
) -> None:
    with step_run.log_path.open("a", encoding="utf-8") as log:
        error = run_build(
            client,
            files,
            dockerfile,
            tag,
            buildargs={"BASE_IMAGE": base},
            labels={IMAGE_LABEL: "1", "scanflow.digest": digest},
            log=log,
        )
    if error is not None:
        from scanflow_core.runtimes.local import log_tail

        raise StepFailed(
            step_run.name, step_run.run.run_id, f"building {tag} failed: {error}", log_tail(step_run)
        )


def run_build(
    client: Any,
    files: Mapping[str, bytes],
    dockerfile: str,
    tag: str,
    *,
    buildargs: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    log: BuildLog,
    executables: Collection[str] = (),
) -> str | None:
    """Build ``tag`` on the engine from ``files`` (the whole context, streamed as a tar), on the host
    network, writing the build's output to ``log`` as it comes.

    Args:
        client: a Docker SDK client (:func:`~scanflow_core.runtimes.docker_engine.engine_client`).
        files: the build context: relative POSIX path → bytes (mode 0644, or 0755 for ``*.sh`` and the
            names in ``executables``; owner root, mtime 0, so that an unchanged context hits the cache).
        dockerfile: the name of the Dockerfile among ``files``.
        tag: the image's tag.
        buildargs: the build arguments (``ARG``).
        labels: the image's labels.
        log: where the build's output goes.
        executables: files of the context that get mode 0755.

    Returns:
        None when the image was built, else the error text (the engine's, or the build's last error).

    Examples:
        >>> import sys
        >>> files = {"Dockerfile": b"FROM python:3.11-slim\\nRUN pip --version\\n"}
        >>> run_build(engine_client(), files, "Dockerfile", "me/pip:1", log=sys.stderr) is None
        True
    """
    import docker.errors

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o755 if name.endswith(".sh") or name in executables else 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    buffer.seek(0)
    error = None
    try:
        for chunk in client.api.build(
            fileobj=buffer,
            custom_context=True,
            dockerfile=dockerfile,
            tag=tag,
            buildargs=dict(buildargs or {}),
            labels=dict(labels or {}),
            network_mode="host",
            rm=True,
            forcerm=True,
            decode=True,
        ):
            if "stream" in chunk:
                log.write(chunk["stream"])
                log.flush()
            elif "error" in chunk:
                error = str(chunk["error"]).strip()
                log.write(error + "\n")
    except docker.errors.DockerException as exc:
        error = _short(exc)
    return error


def _context_files(step_run: StepRun, context: Path) -> dict[str, bytes]:
    """The files of a build context (relative POSIX path → bytes), without what is ignored."""
    if not context.is_dir():
        raise StepFailed(step_run.name, step_run.run.run_id, f"build context {context} is not a folder")
    patterns = _dockerignore(context)
    home = step_run.run.home
    files: dict[str, bytes] = {}
    for root, dirs, names in os.walk(context):
        here = Path(root)
        rel_root = here.relative_to(context)
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in ALWAYS_IGNORED
            and here / d != home
            and not _ignored((rel_root / d).as_posix(), patterns)
        )
        for name in sorted(names):
            rel = (rel_root / name).as_posix()
            path = here / name
            if name in ALWAYS_IGNORED or _ignored(rel, patterns) or not path.is_file():
                continue
            files[rel] = path.read_bytes()
    return files


def _dockerignore(context: Path) -> list[tuple[bool, str]]:
    try:
        text = (context / ".dockerignore").read_text(encoding="utf-8")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        out.append((negated, line.lstrip("!").strip("/").removeprefix("./")))
    return out


def _ignored(rel: str, patterns: list[tuple[bool, str]]) -> bool:
    """``.dockerignore`` semantics, simplified: the last matching pattern wins; a pattern matching a
    folder ignores what is inside it; ``**`` matches any depth."""
    ignored = False
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for negated, pattern in patterns:
        regex = _glob_regex(pattern)
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not negated
    return ignored


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """``*`` and ``?`` stay within a folder, ``**/`` spans any number of folders (none included)."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        else:
            char = pattern[i]
            out.append("[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char))
            i += 1
    return re.compile("".join(out))


def _read(step_run: StepRun, path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StepFailed(
            step_run.name, step_run.run.run_id, f"cannot read the {what} {path}: {exc.strerror}"
        ) from None


def _lock_for(tag: str) -> threading.Lock:
    with _build_locks_guard:
        return _build_locks.setdefault(tag, threading.Lock())


def _log(step_run: StepRun, line: str) -> None:
    with step_run.log_path.open("a", encoding="utf-8") as log:
        log.write(line)


def _short(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc).strip().splitlines()[0] if str(explanation or exc).strip() else repr(exc)

